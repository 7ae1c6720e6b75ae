"""ICMP message codec (RFC 792)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..checksum import internet_checksum, ones_sum
from ..errors import Malformed

ECHO_REPLY = 0
DEST_UNREACH = 3
SOURCE_QUENCH = 4
REDIRECT = 5
ECHO_REQUEST = 8
TIME_EXCEEDED = 11
PARAM_PROBLEM = 12
TIMESTAMP_REQUEST = 13
TIMESTAMP_REPLY = 14

# Destination unreachable codes.
NET_UNREACH = 0
HOST_UNREACH = 1
PROTO_UNREACH = 2
PORT_UNREACH = 3
FRAG_NEEDED = 4
# Time exceeded codes.
EXC_TTL = 0
EXC_FRAGTIME = 1

ERROR_TYPES = frozenset({DEST_UNREACH, SOURCE_QUENCH, REDIRECT, TIME_EXCEEDED, PARAM_PROBLEM})

_HEADER = struct.Struct("!BBHI")
HEADER_LEN = 8


@dataclass(slots=True)
class IcmpMessage:
    """A message's type, code, rest of header (one 32-bit number) and payload."""

    kind: int
    code: int
    rest: int
    payload: bytes


def parse_icmp(data: bytes) -> IcmpMessage:
    """Validate length and checksum; raises Malformed."""
    if len(data) < HEADER_LEN:
        raise Malformed("truncated")
    if ones_sum(data) != 0xFFFF:  # a correct checksum sums to 0xFFFF
        raise Malformed("checksum")
    kind, code, _csum, rest = _HEADER.unpack_from(data)
    return IcmpMessage(kind, code, rest, data[HEADER_LEN:])


def build_icmp(kind: int, code: int, rest: int, payload: bytes) -> bytes:
    """A message with its checksum; the header's words are summed as numbers (packed once)."""
    checksum = internet_checksum(payload, (kind << 8 | code) + (rest >> 16) + (rest & 0xFFFF))
    return _HEADER.pack(kind, code, checksum, rest) + payload
