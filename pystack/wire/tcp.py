"""TCP header and options codec (RFC 9293, 7323, 2018).

Options are emitted in the order and with the padding Linux uses, so that
captures of pystack and of Linux compare cleanly:
SYN: ``mss, sackOK, TS, nop, wscale`` (``mss, nop, nop, sackOK, nop, wscale``
without timestamps); data: ``nop, nop, TS`` then ``nop, nop, sack ...``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ..checksum import internet_checksum, ones_sum, pseudo_header_sum
from ..errors import Malformed
from .ipv4 import PROTO_TCP

HEADER_LEN = 20
MAX_HEADER_LEN = 60

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80

OPT_EOL = 0
OPT_NOP = 1
OPT_MSS = 2
OPT_WSCALE = 3
OPT_SACK_PERM = 4
OPT_SACK = 5
OPT_TIMESTAMP = 8
OPT_FASTOPEN = 34  # RFC 7413
OPT_EXP = 254  # RFC 6994's shared experimental kind: Fast Open's before 34, magic 0xF989
FASTOPEN_MAGIC = 0xF989

_HEADER = struct.Struct("!HHIIBBHHH")


@dataclass(slots=True)
class TcpOptions:
    mss: int | None = None
    wscale: int | None = None
    sack_permitted: bool = False
    sack_blocks: list[tuple[int, int]] = field(default_factory=list)
    ts_val: int | None = None
    ts_ecr: int = 0
    fastopen: bytes | None = None  # a Fast Open cookie; b"": a cookie request; None: no option
    fastopen_exp: bool = False  # in the experimental form (kind 254, magic 0xF989)


@dataclass(slots=True)
class TcpSegment:
    """A segment's header fields, decoded options and payload."""

    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    urgent: int = 0
    options: TcpOptions = field(default_factory=TcpOptions)
    payload: bytes = b""

    @property
    def seg_len(self) -> int:
        """Sequence space the segment occupies (SYN and FIN count one each)."""
        return len(self.payload) + (1 if self.flags & SYN else 0) + (1 if self.flags & FIN else 0)


def parse_tcp(segment: bytes, src: int, dst: int) -> TcpSegment:
    """Validate checksum and header length, decode options; raises Malformed."""
    if len(segment) < HEADER_LEN:
        raise Malformed("truncated")
    sport, dport, seq, ack, offset, flags, window, _csum, urgent = _HEADER.unpack_from(segment)
    header_len = (offset >> 4) * 4
    if header_len < HEADER_LEN or header_len > len(segment):
        raise Malformed("header_length")
    # Over the whole segment, its checksum included, a correct sum is 0xFFFF.
    if ones_sum(segment, pseudo_header_sum(src, dst, PROTO_TCP, len(segment))) != 0xFFFF:
        raise Malformed("checksum")
    options = parse_options(segment[HEADER_LEN:header_len])
    return TcpSegment(sport, dport, seq, ack, flags, window, urgent, options, bytes(segment[header_len:]))


def parse_options(raw: bytes) -> TcpOptions:
    """Decode known options; unknown ones are skipped, a broken length ends parsing (as Linux)."""
    options = TcpOptions()
    i = 0
    while i < len(raw):
        kind = raw[i]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= len(raw):
            break
        length = raw[i + 1]
        if length < 2 or i + length > len(raw):
            break
        body = raw[i + 2 : i + length]
        if kind == OPT_MSS and length == 4:
            options.mss = int.from_bytes(body, "big")
        elif kind == OPT_WSCALE and length == 3:
            options.wscale = body[0]
        elif kind == OPT_SACK_PERM and length == 2:
            options.sack_permitted = True
        elif kind == OPT_TIMESTAMP and length == 10:
            options.ts_val = int.from_bytes(body[:4], "big")
            options.ts_ecr = int.from_bytes(body[4:], "big")
        elif kind == OPT_FASTOPEN:
            options.fastopen, options.fastopen_exp = bytes(body), False
        elif kind == OPT_EXP and length >= 4 and int.from_bytes(body[:2], "big") == FASTOPEN_MAGIC:
            options.fastopen, options.fastopen_exp = bytes(body[2:]), True
        elif kind == OPT_SACK and length >= 10 and (length - 2) % 8 == 0:
            options.sack_blocks = [
                (int.from_bytes(body[j : j + 4], "big"), int.from_bytes(body[j + 4 : j + 8], "big"))
                for j in range(0, length - 2, 8)
            ]
        i += length
    return options


def build_options(options: TcpOptions, syn: bool) -> bytes:
    """Options bytes in Linux's order and padding (a multiple of 4 bytes)."""
    out = b""  # bytes, not a bytearray: a specializer knows the size of what it packs
    if syn:
        if options.mss is not None:
            out += struct.pack("!BBH", OPT_MSS, 4, options.mss)
        if options.ts_val is not None:
            if options.sack_permitted:
                out += bytes((OPT_SACK_PERM, 2))
            else:
                out += bytes((OPT_NOP, OPT_NOP))
            out += struct.pack("!BBII", OPT_TIMESTAMP, 10, options.ts_val, options.ts_ecr)
        elif options.sack_permitted:
            out += bytes((OPT_NOP, OPT_NOP, OPT_SACK_PERM, 2))
        if options.wscale is not None:
            out += bytes((OPT_NOP, OPT_WSCALE, 3, options.wscale))
        if options.fastopen is not None:  # last, padded with two NOPs if it needs them (Linux)
            if options.fastopen_exp:
                fo = struct.pack("!BBH", OPT_EXP, 4 + len(options.fastopen), FASTOPEN_MAGIC) + options.fastopen
            else:
                fo = bytes((OPT_FASTOPEN, 2 + len(options.fastopen))) + options.fastopen
            out += fo + (bytes((OPT_NOP, OPT_NOP)) if len(fo) % 4 == 2 else b"")
        return out
    if options.ts_val is not None:
        out += struct.pack("!BBBBII", OPT_NOP, OPT_NOP, OPT_TIMESTAMP, 10, options.ts_val, options.ts_ecr)
    if options.sack_blocks:
        out += bytes((OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(options.sack_blocks)))
        for start, end in options.sack_blocks:
            out += struct.pack("!II", start, end)
    return out


def build_tcp(
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    options: bytes,
    payload: bytes,
    src: int,
    dst: int,
    urgent: int = 0,
) -> bytes:
    """A TCP segment with its checksum; ``options`` already encoded (see build_options), a
    multiple of 4 bytes as the data offset requires.

    The fixed header's words enter the checksum as numbers (RFC 1071), so
    only the options and the payload are summed as bytes, in one pass: the
    options' even length keeps the payload's 16-bit words aligned.
    """
    header_len = HEADER_LEN + len(options)
    length = header_len + len(payload)
    offset_flags = (header_len // 4) << 12 | flags
    words = (
        pseudo_header_sum(src, dst, PROTO_TCP, length) + sport + dport + (seq >> 16) + (seq & 0xFFFF)
        + (ack >> 16) + (ack & 0xFFFF) + offset_flags + window + urgent
    )
    body = options + payload
    checksum = internet_checksum(body, words)
    return _HEADER.pack(sport, dport, seq, ack, offset_flags >> 8, flags, window, checksum, urgent) + body
