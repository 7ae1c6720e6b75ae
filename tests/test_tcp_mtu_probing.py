"""Path MTU probing (RFC 4821) as Linux's tcp_mtu_probing=2, and the route metrics it starts from
(advmss, mtu lock, initcwnd): the shape of upstream packetdrill's mtu_probe/basic-v4.pkt."""

from __future__ import annotations

from pystack.tcp.tcb import CA_LOSS, TcpConfig

from .tcp_harness import PEER, PeerBench, passive_open

NO_TS = [("MSS", 1460), ("NOP", None), ("WScale", 0)]


def probing_connection(initcwnd: int = 11) -> tuple[PeerBench, object]:
    """A connection accepted over a route of MTU 640 (locked, advmss 600), the path then widened to
    1500, as the upstream script does; probing on, the search's floor at tcp_base_mss 512."""
    bench = PeerBench(TcpConfig(mtu_probing=2, base_mss=512))
    bench.stack.add_route(PEER, 32, "pst0", mtu=640, mtu_locked=True, advmss=600, initcwnd=initcwnd)
    conn = passive_open(bench, syn_options=NO_TS, window=50000)
    bench.stack.add_route(PEER, 32, "pst0", mtu=1500, mtu_locked=True, advmss=1460)
    return bench, conn


def sizes(packets: list) -> list[int]:
    return [len(p.payload) for p in packets]


def test_route_advmss_and_initcwnd_are_what_the_connection_starts_with():
    bench = PeerBench(TcpConfig(mtu_probing=2, base_mss=512))
    bench.stack.add_route(PEER, 32, "pst0", mtu=640, mtu_locked=True, advmss=600, initcwnd=11)
    conn = passive_open(bench, syn_options=NO_TS, window=50000)
    tcb = bench.stack.sockfd_lookup(conn.fd).tcb
    assert (tcb.advmss, tcb.mss, tcb.cwnd) == (600, 600, 11)  # the SYN-ACK said mss 600
    # Probing was off while the child was made (Linux: the listener's search is not started),
    # so the MSS is the path's, not the search floor's; the search covers 552..1500.
    assert (tcb.mtup_search_low, tcb.mtup_search_high) == (552, 1500)


def test_a_probe_of_the_middle_size_leads_a_write_and_its_ack_raises_the_mss():
    bench, conn = probing_connection()
    stack, fd = bench.stack, conn.fd
    tcb = stack.sockfd_lookup(fd).tcb
    stack.send(fd, b"x" * 4000)
    # The MSS was computed for the old path (the route is checked when a segment leaves):
    # the probe, (1500 + 552) / 2 = 1026 bytes of IP, then 600-byte segments.
    sent = bench.take()
    assert sizes(sent) == [986, 600, 600, 600, 600, 600, 14]
    assert all(len(p.ip) <= 1026 for p in sent) and tcb.cwnd == 10  # the probe took a segment of cwnd
    conn.send("A", ack=sent[-1].seq + 14)
    assert stack.counters.tcp["TCPMTUPSuccess"] == 1
    assert (tcb.mtup_search_low, tcb.mtup_probe_size) == (1026, 0)
    stack.send(fd, b"y" * 2000)
    assert sizes(bench.take()) == [986, 986, 28]  # the new floor is the MSS (tcp_sync_mss)


def test_no_probe_without_eleven_segments_of_cwnd_or_enough_data_behind_it():
    bench, conn = probing_connection(initcwnd=10)
    bench.stack.send(conn.fd, b"x" * 4000)
    assert sizes(bench.take()) == [600] * 6 + [400]
    bench, conn = probing_connection()
    bench.stack.send(conn.fd, b"x" * 3385)  # the probe and reordering + 1 segments: 986 + 4 * 600
    assert 986 not in sizes(bench.take())


def test_a_lost_probe_lowers_the_search_ceiling_and_is_resent_in_segments_without_a_cwnd_cut():
    bench, conn = probing_connection()
    stack, fd = bench.stack, conn.fd
    tcb = stack.sockfd_lookup(fd).tcb
    stack.send(fd, b"x" * 4000)
    sent = bench.take()
    probe = sent[0]
    for _ in range(3):  # three duplicate ACKs: the probe is the hole
        conn.send("A", ack=probe.seq)
    assert stack.counters.tcp["TCPMTUPFail"] == 1 and stack.counters.tcp["FastRetrans"] == 0
    assert (tcb.mtup_search_high, tcb.mtup_probe_size, tcb.ca_state) == (1025, 0, CA_LOSS)
    assert tcb.cwnd == 11  # what the probe took is given back; no reduction
    # Resent in segments of the MSS, which the widened path now sets: the search's floor, 552 bytes
    # of IP (the probe's transmission found the new route; Linux tcp_current_mss, tcp_sync_mss).
    resent = bench.take()
    assert [(p.seq - probe.seq, len(p.payload)) for p in resent[:2]] == [(0, 512), (512, 474)]


def test_a_new_search_starts_a_probe_interval_after_the_last_one_ended():
    bench, conn = probing_connection()
    stack, fd = bench.stack, conn.fd
    tcb = stack.sockfd_lookup(fd).tcb
    tcb.mtup_search_high = tcb.mtup_search_low + 4  # ended: below tcp_probe_threshold (8 bytes)

    def write_and_ack() -> list[int]:
        stack.send(fd, b"x" * 4000)
        sent = bench.take()
        conn.send("A", ack=sent[-1].seq + len(sent[-1].payload))
        return sizes(sent)

    assert 986 not in write_and_ack()
    bench.advance(599)
    assert 986 not in write_and_ack() and tcb.mtup_search_high == 556
    bench.advance(1)
    write_and_ack()  # this output finds the interval over: the search starts again, from the MSS up
    assert (tcb.mtup_search_low, tcb.mtup_search_high) == (552, 1500)
    assert write_and_ack()[0] == 986
