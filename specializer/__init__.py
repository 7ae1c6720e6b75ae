"""A Tempo-style program specializer for pystack's own code (Bhatia 2006, chapters 3-4).

Binding-time analysis and partial evaluation of the stack's send paths
for a context of invariants, guarded by assumptions, served through the
token API of the thesis.
"""

from .api import (
    do_default_send,
    do_default_sendto,
    do_specialize_send,
    do_specialize_sendto,
    done_specialize_send,
    done_specialize_sendto,
    make_local_system,
    re_specialize_send,
    re_specialize_sendto,
    specialized_send,
    specialized_sendto,
    token_info,
)

__all__ = [
    "do_default_send",
    "do_default_sendto",
    "do_specialize_send",
    "do_specialize_sendto",
    "done_specialize_send",
    "done_specialize_sendto",
    "make_local_system",
    "re_specialize_send",
    "re_specialize_sendto",
    "specialized_send",
    "specialized_sendto",
    "token_info",
]
