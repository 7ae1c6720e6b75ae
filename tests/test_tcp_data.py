"""TCP data transfer in virtual time: integrity, Nagle, cork, ADU, ACK policy, SACK generation,
windows and persist, receive flags, half-close, abortive and orderly close, TIME-WAIT."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import struct

import pytest

from pystack.socket import (
    IPPROTO_TCP,
    MSG_DONTWAIT,
    MSG_PEEK,
    MSG_WAITALL,
    SO_ADU,
    SO_RCVBUF,
    SOCK_STREAM,
    SOL_SOCKET,
)
from pystack.tcp.api import MSG_MORE, SHUT_RD, SHUT_WR, SO_LINGER, TCP_CORK, TCP_NODELAY
from pystack.tcp.tcb import (
    CLOSE_WAIT,
    CLOSING,
    FIN_WAIT_1,
    FIN_WAIT_2,
    LAST_ACK,
    TIME_WAIT,
    TcpConfig,
)

from .tcp_harness import AB, BA, Pair, PeerBench, option, passive_open

MSS = 1448  # 1500 - 40 - 12 (timestamps)


def sack_of(pkt) -> list[tuple[int, int]]:
    value = option(pkt.tcp, "SAck")
    if not value:
        return []
    return [(value[i], value[i + 1]) for i in range(0, len(value), 2)]


def states(pair: Pair) -> tuple[list[str], list[str]]:
    return ([t.state_name for t in pair.a.tcp.conns.values()], [t.state_name for t in pair.b.tcp.conns.values()])


# ---------------------------------------------------------------- bulk transfer


def test_bulk_transfer_both_directions_at_once():
    pair = Pair(delay=0.005)
    cfd, sfd, _ = pair.connect()
    rng = random.Random(7)
    up = rng.randbytes(1_500_000)
    down = rng.randbytes(1_000_000)
    got_b, got_a, took = pair.exchange(cfd, sfd, up, down, timeout=30)
    assert hashlib.sha256(got_b).digest() == hashlib.sha256(up).digest()
    assert hashlib.sha256(got_a).digest() == hashlib.sha256(down).digest()
    assert took < 0.1  # 10 ms RTT: slow start from 10 segments reaches the 512 KB window in ~6 round trips
    assert pair.a.counters.tcp.get("RetransSegs", 0) == 0
    # Full-sized segments (timestamps negotiated on both sides).
    sizes = {len(p.payload) for p in pair.data_segments(AB)}
    assert max(sizes) == MSS


def test_transfer_then_orderly_close_reaches_eof_both_ways():
    pair = Pair(delay=0.001)
    cfd, sfd, _ = pair.connect()
    got_b, got_a, _ = pair.exchange(cfd, sfd, os.urandom(100_000), os.urandom(50_000), close_after=True)
    assert len(got_b) == 100_000 and len(got_a) == 50_000


# ---------------------------------------------------------------- Nagle, cork, ADU


def test_nagle_coalesces_small_writes_while_a_small_segment_is_unacked():
    bench = PeerBench()
    conn = passive_open(bench)
    fd = conn.fd
    assert bench.stack.send(fd, b"a") == 1
    first = bench.expect(flags="PA", payload=b"a")
    for ch in b"bcd":
        bench.stack.send(fd, bytes([ch]))
    bench.expect_nothing()  # held: a sub-MSS segment is unacknowledged (RFC 896)
    conn.send("A", ack=first.seq + 1)
    bench.expect(flags="PA", seq=first.seq + 1, payload=b"bcd")
    bench.expect_nothing()


def test_nagle_minshall_sends_the_tail_of_a_large_write_at_once():
    bench = PeerBench()
    conn = passive_open(bench)
    bench.stack.send(conn.fd, bytes(2000))
    # Linux's Minshall variant: only an unacked *small* segment holds a partial one back.
    assert [len(p.payload) for p in bench.take()] == [MSS, 2000 - MSS]
    bench.stack.send(conn.fd, b"x")
    bench.expect_nothing()  # now the 552-byte segment is the small one outstanding


def test_tcp_nodelay_sends_every_small_write():
    bench = PeerBench()
    conn = passive_open(bench)
    bench.stack.setsockopt(conn.fd, IPPROTO_TCP, TCP_NODELAY, 1)
    assert bench.stack.getsockopt(conn.fd, IPPROTO_TCP, TCP_NODELAY) == 1
    for ch in b"abcd":
        bench.stack.send(conn.fd, bytes([ch]))
    assert [p.payload for p in bench.take()] == [b"a", b"b", b"c", b"d"]


def test_nodelay_set_later_pushes_what_nagle_held():
    bench = PeerBench()
    conn = passive_open(bench)
    bench.stack.send(conn.fd, b"a")
    bench.stack.send(conn.fd, b"b")
    assert [p.payload for p in bench.take()] == [b"a"]
    bench.stack.setsockopt(conn.fd, IPPROTO_TCP, TCP_NODELAY, 1)
    assert [p.payload for p in bench.take()] == [b"b"]


def test_tcp_cork_holds_partial_segments_until_uncorked():
    bench = PeerBench()
    conn = passive_open(bench)
    fd = conn.fd
    bench.stack.setsockopt(fd, IPPROTO_TCP, TCP_CORK, 1)
    bench.stack.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, 1)  # cork wins over nodelay
    bench.stack.send(fd, bytes(100))
    bench.expect_nothing()
    bench.stack.send(fd, bytes(1400))
    full = bench.expect(length=MSS)  # a full segment may go
    bench.expect_nothing()
    bench.advance(0.1)
    bench.expect_nothing()
    bench.stack.setsockopt(fd, IPPROTO_TCP, TCP_CORK, 0)
    bench.expect(flags="PA", seq=full.seq + MSS, length=1500 - MSS)


def test_tcp_nodelay_on_a_corked_socket_pushes_once():
    bench = PeerBench()
    conn = passive_open(bench)
    fd = conn.fd
    bench.stack.setsockopt(fd, IPPROTO_TCP, TCP_CORK, 1)
    bench.stack.send(fd, b"a" * 40)
    bench.stack.send(fd, b"b" * 40)
    bench.expect_nothing()
    bench.stack.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, 1)  # Linux TCP_NAGLE_PUSH
    pushed = bench.expect(flags="PA", payload=b"a" * 40 + b"b" * 40)
    conn.send("A", ack=pushed.seq + 80)
    bench.stack.send(fd, b"c" * 40)  # still corked for new data
    bench.expect_nothing()


def test_msg_more_holds_a_partial_segment_without_psh():
    bench = PeerBench()
    conn = passive_open(bench)
    fd = conn.fd
    bench.stack.send(fd, b"x" * 40, MSG_MORE)
    bench.stack.send(fd, b"y" * 40, MSG_MORE)
    bench.expect_nothing()
    bench.stack.send(fd, b"z" * 40)  # a write without MSG_MORE pushes it all
    bench.expect(flags="PA", payload=b"x" * 40 + b"y" * 40 + b"z" * 40)
    conn.send("A", ack=conn.ack + 120)
    bench.stack.send(fd, b"m" * 40, MSG_MORE)
    bench.stack.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, 1)
    bench.expect(flags="A", payload=b"m" * 40)  # pushed, but no PSH: more was announced


def test_tcp_cork_ceiling_is_the_probe_timer():
    bench = PeerBench()
    conn = passive_open(bench)
    bench.stack.setsockopt(conn.fd, IPPROTO_TCP, TCP_CORK, 1)
    bench.stack.send(conn.fd, b"corked")
    bench.advance(0.199)
    bench.expect_nothing()
    bench.advance(0.001)
    # Linux: with nothing in flight the probe timer (one RTO, at least 200 ms) sends corked data.
    bench.expect(flags="PA", payload=b"corked", at=0.2)


def test_so_adu_accepts_only_the_committed_size():
    pair = Pair()
    cfd, sfd, _ = pair.connect()
    pair.a.setsockopt(cfd, SOL_SOCKET, SO_ADU, 100)
    assert pair.a.getsockopt(cfd, SOL_SOCKET, SO_ADU) == 100
    assert pair.a.send(cfd, bytes(100)) == 100
    for size in (0, 99, 101, 1000):
        with pytest.raises(OSError) as info:
            pair.a.send(cfd, bytes(size))
        assert info.value.errno == errno.EINVAL
    pair.a.setsockopt(cfd, SOL_SOCKET, SO_ADU, 0)
    assert pair.a.send(cfd, bytes(7)) == 7
    pair.run(0.1)
    assert pair.b.recv(sfd, 1000) == bytes(107)


# ---------------------------------------------------------------- ACK policy


def test_delayed_ack_40ms_and_every_second_full_segment():
    bench = PeerBench()
    conn = passive_open(bench)
    fd = conn.fd
    # Quick-ACK mode at the start of a connection: the first 16 ACKs go at once (Linux).
    for _ in range(16):
        conn.send("PA", b"q")
        bench.expect(flags="A", ack=conn.seq, at=bench.now)
    t0 = bench.now
    conn.send("PA", b"slow")
    bench.expect_nothing()
    bench.advance(0.039)
    bench.expect_nothing()
    bench.advance(0.001)
    bench.expect(flags="A", ack=conn.seq, at=t0 + 0.04)
    bench.advance(1.0)
    # Two full-sized segments: the second is acknowledged at once (RFC 5681 4.2).
    conn.send("A", bytes(MSS))
    bench.expect_nothing()
    conn.send("A", bytes(MSS))
    bench.expect(flags="A", ack=conn.seq, at=bench.now)
    # A single full segment waits for the delayed-ACK timer.
    t1 = bench.now
    conn.send("A", bytes(MSS))
    bench.expect_nothing()
    bench.advance(0.05)
    bench.expect(flags="A", ack=conn.seq, at=t1 + 0.04)
    assert len(bench.stack.recv(fd, 100_000)) == 16 + 4 + 3 * MSS


def test_out_of_order_segment_is_acknowledged_at_once_with_sack():
    bench = PeerBench()
    conn = passive_open(bench)
    bench.take()
    for _ in range(16):  # use up quick-ACK mode so that any immediate ACK below is the OOO rule
        conn.send("PA", b"q")
    bench.take()
    base = conn.seq
    conn.send("PA", b"B" * 100, seq=base + 100)
    ack = bench.expect(flags="A", ack=base, at=bench.now)
    assert sack_of(ack) == [(base + 100, base + 200)]
    conn.send("PA", b"A" * 100, seq=base)
    ack = bench.expect(flags="A", ack=base + 200, at=bench.now)  # a hole was filled: at once
    assert sack_of(ack) == []
    assert bench.stack.recv(conn.fd, 1000)[-200:] == b"A" * 100 + b"B" * 100


def test_receiver_reports_sack_blocks_most_recent_first():
    bench = PeerBench()
    conn = passive_open(bench)
    base = conn.seq
    seg = [(base + i * 100, bytes([65 + i]) * 100) for i in range(8)]

    def arrive(i: int) -> list[tuple[int, int]]:
        conn.send("PA", seg[i][1], seq=seg[i][0])
        pkt = bench.take()[-1]
        return pkt.ack, sack_of(pkt)

    s = [x for x, _ in seg]
    assert arrive(0) == (s[1], [])
    assert arrive(2) == (s[1], [(s[2], s[3])])
    assert arrive(4) == (s[1], [(s[4], s[5]), (s[2], s[3])])
    assert arrive(6) == (s[1], [(s[6], s[7]), (s[4], s[5]), (s[2], s[3])])
    # A fourth hole: with timestamps only three blocks fit; the oldest is left out.
    conn.send("PA", b"Z" * 50, seq=base + 850)
    pkt = bench.take()[-1]
    assert sack_of(pkt) == [(base + 850, base + 900), (s[6], s[7]), (s[4], s[5])]
    # Filling the hole between blocks merges them; the merged block comes first.
    assert arrive(3) == (s[1], [(s[2], s[5]), (base + 850, base + 900), (s[6], s[7])])
    # Blocks keep their recency when the cumulative ACK swallows others (Linux tcp_sack_remove).
    assert arrive(1) == (s[5], [(base + 850, base + 900), (s[6], s[7])])
    assert arrive(5) == (s[7], [(base + 850, base + 900)])
    assert arrive(7) == (base + 800, [(base + 850, base + 900)])
    conn.send("PA", b"Y" * 50, seq=base + 800)
    pkt = bench.take()[-1]
    assert (pkt.ack, sack_of(pkt)) == (base + 900, [])
    data = bench.stack.recv(conn.fd, 10_000)
    assert data == b"".join(d for _, d in seg) + b"Y" * 50 + b"Z" * 50


def test_duplicate_segment_is_acknowledged_with_dsack_and_not_delivered_twice():
    bench = PeerBench()
    conn = passive_open(bench)
    seq = conn.seq
    conn.send("PA", b"hello")
    bench.take()
    conn.send("PA", b"hello", seq=seq)
    dup = bench.expect(flags="A", ack=seq + 5)
    assert sack_of(dup) == [(seq, seq + 5)]  # D-SACK (RFC 2883), as Linux
    conn.send("PA", b"lo, world", seq=seq + 3)  # partly old
    part = bench.take()[-1]
    assert part.ack == seq + 12 and sack_of(part) == [(seq + 3, seq + 5)]
    assert bench.stack.recv(conn.fd, 100) == b"hello, world"
    conn.send("PA", b"x", seq=conn.seq + 10)  # out of order: plain SACK
    conn.send("PA", b"x", seq=conn.seq + 10)  # the same again: D-SACK, then the SACK block
    assert sack_of(bench.take()[-1]) == [(conn.seq + 10, conn.seq + 11)] * 2
    conn.send("A")
    assert sack_of(bench.take()[-1]) == [(conn.seq + 10, conn.seq + 11)]  # reported once


def test_peer_window_below_two_segments_halves_the_segment_size():
    bench = PeerBench()
    conn = passive_open(bench, window=1000, syn_options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0))])
    bench.stack.send(conn.fd, bytes(3000))
    # Linux tcp_bound_to_half_wnd: segments of half the peer's largest window.
    first = bench.take()
    assert [len(p.payload) for p in first] == [500, 500]
    conn.send("A", ack=first[-1].seq + 500)
    assert [len(p.payload) for p in bench.take()] == [500, 500]


# ---------------------------------------------------------------- windows


def test_zero_window_persist_probes_back_off_then_transfer_resumes():
    # B does not scale its window and has exactly four segments of receive space.
    pair = Pair(config_b=TcpConfig(window_scale=0))
    cfd, sfd, _ = pair.connect(setup_listener=lambda fd: pair.b.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, 4 * MSS))
    data = os.urandom(20_000)
    assert pair.a.send(cfd, data) == 20_000
    pair.run(0.001)
    tcb = pair.tcb("a", cfd)
    assert tcb.snd_wnd == 0 and tcb.snd_una == tcb.snd_nxt
    assert [len(p.payload) for p in pair.data_segments(AB)] == [MSS] * 4
    zero_at = max(p.time for p in pair.packets(BA))
    assert tcb.rtt.rto == pytest.approx(0.2)
    pair.clear_log()
    pair.run(3.2)
    probes = pair.packets(AB)
    # Zero-window probes: snd_una - 1, no data (Linux tcp_xmit_probe_skb), backing off from the RTO.
    assert [round(p.time - zero_at, 6) for p in probes] == [0.2, 0.6, 1.4, 3.0]
    assert all(p.seq == (tcb.snd_una - 1) & 0xFFFFFFFF and not p.payload and p.flags == "A" for p in probes)
    replies = pair.packets(BA)
    # Each probe is an out-of-window pure ACK: B answers at most one per 0.5 s (Linux's
    # tcp_invalid_ratelimit), so the probe 0.4 s after the first goes unanswered.
    assert [round(r.time - zero_at, 6) for r in replies] == [0.2, 1.4, 3.0]
    assert all(r.tcp.window == 0 for r in replies)
    assert pair.a.counters.tcp["WindowProbes"] == 4 and pair.b.counters.tcp["TCPACKSkippedSeq"] == 1
    # The application reads: B announces the window, A resumes at once (no waiting for a probe).
    pair.clear_log()
    assert len(pair.b.recv(sfd, 65536)) == 4 * MSS
    update = pair.packets(BA)[0]
    assert update.tcp.window == 4 * MSS and update.time == pair.clock.now()
    pair.run(0.001)
    assert [len(p.payload) for p in pair.data_segments(AB)] == [MSS] * 4
    got = bytearray(data[: 4 * MSS])
    t = pair.clock.now()
    while len(got) < len(data):
        try:
            got += pair.b.recv(sfd, 65536)
        except BlockingIOError:
            pair.run(0.01)
        assert pair.clock.now() - t < 5
    assert bytes(got) == data


def test_small_window_is_used_when_the_persist_timer_fires():
    bench = PeerBench()
    # The peer offers no window scaling: a 3000-byte window is exactly 3000 bytes.
    conn = passive_open(bench, syn_options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0))])
    conn.window = 3000
    conn.send("A")
    bench.stack.send(conn.fd, bytes(10_000))
    assert [len(p.payload) for p in bench.take()] == [MSS, MSS]
    conn.send("A", ack=conn.ack + 2 * MSS, window=3000 - 2 * MSS)
    bench.expect_nothing()  # 104 bytes: less than an MSS and half the largest window (sender SWS)
    conn.ack += 2 * MSS
    bench.advance(0.2)
    # Linux tcp_write_wakeup: the persist timer sends what fits.
    bench.expect(flags="PA", seq=conn.ack, length=3000 - 2 * MSS, at=0.2)
    bench.expect_nothing()


def test_receiver_silly_window_avoidance():
    bench = PeerBench()
    # The peer offers no window scaling, so windows are exact byte counts.
    conn = passive_open(bench, syn_options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0))],
                        setup_listener=lambda fd: bench.stack.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, 4096))
    fd = conn.fd
    # The SYN-ACK offered 4096 bytes of space rounded down to whole segments of the MSS the
    # data comes in, 1448 with timestamps (Linux tcp_select_initial_window): fill it.
    assert bench.stack.sockets[fd].tcb.rcv_adv - bench.stack.sockets[fd].tcb.irs - 1 == 2896
    for _ in range(2):
        conn.send("A", bytes(MSS))
    acks = bench.take()
    assert acks[-1].ack == conn.seq and acks[-1].tcp.window == 0  # 1200 bytes free: less than an MSS
    # Reading a little does not open a silly window: no update, and a probe still sees 0.
    assert len(bench.stack.recv(fd, 200)) == 200
    bench.expect_nothing()
    conn.send("A", seq=conn.seq - 1)  # a zero-window probe
    assert bench.expect(flags="A", ack=conn.seq).tcp.window == 0
    # Once at least one MSS (1460, our advertised MSS) is free the window opens, with an update.
    assert len(bench.stack.recv(fd, 59)) == 59
    bench.expect_nothing()
    assert len(bench.stack.recv(fd, 1)) == 1
    update = bench.expect(flags="A", ack=conn.seq)
    assert update.tcp.window == 1460
    # The right edge never moves left: data consumed but not read keeps it where it was.
    conn.send("A", bytes(1000))
    assert bench.take()[-1].tcp.window == 460


# ---------------------------------------------------------------- receive flags


def test_msg_peek_waitall_dontwait():
    pair = Pair()
    cfd, sfd, _ = pair.connect()
    with pytest.raises(BlockingIOError) as info:
        pair.b.recv(sfd, 10, MSG_DONTWAIT)
    assert info.value.errno == errno.EAGAIN
    pair.a.send(cfd, b"0123456789" * 10)
    pair.run(0.01)
    assert pair.b.recv(sfd, 5, MSG_PEEK) == b"01234"
    assert pair.b.recv(sfd, 5, MSG_PEEK) == b"01234"  # peeking consumes nothing
    assert pair.b.recv(sfd, 10) == b"0123456789"
    with pytest.raises(BlockingIOError):
        pair.b.recv(sfd, 1000, MSG_WAITALL)  # 90 bytes are not all of 1000: would block
    assert len(pair.b.recv(sfd, 1000, MSG_WAITALL | MSG_PEEK | MSG_DONTWAIT)) == 90
    assert len(pair.b.recv(sfd, 50, MSG_WAITALL)) == 50
    pair.a.send(cfd, b"x" * 60)
    pair.run(0.01)
    assert pair.b.recv(sfd, 100, MSG_WAITALL) == b"0123456789" * 4 + b"x" * 60
    pair.a.send(cfd, b"tail")
    pair.a.shutdown(cfd, SHUT_WR)
    pair.run(0.01)
    assert pair.b.recv(sfd, 1000, MSG_WAITALL) == b"tail"  # end of stream ends the wait
    assert pair.b.recv(sfd, 1000, MSG_WAITALL) == b""


# ---------------------------------------------------------------- shutdown and close


def test_half_close_peer_reads_eof_and_can_still_send():
    pair = Pair(delay=0.001)
    cfd, sfd, _ = pair.connect()
    pair.a.send(cfd, b"request")
    pair.a.shutdown(cfd, SHUT_WR)
    pair.run(0.1)
    assert pair.b.recv(sfd, 100) == b"request"
    assert pair.b.recv(sfd, 100) == b""
    assert pair.tcb("a", cfd).state == FIN_WAIT_2 and pair.tcb("b", sfd).state == CLOSE_WAIT
    with pytest.raises(OSError) as info:
        pair.a.send(cfd, b"more")
    assert info.value.errno == errno.EPIPE
    reply = os.urandom(200_000)
    got_b, got_a, _ = pair.exchange(cfd, sfd, b"", reply)
    assert got_a == reply
    pair.b.close(sfd)
    pair.run(0.1)
    assert pair.tcb("a", cfd).state == TIME_WAIT
    assert pair.a.recv(cfd, 10) == b""


def test_shut_rd_reads_eof_but_data_still_acknowledged():
    pair = Pair()
    cfd, sfd, _ = pair.connect()
    pair.b.shutdown(sfd, SHUT_RD)
    assert pair.b.recv(sfd, 10) == b""
    pair.a.send(cfd, b"late")
    pair.run(0.1)
    assert pair.tcb("a", cfd).snd_una == pair.tcb("a", cfd).snd_nxt
    assert pair.b.recv(sfd, 10) == b"late"  # queued data is still readable (Linux)
    assert pair.b.recv(sfd, 10) == b""


def test_close_with_unread_data_sends_rst():
    pair = Pair()
    cfd, sfd, _ = pair.connect()
    pair.a.send(cfd, b"unread")
    pair.run(0.01)
    pair.clear_log()
    tcb = pair.tcb("b", sfd)
    snd_nxt, rcv_nxt = tcb.snd_nxt, tcb.rcv_nxt
    pair.b.close(sfd)
    pair.run(0.01)
    (rst,) = pair.packets(BA)
    # RFC 2525 2.17 / Linux: RST instead of FIN; sequenced at snd_nxt.
    assert rst.flags == "RA" and rst.seq == snd_nxt and rst.ack == rcv_nxt
    assert pair.b.counters.tcp["AbortOnClose"] == 1
    assert not pair.b.tcp.conns
    with pytest.raises(ConnectionResetError):
        pair.a.recv(cfd, 10)


def test_close_without_unread_data_sends_fin():
    pair = Pair()
    cfd, sfd, _ = pair.connect()
    pair.a.send(cfd, b"read")
    pair.run(0.01)
    assert pair.b.recv(sfd, 10) == b"read"
    pair.clear_log()
    pair.b.close(sfd)
    pair.run(0.01)
    assert [p.flags for p in pair.packets(BA)] == ["FA"]
    assert not any("R" in p.flags for p in pair.log)


def test_so_linger_zero_sends_rst_and_skips_time_wait():
    pair = Pair()
    cfd, sfd, _ = pair.connect()
    pair.a.setsockopt(cfd, SOL_SOCKET, SO_LINGER, struct.pack("ii", 1, 0))
    assert struct.unpack("ii", pair.a.getsockopt(cfd, SOL_SOCKET, SO_LINGER)) == (1, 0)
    pair.clear_log()
    pair.a.close(cfd)
    pair.run(0.01)
    assert [p.flags for p in pair.log] == ["RA"]
    assert not pair.a.tcp.conns and not pair.b.tcp.conns
    with pytest.raises(ConnectionResetError):
        pair.b.recv(sfd, 10)


def test_time_wait_lasts_two_msl_then_the_connection_is_gone():
    pair = Pair()
    cfd, sfd, _ = pair.connect()
    port = pair.a.getsockname(cfd)[1]
    pair.a.close(cfd)
    pair.run(0.001)
    pair.b.close(sfd)
    pair.run(0.001)
    start = max(p.time for p in pair.log)
    assert states(pair) == (["TIME-WAIT"], [])
    pair.run(start + 59.999 - pair.clock.now())
    assert states(pair) == (["TIME-WAIT"], [])
    pair.run(0.001)
    assert states(pair) == ([], [])
    # The port is free again.
    fd = pair.a.socket(type=SOCK_STREAM)
    pair.a.bind(fd, ("0.0.0.0", port))


def test_time_wait_acks_a_retransmitted_fin_and_restarts():
    pair = Pair()
    cfd, sfd, _ = pair.connect()
    pair.a.close(cfd)
    pair.run(0.001)
    last_ack = []
    # Drop A's last ACK once: B retransmits its FIN after its RTO.
    pair.filter = lambda p: False if p.direction == AB and not last_ack and not last_ack.append(p) else None
    pair.b.close(sfd)
    pair.run(0.5)
    pair.filter = None
    fins = [p for p in pair.packets(BA) if "F" in p.flags]
    assert len(fins) == 2 and fins[1].time == pytest.approx(fins[0].time + 0.2)
    acks = [p for p in pair.packets(AB) if p.time >= fins[1].time]
    assert [p.flags for p in acks] == ["A"]
    assert states(pair) == (["TIME-WAIT"], [])
    pair.run(fins[1].time + 60 - 0.001 - pair.clock.now())
    assert states(pair) == (["TIME-WAIT"], [])  # restarted by the retransmitted FIN
    pair.run(0.002)
    assert states(pair) == ([], [])


def test_orphaned_fin_wait_2_times_out_after_fin_timeout():
    pair = Pair()
    cfd, sfd, _ = pair.connect()
    pair.a.close(cfd)
    pair.run(0.001)
    acked = pair.clock.now()
    assert states(pair) == (["FIN-WAIT-2"], ["CLOSE-WAIT"])
    pair.run(59.99)
    assert states(pair) == (["FIN-WAIT-2"], ["CLOSE-WAIT"])
    pair.run(0.02)
    assert states(pair) == ([], ["CLOSE-WAIT"])
    assert acked < 0.01 and not any("R" in p.flags for p in pair.log)  # silently, as Linux


def test_fin_wait_2_not_orphaned_waits_for_the_peer():
    pair = Pair()
    cfd, sfd, _ = pair.connect()
    pair.a.shutdown(cfd, SHUT_WR)
    pair.run(120)
    assert pair.tcb("a", cfd).state == FIN_WAIT_2
    pair.b.close(sfd)
    pair.run(0.01)
    assert pair.tcb("a", cfd).state == TIME_WAIT


def test_data_to_an_orphaned_connection_is_answered_with_rst():
    pair = Pair()
    cfd, sfd, _ = pair.connect()
    pair.a.close(cfd)
    pair.run(0.01)
    pair.clear_log()
    pair.b.send(sfd, b"too late")
    pair.run(0.01)
    data, rst = pair.log
    # Linux: a bare RST sequenced at the segment's ACK, as for a port without a socket.
    assert (data.direction, data.flags, rst.direction, rst.flags) == (BA, "PA", AB, "R")
    assert rst.seq == data.ack and rst.tcp.window == 0
    assert pair.a.counters.tcp["AbortOnData"] == 1
    with pytest.raises(OSError) as info:
        pair.b.send(sfd, b"x")
    assert info.value.errno == errno.EPIPE  # a RST in CLOSE-WAIT is EPIPE (Linux tcp_reset)


def test_simultaneous_close_goes_through_closing():
    pair = Pair(delay=0.01)
    cfd, sfd, _ = pair.connect()
    pair.clear_log()
    ta, tb = pair.tcb("a", cfd), pair.tcb("b", sfd)
    pair.a.close(cfd)
    pair.b.close(sfd)
    assert ta.state == FIN_WAIT_1 and tb.state == FIN_WAIT_1
    pair.run(0.01)  # each FIN arrives before the ACK of its own
    assert ta.state == CLOSING and tb.state == CLOSING
    pair.run(0.01)
    assert ta.state == TIME_WAIT and tb.state == TIME_WAIT
    assert sorted(p.flags for p in pair.log) == ["A", "A", "FA", "FA"]
    pair.run(60)
    assert states(pair) == ([], [])


def test_passive_close_goes_through_last_ack():
    pair = Pair(delay=0.01)
    cfd, sfd, _ = pair.connect()
    pair.a.shutdown(cfd, SHUT_WR)
    pair.run(0.015)
    tb = pair.tcb("b", sfd)
    assert tb.state == CLOSE_WAIT
    assert pair.b.recv(sfd, 10) == b""
    pair.b.send(sfd, b"bye")  # CLOSE-WAIT can still send
    pair.b.close(sfd)
    assert tb.state == LAST_ACK
    pair.run(0.1)
    assert states(pair) == (["TIME-WAIT"], [])
    assert tb.state == 0  # CLOSED
    assert pair.a.recv(cfd, 10) == b"bye"
    assert pair.a.recv(cfd, 10) == b""



def test_fin_out_of_order_is_held_until_the_hole_fills():
    bench = PeerBench()
    conn = passive_open(bench)
    tcb = bench.stack.sockets[conn.fd].tcb
    base = conn.seq
    conn.send("FA", b"world", seq=base + 6)
    ack = bench.take()[-1]
    assert ack.ack == base and sack_of(ack) == [(base + 6, base + 12)]  # the block ends past the FIN (Linux)
    assert tcb.state != CLOSE_WAIT
    with pytest.raises(BlockingIOError):
        bench.stack.recv(conn.fd, 100)
    conn.send("PA", b"hello ", seq=base)
    ack = bench.take()[-1]
    assert ack.ack == base + 12  # the data and the FIN
    assert tcb.state == CLOSE_WAIT
    assert bench.stack.recv(conn.fd, 100) == b"hello world"
    assert bench.stack.recv(conn.fd, 100) == b""


def test_dsack_for_data_partly_held_out_of_order():
    """RFC 2883 as Linux's tcp_data_queue_ofo: a segment overlapping a queued block is
    D-SACKed for the overlap (first), beside the merged block."""
    bench = PeerBench()
    conn = passive_open(bench)
    base = conn.seq
    conn.send("PA", b"o" * 100, seq=base + 100, advance=False)
    assert sack_of(bench.take()[-1]) == [(base + 100, base + 200)]
    conn.send("PA", b"o" * 100, seq=base + 150, advance=False)
    assert sack_of(bench.take()[-1]) == [(base + 150, base + 200), (base + 100, base + 250)]
    conn.send("PA", b"o" * 40, seq=base + 300, advance=False)
    assert sack_of(bench.take()[-1]) == [(base + 300, base + 340), (base + 100, base + 250)]  # nothing held


def test_dsack_when_in_order_data_reaches_queued_bytes():
    """Linux's tcp_ofo_queue: in-order data that covers queued bytes D-SACKs the first
    block it reached, up to where the new data ends; one D-SACK block only."""
    bench = PeerBench()
    conn = passive_open(bench)
    base = conn.seq
    for k in range(5):
        conn.send("PA", b"x", seq=base + 1 + 2 * k, advance=False)
    bench.take()
    conn.send("PA", b"y" * 10, seq=base)
    ack = bench.take()[-1]
    assert ack.ack == base + 10 and sack_of(ack) == [(base + 1, base + 2)]
    assert bench.stack.recv(conn.fd, 100) == b"y" * 10


def test_fin_riding_on_data_already_received_is_taken():
    """Data sent again with a FIN: the FIN is new, so it is taken (CLOSE-WAIT); as Linux's
    tcp_fin resets the SACK state, the ACK carries no D-SACK, and it is delayed (ping-pong)."""
    bench = PeerBench()
    conn = passive_open(bench)
    tcb = bench.stack.sockets[conn.fd].tcb
    base = conn.seq
    conn.send("PA", b"d" * 1000)
    bench.advance(0.05)
    bench.take()
    conn.send("FA", b"d" * 1000, seq=base, advance=False)
    assert tcb.state == CLOSE_WAIT
    assert bench.take() == []  # the ACK waits for the delayed-ACK timer
    bench.advance(0.05)
    ack = bench.take()[-1]
    assert ack.ack == base + 1001 and sack_of(ack) == []


def test_right_edge_of_the_scaled_window_never_moves_left():
    bench = PeerBench()
    conn = passive_open(bench)
    edges = []
    for size in (100, 333, 1, 1000, 7, 1448, 99):
        conn.send("PA", bytes(size))
        bench.advance(0.05)
        for pkt in bench.take():
            edges.append(pkt.ack + (pkt.tcp.window << 7))
    # Nothing is read: the committed edge stays put; the announced one, rounded up to the
    # scale unit (128), stays within one unit of it: no creeping, no real retreat.
    assert edges and max(edges) - min(edges) < 128
    tcb = bench.stack.sockets[conn.fd].tcb
    assert all(tcb.rcv_edge <= e < tcb.rcv_edge + 128 for e in edges)


def test_close_after_shutdown_times_out_fin_wait_2():
    pair = Pair()
    cfd, sfd, _ = pair.connect()
    pair.a.shutdown(cfd, SHUT_WR)
    pair.run(1.0)
    assert states(pair) == (["FIN-WAIT-2"], ["CLOSE-WAIT"])
    pair.a.close(cfd)  # now an orphan in FIN-WAIT-2: tcp_fin_timeout applies from here
    pair.run(59.999)
    assert states(pair) == (["FIN-WAIT-2"], ["CLOSE-WAIT"])
    pair.run(0.002)
    assert states(pair) == ([], ["CLOSE-WAIT"])


# ---------------------------------------------------------------- the receive window, as Linux sizes it


def synack_of(syn_options: list, rcvbuf: int | None) -> tuple[PeerBench, object]:
    bench = PeerBench(config=TcpConfig(rmem_default=131072))  # Linux's default tcp_rmem[1]
    lfd = bench.stack.socket(type=SOCK_STREAM)
    if rcvbuf is not None:
        bench.stack.setsockopt(lfd, SOL_SOCKET, SO_RCVBUF, rcvbuf)
    bench.stack.bind(lfd, ("0.0.0.0", 80))
    bench.stack.listen(lfd, 4)
    bench.inject(bench.segment(40000, 80, "S", 5000, 0, 65535, syn_options))
    return bench, bench.expect(flags="SA")


@pytest.mark.parametrize("syn_options, rcvbuf, window, wscale", [
    # Linux tcp_select_initial_window: the space rounded down to whole MSS (1460, less 12 once
    # timestamps are agreed), at most 65535; a locked SO_RCVBUF clamps the window scale too.
    ([("MSS", 1000), ("NOP", None), ("WScale", 7)], 20000, 18980, 0),
    ([("MSS", 1460)], 8192, 7300, None),
    ([("MSS", 1460), ("NOP", None), ("WScale", 7)], None, 64240, 7),
    ([("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)], None, 65160, 7),
])
def test_syn_ack_window_and_scale_as_linux(syn_options, rcvbuf, window, wscale):
    _bench, synack = synack_of(syn_options, rcvbuf)
    assert synack.tcp.window == window and option(synack.tcp, "WScale") == wscale


def test_data_past_the_window_is_taken_whole_only_when_nothing_waits_to_be_read():
    """Linux tcp_sequence: a segment running past the window is accepted whole while the
    receive queue is empty, and dropped whole (BeyondWindow, with an ACK) otherwise."""
    bench = PeerBench()
    conn = passive_open(bench, syn_options=[("MSS", 1000), ("NOP", None), ("WScale", 7)],
                        setup_listener=lambda fd: bench.stack.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, 20000))
    base = conn.seq
    conn.send("PA", bytes(4000))
    bench.take()
    conn.send("PA", bytes(50000), seq=base + 4000, advance=False)
    assert bench.take()[-1].ack == base + 4000 and bench.counters.tcp["BeyondWindow"] == 1
    assert len(bench.stack.recv(conn.fd, 100000)) == 4000
    conn.send("PA", bytes(50000), seq=base + 4000, advance=False)
    assert bench.take()[-1].ack == base + 54000
    assert len(bench.stack.recv(conn.fd, 100000)) == 50000


def test_a_bare_fin_passes_a_closed_window():
    """Linux takes a bare FIN at rcv_nxt even into a zero window (a peer would loop sending
    it), and with the receive memory spent acknowledges it at once."""
    bench = PeerBench()
    conn = passive_open(bench, syn_options=[("MSS", 1000), ("NOP", None), ("WScale", 7)],
                        setup_listener=lambda fd: bench.stack.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, 20000))
    base = conn.seq
    conn.send("PA", bytes(60000))
    assert bench.take()[-1].tcp.window == 0
    conn.send("FA")
    fin_ack = bench.take()
    assert fin_ack and fin_ack[-1].ack == base + 60001 and fin_ack[-1].tcp.window == 0
    assert bench.stack.sockets[conn.fd].tcb.state == CLOSE_WAIT


def test_one_large_segment_is_acknowledged_at_once_even_with_a_fin():
    """Linux counts bytes, not segments, for its immediate ACK: more than one MSS received
    since the last ACK (a GRO'd segment of several) is acknowledged at once, even when a FIN
    on it puts the connection in ping-pong mode (inq/client.pkt)."""
    bench = PeerBench()
    conn = passive_open(bench)
    conn.send("PA", bytes(100))
    bench.advance(0.1)
    bench.take()
    assert bench.stack.recv(conn.fd, 1000) == bytes(100)
    conn.send("FA", bytes(5 * MSS))
    acks = bench.take()
    assert acks and acks[-1].ack == conn.seq  # at once, not after the delayed-ACK timer
