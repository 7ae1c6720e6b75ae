"""UDP header codec (RFC 768)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..checksum import internet_checksum, ones_sum, pseudo_header_sum
from ..errors import Malformed
from .ipv4 import PROTO_UDP

HEADER_LEN = 8
_HEADER = struct.Struct("!HHHH")


@dataclass(slots=True)
class UdpDatagram:
    """A datagram's ports and payload (cut to the UDP length field)."""

    sport: int
    dport: int
    payload: bytes


def parse_udp(segment: bytes, src: int, dst: int) -> UdpDatagram:
    """Validate length and checksum (a zero checksum means none was sent); raises Malformed."""
    if len(segment) < HEADER_LEN:
        raise Malformed("truncated")
    sport, dport, length, checksum = _HEADER.unpack_from(segment)
    if length < HEADER_LEN or length > len(segment):
        raise Malformed("length")
    segment = segment[:length]
    if checksum != 0:
        # Over the whole segment, its checksum included, a correct sum is 0xFFFF.
        if ones_sum(segment, pseudo_header_sum(src, dst, PROTO_UDP, length)) != 0xFFFF:
            raise Malformed("checksum")
    return UdpDatagram(sport, dport, segment[HEADER_LEN:])


def build_udp(sport: int, dport: int, payload: bytes, src: int, dst: int, with_checksum: bool = True) -> bytes:
    """A UDP datagram; a computed checksum of 0 goes on the wire as 0xFFFF.

    The header's words (ports, length) enter the checksum as numbers,
    beside the pseudo-header, so only the payload is summed as bytes.
    """
    length = HEADER_LEN + len(payload)
    if not with_checksum:
        return _HEADER.pack(sport, dport, length, 0) + payload
    header_words = pseudo_header_sum(src, dst, PROTO_UDP, length) + sport + dport + length
    checksum = internet_checksum(payload, header_words)
    return _HEADER.pack(sport, dport, length, checksum or 0xFFFF) + payload
