"""The Internet checksum (RFC 1071), the one routine every protocol uses.

The sum is computed on a big integer: since 2**16 == 1 (mod 0xFFFF), the
one's-complement sum of 16-bit words equals the value of the whole buffer
modulo 0xFFFF, which CPython computes in C. That is much faster than a
loop over words in Python, and it is the same arithmetic.
"""

from __future__ import annotations


def ones_sum(data: bytes, initial: int = 0) -> int:
    """One's-complement 16-bit sum of ``data`` (padded to even length) plus ``initial``."""
    if len(data) & 1:
        data = data + b"\x00"
    return fold(int.from_bytes(data, "big") + initial)


def fold(total: int) -> int:
    """The one's-complement 16-bit value of a sum of 16-bit words (0 only for an all-zero sum).

    Header checksums are computed from their fields this way: a header's
    16-bit words are mostly its fields, so it need not be packed twice.
    """
    if total == 0:
        return 0
    return total % 0xFFFF or 0xFFFF


def internet_checksum(data: bytes, initial: int = 0) -> int:
    """Checksum field value for ``data``; a buffer that includes its correct checksum gives 0."""
    return ~ones_sum(data, initial) & 0xFFFF


def pseudo_header_sum(src: int, dst: int, proto: int, length: int) -> int:
    """Sum of the IPv4 pseudo-header used by UDP and TCP (RFC 768, RFC 9293)."""
    return (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + proto + length
