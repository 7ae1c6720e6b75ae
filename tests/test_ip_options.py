"""IP options echoed in ICMP replies (RFC 1122 3.2.2.6) and checked on input, as Linux's
ip_options_compile / ip_options_echo / ip_options_build do. Expected bytes are written out
from the RFCs' layouts, never computed with pystack's own code."""

from __future__ import annotations

import pytest
from scapy.all import ICMP, IP, UDP, Raw, defragment

from .core_helpers import ME, PEER, Bench, raw_ipv4

ME_BYTES = bytes([198, 18, 0, 2])
FAR_BYTES = bytes([198, 18, 7, 9])
NOW_MS = 12_345  # the virtual clock's wall time below, in ms since midnight
STAMP = NOW_MS.to_bytes(4, "big")


@pytest.fixture
def bench() -> Bench:
    b = Bench()
    b.clock.advance(86_400 + NOW_MS / 1000)
    return b


def echo_with(bench: Bench, options: bytes, size: int = 8) -> list[IP]:
    icmp = bytes(ICMP(type=8, id=7, seq=1) / Raw(bytes(size)))
    bench.inject(raw_ipv4(PEER, ME, 1, icmp, options=options))
    return bench.sent()


def reply_options(reply: IP) -> bytes:
    raw = bytes(reply)
    return raw[20 : (raw[0] & 0xF) * 4]


@pytest.mark.parametrize(
    "sent, echoed",
    [
        # Record Route, two free slots: the receiving address, then the reply's (Linux: ptr 12).
        (b"\x07\x0b\x04" + bytes(8) + b"\x00", b"\x07\x0b\x0c" + ME_BYTES * 2 + b"\x00"),
        # One free slot: recorded on input, no room left for the reply.
        (b"\x07\x07\x04" + bytes(4) + b"\x00", b"\x07\x07\x08" + ME_BYTES + b"\x00"),
        # Full on arrival: echoed as it came.
        (b"\x07\x07\x08" + FAR_BYTES + b"\x00", b"\x07\x07\x08" + FAR_BYTES + b"\x00"),
        # Timestamps only, two slots: stamped on input and on output (Linux: ptr 13).
        (b"\x44\x0c\x05\x00" + bytes(8), b"\x44\x0c\x0d\x00" + STAMP * 2),
        # Full on arrival: the overflow count goes up by one.
        (b"\x44\x08\x09\x20" + bytes(4), b"\x44\x08\x09\x30" + bytes(4)),
        # Address and timestamp, two entries.
        (b"\x44\x14\x05\x01" + bytes(16), b"\x44\x14\x15\x01" + (ME_BYTES + STAMP) * 2),
        # Prespecified: this host, then another: stamped once.
        (b"\x44\x14\x05\x03" + ME_BYTES + bytes(4) + FAR_BYTES + bytes(4),
         b"\x44\x14\x0d\x03" + ME_BYTES + STAMP + FAR_BYTES + bytes(4)),
        # Prespecified, another host first: untouched.
        (b"\x44\x0c\x05\x03" + FAR_BYTES + bytes(4), b"\x44\x0c\x05\x03" + FAR_BYTES + bytes(4)),
        # Record Route after Timestamp in the request: Linux echoes Record Route first; NOPs go.
        (b"\x01\x44\x08\x05\x00" + bytes(4) + b"\x07\x07\x04" + bytes(4) + b"\x00" * 4,
         b"\x07\x07\x08" + ME_BYTES + b"\x44\x08\x09\x00" + STAMP + b"\x00"),
        # Router Alert is not echoed.
        (b"\x94\x04\x00\x00", b""),
    ],
)
def test_echo_reply_echoes_record_route_and_timestamp(bench, sent, echoed):
    (reply,) = echo_with(bench, sent)
    assert (reply.src, reply.dst, reply[ICMP].type) == (ME, PEER, 0)
    assert reply_options(reply) == echoed


def test_no_reply_when_the_echoed_option_has_no_room_for_its_entry(bench):
    """Record Route of 9 bytes: input records at 4, the pointer (8) is then in range but a
    second address does not fit: Linux's ip_options_echo fails and nothing is sent."""
    assert echo_with(bench, b"\x07\x09\x04" + bytes(6) + b"\x00" * 3) == []
    assert bench.drops() == {"icmp.options_not_echoed": 1}


def test_errors_echo_the_options_too(bench):
    """icmp_send echoes the offending datagram's options as a reply does."""
    udp = bytes(UDP(sport=9, dport=9999) / Raw(b"x"))
    bench.inject(raw_ipv4(PEER, ME, 17, udp, options=b"\x07\x0b\x04" + bytes(8) + b"\x00"))
    (error,) = bench.sent()
    assert (error[ICMP].type, error[ICMP].code) == (3, 3)
    assert reply_options(error) == b"\x07\x0b\x0c" + ME_BYTES * 2 + b"\x00"


def test_fragmented_reply_keeps_the_options_in_the_first_fragment_only(bench):
    """Record Route has no copied flag: later fragments carry NOPs in its place (the header
    length unchanged), as Linux's ip_options_fragment."""
    frags = echo_with(bench, b"\x07\x0b\x04" + bytes(8) + b"\x00", size=1600)
    assert len(frags) == 2
    assert reply_options(frags[0]) == b"\x07\x0b\x0c" + ME_BYTES * 2 + b"\x00"
    assert reply_options(frags[1]) == b"\x01" * 11 + b"\x00"
    assert all(len(f) <= 1500 for f in frags)
    (whole,) = defragment([IP(bytes(f)) for f in frags])
    assert bytes(IP(bytes(whole))[ICMP].payload) == bytes(1600)


@pytest.mark.parametrize(
    "options, pointer",
    [
        (b"\x07\x0b\x03" + bytes(8) + b"\x00", 22),  # Record Route pointer below 4
        (b"\x07\x02\x00\x00", 21),  # Record Route too short for a pointer
        (b"\x44\x0c\x04\x00" + bytes(8), 22),  # Timestamp pointer below 5
        (b"\x44\x0a\x05\x01" + bytes(6) + b"\x00\x00", 22),  # address+time entry does not fit
        (b"\x44\x08\x09\xf0" + bytes(4), 23),  # full, and the overflow count spent
        (b"\x07\x03\x04\x07\x03\x04\x00\x00", 23),  # a second Record Route: its type byte
    ],
)
def test_malformed_record_options_get_a_parameter_problem(bench, options, pointer):
    bench.inject(raw_ipv4(PEER, ME, 17, bytes(UDP(sport=1, dport=2)), options=options))
    (reply,) = bench.sent()
    assert (reply[ICMP].type, reply[ICMP].ptr) == (12, pointer)
    assert reply_options(reply) == b""  # a parameter problem echoes nothing
    assert bench.drops() == {"ip.bad_options": 1}
