"""Port binding shared by UDP and TCP: conflicts (Linux's rules) and ephemeral ports."""

from __future__ import annotations

import errno
import random

from .addr import ANY
from .errors import oserror
from .socket import Socket

EPHEMERAL_PORTS = (32768, 60999)  # net.ipv4.ip_local_port_range

PortTable = dict[int, list[Socket]]


def conflict(table: PortTable, sock: Socket, addr: int, port: int) -> bool:
    """Would binding ``sock`` to addr:port clash with a socket already there?

    SO_REUSEADDR on both sockets lets them share, except with a listening
    TCP socket; different specific addresses never clash.
    """
    for other in table.get(port, ()):
        if other is sock:
            continue
        if sock.reuseaddr and other.reuseaddr and not other.listening:
            continue
        if addr == ANY or other.local_addr == ANY or other.local_addr == addr:
            return True
    return False


def ephemeral(table: PortTable, sock: Socket, addr: int, rng: random.Random) -> int:
    low, high = EPHEMERAL_PORTS
    span = high - low + 1
    start = rng.randrange(span)
    for i in range(span):
        port = low + (start + i) % span
        if not conflict(table, sock, addr, port):
            return port
    raise oserror(errno.EAGAIN, "no free ephemeral port")


def bind(table: PortTable, sock: Socket, addr: int, port: int, rng: random.Random) -> int:
    """Reserve addr:port (port 0: an ephemeral one) in ``table``; returns the port."""
    if port == 0:
        port = ephemeral(table, sock, addr, rng)
    elif conflict(table, sock, addr, port):
        raise oserror(errno.EADDRINUSE)
    table.setdefault(port, []).append(sock)
    return port


def unbind(table: PortTable, sock: Socket) -> None:
    bound = table.get(sock.local_port)
    if bound and sock in bound:
        bound.remove(sock)
        if not bound:
            del table[sock.local_port]
