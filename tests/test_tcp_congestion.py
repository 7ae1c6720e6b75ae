"""Congestion control as Linux's: CUBIC with HyStart by default, Reno by TCP_CONGESTION, and
cwnd growing only when the sender is limited by it (tcp_is_cwnd_limited)."""

from __future__ import annotations

import errno
from types import SimpleNamespace

import pytest

from pystack.socket import IPPROTO_TCP
from pystack.tcp.api import TCP_CONGESTION
from pystack.tcp.congestion import Cubic, Reno, cubic_root
from pystack.tcp.tcb import CA_RECOVERY, TcpConfig

from .tcp_harness import PeerBench, passive_open
from .test_tcp_recovery import MSS, opened, send_window, tcb_of

RTT = 0.1


def stub_tcb(cwnd: int, ssthresh: int = 0x7FFFFFFF, limited: bool = True) -> SimpleNamespace:
    """What the algorithms read of a TCB."""
    return SimpleNamespace(cwnd=cwnd, ssthresh=ssthresh, cwnd_count=0, is_cwnd_limited=limited,
                           max_packets_out=cwnd, snd_una=0, snd_nxt=0, mss=1000, rtx=[],
                           rtt=SimpleNamespace(srtt=RTT))


# ---------------------------------------------------------------- on a connection


@pytest.mark.parametrize(("name", "ssthresh"), [("cubic", 7), ("reno", 5)])
def test_fast_retransmit_reduces_by_the_algorithms_beta(name, ssthresh):
    """CUBIC (the default, as Linux's) keeps 717/1024 of the window; Reno half."""
    config = TcpConfig() if name == "cubic" else TcpConfig(congestion_control="reno")
    bench, conn = opened(config)
    tcb = tcb_of(bench, conn)
    assert tcb.ca.name == name
    s = [p.seq for p in send_window(bench, conn)]
    for i in (1, 2, 3):
        conn.send("A", ack=s[0], sack=[(s[1], s[i] + MSS)])
    assert tcb.ca_state == CA_RECOVERY and tcb.prior_cwnd == 10 and tcb.ssthresh == ssthresh


def test_tcp_congestion_chooses_by_linux_name_and_accepted_connections_inherit_it():
    bench, conn = opened()
    stack = bench.stack
    assert stack.getsockopt(conn.fd, IPPROTO_TCP, TCP_CONGESTION) == b"cubic".ljust(16, b"\0")
    stack.setsockopt(conn.fd, IPPROTO_TCP, TCP_CONGESTION, b"reno")
    assert isinstance(tcb_of(bench, conn).ca, Reno)
    with pytest.raises(OSError) as err:
        stack.setsockopt(conn.fd, IPPROTO_TCP, TCP_CONGESTION, b"vegas")
    assert err.value.errno == errno.ENOENT
    bench = PeerBench()
    conn = passive_open(bench, setup_listener=lambda fd: bench.stack.setsockopt(
        fd, IPPROTO_TCP, TCP_CONGESTION, b"reno\0"))
    assert isinstance(tcb_of(bench, conn).ca, Reno)


def test_slow_start_grows_to_twice_what_an_application_limited_sender_had_out():
    """Linux tcp_is_cwnd_limited: in slow start cwnd grows while below twice the most segments
    out in the window, though cwnd was not the limit; no further."""
    bench, conn = opened()
    tcb = tcb_of(bench, conn)
    for _ in range(3):
        sent = send_window(bench, conn, 7)
        assert len(sent) == 7
        conn.send("A", ack=sent[-1].seq + MSS)
    assert tcb.cwnd == 17  # 10 + 7 while 10 < 2 * 7; then 17 >= 14: no more growth


# ---------------------------------------------------------------- CUBIC's arithmetic


def test_cubic_decrease_remembers_wmax_with_fast_convergence():
    cubic, tcb = Cubic(), stub_tcb(100)
    assert cubic.ssthresh(tcb) == 70 and cubic.last_max_cwnd == 100
    tcb.cwnd = 80  # a loss below the last maximum: release bandwidth (W_max * (1 + beta) / 2)
    assert cubic.ssthresh(tcb) == 56 and cubic.last_max_cwnd == 80 * 1741 // 2048
    assert Reno().ssthresh(tcb) == 40


def cubic_rounds(cubic: Cubic, tcb: SimpleNamespace, rounds: int, start: float, rtt: float = RTT) -> list[int]:
    """Each RTT a window of ACKs, one per segment, spread over the RTT; cwnd after each round."""
    out = []
    now = start
    for _ in range(rounds):
        window = tcb.cwnd
        for i in range(window):
            before = tcb.cwnd
            cubic.cong_avoid(tcb, 1, now + rtt * i / window)
            assert tcb.cwnd - before <= 1
        now += rtt
        out.append(tcb.cwnd)
    return out


def test_cubic_is_concave_up_to_wmax_then_convex():
    """RFC 9438: after a reduction cwnd returns to W_max in K = cbrt(W_max (1 - beta) / C) seconds,
    slowly near it, then probes beyond it faster and faster."""
    cubic, tcb = Cubic(), stub_tcb(100)
    cubic.delay_min = int(RTT * 1_000_000)
    tcb.ssthresh = tcb.cwnd = cubic.ssthresh(tcb)
    k = (100 * (1 - 717 / 1024) / 0.4) ** (1 / 3)
    assert cubic_root(27) == 3 and cubic_root(26) == 2
    curve = cubic_rounds(cubic, tcb, 80, 10.0)
    at_k = curve[int(k / RTT) - 2]  # t runs one minimum RTT ahead: W(t + RTT) is the target
    assert 98 <= at_k <= 100
    gains = [b - a for a, b in zip(curve, curve[1:], strict=False)]
    before, after = gains[: int(k / RTT) - 2], gains[int(k / RTT) + 5:]
    assert max(before[-10:]) <= 1 and sum(before[:10]) > sum(before[-10:])  # concave
    assert sum(after[-10:]) > sum(after[:10]) > 0  # convex


def test_cubic_is_never_slower_than_reno_in_the_tcp_friendly_region():
    """With a short RTT, Reno's estimate (ack_cnt) drives the window: cubic's curve depends on
    time alone, and reaches only about 19 segments in the second these 100 rounds of 10 ms take."""
    cubic, tcb = Cubic(), stub_tcb(20)
    cubic.delay_min = 10_000
    cubic.last_max_cwnd = 20
    tcb.ssthresh = tcb.cwnd = 14
    curve = cubic_rounds(cubic, tcb, 100, 10.0, rtt=0.01)
    # Reno with beta 0.7 (RFC 9438 4.3): 3 (1 - beta) / (1 + beta) ~ 0.53 segment per RTT.
    assert 14 + 48 <= curve[-1] <= 14 + 56


def test_cubic_idle_time_earns_no_growth():
    """Sending again after idle moves the epoch (Linux CA_EVENT_TX_START)."""
    cubic, tcb = Cubic(), stub_tcb(50, ssthresh=50)
    cubic.delay_min = int(RTT * 1_000_000)
    cubic.cong_avoid(tcb, 1, 1.0)
    epoch = cubic.epoch_start
    cubic.tx_start(tcb, 4.0)
    assert cubic.epoch_start == epoch + 4000
    Reno().tx_start(tcb, 4.0)  # nothing to move


def test_cubic_grows_only_when_cwnd_limited():
    cubic, tcb = Cubic(), stub_tcb(50, ssthresh=40, limited=False)
    tcb.max_packets_out = 10
    cubic.cong_avoid(tcb, 10, 1.0)
    assert tcb.cwnd == 50


# ---------------------------------------------------------------- HyStart


def hystart_samples(delays_ms: list[float], cwnd: int = 20, spacing: float = 0.01,
                    delay_min: int = 0) -> SimpleNamespace:
    """RTT samples in one slow-start round (the minimum RTT from earlier rounds, if given)."""
    cubic, tcb = Cubic(), stub_tcb(cwnd)
    cubic.init(tcb, 0.0)
    cubic.delay_min = delay_min
    tcb.snd_nxt = 100_000
    for i, delay in enumerate(delays_ms):
        tcb.snd_una = 1 + i  # within the round that began at the first sample
        cubic.acked(tcb, int(delay * 1000), 0.5 + i * spacing)
    return tcb


def test_hystart_delay_increase_ends_slow_start():
    """Eight samples, then a round minimum above delay_min + clamp(delay_min / 8, 4, 16 ms)."""
    assert hystart_samples([113] * 9, delay_min=100_000).ssthresh == 20
    assert hystart_samples([113] * 8, delay_min=100_000).ssthresh == 0x7FFFFFFF  # 8 samples first
    assert hystart_samples([112] * 9, delay_min=100_000).ssthresh == 0x7FFFFFFF  # 12.5 ms is the threshold
    assert hystart_samples([100] + [200] * 8).ssthresh == 0x7FFFFFFF  # the round's minimum counts
    assert hystart_samples([200] * 9, cwnd=15, delay_min=100_000).ssthresh == 0x7FFFFFFF  # < 16 segments


def test_hystart_ack_train_ends_slow_start():
    """ACKs at most 2 ms apart for longer than half the minimum RTT: the pipe is full."""
    # Half of 20 ms plus the 1 ms TSO cushion: 10.5 ms.
    assert hystart_samples([20] * 9, spacing=0.0015).ssthresh == 20  # a train of 12 ms
    assert hystart_samples([20] * 8, spacing=0.0015).ssthresh == 0x7FFFFFFF  # 10.5 ms
    assert hystart_samples([20] * 9, spacing=0.0021).ssthresh == 0x7FFFFFFF  # not a train


# ---------------------------------------------------------------- restart after idle


@pytest.mark.parametrize("idle, after_idle, enabled", [(0.5, 10, True), (0.15, 20, True), (0.5, 20, False)])
def test_cwnd_restarts_after_an_idle_rto(idle, after_idle, enabled):
    """RFC 5681 4.1, as Linux's tcp_cwnd_restart (tcp_slow_start_after_idle=1 by default):
    new data after more than an RTO (0.2 s here) with nothing in flight halves cwnd once per
    RTO idle past the first, down to the initial window; ssthresh does not fall (it keeps
    at least 3/4 of the old cwnd, and here it is still the initial infinity)."""
    bench, conn = opened(TcpConfig(slow_start_after_idle=enabled))
    tcb = tcb_of(bench, conn)
    sent = send_window(bench, conn, 10)
    conn.send("A", ack=sent[-1].seq + MSS)  # all acknowledged: cwnd 20, nothing in flight
    assert tcb.cwnd == 20 and not tcb.rtx
    bench.advance(idle)
    assert len(send_window(bench, conn, 40)) == after_idle
    assert tcb.ssthresh == 0x7FFFFFFF
