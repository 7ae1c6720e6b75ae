"""The token API of thesis fig. 4.7, for the send operations of a pystack Stack.

    token = do_specialize_send(stack, fd)          # specialize for this socket, now
    specialized_send(stack, token, data)           # the specialized send
    do_default_send(stack, token, data)            # the fallback: the generic send, same context
    re_specialize_send(stack, token, flags=...)    # renew for a new context
    done_specialize_send(stack, token)             # release it
    make_local_system(stack)                       # null context for every request from now on

and the same five for ``sendto`` with a fixed destination. Guard policies
can be chosen per token: ``policy={"setsockopt": "fallback", ...}``.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

from pystack.addr import sockaddr_in
from pystack.errors import oserror
from pystack.socket import SOCK_STREAM, Socket
from pystack.stack import Stack
from pystack.tcp.output import tcp_output

from .system import system_of

Address = tuple[str, int]


def do_specialize_send(stack: Stack, fd: int, *, flags: int = 0, policy: dict[str, str] | None = None,
                       debug: bool = False) -> int:
    """Specialize ``send(fd, data, flags)`` for this socket as it is now; returns a token.

    ``policy`` maps guard events (setsockopt, fcntl, bind, connect, shutdown, close, route,
    mss) to what a change does to the token (reject, fallback, respecialize, reinforce);
    anything else is a ValueError. A connection still in its handshake gets the generic
    code until the handshake settles the facts the code would fold. ``debug`` re-checks
    every assumption on every call (StaleSpecialization if one broke unseen)."""
    sock = stack.sockfd_lookup(fd)
    if sock.type == SOCK_STREAM:
        scenario = "tcp_send"
    else:
        scenario = "udp_send_adu" if sock.adu else "udp_send_connected"
    statics = {"self": stack, "fd": fd, "flags": flags}
    system = system_of(stack)
    number = system.open(scenario, sock, statics, lambda data: stack.send(fd, data, flags), policy, debug)
    if sock.type == SOCK_STREAM:
        system.token(number).companions.append(open_tcp_output(stack, sock, policy, debug))
    return number


def open_tcp_output(stack: Stack, sock: Socket, policy: dict[str, str] | None, debug: bool) -> int:
    """The connection's output routine, specialized with the same invariants as its send: most
    segments of a bulk transfer leave when an ACK arrives, not from the send call. The stack
    runs it from ``tcb.output`` (the generic tcp_output whenever the token falls back)."""
    tcb = sock.tcb

    def generic() -> None:
        tcp_output(stack, tcb)

    def install(function: Callable[[], None] | None) -> None:
        tcb.output = None if function is generic else function

    return system_of(stack).open("tcp_output", sock, {"stack": stack, "tcb": tcb}, generic, policy, debug,
                                 hook=install)


def specialized_send(stack: Stack, token: int, data: bytes) -> int:
    """Send through the token's code: one lookup and one call (system_of, inlined). Returns
    and raises what ``stack.send`` would; EINVAL for a token that does not exist."""
    try:
        function = stack.extensions["specializer"].functions[token]
    except KeyError:
        raise oserror(errno.EINVAL, f"no specialization token {token}") from None
    return function(data)


def do_default_send(stack: Stack, token: int, data: bytes) -> int:
    """The generic send for the token's context (the fallback of thesis 4.1.1)."""
    return system_of(stack).token(token).generic(data)


def re_specialize_send(stack: Stack, token: int, *, flags: int | None = None) -> int:
    """Specialize the token again for the socket's current state (and new flags if given)."""
    system = system_of(stack)
    tok = system.token(token)
    statics = dict(tok.statics)
    if flags is not None:
        statics["flags"] = flags
        fd = statics["fd"]
        tok.generic = lambda data: stack.send(fd, data, flags)
    system.respecialize(tok, statics)
    for companion in tok.companions:
        system.respecialize(system.token(companion))
    return token


def done_specialize_send(stack: Stack, token: int) -> None:
    """Release the token (and its connection's output routine): changes it guarded go through."""
    system_of(stack).close(token)


def do_specialize_sendto(stack: Stack, fd: int, address: Address, *, flags: int = 0,
                         policy: dict[str, str] | None = None, debug: bool = False) -> int:
    """Specialize ``sendto(fd, data, flags, address)`` for one fixed destination; returns a
    token. An unbound socket is bound now, as its first send would bind it. ``policy`` and
    ``debug`` as for :func:`do_specialize_send`."""
    sock = stack.sockfd_lookup(fd)
    if sock.type == SOCK_STREAM:
        raise oserror(errno.EOPNOTSUPP, "sendto specialization is for datagram sockets")
    sockaddr_in(address)  # a bad address is refused now, not at the first send
    if not sock.local_port:
        stack.bind(fd, ("0.0.0.0", 0))  # as the first send would: the port must not change under the code
    statics = {"self": stack, "fd": fd, "flags": flags, "address": tuple(address)}
    return system_of(stack).open("udp_sendto_fixed", sock, statics,
                                 lambda data: stack.sendto(fd, data, flags, address), policy, debug)


specialized_sendto = specialized_send  # a sendto token's code has its destination built in


def do_default_sendto(stack: Stack, token: int, data: bytes) -> int:
    """The generic sendto for the token's context (its socket, flags and destination)."""
    return system_of(stack).token(token).generic(data)


def re_specialize_sendto(stack: Stack, token: int, *, address: Address | None = None,
                         flags: int | None = None) -> int:
    """Specialize the token again for the socket's current state, with a new destination
    or flags if given (a bad address is refused now, as by :func:`do_specialize_sendto`)."""
    system = system_of(stack)
    tok = system.token(token)
    statics = dict(tok.statics)
    if address is not None:
        sockaddr_in(address)
        statics["address"] = tuple(address)
    if flags is not None:
        statics["flags"] = flags
    fd, new_flags, new_address = statics["fd"], statics["flags"], statics["address"]
    tok.generic = lambda data: stack.sendto(fd, data, new_flags, new_address)
    system.respecialize(tok, statics)
    return token


def done_specialize_sendto(stack: Stack, token: int) -> None:
    """Release the token: changes it guarded go through."""
    system_of(stack).close(token)


def make_local_system(stack: Stack) -> None:
    """From now on every request gets the null context: generic code, no specializer needed."""
    system = system_of(stack)
    system.local = True


def token_info(stack: Stack, token: int) -> dict[str, Any]:
    """What a token runs and what its guards did (for people, tests and the demo)."""
    tok = system_of(stack).token(token)
    entry = tok.entry
    return {
        "scenario": tok.scenario.name,
        "mode": tok.mode,
        "events": list(tok.events),
        "source": entry.compiled.source if entry is not None else None,
        "assumptions": len(entry.assumptions) if entry is not None else 0,
    }
