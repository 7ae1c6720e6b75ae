"""The server's socket backends: pystack's fd API in process, and the kernel's sockets.

Each implements :class:`tux_like.core.Net` and, for the trio driver
(:mod:`tux_like.driver`), three more things: ``take_ready()`` yields the
sockets whose watched event came (in order), ``on_ready`` is called when
there is something to take (the driver sets it), and ``run()`` is the
backend's own trio task (it may have nothing to do). Watches are one-shot
and level-checked when armed, as :class:`tux_like.memnet.MemoryNet`'s are:
a socket that is ready already is reported at once.
"""

from __future__ import annotations


def connection_error(error: OSError) -> ConnectionError:
    """The stages' one error for a connection that is gone, whatever errno ended it
    (a reset, a retransmission timeout, an unreachable peer)."""
    if isinstance(error, ConnectionError):
        return error
    gone = ConnectionError(error.errno, error.strerror)
    gone.__cause__ = error
    return gone
