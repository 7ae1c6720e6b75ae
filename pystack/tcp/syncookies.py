"""SYN cookies (RFC 4987 3.6), as Linux's net/ipv4/syncookies.c makes and checks them.

When the SYN queue is full, the listener answers a SYN without keeping any
state: the SYN-ACK's sequence number encodes the peer's MSS (an index in a
table) and a one-minute counter under a keyed hash of the connection, and
with timestamps the low bits of the TS value carry the peer's window scale
and SACK permission (cookie_init_timestamp). The ACK that completes the
handshake echoes both; a valid one (counter from the last two minutes)
rebuilds the connection.
"""

from __future__ import annotations

import hashlib
import struct

from .seq import MASK, seq_add, seq_gt

MSS_TABLE = (536, 1300, 1440, 1460)  # Linux's msstab: the MSS values a cookie can say
COOKIE_BITS = 24  # the low bits hold hash + MSS index, the high bits the counter
COOKIE_MASK = (1 << COOKIE_BITS) - 1
MAX_AGE = 2  # counters (minutes) a cookie stays valid for (Linux MAX_SYNCOOKIE_AGE)
VALID_AFTER_OVERFLOW = 120.0  # seconds after the queue last overflowed that ACKs are checked (TCP_SYNCOOKIE_VALID)
TS_BITS = 6  # low bits of the TS value that carry options
TS_WSCALE_MASK = 0x0F  # this value: no window scaling
TS_SACK = 0x10


def cookie_time(now: float) -> int:
    """The counter: minutes (Linux tcp_cookie_time)."""
    return int(now // 60)


def cookie_hash(key: bytes, saddr: int, daddr: int, sport: int, dport: int, count: int, c: int) -> int:
    data = struct.pack("!IIHHIB", saddr, daddr, sport, dport, count & MASK, c)
    return int.from_bytes(hashlib.blake2s(data, key=key, digest_size=4).digest(), "big")


def mss_index(mss: int) -> int:
    """The largest table entry not above the peer's MSS."""
    index = len(MSS_TABLE) - 1
    while index and mss < MSS_TABLE[index]:
        index -= 1
    return index


def make_cookie(key: bytes, saddr: int, daddr: int, sport: int, dport: int, peer_isn: int, mss: int,
                now: float) -> int:
    """Our ISN for a SYN from saddr:sport to daddr:dport (Linux secure_tcp_syn_cookie)."""
    count = cookie_time(now)
    low = (cookie_hash(key, saddr, daddr, sport, dport, count, 1) + mss_index(mss)) & COOKIE_MASK
    return (cookie_hash(key, saddr, daddr, sport, dport, 0, 0) + peer_isn + (count << COOKIE_BITS) + low) & MASK


def check_cookie(key: bytes, saddr: int, daddr: int, sport: int, dport: int, peer_isn: int, cookie: int,
                 now: float) -> int | None:
    """The MSS a returning cookie encodes, None if it is not one of ours from the last two minutes
    (Linux check_tcp_syn_cookie)."""
    count = cookie_time(now)
    cookie = (cookie - cookie_hash(key, saddr, daddr, sport, dport, 0, 0) - peer_isn) & MASK
    age = (count - (cookie >> COOKIE_BITS)) & (MASK >> COOKIE_BITS)
    if age >= MAX_AGE:
        return None
    index = (cookie - cookie_hash(key, saddr, daddr, sport, dport, count - age, 1)) & COOKIE_MASK
    return MSS_TABLE[index] if index < len(MSS_TABLE) else None


def cookie_timestamp(ts: int, wscale: int | None, sack: bool) -> int:
    """A TS value at or below ``ts`` whose low bits say the peer's options (cookie_init_timestamp)."""
    options = (TS_WSCALE_MASK if wscale is None else wscale) | (TS_SACK if sack else 0)
    value = (ts >> TS_BITS << TS_BITS) | options
    return seq_add(value, -(1 << TS_BITS)) if seq_gt(value, ts) else value


def timestamp_options(ts_ecr: int) -> tuple[int | None, bool]:
    """(window scale or None, SACK permitted) from the TS echo of a cookie's ACK (cookie_timestamp_decode)."""
    wscale = ts_ecr & TS_WSCALE_MASK
    return (None if wscale == TS_WSCALE_MASK else wscale), bool(ts_ecr & TS_SACK)
