"""Attacks from outside, as a hostile peer would mount them with raw packets: each must cost the
stack bounded work and memory and leave it serving others, as Linux does.

Out-of-order floods (CVE-2018-5390's class), SYN floods (SYN cookies, RFC 4987), segments
that carry SACK blocks (sized for their options), and PAWS under reordering (RFC 7323 with
Linux's tolerance).
"""

from __future__ import annotations

from pystack.socket import SO_RCVBUF, SOL_SOCKET
from pystack.tcp.ofo import SEGMENT_OVERHEAD

from .tcp_harness import PeerBench, passive_open

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
    assert len(queue) <= tcb.sock.rcvbuf // (SEGMENT_OVERHEAD + 1)
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
