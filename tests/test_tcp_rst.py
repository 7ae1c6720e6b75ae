"""Resets, RFC 5961 blind-attack defences, PAWS and keepalive, played packet by packet."""

from __future__ import annotations

import errno

import pytest

from pystack.socket import IPPROTO_TCP, SOCK_STREAM, SOL_SOCKET
from pystack.tcp.api import SO_KEEPALIVE, TCP_KEEPCNT, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_USER_TIMEOUT
from pystack.tcp.tcb import CLOSE_WAIT, ESTABLISHED, SYN_SENT, TcpConfig

from .tcp_harness import PEER, PeerBench, active_open, option, passive_open

MSS = 1448


def established(config: TcpConfig | None = None):
    bench = PeerBench(config=config)
    conn = passive_open(bench)
    return bench, conn, bench.stack.sockets[conn.fd].tcb


# ---------------------------------------------------------------- no connection


@pytest.mark.parametrize(
    ("flags", "payload", "expected_ack"),
    [("S", b"", 5001), ("P", b"0123456789", 5010), ("F", b"", 5001), ("PF", b"abc", 5004), ("", b"", 5000)],
)
def test_rst_to_closed_port_for_a_segment_without_ack(flags, payload, expected_ack):
    bench = PeerBench()
    bench.inject(bench.segment(40000, 9, flags, 5000, 0, 1000, payload=payload))
    # RFC 9293 3.10.7.1: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>
    rst = bench.expect(flags="RA", seq=0, ack=expected_ack)
    assert rst.tcp.sport == 9 and rst.tcp.dport == 40000 and rst.ip.dst == PEER
    assert rst.tcp.window == 0 and not rst.payload and not rst.tcp.options
    bench.expect_nothing()


@pytest.mark.parametrize("flags", ["A", "PA", "SA", "FA"])
def test_rst_to_closed_port_for_a_segment_with_ack(flags):
    bench = PeerBench()
    bench.inject(bench.segment(40000, 9, flags, 5000, 777_777, 1000, payload=b"data" if "P" in flags else b""))
    # <SEQ=SEG.ACK><CTL=RST>
    rst = bench.expect(flags="R", seq=777_777, ack=0)
    assert rst.tcp.window == 0
    bench.expect_nothing()
    assert bench.counters.tcp["OutRsts"] == 1


def test_no_rst_in_answer_to_a_rst():
    bench = PeerBench()
    for flags in ("R", "RA"):
        bench.inject(bench.segment(40000, 9, flags, 5000, 1, 1000))
    bench.expect_nothing()


def test_ack_to_a_listener_gets_rst_and_rst_is_ignored():
    bench = PeerBench()
    lfd = bench.stack.socket(type=SOCK_STREAM)
    bench.stack.bind(lfd, ("0.0.0.0", 80))
    bench.stack.listen(lfd, 4)
    bench.inject(bench.segment(40000, 80, "A", 5000, 4242, 1000))
    bench.expect(flags="R", seq=4242)
    bench.inject(bench.segment(40000, 80, "R", 5000, 0, 1000))
    bench.inject(bench.segment(40000, 80, "", 5000, 0, 1000))  # neither SYN nor ACK: dropped
    bench.expect_nothing()


# ---------------------------------------------------------------- SYN-SENT and SYN-RECEIVED


def connecting(bench: PeerBench):
    fd = bench.stack.socket(type=SOCK_STREAM)
    with pytest.raises(BlockingIOError):
        bench.stack.connect(fd, (PEER, 80))
    syn = bench.expect(flags="S")
    return fd, syn


def test_rst_with_acceptable_ack_in_syn_sent_refuses_the_connection():
    bench = PeerBench()
    fd, syn = connecting(bench)
    bench.inject(bench.segment(80, syn.tcp.sport, "RA", 0, syn.seq + 1, 0))
    assert bench.stack.connect_result(fd) == errno.ECONNREFUSED
    bench.expect_nothing()
    assert not bench.stack.tcp.conns


@pytest.mark.parametrize(("flags", "ack_offset"), [("R", 0), ("RA", 0), ("RA", 2), ("RA", -5)])
def test_other_rsts_in_syn_sent_are_ignored(flags, ack_offset):
    bench = PeerBench()
    fd, syn = connecting(bench)
    # Without ACK, or with an ACK that does not acknowledge our SYN: drop, and never answer a RST.
    ack = syn.seq + 1 + ack_offset if "A" in flags else 0
    if flags == "RA" and ack_offset == 0:
        ack = syn.seq  # SEG.ACK =< ISS
    bench.inject(bench.segment(80, syn.tcp.sport, flags, 12345, ack, 0))
    bench.expect_nothing()
    assert bench.stack.connect_result(fd) == errno.EINPROGRESS
    assert bench.stack.sockets[fd].tcb.state == SYN_SENT


def test_bad_ack_in_syn_sent_is_answered_with_rst():
    bench = PeerBench()
    fd, syn = connecting(bench)
    bench.inject(bench.segment(80, syn.tcp.sport, "SA", 999, syn.seq + 50, 65535, [("MSS", 1460)]))
    bench.expect(flags="R", seq=syn.seq + 50)  # <SEQ=SEG.ACK><CTL=RST>
    assert bench.stack.connect_result(fd) == errno.EINPROGRESS


def test_bad_ack_in_syn_sent_sends_the_syn_again_soon_once():
    """Linux: an unacceptable ACK in SYN-SENT may answer an earlier incarnation of the
    connection, so before any retransmission the SYN goes again after TCP_TIMEOUT_MIN
    (2 ms), then backs off from the initial RTO as usual."""
    bench = PeerBench()
    fd, syn = connecting(bench)
    start = bench.now
    bench.inject(bench.segment(80, syn.tcp.sport, "SA", 999, syn.seq + 50, 65535, [("MSS", 1460)]))
    bench.expect(flags="R", seq=syn.seq + 50)
    bench.advance(0.01)
    again = bench.expect(flags="S", seq=syn.seq)
    assert again.time == pytest.approx(start + 0.002)
    bench.inject(bench.segment(80, syn.tcp.sport, "SA", 999, syn.seq + 50, 65535, [("MSS", 1460)]))
    bench.expect(flags="R", seq=syn.seq + 50)
    bench.advance(1.0)
    bench.expect_nothing()
    bench.advance(1.5)
    third = bench.expect(flags="S", seq=syn.seq)
    assert third.time == pytest.approx(again.time + 2.0)  # no second shortcut: the backed-off RTO
    assert bench.stack.connect_result(fd) == errno.EINPROGRESS


def test_rst_in_syn_received_drops_the_half_open_connection():
    bench = PeerBench()
    lfd = bench.stack.socket(type=SOCK_STREAM)
    bench.stack.bind(lfd, ("0.0.0.0", 80))
    bench.stack.listen(lfd, 4)
    bench.inject(bench.segment(40000, 80, "S", 5000, 0, 65535, [("MSS", 1460)]))
    bench.expect(flags="SA")
    bench.inject(bench.segment(40000, 80, "R", 5001, 0, 0))
    assert not bench.stack.tcp.conns
    assert bench.stack.sockets[lfd].tcb.syn_queue == 0
    bench.advance(5)
    bench.expect_nothing()  # no SYN-ACK retransmissions for it


# ---------------------------------------------------------------- RFC 5961 on a synchronized connection


def test_rst_at_rcv_nxt_resets_the_connection():
    bench, conn, tcb = established()
    conn.send("R")
    bench.expect_nothing()
    assert tcb.state == 0
    with pytest.raises(ConnectionResetError):
        bench.stack.recv(conn.fd, 10)
    assert bench.stack.recv(conn.fd, 10) == b""  # the error is reported once, then end of stream
    with pytest.raises(BrokenPipeError):
        bench.stack.send(conn.fd, b"x")


def test_rst_in_window_but_not_exact_gets_a_challenge_ack():
    bench, conn, tcb = established()
    conn.send("R", seq=conn.seq + 1000)
    ack = bench.expect(flags="A", seq=tcb.snd_nxt, ack=conn.seq)
    assert option(ack.tcp, "Timestamp") is not None
    assert tcb.state == ESTABLISHED
    assert bench.counters.tcp["ChallengeACK"] == 1


@pytest.mark.parametrize("offset", [-1, -100_000, 10 << 20])
def test_rst_out_of_window_is_dropped_silently(offset):
    bench, conn, tcb = established()
    conn.send("R", seq=conn.seq + offset)
    bench.expect_nothing()
    assert tcb.state == ESTABLISHED


def test_rst_in_close_wait_reports_epipe():
    bench, conn, tcb = established()
    conn.send("FA")
    bench.take()
    assert tcb.state == CLOSE_WAIT
    conn.send("R")
    with pytest.raises(BrokenPipeError):
        bench.stack.send(conn.fd, b"x")


def test_rst_at_the_fin_sequence_is_accepted_in_close_wait():
    bench, conn, tcb = established()
    conn.send("FA")
    bench.take()
    conn.send("R", seq=conn.seq - 1)  # sequenced at the FIN (Linux tcp_reset_check)
    assert tcb.state == 0


@pytest.mark.parametrize("offset", [0, 500, -1, 10 << 20])
def test_syn_on_an_established_connection_gets_a_challenge_ack(offset):
    bench, conn, tcb = established()
    conn.send("S", seq=conn.seq + offset, advance=False)
    bench.expect(flags="A", seq=tcb.snd_nxt, ack=conn.seq)  # RFC 5961 4.2, in window or not
    bench.expect_nothing()
    assert tcb.state == ESTABLISHED
    assert bench.counters.tcp["ChallengeACK"] == 1


def test_challenge_and_out_of_window_acks_share_a_per_socket_limit():
    """Linux's tcp_invalid_ratelimit (0.5 s): one challenge or out-of-window ACK per socket in
    that time; data beyond the window is always answered (it cannot be half of an ACK loop)."""
    bench, conn, tcb = established()
    bench.advance(1.0)
    for k in range(4):
        conn.send("R", seq=conn.seq + 10 + k)
    assert len(bench.take()) == 1
    conn.send("A", seq=conn.seq + 50_000_000, advance=False)  # a pure ACK beyond the window
    assert bench.take() == []
    conn.send("PA", b"late", seq=conn.seq + 50_000_000, advance=False)
    assert len(bench.take()) == 1
    tcp = bench.counters.tcp
    assert (tcp["ChallengeACK"], tcp["TCPACKSkippedChallenge"], tcp["TCPACKSkippedSeq"]) == (1, 3, 1)
    bench.advance(0.5)
    conn.send("A", seq=conn.seq + 50_000_000, advance=False)
    assert len(bench.take()) == 1
    assert tcb.state == ESTABLISHED


def test_challenge_acks_are_rate_limited_stack_wide_when_a_limit_is_set():
    bench, conn, tcb = established(TcpConfig(challenge_ack_limit=3, invalid_ratelimit=0))
    bench.advance(1.0)
    for _ in range(5):
        conn.send("R", seq=conn.seq + 10)
    assert len(bench.take()) == 3
    assert bench.counters.tcp["ChallengeACKLimited"] == 2
    bench.advance(1.0)  # the budget refills at limit per second
    conn.send("R", seq=conn.seq + 10)
    assert len(bench.take()) == 1
    assert tcb.state == ESTABLISHED


def test_ack_for_unsent_data_is_answered_and_the_segment_dropped():
    bench, conn, tcb = established()
    conn.send("PA", b"injected", ack=tcb.snd_nxt + 1000)
    bench.expect(flags="A", seq=tcb.snd_nxt, ack=conn.seq - len(b"injected"))
    with pytest.raises(BlockingIOError):
        bench.stack.recv(conn.fd, 100)
    assert bench.counters.tcp["ChallengeACK"] == 1


def test_old_ack_beyond_the_window_is_challenged_and_dropped():
    bench, conn, tcb = established()
    bench.stack.send(conn.fd, bytes(10_000))
    sent = bench.take()
    conn.send("A", ack=tcb.snd_nxt)
    assert tcb.bytes_acked == 10_000
    # RFC 5961 5.2: acceptable if SND.UNA - MAX.SND.WND <= SEG.ACK; Linux caps the window
    # at the bytes acknowledged so far.
    conn.send("PA", b"evil", ack=tcb.snd_una - 10_001)
    bench.expect(flags="A", ack=conn.seq - 4)
    with pytest.raises(BlockingIOError):
        bench.stack.recv(conn.fd, 100)
    conn.seq -= 4
    conn.send("PA", b"fine", ack=tcb.snd_una - 5_000)  # old but within the window: accepted
    assert bench.stack.recv(conn.fd, 100) == b"fine"
    assert sent


def test_paws_drops_segments_with_old_timestamps():
    bench, conn, tcb = established()
    conn.ts = 5000
    conn.send("PA", b"new")
    assert tcb.ts_recent == 5000
    bench.take()
    conn.ts = 4000  # an old duplicate from a previous incarnation
    conn.send("PA", b"old")
    bench.expect(flags="A", ack=conn.seq - 3)  # dropped, with a duplicate ACK (RFC 7323 5.3)
    assert bench.counters.tcp["PAWSEstab"] == 1
    assert bench.stack.recv(conn.fd, 100) == b"new"
    conn.seq -= 3
    conn.ts = 5001
    conn.send("PA", b"next")
    assert bench.stack.recv(conn.fd, 100) == b"next"


def test_paws_does_not_apply_to_rst():
    bench, conn, tcb = established()
    conn.ts = 5000
    conn.send("PA", b"x")
    conn.ts = 1
    conn.send("R")
    assert tcb.state == 0


def test_syn_ack_in_established_after_lost_ack_is_acknowledged():
    bench = PeerBench()
    conn = active_open(bench)
    tcb = bench.stack.sockets[conn.fd].tcb
    # Our ACK of the SYN-ACK was lost: the peer retransmits its SYN-ACK.
    conn.send("SA", seq=conn.seq - 1, advance=False,
              options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (conn.ts, 0)), ("NOP", None), ("WScale", 7)])
    bench.expect(flags="A", seq=tcb.snd_nxt, ack=conn.seq)
    assert tcb.state == ESTABLISHED


# ---------------------------------------------------------------- keepalive


def keepalive_connection(idle: int = 10, intvl: int = 2, cnt: int = 3):
    bench, conn, tcb = established()

    def setup(fd: int) -> None:
        bench.stack.setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, 1)
        bench.stack.setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, idle)
        bench.stack.setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, intvl)
        bench.stack.setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, cnt)

    setup(conn.fd)
    assert bench.stack.getsockopt(conn.fd, SOL_SOCKET, SO_KEEPALIVE) == 1
    assert bench.stack.getsockopt(conn.fd, IPPROTO_TCP, TCP_KEEPIDLE) == idle
    return bench, conn, tcb


def test_keepalive_probes_then_etimedout_with_rst():
    bench, conn, tcb = keepalive_connection()
    bench.advance(30)
    packets = bench.take()
    probes, rst = packets[:-1], packets[-1]
    # Probes after 10 s idle, then every 2 s; the fourth expiry gives up (TCP_KEEPCNT = 3).
    assert [p.time for p in probes] == [10, 12, 14]
    assert all(p.flags == "A" and p.seq == tcb.snd_una - 1 and not p.payload for p in probes)
    assert rst.time == 16 and rst.flags == "RA" and rst.seq == tcb.snd_nxt
    with pytest.raises(TimeoutError):
        bench.stack.recv(conn.fd, 10)
    assert bench.counters.tcp["KeepAliveTimeouts"] == 1


def test_answered_keepalive_probes_keep_the_connection():
    bench, conn, tcb = keepalive_connection()
    bench.advance(10)
    probe = bench.expect(flags="A", seq=tcb.snd_una - 1, at=10)
    conn.send("A")  # the peer answers with an ACK
    bench.advance(9.9)
    bench.expect_nothing()
    bench.advance(0.1)
    bench.expect(flags="A", at=20)  # idle again for 10 s
    assert tcb.state == ESTABLISHED and probe


def test_traffic_postpones_keepalive():
    bench, conn, tcb = keepalive_connection()
    bench.advance(8)
    conn.send("PA", b"hi")
    bench.take()
    bench.advance(9.9)
    bench.expect_nothing()
    bench.advance(0.1)
    bench.expect(flags="A", at=18)


def test_keepalive_with_user_timeout_gives_up_by_time():
    bench, conn, tcb = keepalive_connection(cnt=100)
    bench.stack.setsockopt(conn.fd, IPPROTO_TCP, TCP_USER_TIMEOUT, 15_000)
    bench.advance(30)
    packets = bench.take()
    # Linux: with TCP_USER_TIMEOUT the probe count no longer matters; 15 s of silence does.
    assert [p.time for p in packets[:-1]] == [10, 12, 14]
    assert packets[-1].flags == "RA" and packets[-1].time == 16
