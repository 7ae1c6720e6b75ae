"""IPv4 header codec (RFC 791)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from ..checksum import fold, ones_sum
from ..errors import Malformed

HEADER_LEN = 20
MAX_PACKET = 0xFFFF
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
FLAG_RESERVED = 0x8000
FLAG_DF = 0x4000
FLAG_MF = 0x2000
OFFSET_MASK = 0x1FFF

OPT_EOL = 0
OPT_NOP = 1
OPT_RR = 7
OPT_TIMESTAMP = 68
OPT_LSRR = 131
OPT_SSRR = 137
TS_ONLY, TS_AND_ADDR, TS_PRESPEC = 0, 1, 3  # the Timestamp option's flags

_HEADER = struct.Struct("!BBHHHBBHII")


@dataclass(slots=True)
class IPv4Packet:
    """A datagram's header fields and the payload after its options (link padding trimmed)."""

    src: int
    dst: int
    proto: int
    ttl: int = 64
    tos: int = 0
    ident: int = 0
    flags: int = 0  # FLAG_DF | FLAG_MF bits, as on the wire
    frag_offset: int = 0  # in bytes (a multiple of 8)
    total_length: int = HEADER_LEN
    header_length: int = HEADER_LEN
    options: bytes = b""
    payload: bytes = b""

    @property
    def is_fragment(self) -> bool:
        return bool(self.flags & FLAG_MF) or self.frag_offset != 0


def parse_ipv4(packet: bytes) -> IPv4Packet:
    """Validate a packet and split off its payload (link padding trimmed).

    Raises Malformed with the reason: too_short (under 20 bytes), version,
    header_length, total_length, truncated (total length beyond the
    buffer), checksum.
    """
    return _parse(packet, False)


def parse_quoted_ipv4(quote: bytes) -> IPv4Packet:
    """Parse the datagram quoted in an ICMP error: cut short, so no length or checksum check."""
    return _parse(quote, True)


def _parse(packet: bytes, quoted: bool) -> IPv4Packet:
    if len(packet) < HEADER_LEN:
        raise Malformed("too_short")
    ver_ihl, tos, total, ident, frag, ttl, proto, checksum, src, dst = _HEADER.unpack_from(packet)
    if ver_ihl >> 4 != 4:
        raise Malformed("version")
    ihl = (ver_ihl & 0xF) * 4
    if ihl < HEADER_LEN or ihl > len(packet):
        raise Malformed("header_length")
    options = bytes(packet[HEADER_LEN:ihl]) if ihl > HEADER_LEN else b""
    if quoted:
        if len(packet) < ihl + 8:
            raise Malformed("truncated")
        end = len(packet)
    else:
        if total < ihl:
            raise Malformed("total_length")
        if total > len(packet):
            raise Malformed("truncated")
        # The header's words, checksum included, summed from the fields just unpacked (RFC 1071):
        # a correct header sums to 0xFFFF. The sum is never 0, since the version is 4.
        words = (
            (ver_ihl << 8 | tos) + total + ident + frag + (ttl << 8 | proto) + checksum
            + (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF)
        )
        if options:
            words += ones_sum(options)
        if fold(words) != 0xFFFF:
            raise Malformed("checksum")
        end = total
    # Positional arguments, in field order: this runs for every packet received.
    return IPv4Packet(
        src, dst, proto, ttl, tos, ident, frag & (FLAG_RESERVED | FLAG_DF | FLAG_MF),
        (frag & OFFSET_MASK) * 8, total, ihl, options, bytes(packet[ihl:end]),
    )


def check_options(options: bytes) -> int | None:
    """Check IPv4 options as Linux's ip_options_compile does for a received datagram;
    returns the offset of the bad byte, or None.

    The offset is relative to the start of the options; a caller adds 20 to
    get the ICMP parameter-problem pointer. A bad or missing length points at
    the option's type byte, a second Record Route or Timestamp too; a Record
    Route or Timestamp whose pointer is out of place points at the pointer,
    a Timestamp whose overflow count is spent at its flags byte.
    """
    seen: set[int] = set()
    for offset, kind, length in _walk_options(options):
        if length is None:
            return offset
        if kind not in (OPT_RR, OPT_TIMESTAMP):
            continue
        if kind in seen:
            return offset
        seen.add(kind)
        bad = _record_option_fault(kind, options[offset : offset + length])
        if bad is not None:
            return offset + bad
    return None


def _record_option_fault(kind: int, opt: bytes) -> int | None:
    """Where a Record Route or Timestamp option (``opt``, whole) is malformed, or None."""
    smallest, first_slot = (3, 4) if kind == OPT_RR else (4, 5)
    if len(opt) < smallest:
        return 1
    ptr = opt[2]
    if ptr < first_slot:
        return 2
    if kind == OPT_RR:
        return 2 if ptr <= len(opt) and ptr + 3 > len(opt) else None
    flag = opt[3] & 0xF
    if ptr <= len(opt):
        entry = 4 if flag == TS_ONLY else 8 if flag in (TS_AND_ADDR, TS_PRESPEC) else 0
        return 2 if entry and ptr + entry - 1 > len(opt) else None
    if flag != TS_PRESPEC and opt[3] >> 4 == 15:
        return 3
    return None


def has_source_route(options: bytes) -> bool:
    return any(kind in (OPT_LSRR, OPT_SSRR) and length is not None for _, kind, length in _walk_options(options))


def options_for_later_fragments(options: bytes) -> bytes:
    """The options of a fragment after the first: those without the copied flag (0x80)
    become NOPs, the length unchanged (Linux's ip_options_fragment)."""
    kept = bytearray(options)
    for offset, kind, length in _walk_options(options):
        if length is not None and kind != OPT_NOP and not kind & 0x80:
            kept[offset : offset + length] = bytes([OPT_NOP]) * length
    return bytes(kept)


def _walk_options(options: bytes) -> Iterator[tuple[int, int, int | None]]:
    """(offset, type, length) of each option up to EOL; length None for a broken one, which ends the walk."""
    i = 0
    while i < len(options):
        kind = options[i]
        if kind == OPT_EOL:
            return
        if kind == OPT_NOP:
            yield i, kind, 1
            i += 1
            continue
        length = options[i + 1] if i + 1 < len(options) else 0
        if length < 2 or i + length > len(options):
            yield i, kind, None
            return
        yield i, kind, length
        i += length


def build_ipv4_header(
    src: int,
    dst: int,
    proto: int,
    payload_length: int,
    ttl: int,
    tos: int,
    ident: int,
    flags_fragment: int,
    buffer: bytearray | None = None,
    options: bytes = b"",
) -> bytes | None:
    """A complete header with checksum; ``flags_fragment`` is the 16-bit wire field.

    Only the header: IP output copies its payload once, into the packet's
    buffer. Given that ``buffer``, the header is written at its start in
    place (and None returned); otherwise it is returned as bytes, for the
    callers that quote or rebuild a packet.

    The fixed header's words enter the checksum as numbers (RFC 1071), so
    it is packed once; only options are summed as bytes.
    """
    if options:
        ihl = HEADER_LEN + len(options)
        version_ihl = 0x40 | (ihl >> 2)
        words = ones_sum(options)
    else:  # every packet pystack sends
        ihl, version_ihl, words = HEADER_LEN, 0x45, 0
    total_length = ihl + payload_length
    words += (
        (version_ihl << 8 | tos) + total_length + ident + flags_fragment + (ttl << 8 | proto)
        + (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF)
    )
    checksum = ~fold(words) & 0xFFFF
    if buffer is None:
        return _HEADER.pack(version_ihl, tos, total_length, ident, flags_fragment, ttl, proto, checksum, src, dst) + options
    _HEADER.pack_into(buffer, 0, version_ihl, tos, total_length, ident, flags_fragment, ttl, proto, checksum, src, dst)
    if options:
        buffer[HEADER_LEN:ihl] = options
    return None
