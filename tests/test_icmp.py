"""ICMP in the core: echo, errors we send (contents, RFC 1122 restrictions, rate limit), errors we get."""

from __future__ import annotations

import errno

import pytest
from scapy.all import ICMP, IP, UDP, Raw, defragment, fragment
from scapy.utils import checksum as scapy_checksum

from pystack.socket import SO_ERROR, SOL_SOCKET
from pystack.wire.icmp import build_icmp

from .core_helpers import ME, NEIGHBOUR, PEER, SUBNET_BCAST, Bench, raw_ipv4, udp_packet


@pytest.fixture
def bench() -> Bench:
    return Bench()


# ---------------------------------------------------------------- echo


def test_echo_reply_contents(bench):
    payload = bytes(range(56))
    bench.inject(IP(src=PEER, dst=ME, tos=0x10, ttl=3) / ICMP(type=8, id=0x1234, seq=7) / Raw(payload))
    (reply,) = bench.sent()
    assert (reply.src, reply.dst, reply.proto) == (ME, PEER, 1)
    assert (reply[ICMP].type, reply[ICMP].code, reply[ICMP].id, reply[ICMP].seq) == (0, 0, 0x1234, 7)
    assert bytes(reply[ICMP].payload) == payload
    assert reply.ttl == 64 and reply.tos == 0x10  # default TTL; the request's TOS, as Linux
    assert not reply.flags.DF  # Linux's ICMP socket uses IP_PMTUDISC_DONT
    assert scapy_checksum(bytes(reply[ICMP])) == 0
    c = bench.counters.icmp
    assert (c["InMsgs"], c["InEchos"], c["OutMsgs"], c["OutEchoReps"]) == (1, 1, 1, 1)


@pytest.mark.parametrize("dst", [SUBNET_BCAST, "255.255.255.255", "224.0.0.1"])
def test_no_echo_reply_to_broadcast_or_multicast(bench, dst):
    bench.inject(IP(src=PEER, dst=dst) / ICMP(type=8, id=1, seq=1))
    assert bench.out == []
    assert bench.counters.drops["icmp.echo_to_broadcast"] == 1
    assert bench.counters.icmp["OutEchoReps"] == 0


def test_large_echo_is_reassembled_and_the_reply_fragmented(bench):
    payload = bytes(i % 256 for i in range(4000))
    request = IP(src=PEER, dst=ME, id=99) / ICMP(type=8, id=5, seq=6) / Raw(payload)
    for f in fragment(request, fragsize=1480):
        bench.inject(f)
    frags = bench.sent()
    assert len(frags) == 3 and all(len(f) <= 1500 for f in frags)
    (reply,) = defragment(frags)
    reply = IP(bytes(reply))
    assert (reply[ICMP].type, reply[ICMP].id, reply[ICMP].seq) == (0, 5, 6)
    assert bytes(reply[ICMP].payload) == payload


def test_bad_icmp_checksum_and_short_message(bench):
    raw = bytearray(bytes(IP(src=PEER, dst=ME) / ICMP(type=8) / Raw(b"abcd")))
    raw[-1] ^= 1
    bench.inject(bytes(raw))
    bench.inject(raw_ipv4(PEER, ME, 1, b"\x08\x00\x00"))
    c = bench.counters.icmp
    assert (c["InMsgs"], c["InErrors"], c["InCsumErrors"]) == (2, 2, 1)
    assert bench.counters.drops["icmp.checksum"] == 1 and bench.counters.drops["icmp.truncated"] == 1
    assert bench.out == []


# ---------------------------------------------------------------- errors we send


def test_port_unreachable_quotes_the_datagram(bench):
    original = udp_packet(4000, 9999, b"knock knock", tos=0x08)
    bench.inject(original)
    (err,) = bench.sent()
    assert (err.src, err.dst) == (ME, PEER)
    assert (err[ICMP].type, err[ICMP].code) == (3, 3)
    assert bytes(err[ICMP])[8:] == original  # whole IP header + data (it is short)
    assert err.tos == 0xC8  # Linux: precedence "internetwork control" plus the original TOS bits
    assert not err.flags.DF
    assert scapy_checksum(bytes(err[ICMP])) == 0
    assert bench.counters.udp["NoPorts"] == 1
    assert bench.counters.icmp["OutDestUnreachs"] == 1


def test_error_quote_is_capped_at_576_bytes(bench):
    original = udp_packet(4000, 9999, bytes(1200))
    bench.inject(original)
    (err,) = bench.sent()
    assert len(err) == 576
    assert bytes(err[ICMP])[8:] == original[:548]


def test_port_unreachable_for_a_fragmented_datagram_quotes_its_start(bench):
    """The quote is the reassembled datagram (its UDP header), not the last fragment."""
    whole = IP(src=PEER, dst=ME, id=3) / UDP(sport=4000, dport=9999) / Raw(bytes(2000))
    frags = [bytes(f) for f in fragment(whole, fragsize=1000)]
    for f in reversed(frags):
        bench.inject(f)
    (err,) = bench.sent()
    quoted = IP(bytes(err[ICMP])[8:])
    assert quoted.frag == 0 and not quoted.flags.MF and quoted.len == 2028
    assert (quoted[UDP].sport, quoted[UDP].dport) == (4000, 9999)
    assert bytes(err[ICMP])[8 + 20 : 8 + 28] == frags[0][20:28]


def test_protocol_unreachable(bench):
    original = raw_ipv4(PEER, ME, 253, b"experimental")
    bench.inject(original)
    (err,) = bench.sent()
    assert (err[ICMP].type, err[ICMP].code) == (3, 2)
    assert bytes(err[ICMP])[8:] == original
    assert bench.counters.ip["InUnknownProtos"] == 1
    assert bench.counters.drops["ip.unknown_protocol"] == 1


BAD_OPTIONS = b"\x44\x01\x00\x00"


@pytest.mark.parametrize("icmp_type, answered", [(8, True), (0, True), (3, False), (11, False), (12, False), (5, False), (40, False)])
def test_no_error_about_an_icmp_error(bench, icmp_type, answered):
    message = bytes(ICMP(type=icmp_type, code=0) / Raw(bytes(28)))
    bench.inject(raw_ipv4(PEER, ME, 1, message, options=BAD_OPTIONS))
    assert bench.counters.drops["ip.bad_options"] == 1
    assert len(bench.out) == int(answered)


def test_no_error_about_a_non_first_fragment(bench):
    data = bytes(UDP(sport=1, dport=9999)) + bytes(16)
    bench.inject(raw_ipv4(PEER, ME, 17, data, options=BAD_OPTIONS, flags=1, frag=10))
    assert bench.out == []
    bench.inject(raw_ipv4(PEER, ME, 17, data, options=BAD_OPTIONS, flags=1, frag=0))
    assert len(bench.out) == 1
    assert bench.counters.drops["ip.bad_options"] == 2


@pytest.mark.parametrize("dst", [SUBNET_BCAST, "255.255.255.255", "224.0.0.1"])
def test_no_error_to_a_broadcast_destination(bench, dst):
    bench.inject(udp_packet(4000, 9999, b"x", dst=dst))
    bench.inject(raw_ipv4(PEER, dst, 17, bytes(UDP(sport=1, dport=9999)), options=BAD_OPTIONS))
    bench.inject(raw_ipv4(PEER, dst, 253, b"x"))
    assert bench.out == []
    assert bench.counters.udp["IgnoredMulti"] == 1 and bench.counters.udp["NoPorts"] == 0


def test_rate_limit_per_destination(bench):
    def knock(src=PEER):
        bench.inject(udp_packet(4000, 9999, b"x", src=src))

    for _ in range(10):
        knock()
    assert len(bench.sent()) == 6  # a burst of 6
    assert bench.counters.icmp["OutRateLimitHost"] == 4
    knock(NEIGHBOUR)  # another destination has its own bucket
    assert len(bench.sent()) == 1
    bench.clock.advance(1.0)
    knock()
    knock()
    assert len(bench.sent()) == 1  # then one per second
    assert bench.counters.icmp["OutRateLimitHost"] == 5
    bench.clock.advance(10.0)
    for _ in range(10):
        knock()
    assert len(bench.sent()) == 6  # the bucket refilled to its burst
    assert bench.counters.udp["NoPorts"] == 23  # every datagram counted, answered or not


def test_echo_replies_are_not_rate_limited(bench):
    for seq in range(20):
        bench.inject(IP(src=PEER, dst=ME) / ICMP(type=8, id=1, seq=seq))
    assert len(bench.sent()) == 20


# ---------------------------------------------------------------- errors we receive


def port_unreachable_for(sent: bytes, code: int = 3, kind: int = 3) -> bytes:
    return bytes(IP(src=PEER, dst=ME) / ICMP(type=kind, code=code) / Raw(sent[:28]))


def test_port_unreachable_refuses_a_connected_socket(bench):
    stack = bench.stack
    fd = bench.udp_socket()
    stack.connect(fd, (PEER, 4000))
    stack.send(fd, b"hello")
    (sent,) = bench.sent_raw()
    bench.inject(port_unreachable_for(sent))
    with pytest.raises(ConnectionRefusedError) as info:
        stack.recvfrom(fd, 100)
    assert info.value.errno == errno.ECONNREFUSED
    with pytest.raises(BlockingIOError):  # reported once
        stack.recvfrom(fd, 100)
    bench.inject(port_unreachable_for(sent))
    with pytest.raises(ConnectionRefusedError):
        stack.send(fd, b"again")
    assert bench.out == []  # the failed send sent nothing
    stack.send(fd, b"again")
    assert len(bench.sent()) == 1
    assert bench.counters.icmp["InDestUnreachs"] == 2


def test_so_error_returns_the_error_once(bench):
    fd = bench.udp_socket()
    bench.stack.connect(fd, (PEER, 4000))
    bench.stack.send(fd, b"hello")
    (sent,) = bench.sent_raw()
    bench.inject(port_unreachable_for(sent))
    assert bench.stack.getsockopt(fd, SOL_SOCKET, SO_ERROR) == errno.ECONNREFUSED
    assert bench.stack.getsockopt(fd, SOL_SOCKET, SO_ERROR) == 0
    with pytest.raises(BlockingIOError):
        bench.stack.recvfrom(fd, 100)


def test_port_unreachable_ignored_by_an_unconnected_socket(bench):
    fd = bench.udp_socket()
    bench.stack.sendto(fd, b"hello", 0, (PEER, 4000))
    (sent,) = bench.sent_raw()
    bench.inject(port_unreachable_for(sent))
    with pytest.raises(BlockingIOError):
        bench.stack.recvfrom(fd, 100)
    bench.stack.sendto(fd, b"hello", 0, (PEER, 4000))
    assert bench.stack.getsockopt(fd, SOL_SOCKET, SO_ERROR) == 0


def test_soft_errors_are_not_reported(bench):
    """Time exceeded and host unreachable are soft errors: Linux keeps them from the socket."""
    fd = bench.udp_socket()
    bench.stack.connect(fd, (PEER, 4000))
    bench.stack.send(fd, b"hello")
    (sent,) = bench.sent_raw()
    bench.inject(port_unreachable_for(sent, kind=11, code=0))
    bench.inject(port_unreachable_for(sent, kind=3, code=1))
    assert bench.stack.getsockopt(fd, SOL_SOCKET, SO_ERROR) == 0
    assert bench.counters.icmp["InTimeExcds"] == 1


def test_error_for_another_peer_leaves_the_socket_alone(bench):
    fd = bench.udp_socket()
    bench.stack.connect(fd, (PEER, 4000))
    bench.stack.sendto(bench.udp_socket(), b"x", 0, (PEER, 4001))
    (other,) = bench.sent_raw()
    bench.inject(port_unreachable_for(other))
    assert bench.stack.getsockopt(fd, SOL_SOCKET, SO_ERROR) == 0


def test_error_with_a_short_quote_is_counted(bench):
    bench.inject(IP(src=PEER, dst=ME) / ICMP(type=3, code=3) / Raw(bytes(IP(src=ME, dst=PEER))[:20]))
    assert bench.counters.icmp["InErrors"] == 1
    assert bench.counters.drops["icmp.error_quote_malformed"] == 1


def test_error_for_no_socket_is_counted(bench):
    quote = bytes(IP(src=ME, dst=PEER) / UDP(sport=31000, dport=4000))
    bench.inject(IP(src=PEER, dst=ME) / ICMP(type=3, code=3) / Raw(quote))
    assert bench.counters.drops["icmp.error_no_socket"] == 1


# ---------------------------------------------------------------- timestamps, odd sources


def test_timestamp_request_is_answered_as_linux(bench):
    """RFC 792 type 13 -> 14, as Linux's icmp_timestamp: originate copied, receive and
    transmit both the time now in milliseconds since midnight UT (the clock's wall time)."""
    bench.clock.advance(86_400 * 3 + 12.345)  # three days and 12.345 s after a midnight
    bench.inject(IP(src=PEER, dst=ME, tos=0x10) / ICMP(type=13, id=5, seq=9, ts_ori=0x01020304, ts_rx=7, ts_tx=8))
    (reply,) = bench.sent()
    icmp = reply[ICMP]
    assert (reply.src, reply.dst, icmp.type, icmp.code, icmp.id, icmp.seq) == (ME, PEER, 14, 0, 5, 9)
    assert (icmp.ts_ori, icmp.ts_rx, icmp.ts_tx) == (0x01020304, 12_345, 12_345)
    assert scapy_checksum(bytes(icmp)) == 0 and reply.tos == 0x10
    c = bench.counters.icmp
    assert (c["InTimestamps"], c["OutTimestampReps"], c["InOther"], c["OutOther"]) == (1, 1, 0, 0)


@pytest.mark.parametrize("body, dst, drop", [(b"\x01\x02\x03", ME, "icmp.truncated"),
                                             (bytes(12), SUBNET_BCAST, "icmp.timestamp_to_broadcast")])
def test_timestamp_request_not_answered(bench, body, dst, drop):
    bench.inject(IP(src=PEER, dst=dst, proto=1) / Raw(build_icmp(13, 0, 5 << 16 | 9, body)))
    assert bench.out == [] and bench.drops() == {drop: 1}


def test_echo_from_the_subnet_broadcast_address_is_answered(bench):
    """Linux drops only the limited broadcast as a martian source (ipv4_is_lbcast); an echo
    from the subnet's broadcast address is answered, to that address."""
    bench.inject(IP(src=SUBNET_BCAST, dst=ME) / ICMP(type=8, id=1, seq=1))
    (reply,) = bench.sent()
    assert (reply.dst, reply[ICMP].type) == (SUBNET_BCAST, 0)


def test_no_error_to_the_subnet_broadcast_address(bench):
    """RFC 1122 3.2.2: an ICMP error never answers a datagram whose source is a broadcast."""
    bench.inject(IP(src=SUBNET_BCAST, dst=ME) / UDP(sport=9, dport=9999) / Raw(b"x"))
    assert bench.out == [] and bench.counters.icmp["OutDestUnreachs"] == 0
