"""IPv4 addresses as 32-bit integers inside the stack, dotted strings at the API.

The core keeps addresses as ints so that route lookups and header building
are integer operations; the fd API speaks ``(host, port)`` tuples like
Python's socket module.
"""

from __future__ import annotations

import errno
import socket

from .errors import oserror

ANY = 0
BROADCAST = 0xFFFFFFFF
LOOPBACK_NET = 0x7F000000


def aton(text: str) -> int:
    """Dotted quad to int; raises ValueError on anything else."""
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except (OSError, TypeError):
        raise ValueError(f"not an IPv4 address in dotted-quad form: {text!r}") from None


def ntoa(value: int) -> str:
    return socket.inet_ntoa(value.to_bytes(4, "big"))


def is_multicast(value: int) -> bool:
    return (value >> 28) == 0xE


def is_loopback(value: int) -> bool:
    return (value >> 24) == 127


def is_reserved_class_e(value: int) -> bool:
    return (value >> 28) == 0xF and value != BROADCAST


def prefix_mask(prefixlen: int) -> int:
    return (0xFFFFFFFF << (32 - prefixlen)) & 0xFFFFFFFF if prefixlen else 0


def sockaddr_in(address: object) -> tuple[int, int]:
    """Validate a Python-style AF_INET address ``(host, port)`` into ints.

    Raises the OSError Linux would give for the equivalent bad sockaddr.
    """
    if not isinstance(address, tuple) or len(address) != 2:
        raise TypeError("AF_INET address must be a (host, port) tuple")
    host, port = address
    if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise OverflowError("port must be 0-65535.")
    if host in ("", "0.0.0.0"):
        return ANY, port
    if host == "<broadcast>":
        return BROADCAST, port
    if not isinstance(host, str):
        raise TypeError("host must be a str")
    try:
        return aton(host), port
    except ValueError:
        raise oserror(errno.EINVAL, f"pystack resolves no names, only dotted quads: {host!r}") from None
