"""Attacks from outside, as a hostile peer would mount them with raw packets: each must cost the
stack bounded work and memory and leave it serving others, as Linux does.

Out-of-order floods (CVE-2018-5390's class), SYN floods (SYN cookies, RFC 4987), segments
that carry SACK blocks (sized for their options), and PAWS under reordering (RFC 7323 with
Linux's tolerance).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pystack.socket import SKB_OVERHEAD, SO_RCVBUF, SOCK_STREAM, SOL_SOCKET
from pystack.tcp.ofo import REBASE_AFTER, OutOfOrderQueue
from pystack.tcp.seq import seq_diff
from pystack.tcp.tcb import TcpConfig

from .tcp_harness import (
    LINUX_SYN_OPTIONS,
    Captured,
    PeerBench,
    PeerConn,
    option,
    option_kinds,
    option_value,
    passive_open,
)

RCVBUF = 32768  # SO_RCVBUF: Linux doubles it, the window is half of that


def pattern(offset: int, length: int) -> bytes:
    """The stream's bytes from ``offset``: position-dependent, so a misplaced byte shows."""
    return bytes((offset + i) % 251 for i in range(length))


def small_buffer_conn(bench: PeerBench):
    conn = passive_open(bench, setup_listener=lambda fd: bench.stack.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, RCVBUF))
    bench.take()
    return conn, bench.stack.sockets[conn.fd].tcb


def deliver_in_order(bench: PeerBench, conn, base: int, length: int) -> bytes:
    """The peer sends the stream from ``base`` in order; the application reads all of it."""
    for offset in range(0, length, 1000):
        conn.send("A", pattern(offset, min(1000, length - offset)), seq=base + offset)
    return bench.stack.recv(conn.fd, 1 << 20)


# ---------------------------------------------------------------- out-of-order queue


def test_a_flood_of_one_byte_holes_is_bounded_by_the_receive_buffer():
    """1-byte segments at rcv_nxt+1+2k, as far as the window allows: each is charged as
    Linux charges skb truesize, so the queue stops growing at the receive buffer and the rest
    are dropped (TCPOFODrop), not queued by the thousand."""
    bench = PeerBench()
    conn, tcb = small_buffer_conn(bench)
    base = conn.seq
    holes = 1000
    for k in range(holes):
        conn.send("A", pattern(1 + 2 * k, 1), seq=base + 1 + 2 * k)
    queue = tcb.out_of_order
    assert queue.truesize <= tcb.sock.rcvbuf
    assert len(queue) <= tcb.sock.rcvbuf // (SKB_OVERHEAD + 1)
    assert bench.counters.tcp["OFODrop"] == holes - len(queue)
    assert queue.ranges()[0] == (base + 1, base + 2)
    received = deliver_in_order(bench, conn, base, 2 * holes)
    assert received == pattern(0, 2 * holes)
    assert not queue and queue.bytes == 0


def test_the_queue_is_pruned_from_the_highest_sequence_down():
    """Holes arriving from the top down: each new one lands lowest, so the highest blocks are
    pruned to make room (tcp_prune_ofo_queue), and the SACK blocks start again from it."""
    bench = PeerBench()
    conn, tcb = small_buffer_conn(bench)
    base = conn.seq
    holes = 1000
    for k in reversed(range(holes)):
        conn.send("A", pattern(1 + 2 * k, 1), seq=base + 1 + 2 * k)
    queue = tcb.out_of_order
    assert bench.counters.tcp["OfoPruned"] > 0
    assert bench.counters.tcp["OFODrop"] == 0
    assert queue.truesize <= tcb.sock.rcvbuf
    kept = queue.ranges()
    assert kept == [(base + 1 + 2 * k, base + 2 + 2 * k) for k in range(len(kept))]
    ack = bench.take()[-1]
    blocks = [tuple(ack.tcp.options[i][1][j:j + 2]) for i in range(len(ack.tcp.options))
              if ack.tcp.options[i][0] == "SAck" for j in range(0, len(ack.tcp.options[i][1]), 2)]
    assert blocks[0] == ((base + 1) & 0xFFFFFFFF, (base + 2) & 0xFFFFFFFF)  # the latest arrival first
    assert deliver_in_order(bench, conn, base, 2 * holes) == pattern(0, 2 * holes)


def test_overlapping_out_of_order_data_coalesces_and_wraps():
    """Segments that overlap or touch become one block (one SACK block), across the
    sequence-space wrap, and the bytes come out in order."""
    bench = PeerBench()
    conn = passive_open(bench, peer_isn=0xFFFFFFFF - 3000)
    bench.take()
    tcb = bench.stack.sockets[conn.fd].tcb
    base = conn.seq
    for offset, length in ((4000, 500), (2000, 1000), (2900, 1200), (1000, 100), (1100, 900), (6000, 10)):
        conn.send("A", pattern(offset, length), seq=base + offset)
    assert tcb.out_of_order.ranges() == [((base + 1000) & 0xFFFFFFFF, (base + 4500) & 0xFFFFFFFF),
                                         ((base + 6000) & 0xFFFFFFFF, (base + 6010) & 0xFFFFFFFF)]
    assert deliver_in_order(bench, conn, base, 6010) == pattern(0, 6010)


# ---------------------------------------------------------------- SYN flood


def listening(bench: PeerBench, backlog: int = 128) -> int:
    lfd = bench.stack.socket(type=SOCK_STREAM)
    bench.stack.bind(lfd, ("0.0.0.0", 80))
    bench.stack.listen(lfd, backlog)
    return lfd


def syn_flood(bench: PeerBench, count: int) -> None:
    """SYNs from spoofed addresses that will never answer."""
    for i in range(count):
        src = f"198.18.0.{10 + i % 200}"
        bench.inject(bench.segment(20000 + i, 80, "S", 7777 * i, options=LINUX_SYN_OPTIONS, src=src))
    bench.take()


def cookie_handshake(bench: PeerBench, lfd: int, syn_options: list, port: int = 50000) -> tuple[PeerConn, Captured]:
    """The peer's SYN, the stack's SYN-ACK (a cookie), the peer's ACK echoing it."""
    ts = option_value(syn_options, "Timestamp")
    conn = PeerConn(bench, port, 80, 1_000_000, ts=ts[0] if ts else None)
    conn.send("S", options=syn_options)
    synack = bench.expect(flags="SA", ack=1_000_001, at=bench.now)
    conn.ack = (synack.seq + 1) & 0xFFFFFFFF
    conn.note(synack)
    conn.listener = lfd
    return conn, synack


def test_a_syn_flood_gets_cookies_and_a_real_client_connects_at_once():
    """300 spoofed SYNs fill the SYN queue (as Linux, it holds one more than the listen backlog
    of 128); the next SYNs are answered with SYN cookies (tcp_syncookies=1), so a real client
    connects at once, with its options intact."""
    bench = PeerBench()
    lfd = listening(bench)
    syn_flood(bench, 300)
    tcp = bench.counters.tcp
    assert bench.stack.sockets[lfd].tcb.syn_queue == 129
    assert tcp["SyncookiesSent"] == tcp["TCPReqQFullDoCookies"] == 171
    conn, synack = cookie_handshake(bench, lfd, LINUX_SYN_OPTIONS)
    assert option(synack.tcp, "WScale") == 7 and option(synack.tcp, "SAckOK") is not None
    conn.wscale = 7
    conn.send("A")
    fd, _ = bench.stack.accept(lfd)
    assert tcp["SyncookiesRecv"] == 1 and tcp["SyncookiesSent"] == 172
    tcb = bench.stack.sockets[fd].tcb
    assert tcb.state_name == "ESTABLISHED"
    assert (tcb.peer_mss, tcb.snd_wscale, tcb.sack_ok, tcb.ts_ok) == (1460, 7, True, True)
    conn.send("PA", b"hello")
    assert bench.stack.recv(fd, 100) == b"hello"
    bench.take()
    bench.stack.send(fd, b"world")
    reply = bench.expect(flags="PA", seq=conn.ack, ack=conn.seq, payload=b"world")
    assert option(reply.tcp, "Timestamp")[0] - option(synack.tcp, "Timestamp")[0] in range(0, 64)


def test_a_cookie_without_timestamps_keeps_only_the_mss():
    """Without timestamps a cookie has nowhere to keep window scaling and SACK (Linux offers
    neither then); the MSS comes back as the table's nearest value below the peer's."""
    bench = PeerBench(config=TcpConfig(syncookies=2))
    lfd = listening(bench)
    options = [("MSS", 1400), ("SAckOK", b""), ("NOP", None), ("WScale", 7)]
    conn, synack = cookie_handshake(bench, lfd, options)
    assert option_kinds(synack.tcp) == ["MSS"]
    conn.send("A")
    fd, _ = bench.stack.accept(lfd)
    tcb = bench.stack.sockets[fd].tcb
    assert (tcb.peer_mss, tcb.snd_wscale, tcb.sack_ok, tcb.ts_ok) == (1300, 0, False, False)
    assert bench.counters.tcp["SyncookiesRecv"] == 1


def test_a_forged_or_stale_cookie_is_dropped_and_counted():
    """An ACK whose cookie is not ours, or older than two minutes, makes no connection: it is
    counted (SyncookiesFailed) and answered as any ACK to a listener, by a RST."""
    bench = PeerBench()
    lfd = listening(bench)
    syn_flood(bench, 260)
    conn, synack = cookie_handshake(bench, lfd, LINUX_SYN_OPTIONS)
    conn.send("A", ack=conn.ack + 12345)
    bench.expect(flags="R", seq=conn.ack + 12345)
    assert bench.counters.tcp["SyncookiesFailed"] == 1
    assert len(bench.stack.tcp.conns) == 129  # the half-open ones of the flood only
    bench.advance(125.0)  # the cookie's minute counter is two behind now
    syn_flood(bench, 260)  # the queue overflows again: ACKs to the listener are checked for cookies
    conn.send("A")
    bench.expect(flags="R")
    assert bench.counters.tcp["SyncookiesFailed"] == 2
    assert bench.counters.tcp["SyncookiesRecv"] == 0


# ---------------------------------------------------------------- segment size with SACK blocks

MSS = 1448  # 1500 - 20 - 20 - 12 (timestamps)


def sack_blocks_of(pkt: Captured) -> list[tuple[int, int]]:
    value = option(pkt.tcp, "SAck") or ()
    return [(value[i], value[i + 1]) for i in range(0, len(value), 2)]


def test_segments_carrying_sack_blocks_fit_the_mtu_during_recovery():
    """While the stack holds the peer's data out of order, every segment it sends carries SACK
    blocks; each is sized for them (Linux tcp_current_mss), so none exceeds the 1500-byte MTU
    and none leaves as IP fragments, retransmissions in recovery included."""
    # Reno's PRR and DupThresh (not RACK, which with no RTT marks every hole at once): the hole's rest waits.
    bench = PeerBench(config=TcpConfig(congestion_control="reno", recovery=0))
    conn = passive_open(bench)
    bench.take()
    bench.stack.send(conn.fd, bytes(range(256)) * 200)
    first = bench.take()
    assert [len(p.payload) for p in first] == [MSS] * 10
    s = [p.seq for p in first]
    # The peer's own data arrives with holes: two blocks held out of order.
    conn.send("PA", b"a" * 100, seq=conn.seq + 100, advance=False)
    conn.send("PA", b"b" * 100, seq=conn.seq + 300, advance=False)
    bench.take()
    # Segment 1 is lost: the peer SACKs 2..4, the stack retransmits it (and sends new data).
    sent = []
    for i in (2, 3, 4, 5):
        conn.send("A", ack=s[1], sack=[(s[2], s[i] + MSS)], advance=False)
        sent += bench.take()
    for p in sent:
        assert len(p.raw) <= 1500, f"{len(p.raw)}-byte packet"
        assert not p.ip.flags.MF and p.ip.frag == 0
    assert any(p.seq == s[1] and p.payload for p in sent), "the hole is retransmitted"
    data = [p for p in sent if p.payload]
    assert data and all(len(sack_blocks_of(p)) == 2 for p in data)
    assert all(len(p.payload) == MSS - 4 - 2 * 8 for p in data)
    # The hole's bytes go in two segments, nothing lost between them.
    piece = next(p for p in data if p.seq == s[1])
    assert first[1].payload.startswith(piece.payload)
    conn.send("A", ack=s[1] + len(piece.payload), sack=[(s[2], s[5] + MSS)], advance=False)
    rest = next(p for p in bench.take() if p.seq == s[1] + len(piece.payload))
    assert piece.payload + rest.payload == first[1].payload


# ---------------------------------------------------------------- PAWS under reordering


def opened_with_ts() -> tuple[PeerBench, PeerConn, object]:
    bench = PeerBench()
    conn = passive_open(bench)
    bench.take()
    return bench, conn, bench.stack.sockets[conn.fd].tcb


def test_a_reordered_segment_one_tick_older_than_ts_recent_is_accepted():
    """The peer sends data (TSval T) then an ACK (T+1); the network swaps them. Linux accepts
    the data: PAWS rejects only TS values more than TCP_PAWS_WINDOW (1) behind ts_recent."""
    bench, conn, tcb = opened_with_ts()
    conn.ts = 5000
    data_seq = conn.seq
    conn.ts = 5001
    conn.send("A")  # the later ACK arrives first and sets ts_recent
    assert tcb.ts_recent == 5001
    conn.ts = 5000
    conn.send("PA", b"late", seq=data_seq)
    assert bench.stack.recv(conn.fd, 100) == b"late"
    assert bench.counters.tcp["PAWSEstab"] == 0
    bench.take()
    conn.ts = 4999  # two ticks behind: an old duplicate for Linux too
    conn.send("PA", b"old", seq=data_seq + 4, advance=False)
    bench.expect(flags="A", ack=data_seq + 4)
    assert bench.counters.tcp["PAWSEstab"] == 1


def test_ts_recent_comes_only_from_the_left_edge_of_the_last_window_sent():
    """Linux tcp_replace_ts_recent (RFC 7323 4.3): while an ACK is delayed, later segments do
    not replace ts_recent, so the ACK echoes the TS value of the first segment it acknowledges."""
    bench, conn, tcb = opened_with_ts()
    for _ in range(20):  # past quick-ACK mode, so that full segments are acknowledged every other one
        conn.send("PA", b"q")
    bench.advance(0.5)  # any delayed ACK goes: the window's left edge is rcv_nxt
    bench.take()
    conn.ts = 6000
    conn.send("A", bytes(MSS))
    bench.expect_nothing()  # delayed
    conn.ts = 6005
    conn.send("A", bytes(MSS))
    ack = bench.expect(flags="A", ack=conn.seq)
    assert option(ack.tcp, "Timestamp")[1] == 6000
    assert tcb.ts_recent == 6000
    conn.ts = 6010
    conn.send("A", bytes(MSS))  # the window's left edge now: it replaces ts_recent
    assert tcb.ts_recent == 6010


def test_paws_lets_a_reordered_duplicate_ack_through():
    """A pure duplicate ACK with an old TS value (within an RTO) is a reordered ACK, not an old
    duplicate: Linux (tcp_disordered_ack) processes it rather than discard it."""
    bench, conn, tcb = opened_with_ts()
    conn.ts = 9000
    conn.send("A")
    conn.ts = 8900
    conn.send("A")
    assert bench.counters.tcp["PAWSEstab"] == 0
    assert tcb.ts_recent == 9000


# ---------------------------------------------------------------- the queue against a model


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(0, 0xFFFFFFFF),
    # Multiples of 50, so that blocks often touch, overlap or nest exactly.
    ops=st.lists(st.tuples(st.integers(1, 60).map(lambda n: 50 * n), st.integers(1, 8).map(lambda n: 50 * n),
                           st.booleans()), max_size=40),
)
def test_out_of_order_queue_matches_a_byte_model(start, ops):
    """Inserts anywhere beyond rcv_nxt, and rcv_nxt moving up (now and then by more than the
    rebase distance), against a plain dict of byte positions: same blocks, same bytes, same
    SACK lookups, across the sequence-space wrap."""
    queue = OutOfOrderQueue()
    model: dict[int, int] = {}  # offset from start -> byte
    rcv_nxt = 0  # offset from start
    for offset, length, advance in ops:
        if advance:
            rcv_nxt += offset + (REBASE_AFTER if length == 350 else 0)
            taken = queue.take_up_to((start + rcv_nxt) & 0xFFFFFFFF)
            for seq, data in taken:
                base = rcv_nxt + seq_diff(seq, (start + rcv_nxt) & 0xFFFFFFFF)
                assert all(model.pop(base + i) == b for i, b in enumerate(data))
            assert all(k > rcv_nxt for k in model)
            continue
        seq = rcv_nxt + offset
        data = pattern(seq, length)
        queue.insert((start + seq) & 0xFFFFFFFF, data, (start + rcv_nxt) & 0xFFFFFFFF)
        model.update({seq + i: b for i, b in enumerate(data)})
        expected = []
        for k in sorted(model):
            if expected and expected[-1][1] == k:
                expected[-1][1] = k + 1
            else:
                expected.append([k, k + 1])
        assert queue.ranges() == [((start + a) & 0xFFFFFFFF, (start + b) & 0xFFFFFFFF) for a, b in expected]
        assert queue.bytes == len(model)
        assert queue.block_at((start + seq) & 0xFFFFFFFF) is not None
        assert queue.covers((start + seq) & 0xFFFFFFFF, (start + seq + length) & 0xFFFFFFFF)


def test_out_of_order_queue_rebases_before_its_offsets_reach_the_horizon():
    """While the queue never empties, rcv_nxt can move a long way from the base its offsets
    count from; past REBASE_AFTER they are recounted from rcv_nxt, so order survives the wrap."""
    start = 0xFFFFFF00
    far = REBASE_AFTER + 100

    def at(offset: int) -> int:
        return (start + offset) & 0xFFFFFFFF

    queue = OutOfOrderQueue()
    queue.insert(at(10), b"a", at(0))
    queue.insert(at(far + 400), b"b", at(0))
    assert queue.take_up_to(at(far)) == [(at(10), bytearray(b"a"))]
    queue.insert(at(far + 100), b"c", at(far))
    assert queue.base == at(far)
    assert queue.ranges() == [(at(far + 100), at(far + 101)), (at(far + 400), at(far + 401))]
    assert queue.block_at(at(far + 400)) == (at(far + 400), at(far + 401))
