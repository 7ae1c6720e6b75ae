"""A Tempo-style program specializer (Bhatia 2006, chapters 3-4).

Binding-time analysis and partial evaluation for a context of invariants,
guarded by assumptions. Two ways in:

* pystack's send paths, through the token API of the thesis (fig. 4.7):
  ``do_specialize_send`` and the rest, for a socket of a Stack;
* any importable module, through :func:`specialize`: scenarios declared in a
  ``.spec.toml`` beside the module, guards on the module's own objects and
  events (:func:`announce`) and on its data (pystack.tokens.watch). See
  specializer/user.py and demos/tlv_options.py.
"""

from pystack.tokens.api import (
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
from pystack.tokens.scenario import DeclarationError, Scenario
from pystack.tokens.system import StaleSpecialization

from .pe import SpecializationError
from .user import (
    GuardRejected,
    Specialization,
    UserSystem,
    announce,
    build_statics,
    scenarios,
    specialize,
)

__all__ = [
    # pystack's socket tokens
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
    # any module's code
    "DeclarationError",
    "GuardRejected",
    "Scenario",
    "Specialization",
    "SpecializationError",
    "StaleSpecialization",
    "UserSystem",
    "announce",
    "build_statics",
    "scenarios",
    "specialize",
]
