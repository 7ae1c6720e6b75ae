"""The IP options a reply echoes (RFC 1122 3.2.2.6), as Linux's ip_options_echo.

An ICMP reply carries back the Record Route and Timestamp options of the
request. Linux writes into them twice: on input (ip_options_compile: the
receiving address, a timestamp) and on output (ip_options_build: the
reply's source, a timestamp), each only where the option has room and the
step before asked for it. Both happen here at once, since the reply leaves
when the request arrives. Other options are not echoed (source routes are
dropped on input; security options are not implemented), and the result is
padded with EOL to a multiple of four bytes. The options were checked on
input (wire.ipv4.check_options), so pointers are where Linux accepts them.
"""

from __future__ import annotations

from collections.abc import Callable

from .wire.ipv4 import OPT_EOL, OPT_NOP, OPT_RR, OPT_TIMESTAMP, TS_AND_ADDR, TS_ONLY, TS_PRESPEC


class NoReply(Exception):
    """The echoed option would not fit its next entry: Linux's ip_options_echo fails and
    the reply is not sent."""


def reply_options(options: bytes, local: int, stamps_here: Callable[[int], bool], now_ms: int) -> bytes:
    """The options of a reply to a datagram carrying ``options``, sent from ``local`` at
    ``now_ms`` (ms since midnight UT); ``stamps_here(addr)`` says whether a prespecified
    Timestamp address names this host (Linux: not a remote unicast). Raises NoReply."""
    rr = ts = b""
    i = 0
    while i < len(options) and options[i] != OPT_EOL:
        if options[i] == OPT_NOP:
            i += 1
            continue
        kind, length = options[i], options[i + 1]
        if kind == OPT_RR:
            rr = _record_route(bytearray(options[i : i + length]), local)
        elif kind == OPT_TIMESTAMP:
            ts = _timestamp(bytearray(options[i : i + length]), local, stamps_here, now_ms.to_bytes(4, "big"))
        i += length
    echoed = rr + ts  # Linux echoes Record Route, then Timestamp
    return echoed + bytes(-len(echoed) % 4)


def _record_route(opt: bytearray, local: int) -> bytes:
    """The receiving address recorded at the pointer; then, if there is still room, the
    reply's source in the next slot."""
    address = local.to_bytes(4, "big")
    ptr = opt[2]
    if ptr > len(opt):
        return bytes(opt)  # full on arrival: recorded nowhere
    opt[ptr - 1 : ptr + 3] = address
    ptr += 4
    if ptr <= len(opt):
        if ptr + 3 > len(opt):
            raise NoReply
        opt[ptr - 1 : ptr + 3] = address
        ptr += 4
    opt[2] = ptr
    return bytes(opt)


def _timestamp(opt: bytearray, local: int, stamps_here: Callable[[int], bool], stamp: bytes) -> bytes:
    """This host's entry on input, as the flag asks; then the reply's, where input made one
    and there is room (a prespecified one only if its slot names this host too)."""
    flag, ptr = opt[3] & 0xF, opt[2]
    if ptr > len(opt):
        if flag != TS_PRESPEC:
            opt[3] = flag | ((opt[3] >> 4) + 1) << 4  # one more hop could not stamp
        return bytes(opt)
    entry = {TS_ONLY: 4, TS_AND_ADDR: 8, TS_PRESPEC: 8}.get(flag)
    if entry is None or (flag == TS_PRESPEC and not _names_this_host(opt, ptr, stamps_here)):
        return bytes(opt)  # an unknown flag, or a prespecified hop that is another host
    _write_entry(opt, ptr, flag, local, stamp)
    ptr += entry
    if ptr <= len(opt):
        if flag == TS_PRESPEC:
            if ptr + 7 <= len(opt) and _names_this_host(opt, ptr, stamps_here):
                _write_entry(opt, ptr, flag, local, stamp)
                ptr += entry
        elif ptr + entry - 1 > len(opt):
            raise NoReply
        else:
            _write_entry(opt, ptr, flag, local, stamp)
            ptr += entry
    opt[2] = ptr
    return bytes(opt)


def _names_this_host(opt: bytearray, ptr: int, stamps_here: Callable[[int], bool]) -> bool:
    return stamps_here(int.from_bytes(opt[ptr - 1 : ptr + 3], "big"))


def _write_entry(opt: bytearray, ptr: int, flag: int, local: int, stamp: bytes) -> None:
    """One entry at the pointer: a timestamp, or an address and a timestamp."""
    if flag == TS_ONLY:
        opt[ptr - 1 : ptr + 3] = stamp
        return
    if flag == TS_AND_ADDR:
        opt[ptr - 1 : ptr + 3] = local.to_bytes(4, "big")
    opt[ptr + 3 : ptr + 7] = stamp
