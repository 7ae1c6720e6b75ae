"""RACK-TLP (RFC 8985), on by default as in Linux (tcp_recovery=1, tcp_early_retrans=3).

Tail loss probes: a loss at the tail draws no duplicate ACKs, so two RTTs after the last send
one segment goes again, before the RTO. RACK: a segment is lost once one sent after it was
delivered and a reordering window has passed, rather than after DupThresh SACKs."""

from __future__ import annotations

import pytest

from pystack.tcp.tcb import CA_DISORDER, CA_OPEN, CA_RECOVERY, TcpConfig

from .test_tcp_recovery import MSS, NO_SACK, RTO_ONLY, opened, send_window, tcb_of


def test_probe_retransmits_the_tail_in_place_of_the_rto():
    """One segment left out: 2 SRTT + 200 ms (a lone segment waits for a delayed ACK) is later
    than the RTO (300 ms), so the probe takes the RTO's time; it is no timeout."""
    bench, conn = opened(rtt=0.1)
    tcb = tcb_of(bench, conn)
    s = [p.seq for p in send_window(bench, conn, 10)]
    bench.advance(0.1)
    conn.send("A", ack=s[9])
    t, srtt, rto = bench.now, tcb.rtt.srtt, tcb.rtt.rto
    assert 2 * srtt + 0.2 > rto
    bench.advance(0.5)
    probe = bench.take()
    assert [(p.seq, len(p.payload)) for p in probe] == [(s[9], MSS)]
    assert probe[0].time == pytest.approx(t + rto)
    assert bench.counters.tcp["TCPLossProbes"] == 1 and bench.counters.tcp.get("Timeouts", 0) == 0
    assert tcb.ca_state == CA_OPEN and tcb.cwnd > 10
    bench.advance(rto)  # unanswered: now the RTO, a whole RTO after the probe
    again = bench.take()
    assert [p.seq for p in again] == [s[9]] and again[0].time == pytest.approx(t + 2 * rto)
    assert bench.counters.tcp["Timeouts"] == 1


def test_probe_sends_new_data_when_there_is_some():
    """Ten segments out and more to send: at 2 SRTT + 2 ms the next new segment goes, beyond cwnd."""
    bench, conn = opened(rtt=0.1)
    s = [p.seq for p in send_window(bench, conn, 20)]
    assert len(s) == 10
    t = bench.now
    bench.advance(0.25)
    probe = bench.take()
    assert [p.seq for p in probe] == [s[9] + MSS]
    assert probe[0].time == pytest.approx(t + 0.202)
    assert tcb_of(bench, conn).tlp_high_seq == s[9] + 2 * MSS


def test_probe_that_repairs_a_loss_reduces_cwnd():
    """An ACK beyond the probe's snd_nxt means the probe filled a hole: cwnd is cut as on
    congestion (CUBIC's beta), and recovery is counted."""
    bench, conn = opened(rtt=0.1)
    tcb = tcb_of(bench, conn)
    s = [p.seq for p in send_window(bench, conn, 10)]
    bench.advance(0.1)
    conn.send("A", ack=s[9])
    bench.advance(0.5)
    assert [p.seq for p in bench.take()] == [s[9]]
    high = tcb.tlp_high_seq
    bench.stack.send(conn.fd, bytes(100))
    assert [p.seq for p in bench.take()] == [high]
    before = tcb.cwnd
    conn.send("A", ack=high + 100)
    assert tcb.tlp_high_seq is None
    assert tcb.ssthresh == before * 717 // 1024 and tcb.cwnd == tcb.ssthresh
    assert bench.counters.tcp["TCPLossProbeRecovery"] == 1


def test_probe_of_new_data_acknowledged_finds_no_loss():
    bench, conn = opened(rtt=0.1)
    tcb = tcb_of(bench, conn)
    s = [p.seq for p in send_window(bench, conn, 11)]
    bench.advance(0.25)
    bench.take()
    conn.send("A", ack=s[9] + 2 * MSS)
    assert tcb.tlp_high_seq is None and tcb.ssthresh == 0x7FFFFFFF
    assert bench.counters.tcp.get("TCPLossProbeRecovery", 0) == 0


@pytest.mark.parametrize("config, syn_options", [(RTO_ONLY, None), (TcpConfig(), NO_SACK)])
def test_no_probe_when_disabled_or_without_sack(config, syn_options):
    """tcp_early_retrans=0 turns probes off; Linux probes only on SACK connections."""
    bench, conn = opened(config, rtt=0.1, syn_options=syn_options)
    s = [p.seq for p in send_window(bench, conn, 10)]
    t = bench.now
    bench.advance(0.35)
    sent = bench.take()
    assert [p.seq for p in sent] == [s[0]] and sent[0].time == pytest.approx(t + 0.3)  # the RTO
    assert bench.counters.tcp.get("TCPLossProbes", 0) == 0


# ---------------------------------------------------------------- RACK (RFC 8985 6)


def test_rack_waits_a_quarter_of_the_minimum_rtt_then_recovers():
    """A SACK for segment 7 of 10: the earlier ones, sent at the same moment, may only be
    reordered; after RTT + min_rtt / 4 (and Linux's 2 ms) they are lost: recovery, the first
    retransmitted (as Linux's sack-shift scripts show: 27 ms after a 100 ms RTT's SACK)."""
    bench, conn = opened(rtt=0.1)
    tcb = tcb_of(bench, conn)
    s = [p.seq for p in send_window(bench, conn, 10)]
    bench.advance(0.1)
    t = bench.now
    conn.send("A", ack=s[0], sack=[(s[7], s[7] + MSS)])
    assert tcb.ca_state == CA_DISORDER and tcb.lost_out == 0 and tcb.reo_pending
    bench.advance(0.026)
    bench.expect_nothing()
    bench.advance(0.002)
    again = bench.take()
    assert again[0].seq == s[0] and again[0].time == pytest.approx(t + 0.027)
    assert len(again) == 1  # PRR: one segment (Linux adds one more only when snd_una advances)
    assert tcb.ca_state == CA_RECOVERY and tcb.lost_out == 7
    assert bench.counters.tcp.get("Timeouts", 0) == 0


def test_rack_with_dupthresh_sacked_marks_at_once():
    """Three segments SACKed: no reordering window (Linux: sacked_out >= reordering)."""
    bench, conn = opened(rtt=0.1)
    tcb = tcb_of(bench, conn)
    s = [p.seq for p in send_window(bench, conn, 10)]
    bench.advance(0.1)
    conn.send("A", ack=s[0], sack=[(s[5], s[8])])
    assert tcb.ca_state == CA_RECOVERY and tcb.lost_out == 5
    assert bench.take()[0].seq == s[0]


def test_without_rack_one_sack_waits_for_dupthresh():
    bench, conn = opened(TcpConfig(recovery=0), rtt=0.1)
    tcb = tcb_of(bench, conn)
    s = [p.seq for p in send_window(bench, conn, 10)]
    bench.advance(0.1)
    conn.send("A", ack=s[0], sack=[(s[7], s[7] + MSS)])
    bench.advance(0.1)
    assert tcb.lost_out == 0 and not tcb.reo_pending


def test_reordered_ack_below_snd_una_still_counts_its_sack_blocks():
    """Linux's old-ACK path: the SACK blocks of an ACK below snd_una mark the scoreboard (and may
    reveal losses); the ACK itself changes neither PRR's count nor cwnd."""
    bench, conn = opened(rtt=0.1)
    tcb = tcb_of(bench, conn)
    s = [p.seq for p in send_window(bench, conn, 10)]
    bench.advance(0.1)
    conn.send("A", ack=s[2])
    bench.take()
    cwnd, delivered = tcb.cwnd, tcb.prr_delivered
    conn.send("A", ack=s[1], sack=[(s[5], s[9])])
    assert tcb.sacked_out == 4 and tcb.cwnd == cwnd and tcb.prr_delivered == delivered
    assert tcb.lost_out == 3  # 2, 3, 4: sent before the SACKed ones, past DupThresh
    assert tcb.ca_state == CA_RECOVERY
    assert [p.seq for p in bench.take()][:3] == [s[2], s[3], s[4]]


def test_reordering_seen_raises_dupthresh_and_cwnd_counts_only_new_deliveries():
    """As Linux's cubic-rack-reo script: segment 10 then 4 SACKed, then all ACKed. Segment 4 came
    7 segments below the highest SACKed, segment 1 10 below: DupThresh becomes 10 (two
    reorderings seen). cwnd grows by what each ACK newly delivered: the second SACK (reordering
    now above 3 lets SACKs count), then the 8 segments not SACKed before: 19."""
    bench, conn = opened(rtt=0.1)
    tcb = tcb_of(bench, conn)
    s = [p.seq for p in send_window(bench, conn, 10)]
    bench.advance(0.02)
    conn.send("A", ack=s[0], sack=[(s[9], s[9] + MSS)])
    conn.send("A", ack=s[0], sack=[(s[3], s[3] + MSS), (s[9], s[9] + MSS)])
    assert (tcb.reordering, tcb.reord_seen, tcb.cwnd) == (7, 1, 11)
    conn.send("A", ack=s[9] + MSS)
    assert (tcb.reordering, tcb.reord_seen, tcb.cwnd) == (10, 2, 19)
    assert tcb.ca_state == CA_OPEN and tcb.lost_out == 0
