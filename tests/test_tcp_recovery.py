"""Loss recovery and congestion control in virtual time: RTO and backoff, Karn, giving up,
fast retransmit (NewReno, SACK), limited transmit, initial window, slow start and
congestion avoidance, path MTU decrease."""

from __future__ import annotations

from collections import deque

import pytest
from scapy.all import ICMP, IP

from pystack.socket import IPPROTO_TCP
from pystack.tcp.api import TCP_USER_TIMEOUT
from pystack.tcp.tcb import CA_DISORDER, CA_LOSS, CA_OPEN, CA_RECOVERY, TcpConfig
from pystack.wire.tcp import PSH

from .tcp_harness import PEER, PeerBench, passive_open

MSS = 1448
NO_SACK = [("MSS", 1460), ("NOP", None), ("NOP", None), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)]
RENO = TcpConfig(congestion_control="reno")  # the tests of the NewReno arithmetic (halving on loss)
RTO_ONLY = TcpConfig(early_retrans=0)  # no tail loss probe (RFC 8985 TLP): the tests of the RTO alone
DUPTHRESH = TcpConfig(recovery=0)  # RFC 6675's DupThresh finds the losses, not RACK (tcp_recovery=0)
NO_FRTO = TcpConfig(early_retrans=0, frto=0)  # the RTO alone, and no F-RTO (RFC 5682) after it
NO_TS = [("MSS", 1460), ("NOP", None), ("NOP", None), ("SAckOK", b""), ("NOP", None), ("WScale", 7)]


def opened(config: TcpConfig | None = None, rtt: float = 0.0, syn_options: list | None = None):
    """A PeerBench with an accepted connection whose handshake took ``rtt`` (the only RTT sample)."""
    bench = PeerBench(config=config)
    return bench, passive_open(bench, syn_options=syn_options, rtt=rtt)


def tcb_of(bench: PeerBench, conn):
    return bench.stack.sockets[conn.fd].tcb


# ---------------------------------------------------------------- RTO


def test_rto_timing_and_exponential_backoff_capped_at_120s():
    bench, conn = opened(RTO_ONLY, rtt=0.1)
    tcb = tcb_of(bench, conn)
    # RFC 6298 first sample R: SRTT = R, RTTVAR = R/2, RTO = R + max(4 RTTVAR, 200 ms) = 300 ms.
    assert tcb.rtt.rto == pytest.approx(0.3)
    t0 = bench.now
    bench.stack.send(conn.fd, b"x" * 100)
    first = bench.expect(payload=b"x" * 100, at=t0)
    bench.advance(1500)
    rtx = bench.take()
    intervals = [round(b.time - a.time, 6) for a, b in zip([first] + rtx, rtx, strict=False)]
    assert intervals[:10] == [0.3, 0.6, 1.2, 2.4, 4.8, 9.6, 19.2, 38.4, 76.8, 120.0]
    assert set(intervals[10:]) == {120.0}  # RTO_MAX
    assert all(p.seq == first.seq and p.payload == b"x" * 100 for p in rtx)
    assert bench.counters.tcp["Timeouts"] >= 10


def test_rto_restarts_from_the_estimate_after_a_valid_sample():
    bench, conn = opened(rtt=0.1)
    tcb = tcb_of(bench, conn)
    bench.stack.send(conn.fd, b"a")
    first = bench.expect(payload=b"a")
    bench.advance(0.3)
    bench.expect(payload=b"a", at=first.time + 0.3)  # retransmission, backoff 1
    bench.advance(0.05)
    conn.note(first)  # with timestamps the echo of the retransmission is a valid sample (RFC 7323)
    conn.ts += 350
    conn.send("A", ack=first.seq + 1)
    assert tcb.backoff == 0 and tcb.rtt.samples == 2
    assert tcb.ca_state == CA_OPEN


def test_karn_no_rtt_sample_from_a_retransmitted_segment_without_timestamps():
    bench, conn = opened(RTO_ONLY, rtt=0.1, syn_options=NO_TS)
    tcb = tcb_of(bench, conn)
    assert not tcb.ts_ok and tcb.rtt.samples == 1 and tcb.rtt.rto == pytest.approx(0.3)
    bench.stack.send(conn.fd, b"a")
    first = bench.expect(payload=b"a")
    bench.advance(0.3)
    bench.expect(payload=b"a", at=first.time + 0.3)
    bench.advance(0.01)
    conn.send("A", ack=first.seq + 1)  # ambiguous: for the original or the retransmission?
    assert tcb.rtt.samples == 1 and tcb.rtt.srtt == pytest.approx(0.1)  # Karn: no sample
    # ...and the backed-off timeout is kept for the next segment until a valid sample (RFC 6298 5.7).
    assert tcb.backoff == 1
    t = bench.now
    bench.stack.send(conn.fd, b"b")
    bench.expect(payload=b"b", at=t)
    assert tcb.rto_at == pytest.approx(t + 0.6)
    bench.advance(0.1)
    conn.send("A", ack=first.seq + 2)  # a clean sample of 100 ms
    assert tcb.rtt.samples == 2 and tcb.backoff == 0


def test_give_up_with_etimedout_after_retries2():
    bench, conn = opened(RTO_ONLY)
    tcb = tcb_of(bench, conn)
    assert tcb.rtt.rto == pytest.approx(0.2)
    t0 = bench.now
    bench.stack.send(conn.fd, b"lost")
    bench.advance(2000)
    packets = bench.take()
    assert len(packets) == 1 + 15  # tcp_retries2 = 15 retransmissions
    assert all(p.flags == "PA" for p in packets)  # and no RST when giving up (Linux tcp_write_err)
    # Backoff 200 ms .. 102.4 s, then 120 s: the 16th expiry, 924.6 s after sending, gives up.
    assert bench.counters.tcp["AbortOnTimeout"] == 1
    with pytest.raises(TimeoutError):
        bench.stack.recv(conn.fd, 10)
    assert not bench.stack.tcp.conns
    bench2, conn2 = opened(RTO_ONLY)
    bench2.stack.send(conn2.fd, b"lost")
    bench2.advance(924.6 - 0.001)
    assert bench2.stack.tcp.conns
    bench2.advance(0.002)
    assert not bench2.stack.tcp.conns
    assert t0 == 0.0


def test_tcp_user_timeout_gives_up_exactly_on_time():
    bench, conn = opened(RTO_ONLY)
    bench.stack.setsockopt(conn.fd, IPPROTO_TCP, TCP_USER_TIMEOUT, 5000)
    assert bench.stack.getsockopt(conn.fd, IPPROTO_TCP, TCP_USER_TIMEOUT) == 5000
    bench.advance(1.0)
    bench.stack.send(conn.fd, b"lost")
    bench.advance(5.199)
    assert bench.stack.tcp.conns
    times = [round(p.time, 9) for p in bench.take()]
    assert times == [1.0, 1.2, 1.6, 2.4, 4.0]  # the next retransmission would be at 7.2
    bench.advance(0.001)
    # Retransmission timer clamped to the user timeout, counted as Linux counts it (its
    # retrans_stamp): 5 s after the first retransmission.
    assert not bench.stack.tcp.conns
    bench.expect_nothing()
    with pytest.raises(TimeoutError):
        bench.stack.send(conn.fd, b"more")


# ---------------------------------------------------------------- fast retransmit


def send_window(bench: PeerBench, conn, segments: int = 40):
    bench.stack.send(conn.fd, bytes(MSS * segments))
    return bench.take()


def test_initial_window_is_ten_segments():
    bench, conn = opened(RTO_ONLY)
    sent = send_window(bench, conn)
    assert [len(p.payload) for p in sent] == [MSS] * 10
    assert sent[-1].flags == "PA"  # more data follows, but a burst ends its GSO packet with PSH (Linux)
    bench.advance(0.1)
    bench.expect_nothing()


def test_psh_of_retransmissions_is_that_of_the_packet_they_leave_in():
    """Linux sets PSH on the last segment of a GSO packet of several on the copy it transmits, not
    on the queued skb: a segment retransmitted alone has no PSH, a lost packet retransmitted whole
    as far as cwnd allows has it on its last segment (__tcp_transmit_skb, tcp_xmit_retransmit_queue)."""
    bench, conn = opened(NO_FRTO, rtt=0.1)  # go-back-N after the RTO
    sent = send_window(bench, conn, 14)
    index = {p.seq: i for i, p in enumerate(sent)}
    assert [p.flags for p in sent] == ["A", "PA"] * 5  # packets of two segments: 0-1, 2-3, ...

    def retransmitted():
        return [(index[p.seq], p.flags) for p in bench.take()]

    bench.advance(0.3)
    assert retransmitted() == [(0, "A")]  # the RTO: cwnd 1, every segment out is lost
    conn.send("A", ack=sent[1].seq)
    assert retransmitted() == [(1, "A"), (2, "A")]  # cwnd 2: the tail of 0-1, then 2 alone
    conn.send("A", ack=sent[2].seq)
    assert retransmitted() == [(3, "A"), (4, "A")]
    conn.send("A", ack=sent[4].seq)
    assert retransmitted() == [(5, "A"), (6, "A"), (7, "PA"), (8, "A")]  # 6-7 whole: PSH on 7


def after_an_rto_with_cwnd_2():
    """One segment, lost to the RTO and then acknowledged: cwnd 2, Open, nothing in flight (as in
    packetdrill's cubic-rto-ss-ca-cwnd-bump.pkt)."""
    bench, conn = opened(RTO_ONLY, rtt=0.1)
    tcb = tcb_of(bench, conn)
    bench.stack.send(conn.fd, bytes(1000))
    (first,) = bench.take()
    bench.advance(0.3)
    assert len(bench.take()) == 1
    conn.send("A", ack=first.seq + 1000)
    assert (tcb.cwnd, tcb.ca_state, tcb.rtx) == (2, CA_OPEN, deque())
    return bench, conn, tcb


def test_a_gso_packet_takes_at_most_half_of_cwnd():
    """Linux keeps two packets in flight: a packet takes at most half of cwnd (tcp_cwnd_test), so
    with cwnd 2 the two segments leave as two packets of one, neither with PSH."""
    bench, conn, _tcb = after_an_rto_with_cwnd_2()
    bench.stack.send(conn.fd, bytes(MSS * 10))
    assert [p.flags for p in bench.take()] == ["A", "A"]


def test_psh_is_forced_where_a_write_passes_half_the_peers_window():
    """Linux marks PSH, as it queues a write, on the full skb that takes the data queued since
    the last PSH past half the peer's largest window (forced_push); the segment that ends there
    keeps it, also when retransmitted."""
    bench, conn, tcb = after_an_rto_with_cwnd_2()
    half = tcb.max_snd_wnd // 2
    start = tcb.snd_nxt
    bench.stack.send(conn.fd, bytes(MSS * 60))
    ends = set()  # where the queued segments carry PSH of their own (what a retransmission has)
    sent = bench.take()
    while sent:  # ACK each flight, until the whole write is out
        ends |= {(item.end - start) & 0xFFFFFFFF for item in tcb.rtx if item.flags & PSH}
        conn.send("A", ack=sent[-1].seq + len(sent[-1].payload))
        sent = bench.take()
    marks = sorted(ends)
    assert marks[-1] == 60 * MSS and len(marks) > 1  # the last: where the write ends
    forced = marks[:-1]
    assert all(mark % MSS == 0 for mark in forced)  # each where a segment (an skb) ends
    assert all(b - a > half for a, b in zip([0, *forced], forced, strict=False))  # past half the window


def test_newreno_limited_transmit_then_fast_retransmit_then_prr():
    bench, conn = opened(RENO, syn_options=NO_SACK)
    tcb = tcb_of(bench, conn)
    assert not tcb.sack_ok
    s = [p.seq for p in send_window(bench, conn)]
    una = s[0]
    # Segment 0 is lost; the peer's duplicate ACKs arrive one by one.
    conn.send("A", ack=una)
    bench.expect(seq=una + 10 * MSS, length=MSS)  # limited transmit (RFC 3042): one new segment
    bench.expect_nothing()
    conn.send("A", ack=una)
    bench.expect(seq=una + 11 * MSS, length=MSS)  # and another
    bench.expect_nothing()
    assert tcb.ca_state == CA_DISORDER  # duplicate ACKs counted, no recovery yet (as Linux reports it)
    conn.send("A", ack=una)
    bench.expect(seq=una, length=MSS)  # third duplicate ACK: fast retransmit of the first segment
    bench.expect_nothing()
    assert tcb.ca_state == CA_RECOVERY and tcb.ssthresh == 5
    assert bench.counters.tcp["FastRetrans"] == 1
    # PRR (RFC 6937): about one new segment for every two delivered while pipe > ssthresh.
    new = []
    for _ in range(6):
        conn.send("A", ack=una)
        new.append([p.seq for p in bench.take()])
    assert new == [[], [una + 12 * MSS], [], [una + 13 * MSS], [], []]
    # The retransmission fills the hole: everything sent so far is acknowledged, recovery ends.
    conn.send("A", ack=una + 14 * MSS)
    assert tcb.ca_state == CA_OPEN and tcb.cwnd == 5
    assert bench.counters.tcp.get("Timeouts", 0) == 0


def test_fast_retransmit_of_the_head_restarts_the_rto():
    """Resending the first unacknowledged segment restarts the retransmission timer (Linux
    tcp_xmit_retransmit_queue): the RTO due 50 ms later does not resend it again at once."""
    bench, conn = opened(RENO, syn_options=NO_SACK)
    s = [p.seq for p in send_window(bench, conn, 10)]
    for _ in range(3):
        bench.advance(0.05)
        conn.send("A", ack=s[0])
    assert [p.seq for p in bench.take()] == [s[0]]  # fast retransmit at 0.15 s; the RTO was due at 0.2 s
    bench.advance(0.19)
    bench.expect_nothing()
    bench.advance(0.02)
    assert [p.seq for p in bench.take()] == [s[0]]  # a whole RTO (200 ms) after the resend


def test_newreno_partial_ack_retransmits_the_next_hole_at_once():
    bench, conn = opened(RENO, syn_options=NO_SACK)
    tcb = tcb_of(bench, conn)
    s = [p.seq for p in send_window(bench, conn)]
    una = s[0]
    for _ in range(3):  # segments 0 and 5 lost
        conn.send("A", ack=una)
    sent = bench.take()
    assert [p.seq for p in sent] == [una + 10 * MSS, una + 11 * MSS, una]
    assert tcb.recover == una + 12 * MSS
    t = bench.now
    bench.advance(0.01)
    conn.send("A", ack=una + 5 * MSS)  # partial ACK: up to the second hole
    again = bench.expect(seq=una + 5 * MSS, length=MSS, at=t + 0.01)  # NewReno (RFC 6582): at once
    assert again.time < t + tcb.rtt.rto
    assert tcb.ca_state == CA_RECOVERY
    bench.take()
    conn.send("A", ack=una + 12 * MSS)  # full ACK
    assert tcb.ca_state == CA_OPEN and tcb.cwnd == tcb.ssthresh == 5
    assert bench.counters.tcp.get("Timeouts", 0) == 0


def test_sack_recovery_retransmits_several_holes_in_one_round_trip():
    bench, conn = opened(TcpConfig(congestion_control="reno", recovery=0))
    tcb = tcb_of(bench, conn)
    assert tcb.sack_ok
    s = [p.seq for p in send_window(bench, conn)]
    end = [x + MSS for x in s]
    # Segments 1 and 4 are lost. The peer acknowledges 0, then SACKs 2, 3, 5, 6, 7, ...
    conn.send("A", ack=end[0])
    bench.take()
    retransmitted = []
    blocks = []
    for i in (2, 3, 5, 6, 7, 8, 9):
        if blocks and blocks[-1][1] == s[i]:
            blocks[-1] = (blocks[-1][0], end[i])
        else:
            blocks.append((s[i], end[i]))
        conn.send("A", ack=end[0], sack=list(reversed(blocks))[:3])
        for p in bench.take():
            if p.seq < max(s) + MSS:
                retransmitted.append((i, p.seq))
    # RFC 6675: segment 1 is lost once three segments above it are SACKed (2, 3, 5);
    # segment 4 once 5, 6, 7 are; both go before any ACK for a retransmission arrives.
    assert retransmitted == [(5, s[1]), (7, s[4])]
    assert tcb.ca_state == CA_RECOVERY
    conn.send("A", ack=end[9] + 2 * MSS)
    assert bench.counters.tcp.get("Timeouts", 0) == 0


def test_without_sack_an_ack_after_duplicate_acks_counts_only_the_new_delivery():
    """Reordering without SACK: each duplicate ACK was counted delivered when it came, so the ACK
    that covers three segments after two of them delivers one more, and slow start grows cwnd by
    one (Linux tcp_remove_reno_sacks; packetdrill's limited-transmit-no-sack.pkt)."""
    bench, conn = opened(syn_options=NO_SACK)
    tcb = tcb_of(bench, conn)
    s = [p.seq for p in send_window(bench, conn, 15)]
    s += [s[-1] + MSS * i for i in range(1, 6)]
    for i in (10, 11):
        conn.send("A", ack=s[0])
        bench.expect(seq=s[i])  # limited transmit
    conn.send("A", ack=s[3])
    assert tcb.ca_state == CA_OPEN and tcb.cwnd == 11
    assert [p.seq for p in bench.take()] == [s[12], s[13]]  # 11 - 9 in flight


def test_limited_transmit_with_sack():
    bench, conn = opened(DUPTHRESH)
    s = [p.seq for p in send_window(bench, conn)]
    conn.send("A", ack=s[0], sack=[(s[1], s[1] + MSS)])
    bench.expect(seq=s[0] + 10 * MSS)
    bench.expect_nothing()
    conn.send("A", ack=s[0], sack=[(s[1], s[2] + MSS)])
    bench.expect(seq=s[0] + 11 * MSS)
    bench.expect_nothing()
    conn.send("A", ack=s[0], sack=[(s[1], s[3] + MSS)])
    bench.expect(seq=s[0], length=MSS)  # three SACKed segments above the hole: fast retransmit


def test_rto_in_recovery_enters_loss_and_restarts_from_one_segment():
    # Without F-RTO, which would send new data at the first ACK (see the F-RTO tests below).
    bench, conn = opened(TcpConfig(congestion_control="reno", frto=0), syn_options=NO_SACK)
    tcb = tcb_of(bench, conn)
    s = [p.seq for p in send_window(bench, conn, 12)]
    bench.advance(0.2)
    rtx = bench.take()
    assert [p.seq for p in rtx] == [s[0]]
    assert tcb.ca_state == CA_LOSS and tcb.cwnd == 1 and tcb.ssthresh == 5
    conn.send("A", ack=s[1])  # go-back-N, slow start from 1
    assert [p.seq for p in bench.take()] == [s[1], s[2]]
    assert tcb.cwnd == 2


# ---------------------------------------------------------------- F-RTO (RFC 5682, Linux tcp_frto=2)


def rto_then_first_ack(syn_options: list | None = None, segments: int = 14):
    """Ten segments out, the RTO retransmits the first; its ACK comes. F-RTO (on by default, as in
    Linux) sends new data for that ACK instead of retransmitting the next segment (step 2b)."""
    bench, conn = opened(RTO_ONLY, rtt=0.1, syn_options=syn_options)
    tcb = tcb_of(bench, conn)
    s = [p.seq for p in send_window(bench, conn, segments)]
    s += [s[-1] + MSS * i for i in range(1, segments - len(s) + 1)]
    assert tcb.cwnd == 10 and tcb.ssthresh == 0x7FFFFFFF
    bench.advance(0.3)
    assert [p.seq for p in bench.take()] == [s[0]]
    assert tcb.ca_state == CA_LOSS and tcb.cwnd == 1 and tcb.ssthresh == 7  # CUBIC: 0.7 of 10
    conn.send("A", ack=s[1])
    assert [p.seq for p in bench.take()] == [s[10], s[11]]  # new data, not s[1] again
    assert tcb.ca_state == CA_LOSS and tcb.cwnd == 2
    return bench, conn, tcb, s


@pytest.mark.parametrize("syn_options", [None, NO_SACK], ids=["sack", "no-sack"])
def test_frto_undoes_a_spurious_rto(syn_options):
    """The next ACK covers data that was never retransmitted: the original segments were only
    delayed, the RTO was spurious, and cwnd and ssthresh are what they were (step 3b)."""
    bench, conn, tcb, s = rto_then_first_ack(syn_options)
    conn.send("A", ack=s[2])
    assert tcb.ca_state == CA_OPEN and tcb.lost_out == 0
    assert tcb.cwnd >= 10 and tcb.ssthresh == 0x7FFFFFFF  # Linux: max(cwnd, prior), max(ssthresh, prior)
    assert bench.counters.tcp["TCPSpuriousRTOs"] == 1 and bench.counters.tcp["TCPLossUndo"] == 1
    # Nothing more is retransmitted: the rest of the first flight is not lost after all.
    assert all(p.seq >= s[12] for p in bench.take())


def test_frto_sees_a_real_loss_and_goes_on_retransmitting():
    """A SACK for the new data while the rest of the flight stays unacknowledged: the loss was
    real (step 3a); retransmissions go on and cwnd stays reduced."""
    bench, conn, tcb, s = rto_then_first_ack()
    conn.send("A", ack=s[1], sack=[(s[10], s[11] + MSS)])
    assert not tcb.frto and tcb.ca_state == CA_LOSS
    assert tcb.backoff == 0  # the SACKed segment, never resent, is an RTT sample (Linux)
    assert [p.seq for p in bench.take()][:1] == [s[1]]  # the lost segments again, from the first
    assert tcb.cwnd < 10 and bench.counters.tcp["TCPSpuriousRTOs"] == 0


def test_without_sack_the_loss_state_holds_until_data_above_recover_is_acked():
    """An ACK of exactly what was out at the RTO (or at F-RTO's new data) keeps the Loss state
    without SACK, also after an undo: a duplicate ACK then could be for a resent segment (Linux
    tcp_is_non_sack_preventing_reopen); the next ACK above ends it."""
    bench, conn, tcb, s = rto_then_first_ack(NO_SACK)
    conn.send("A", ack=s[10])  # the whole first flight: the RTO was spurious, undone
    assert bench.counters.tcp["TCPSpuriousRTOs"] == 1 and tcb.cwnd >= 10
    assert tcb.ca_state == CA_LOSS
    conn.send("A", ack=s[11])
    assert tcb.ca_state == CA_OPEN


def test_without_frto_the_first_ack_after_an_rto_is_go_back_n():
    bench, conn = opened(NO_FRTO, rtt=0.1)
    s = [p.seq for p in send_window(bench, conn, 14)]
    bench.advance(0.3)
    assert [p.seq for p in bench.take()] == [s[0]]
    conn.send("A", ack=s[1])
    assert [p.seq for p in bench.take()] == [s[1], s[2]]
    conn.send("A", ack=s[3])
    assert tcb_of(bench, conn).ca_state == CA_LOSS and bench.counters.tcp["TCPSpuriousRTOs"] == 0


# ---------------------------------------------------------------- congestion control


def test_slow_start_doubles_per_round_trip():
    bench, conn = opened()
    tcb = tcb_of(bench, conn)
    s = [p.seq for p in send_window(bench, conn, 100)]
    assert len(s) == 10
    per_ack = []
    for i in range(10):
        conn.send("A", ack=s[i] + MSS)
        per_ack.append(len(bench.take()))
    assert per_ack == [2] * 10  # each ACK of one segment: cwnd + 1, so two segments go
    assert tcb.cwnd == 20


def test_congestion_avoidance_adds_one_segment_per_window():
    bench, conn = opened(RENO)
    tcb = tcb_of(bench, conn)
    tcb.ssthresh = 10  # as after a loss: the window starts in congestion avoidance
    sent = send_window(bench, conn, 100)
    una = sent[0].seq
    per_ack = []
    for i in range(20):
        conn.send("A", ack=una + (i + 1) * MSS)
        per_ack.append(len(bench.take()))
    # cwnd 10: one new segment per ACK; after a window of ACKs cwnd is 11 (two go), then 12.
    assert per_ack == [1] * 9 + [2] + [1] * 10
    assert tcb.cwnd == 11
    conn.send("A", ack=una + 21 * MSS)
    assert tcb.cwnd == 12


def test_application_limited_sender_does_not_grow_cwnd():
    bench, conn = opened()
    tcb = tcb_of(bench, conn)
    for _ in range(30):
        bench.stack.send(conn.fd, b"ping")
        p = bench.take()[-1]
        conn.send("A", ack=p.seq + 4)
    assert tcb.cwnd == 10  # never limited by cwnd (RFC 7661 / Linux is_cwnd_limited)


# ---------------------------------------------------------------- path MTU


def test_icmp_fragmentation_needed_lowers_mss_and_resegments():
    bench, conn = opened()
    tcb = tcb_of(bench, conn)
    sent = send_window(bench, conn, 3)
    assert [len(p.payload) for p in sent] == [MSS] * 3
    first = sent[0].raw
    icmp = IP(src=PEER, dst="198.18.0.2") / ICMP(type=3, code=4, nexthopmtu=1000) / first[:28]
    bench.inject(bytes(icmp))
    assert tcb.mss == 1000 - 40 - 12
    again = bench.take()
    # Linux tcp_simple_retransmit: everything outstanding goes again, cut to the new MSS.
    assert [len(p.payload) for p in again] == [948, 500] * 3
    assert all(len(p.raw) <= 1000 and p.ip.flags.DF for p in again)
    assert [p.seq for p in again] == [sent[i // 2].seq + (948 if i % 2 else 0) for i in range(6)]
    bench.stack.send(conn.fd, bytes(2000))
    conn.send("A", ack=sent[-1].seq + MSS)
    assert [len(p.payload) for p in bench.take()] == [948, 948, 104]


def test_icmp_fragmentation_needed_for_unsent_sequence_is_ignored():
    bench, conn = opened()
    tcb = tcb_of(bench, conn)
    sent = send_window(bench, conn, 1)
    forged = bytearray(sent[0].raw[:28])
    forged[24:28] = ((sent[0].seq + 100_000) & 0xFFFFFFFF).to_bytes(4, "big")
    bench.inject(bytes(IP(src=PEER, dst="198.18.0.2") / ICMP(type=3, code=4, nexthopmtu=1000) / bytes(forged)))
    assert tcb.mss == MSS
    bench.expect_nothing()


def test_path_mtu_decrease_retransmits_only_segments_too_big():
    bench, conn = opened()
    bench.stack.setsockopt(conn.fd, IPPROTO_TCP, 1, 1)  # TCP_NODELAY: a small segment too
    bench.stack.send(conn.fd, bytes(MSS))
    bench.stack.send(conn.fd, bytes(500))
    big, small = bench.take()
    bench.inject(bytes(IP(src=PEER, dst="198.18.0.2") / ICMP(type=3, code=4, nexthopmtu=1000) / big.raw[:28]))
    again = bench.take()
    assert [(p.seq, len(p.payload)) for p in again] == [(big.seq, 948), (big.seq + 948, 500)]
    assert small.seq == big.seq + MSS
