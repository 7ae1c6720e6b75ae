"""IPv4 in the core: input validation and drop accounting, reassembly, fragmentation, routes, PMTU."""

from __future__ import annotations

import errno
import random

import pytest
from scapy.all import (
    ICMP,
    IP,
    UDP,
    IPOption_LSRR,
    IPOption_RR,
    IPOption_SSRR,
    Raw,
    defragment,
    fragment,
)

from pystack.addr import aton
from pystack.route import MIN_PMTU
from pystack.socket import (
    IP_MTU_DISCOVER,
    IP_PMTUDISC_DO,
    IP_PMTUDISC_DONT,
    IPPROTO_IP,
    SKB_OVERHEAD,
)

from .core_helpers import FAR, ME, PEER, SUBNET_BCAST, Bench, raw_ipv4, udp_packet


@pytest.fixture
def bench() -> Bench:
    return Bench()


def only_drop(bench: Bench, reason: str) -> None:
    assert bench.drops() == {reason: 1}, bench.counters.format()


# ---------------------------------------------------------------- input validation


GOOD = udp_packet(1000, 7, b"payload")


def _set(packet: bytes, at: int, value: bytes) -> bytes:
    return packet[:at] + value + packet[at + len(value) :]


@pytest.mark.parametrize(
    "packet, reason, mibs",
    [
        (bytes(IP(version=6, src=PEER, dst=ME) / UDP()), "ip.version", {"InHdrErrors": 1}),
        (bytes(IP(ihl=4, src=PEER, dst=ME) / UDP()), "ip.header_length", {"InHdrErrors": 1}),
        (_set(GOOD[:24], 0, b"\x4f"), "ip.header_length", {"InHdrErrors": 1}),
        (bytes(IP(len=19, src=PEER, dst=ME) / UDP()), "ip.total_length", {"InHdrErrors": 1}),
        (bytes(IP(len=400, src=PEER, dst=ME) / UDP()), "ip.truncated", {"InTruncatedPkts": 1}),
        # Shorter than a header: Linux counts InHdrErrors (pskb_may_pull fails in ip_rcv_core).
        (GOOD[:19], "ip.too_short", {"InHdrErrors": 1}),
        (b"", "ip.too_short", {"InHdrErrors": 1}),
        (bytes(IP(chksum=0x1234, src=PEER, dst=ME) / UDP()), "ip.checksum",
         {"InCsumErrors": 1, "InHdrErrors": 1}),
    ],
    ids=["version", "ihl<5", "ihl>len", "total<ihl", "total>len", "short", "empty", "checksum"],
)
def test_header_errors_counted_once(bench, packet, reason, mibs):
    bench.inject(packet)
    only_drop(bench, reason)
    for mib, n in mibs.items():
        assert bench.counters.ip[mib] == n
    for mib in {"InHdrErrors", "InCsumErrors", "InTruncatedPkts", "InAddrErrors"} - set(mibs):
        assert bench.counters.ip[mib] == 0, mib
    assert bench.counters.ip["InReceives"] == 1
    assert bench.counters.ip["InDelivers"] == 0
    assert bench.out == []


@pytest.mark.parametrize(
    "options, pointer",
    [
        (b"\x44\x01\x00\x00", 20),  # timestamp option with length 1
        (b"\x01\x07\x09\x04\x00\x00\x00\x00", 21),  # NOP, then RR claiming 9 bytes in 7
        (b"\x01\x01\x01\x07", 23),  # option type in the last byte, no room for its length
    ],
)
def test_bad_options_parameter_problem_points_at_the_option(bench, options, pointer):
    """Linux's ip_options_compile points at the offending option's type byte."""
    packet = raw_ipv4(PEER, ME, 17, bytes(UDP(sport=1, dport=2)), options=options)
    bench.inject(packet)
    only_drop(bench, "ip.bad_options")
    assert bench.counters.ip["InHdrErrors"] == 1
    (reply,) = bench.sent()
    assert (reply.src, reply.dst) == (ME, PEER)
    assert (reply[ICMP].type, reply[ICMP].code, reply[ICMP].ptr) == (12, 0, pointer)
    assert bytes(reply[ICMP])[8 : 8 + len(packet)] == packet  # quotes the offending datagram
    assert bench.counters.icmp["OutParmProbs"] == 1


def test_good_options_are_accepted(bench):
    fd = bench.udp_socket(7)
    bench.inject(IP(src=PEER, dst=ME, options=[IPOption_RR(routers=["198.18.0.9"])]) / UDP(sport=9, dport=7) / Raw(b"x"))
    assert bench.stack.recvfrom(fd, 10) == (b"x", (PEER, 9))
    assert bench.drops() == {}


@pytest.mark.parametrize("option", [IPOption_LSRR(routers=["198.18.0.9"]), IPOption_SSRR(routers=["198.18.0.9"])])
def test_source_routed_packets_dropped(bench, option):
    bench.udp_socket(7)
    bench.inject(IP(src=PEER, dst=ME, options=[option]) / UDP(sport=9, dport=7) / Raw(b"x"))
    only_drop(bench, "ip.source_route")
    assert bench.counters.ip["InDiscards"] == 1
    assert bench.counters.udp["InDatagrams"] == 0


@pytest.mark.parametrize("src", ["224.0.0.5", "255.255.255.255", "0.0.0.0", "127.0.0.1", ME, "240.0.0.1"])
def test_martian_source(bench, src):
    bench.udp_socket(7)
    bench.inject(IP(src=src, dst=ME) / UDP(sport=9, dport=7))
    only_drop(bench, "ip.martian_source")
    assert bench.counters.ip["InAddrErrors"] == 1
    assert bench.out == []


@pytest.mark.parametrize("src", [ME, "127.0.0.1"])
def test_no_parameter_problem_to_a_spoofed_own_source(bench, src):
    """Addresses are checked before options, as Linux: no ICMP to ourselves or loopback."""
    bench.inject(raw_ipv4(src, ME, 17, bytes(UDP(sport=1, dport=2)), options=b"\x44\x01\x00\x00"))
    only_drop(bench, "ip.martian_source")
    assert bench.out == [] and bench.stack.loopback.rx_packets == 0


@pytest.mark.parametrize("dst", ["127.0.0.1", "0.0.0.0"])
def test_martian_destination(bench, dst):
    bench.inject(IP(src=PEER, dst=dst) / UDP(sport=9, dport=7))
    only_drop(bench, "ip.martian_destination")
    assert bench.counters.ip["InAddrErrors"] == 1


@pytest.mark.parametrize("dst", ["198.18.0.9", FAR])
def test_not_for_us(bench, dst):
    bench.inject(IP(src=PEER, dst=dst) / UDP(sport=9, dport=7))
    only_drop(bench, "ip.not_for_us")
    assert bench.counters.ip["InAddrErrors"] == 1
    assert bench.out == []  # a host does not forward


def test_multicast_only_for_joined_groups(bench):
    fd = bench.udp_socket(7)
    bench.inject(IP(src=PEER, dst="239.1.2.3") / UDP(sport=9, dport=7) / Raw(b"a"))
    only_drop(bench, "ip.multicast_not_joined")
    bench.inject(IP(src=PEER, dst="224.0.0.1") / UDP(sport=9, dport=7) / Raw(b"b"))  # all-hosts
    assert bench.stack.recvfrom(fd, 10) == (b"b", (PEER, 9))


def test_link_padding_after_total_length_is_trimmed(bench):
    echo = bytes(IP(src=PEER, dst=ME) / ICMP(id=1, seq=2) / Raw(b"ping"))
    bench.inject(echo + b"\x00" * 20)
    (reply,) = bench.sent()
    assert reply[ICMP].type == 0 and bytes(reply[ICMP].payload) == b"ping"
    fd = bench.udp_socket(7)
    bench.inject(udp_packet(9, 7, b"abc") + b"\xee" * 30)
    assert bench.stack.recvfrom(fd, 100) == (b"abc", (PEER, 9))
    assert bench.drops() == {}


@pytest.mark.parametrize("ttl", [0, 1])
def test_ttl_0_and_1_are_delivered_locally(bench, ttl):
    """RFC 1122 3.2.1.7: a host must not discard a datagram it receives with TTL 0 or 1."""
    fd = bench.udp_socket(7)
    bench.inject(udp_packet(9, 7, b"low", ttl=ttl))
    assert bench.stack.recvfrom(fd, 10) == (b"low", (PEER, 9))
    bench.inject(IP(src=PEER, dst=ME, ttl=ttl) / ICMP(id=3, seq=4))
    assert bench.sent()[0][ICMP].type == 0
    assert bench.drops() == {}


# ---------------------------------------------------------------- reassembly


def udp_fragments(payload: bytes, dport: int = 7, ident: int = 77, fragsize: int = 1000) -> list[bytes]:
    whole = IP(src=PEER, dst=ME, id=ident) / UDP(sport=9, dport=dport) / Raw(payload)
    return [bytes(f) for f in fragment(whole, fragsize=fragsize)]


def udp_bytes(payload: bytes, dport: int = 7, ident: int = 77) -> bytes:
    """The UDP datagram (header + payload) as it would be fragmented, checksum included."""
    return bytes(IP(src=PEER, dst=ME, id=ident) / UDP(sport=9, dport=dport) / Raw(payload))[20:]


def frag(data: bytes, offset: int, more: bool, ident: int = 77, proto: int = 17, src: str = PEER) -> bytes:
    assert offset % 8 == 0
    return bytes(IP(src=src, dst=ME, id=ident, proto=proto, flags="MF" if more else 0, frag=offset // 8) / Raw(data))


PAYLOAD = bytes(random.Random(5).randbytes(3000))


@pytest.mark.parametrize("order", ["in_order", "reversed", "shuffled", "last_first"])
def test_reassembly_any_order(bench, order):
    fd = bench.udp_socket(7)
    frags = udp_fragments(PAYLOAD)
    assert len(frags) == 4
    if order == "reversed":
        frags.reverse()
    elif order == "shuffled":
        random.Random(3).shuffle(frags)
    elif order == "last_first":
        frags = frags[-1:] + frags[:-1]
    for i, f in enumerate(frags):
        bench.inject(f)
        if i < len(frags) - 1:
            with pytest.raises(BlockingIOError):
                bench.stack.recvfrom(fd, 4000)
    assert bench.stack.recvfrom(fd, 4000) == (PAYLOAD, (PEER, 9))
    ip = bench.counters.ip
    assert (ip["ReasmReqds"], ip["ReasmQueued"], ip["ReasmOKs"], ip["ReasmFails"]) == (4, 4, 1, 0)
    assert (ip["InReceives"], ip["InDelivers"]) == (4, 1)
    assert bench.stack.reassembler.queues == {} and bench.stack.reassembler.bytes == 0
    assert bench.drops() == {}


def test_duplicate_fragments_are_ignored(bench):
    fd = bench.udp_socket(7)
    frags = udp_fragments(PAYLOAD)
    for f in [frags[0], frags[1], frags[1], frags[0], frags[2], frags[3], frags[3]]:
        bench.inject(f)
    assert bench.stack.recvfrom(fd, 4000)[0] == PAYLOAD
    # The last duplicate came after completion: it starts a new queue, not a second datagram.
    assert bench.drops() == {"ip.frag_duplicate": 2}
    assert bench.counters.ip["ReasmOKs"] == 1
    with pytest.raises(BlockingIOError):
        bench.stack.recvfrom(fd, 4000)


@pytest.mark.parametrize("offset, length", [(0, 8), (8, 8), (0, 16), (8, 24)])
def test_fragment_inside_a_run_is_ignored_whatever_its_bytes(bench, offset, length):
    """Linux's IPFRAG_DUP: a fragment wholly inside a run already held is dropped and the
    first copy's bytes win; the datagram still completes."""
    fd = bench.udp_socket(7)
    data = udp_bytes(b"z" * 40)  # 48 bytes of UDP
    bench.inject(frag(data[0:16], 0, True))
    bench.inject(frag(data[16:32], 16, True))  # in order at the tail: one run [0, 32)
    bench.inject(frag(b"\xee" * length, offset, True))
    assert bench.drops() == {"ip.frag_duplicate": 1}
    bench.inject(frag(data[32:], 32, False))
    assert bench.stack.recvfrom(fd, 100) == (b"z" * 40, (PEER, 9))


def test_fragment_spanning_two_runs_is_an_overlap(bench):
    """Fragments that came out of order are separate runs, even when adjacent: a fragment
    across both is not inside one run, so it discards the datagram (as Linux)."""
    bench.udp_socket(7)
    data = udp_bytes(b"z" * 40)
    bench.inject(frag(data[16:32], 16, True))
    bench.inject(frag(data[0:16], 0, True))  # before the tail: a run of its own
    bench.inject(frag(data[8:24], 8, True))
    only_drop(bench, "ip.frag_overlap")
    assert bench.stack.reassembler.queues == {}


@pytest.mark.parametrize(
    "second",
    [
        (8, 16, True),  # starts inside the first piece, ends beyond it
        (0, 32, True),  # covers the first piece
    ],
)
def test_overlapping_fragment_discards_the_whole_datagram(bench, second):
    fd = bench.udp_socket(7)
    data = udp_bytes(b"z" * 40)  # 48 bytes of UDP
    offset, length, more = second
    bench.inject(frag(data[0:16], 0, True))
    bench.inject(frag(bytes(length), offset, more))
    only_drop(bench, "ip.frag_overlap")
    assert bench.counters.ip["ReasmFails"] == 1
    assert bench.stack.reassembler.queues == {} and bench.stack.reassembler.bytes == 0
    # The rest of the original datagram alone does not complete anything.
    bench.inject(frag(data[16:], 16, False))
    with pytest.raises(BlockingIOError):
        bench.stack.recvfrom(fd, 100)
    assert bench.counters.ip["ReasmOKs"] == 0


def test_inconsistent_end_discards(bench):
    data = udp_bytes(b"z" * 40)
    bench.inject(frag(data[16:24], 16, False, ident=78))  # last fragment: the datagram ends at 24
    bench.inject(frag(data[24:], 24, False, ident=78))  # a second, different end
    only_drop(bench, "ip.frag_inconsistent_end")
    bench.inject(frag(data[16:24], 16, False, ident=79))
    bench.inject(frag(data[24:40], 24, True, ident=79))  # data beyond the known end
    assert bench.drops() == {"ip.frag_inconsistent_end": 2}
    assert bench.counters.ip["ReasmFails"] == 2 and bench.stack.reassembler.queues == {}


def test_reassembly_timeout_sends_time_exceeded_when_first_fragment_came(bench):
    bench.udp_socket(7)
    frags = udp_fragments(PAYLOAD)
    bench.inject(frags[0])
    bench.inject(frags[2])
    assert bench.stack.next_deadline() == 30.0
    bench.clock.advance(29)
    bench.stack.run_timers()
    assert bench.out == [] and len(bench.stack.reassembler.queues) == 1
    bench.clock.advance(2)
    bench.stack.run_timers()
    (err,) = bench.sent()
    assert (err.src, err.dst) == (ME, PEER)
    assert (err[ICMP].type, err[ICMP].code) == (11, 1)
    quoted = bytes(err[ICMP])[8:]
    first = IP(frags[0])
    assert IP(quoted[:20]).id == first.id and IP(quoted[:20]).frag == 0
    # As Linux's ip_expire: the first fragment quoted as far as a 576-byte error allows.
    assert len(err) == 576 and quoted[20:] == frags[0][20:20 + 576 - 48]
    ip = bench.counters.ip
    assert (ip["ReasmTimeout"], ip["ReasmFails"], ip["ReasmOKs"]) == (1, 1, 0)
    assert bench.stack.reassembler.queues == {} and bench.stack.reassembler.bytes == 0
    assert bench.stack.next_deadline() is None


def test_reassembly_timeout_silent_without_first_fragment(bench):
    frags = udp_fragments(PAYLOAD)
    bench.inject(frags[1])
    bench.inject(frags[3])
    bench.clock.advance(31)
    bench.stack.run_timers()
    assert bench.out == []
    assert bench.counters.ip["ReasmTimeout"] == 1
    assert bench.counters.icmp["OutTimeExcds"] == 0


def test_reassembly_too_large(bench):
    bench.inject(frag(b"x" * 16, 65528, False))
    only_drop(bench, "ip.frag_too_large")
    assert bench.stack.reassembler.queues == {}


def test_reassembly_too_large_with_first_fragment_options():
    """The reassembled size counts the first fragment's header (Linux: ip_frag_reasm)."""
    bench = Bench()
    last_off = 65504  # 65504 + 8 + 20 fits, with a 60-byte first header it does not
    bench.inject(frag(b"y" * 8, last_off, False))
    first = raw_ipv4(PEER, ME, 17, b"x" * 8, options=b"\x01" * 40, ident=77, flags=1)
    bench.inject(first)
    assert bench.drops() == {}
    bench.inject(frag(b"\x00" * (last_off - 8), 8, True))  # fills the gap: complete, but oversize
    only_drop(bench, "ip.frag_too_large")
    assert bench.counters.ip["ReasmOKs"] == 0 and bench.stack.reassembler.queues == {}


def test_reassembly_limit_on_queues(bench):
    fd = bench.udp_socket(7)
    bench.stack.reassembler.max_queues = 3
    frags = {ident: udp_fragments(PAYLOAD, ident=ident) for ident in range(1, 6)}
    for ident in range(1, 6):
        bench.inject(frags[ident][0])
        bench.clock.advance(0.1)
    assert len(bench.stack.reassembler.queues) == 3
    assert bench.counters.ip["ReasmFails"] == 2  # the two oldest were evicted
    for f in frags[5][1:]:
        bench.inject(f)
    assert bench.stack.recvfrom(fd, 4000)[0] == PAYLOAD
    for f in frags[1][1:]:  # its first fragment was evicted: no datagram
        bench.inject(f)
    with pytest.raises(BlockingIOError):
        bench.stack.recvfrom(fd, 4000)


def test_reassembly_limit_on_memory(bench):
    """Fragments are charged their truesize: data plus SKB_OVERHEAD each (as Linux charges skbs)."""
    r = bench.stack.reassembler
    r.max_bytes = 3000 + 2 * SKB_OVERHEAD
    a = udp_fragments(PAYLOAD, ident=1)
    b = udp_fragments(PAYLOAD, ident=2, fragsize=1400)
    bench.inject(a[0])
    bench.inject(a[1])
    assert r.bytes == 2000 + 2 * SKB_OVERHEAD
    bench.clock.advance(1)
    bench.inject(b[0])  # needs room: the older queue goes
    assert list(r.queues) == [(aton(PEER), aton(ME), 17, 2)] and r.bytes == 1400 + SKB_OVERHEAD
    bench.inject(b[1])
    assert r.bytes == 2800 + 2 * SKB_OVERHEAD
    bench.inject(b[2])  # 208 more bytes and a third overhead: over the limit
    only_drop(bench, "ip.frag_memory")
    assert r.queues == {} and r.bytes == 0
    assert bench.counters.ip["ReasmFails"] == 2


def test_non_multiple_of_8_middle_fragment_is_trimmed(bench):
    """A fragment with MF carries 8-byte multiples; extra bytes are cut (Linux: end &= ~7)."""
    fd = bench.udp_socket(7)
    data = udp_bytes(b"q" * 100)
    bench.inject(frag(data[0:48] + b"XYZ", 0, True))
    bench.inject(frag(data[48:], 48, False))
    assert bench.stack.recvfrom(fd, 200)[0] == b"q" * 100
    assert bench.drops() == {}


def test_tiny_middle_fragment_dropped(bench):
    bench.inject(frag(b"abc", 8, True))
    only_drop(bench, "ip.frag_empty")


# ---------------------------------------------------------------- output and fragmentation


def test_large_send_is_fragmented_and_reassembles(bench):
    fd = bench.udp_socket()
    data = bytes(random.Random(1).randbytes(4000))
    bench.stack.sendto(fd, data, 0, (PEER, 9))
    frags = bench.sent()
    assert [len(f) for f in frags] == [1500, 1500, 1068]
    assert all(not f.flags.DF for f in frags)
    assert [bool(f.flags.MF) for f in frags] == [True, True, False]
    assert len({f.id for f in frags}) == 1
    assert [f.frag * 8 for f in frags] == [0, 1480, 2960]
    (whole,) = defragment(frags)
    whole = IP(bytes(whole))
    assert bytes(whole[UDP].payload) == data
    assert (whole.src, whole.dst, whole[UDP].dport) == (ME, PEER, 9)
    check = whole.copy()
    del check[UDP].chksum
    assert IP(bytes(check))[UDP].chksum == whole[UDP].chksum
    ip = bench.counters.ip
    assert (ip["OutRequests"], ip["FragOKs"], ip["FragCreates"]) == (1, 1, 3)


def test_pmtudisc_do_refuses_to_fragment(bench):
    fd = bench.udp_socket()
    bench.stack.setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
    with pytest.raises(OSError) as info:
        bench.stack.sendto(fd, bytes(4000), 0, (PEER, 9))
    assert info.value.errno == errno.EMSGSIZE
    assert bench.out == [] and bench.counters.ip["FragFails"] == 1
    bench.stack.sendto(fd, bytes(1472), 0, (PEER, 9))  # exactly the MTU
    (p,) = bench.sent()
    assert len(p) == 1500 and p.flags.DF


def test_small_datagram_has_df_by_default(bench):
    """Linux's default IP_PMTUDISC_WANT: DF on datagrams that fit; IP ID 0 when unconnected."""
    fd = bench.udp_socket()
    bench.stack.sendto(fd, b"x", 0, (PEER, 9))
    (p,) = bench.sent()
    assert p.flags.DF and not p.flags.MF and p.id == 0
    bench.stack.setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
    bench.stack.sendto(fd, b"x", 0, (PEER, 9))
    (p,) = bench.sent()
    assert not p.flags.DF


def test_connected_socket_numbers_its_df_datagrams(bench):
    fd = bench.udp_socket()
    bench.stack.connect(fd, (PEER, 9))
    for _ in range(3):
        bench.stack.send(fd, b"x")
    ids = [p.id for p in bench.sent()]
    assert ids[1] == (ids[0] + 1) & 0xFFFF and ids[2] == (ids[0] + 2) & 0xFFFF


# ---------------------------------------------------------------- routes


def test_route_longest_prefix_match_and_default(bench):
    stack = bench.stack
    stack.add_interface("pst1", "198.19.0.2", 24, sink=bench.out.append)
    routes = stack.routes
    assert routes.lookup(aton("198.18.0.77")).iface.name == "pst0"
    assert routes.lookup(aton("198.18.0.77")).gateway == 0
    default = routes.lookup(aton(FAR))
    assert default.prefixlen == 0 and default.gateway == aton(PEER)
    stack.add_route("198.18.7.0", 24, "pst1", gateway="198.19.0.1")
    stack.add_route("198.18.0.0", 16, "pst0", gateway=PEER)
    assert routes.lookup(aton(FAR)).prefixlen == 24
    assert routes.lookup(aton(FAR)).iface.name == "pst1"
    assert routes.lookup(aton("198.18.9.9")).prefixlen == 16
    assert routes.lookup(aton("198.19.0.9")).iface.name == "pst1"
    assert routes.lookup(aton(ME)).kind == "local"
    assert routes.lookup(aton(SUBNET_BCAST)).kind == "broadcast"
    routes.remove(0, 0)
    routes.remove(aton("198.18.0.0"), 16)
    assert routes.lookup(aton("198.18.200.1")) is None


def test_route_generation_bumps_on_every_change(bench):
    routes = bench.stack.routes
    g = routes.generation
    bench.stack.add_route("198.18.64.0", 18, "pst0", gateway=PEER)
    assert routes.generation == g + 1
    routes.remove(aton("198.18.64.0"), 18)
    assert routes.generation == g + 2
    assert routes.learn_pmtu(aton(FAR), 1000, bench.clock.now())
    assert routes.generation == g + 3
    assert not routes.learn_pmtu(aton(FAR), 1200, bench.clock.now())  # not lower: no change
    assert routes.generation == g + 3


def test_no_route_gives_enetunreach(bench):
    bench.stack.routes.remove(0, 0)
    fd = bench.udp_socket()
    with pytest.raises(OSError) as info:
        bench.stack.sendto(fd, b"x", 0, (FAR, 9))
    assert info.value.errno == errno.ENETUNREACH
    assert bench.counters.ip["OutNoRoutes"] == 1


def test_connected_socket_follows_route_changes(bench):
    pst1_out: list[bytes] = []
    bench.stack.add_interface("pst1", "198.19.0.2", 24, sink=pst1_out.append)
    fd = bench.udp_socket()
    bench.stack.connect(fd, (FAR, 9))
    bench.stack.send(fd, b"1")
    assert len(bench.sent_raw()) == 1 and pst1_out == []
    bench.stack.add_route("198.18.7.0", 24, "pst1", gateway="198.19.0.1")
    bench.stack.send(fd, b"2")
    assert bench.out == [] and len(pst1_out) == 1


# ---------------------------------------------------------------- path MTU


def frag_needed(sent: bytes, mtu: int, src: str = PEER) -> bytes:
    return bytes(IP(src=src, dst=ME) / ICMP(type=3, code=4, nexthopmtu=mtu) / Raw(sent[:28]))


def test_frag_needed_lowers_path_mtu(bench):
    fd = bench.udp_socket()
    bench.stack.sendto(fd, bytes(1400), 0, (FAR, 9))
    (sent,) = bench.sent_raw()
    g = bench.stack.routes.generation
    bench.inject(frag_needed(sent, 1000))
    assert bench.stack.routes.generation == g + 1
    route = bench.stack.routes.lookup(aton(FAR), bench.clock.now())
    assert (route.prefixlen, route.path_mtu) == (32, 1000)
    bench.stack.sendto(fd, bytes(1400), 0, (FAR, 9))
    frags = bench.sent()
    assert [len(f) for f in frags] == [996, 452]
    assert all(not f.flags.DF for f in frags)
    bench.stack.sendto(fd, bytes(900), 0, (FAR, 9))
    (p,) = bench.sent()
    assert p.flags.DF  # fits the new path MTU: DF again
    # Other destinations keep the interface MTU.
    bench.stack.sendto(fd, bytes(1400), 0, ("198.18.8.8", 9))
    assert len(bench.sent()) == 1


def test_frag_needed_reported_once_on_connected_socket(bench):
    """Linux's udp_err: with PMTU discovery on, EMSGSIZE is a hard error for a connected socket."""
    fd = bench.udp_socket()
    bench.stack.connect(fd, (FAR, 9))
    bench.stack.send(fd, bytes(1400))
    (sent,) = bench.sent_raw()
    bench.inject(frag_needed(sent, 1200))
    with pytest.raises(OSError) as info:
        bench.stack.send(fd, bytes(1400))
    assert info.value.errno == errno.EMSGSIZE
    bench.stack.send(fd, bytes(1400))
    assert [len(f) for f in bench.sent()] == [1196, 252]


def test_path_mtu_never_below_552_and_then_unlocked_df(bench):
    fd = bench.udp_socket()
    bench.stack.sendto(fd, bytes(1400), 0, (FAR, 9))
    (sent,) = bench.sent_raw()
    bench.inject(frag_needed(sent, 300))
    route = bench.stack.routes.lookup(aton(FAR), bench.clock.now())
    assert route.path_mtu == MIN_PMTU and route.mtu_locked
    bench.stack.sendto(fd, bytes(1400), 0, (FAR, 9))
    frags = bench.sent()
    assert max(len(f) for f in frags) <= MIN_PMTU and len(frags) == 3
    bench.stack.sendto(fd, bytes(100), 0, (FAR, 9))
    (p,) = bench.sent()
    assert not p.flags.DF  # a locked (clamped) path MTU: Linux stops setting DF


def test_frag_needed_with_higher_mtu_is_ignored_and_pmtu_expires(bench):
    fd = bench.udp_socket()
    bench.stack.sendto(fd, bytes(1400), 0, (FAR, 9))
    (sent,) = bench.sent_raw()
    g = bench.stack.routes.generation
    bench.inject(frag_needed(sent, 1600))
    assert bench.stack.routes.generation == g
    bench.inject(frag_needed(sent, 1000))
    assert bench.stack.routes.lookup(aton(FAR), bench.clock.now()).path_mtu == 1000
    bench.clock.advance(601)
    assert bench.stack.routes.lookup(aton(FAR), bench.clock.now()).path_mtu == 1500
    assert bench.stack.routes.generation == g + 2
    bench.stack.sendto(fd, bytes(1400), 0, (FAR, 9))
    assert len(bench.sent()) == 1
