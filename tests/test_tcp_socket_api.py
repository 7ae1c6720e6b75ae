"""Socket-level TCP as Linux has it: ioctls, TCP_NOTSENT_LOWAT, when a writer is woken, SO_ZEROCOPY,
a connection over loopback."""

from __future__ import annotations

import contextlib
import errno
import random
import struct

import pytest
from scapy.layers.inet import IP, TCP

from pystack.clock import VirtualClock
from pystack.procfs import proc_net_tcp
from pystack.skbuff import TCP_SKB_TRUESIZE
from pystack.socket import (
    EXTENDED_ERR,
    F_SETFL,
    IP_FREEBIND,
    IP_RECVERR,
    IPPROTO_IP,
    IPPROTO_TCP,
    MSG_DONTWAIT,
    MSG_ERRQUEUE,
    MSG_OOB,
    MSG_PEEK,
    MSG_TRUNC,
    MSG_ZEROCOPY,
    O_NONBLOCK,
    POLLERR,
    POLLOUT,
    SCM_TIMESTAMPING,
    SCM_TSTAMP_ACK,
    SCM_TSTAMP_SCHED,
    SCM_TSTAMP_SND,
    SIOCINQ,
    SIOCOUTQ,
    SIOCOUTQNSD,
    SO_EE_CODE_ZEROCOPY_COPIED,
    SO_EE_ORIGIN_TIMESTAMPING,
    SO_EE_ORIGIN_ZEROCOPY,
    SO_MARK,
    SO_OOBINLINE,
    SO_SNDBUF,
    SO_TIMESTAMPING,
    SO_ZEROCOPY,
    SOCK_DGRAM,
    SOCK_STREAM,
    SOF_TIMESTAMPING_OPT_ID,
    SOF_TIMESTAMPING_OPT_ID_TCP,
    SOF_TIMESTAMPING_OPT_STATS,
    SOF_TIMESTAMPING_OPT_TSONLY,
    SOF_TIMESTAMPING_SOFTWARE,
    SOF_TIMESTAMPING_TX_ACK,
    SOF_TIMESTAMPING_TX_SCHED,
    SOF_TIMESTAMPING_TX_SOFTWARE,
    SOL_SOCKET,
    BadUserBuffer,
)
from pystack.stack import Stack
from pystack.tcp.api import MSG_EOR, SHUT_WR, TCP_CM_INQ, TCP_INQ, TCP_NODELAY, TCP_NOTSENT_LOWAT
from pystack.tcp.tcb import TcpConfig

from .tcp_harness import PeerBench, passive_open


def test_ioctls_count_unread_unacknowledged_and_unsent_bytes():
    bench = PeerBench()
    conn = passive_open(bench)
    stack, fd = bench.stack, conn.fd
    conn.send("PA", payload=b"r" * 300)
    assert stack.ioctl(fd, SIOCINQ) == 300
    stack.recv(fd, 100)
    assert stack.ioctl(fd, SIOCINQ) == 200
    bench.take()
    stack.send(fd, b"w" * 20000)  # the initial window (10 segments) goes, the rest waits
    burst = bench.take()
    sent = sum(len(p.payload) for p in burst)
    assert 0 < sent < 20000
    assert stack.ioctl(fd, SIOCOUTQ) == 20000
    assert stack.ioctl(fd, SIOCOUTQNSD) == 20000 - sent
    conn.send("A", ack=burst[0].seq + 1000)
    assert stack.ioctl(fd, SIOCOUTQ) == 19000


def test_ioctl_counts_the_fin_in_the_send_queue_and_refuses_a_listener():
    bench = PeerBench()
    conn = passive_open(bench)
    stack, fd = bench.stack, conn.fd
    stack.shutdown(fd, SHUT_WR)
    fin = bench.expect(flags="FA")
    assert stack.ioctl(fd, SIOCOUTQ) == 1  # the FIN has a sequence number (Linux's write_seq)
    assert stack.ioctl(fd, SIOCOUTQNSD) == 0
    conn.send("A", ack=fin.seq + 1)
    assert stack.ioctl(fd, SIOCOUTQ) == 0
    with pytest.raises(OSError) as listening:
        stack.ioctl(conn.listener, SIOCINQ)
    assert listening.value.errno == errno.EINVAL


def test_udp_siocinq_is_the_size_of_the_next_datagram():
    bench = PeerBench()
    stack = bench.stack
    fd = stack.socket(type=SOCK_DGRAM)
    stack.bind(fd, ("0.0.0.0", 5000))
    assert stack.ioctl(fd, SIOCINQ) == 0
    with pytest.raises(OSError) as unknown:
        stack.ioctl(fd, SIOCOUTQNSD)
    assert unknown.value.errno == errno.ENOTTY


MSS_1000 = [("MSS", 1000)]  # no timestamps: 1000-byte segments


def test_a_write_fills_skbs_past_the_buffer_and_counts_their_truesize():
    """Linux checks SO_SNDBUF only before starting an skb, and counts each skb's own truesize."""
    for sndbuf, skbs in (((65000 + TCP_SKB_TRUESIZE) // 2, 1), ((65000 + TCP_SKB_TRUESIZE) // 2 + 1, 2)):
        bench = PeerBench()
        conn = passive_open(bench, syn_options=MSS_1000, window=0)  # nothing leaves: the queue stays as filled
        stack, fd = bench.stack, conn.fd
        stack.setsockopt(fd, SOL_SOCKET, SO_SNDBUF, sndbuf)
        # skbs of 65 segments (the 65279 bytes of a GSO packet, in whole segments); a second one
        # only while the first, with its truesize, is below the doubled SO_SNDBUF.
        assert stack.send(fd, b"x" * 500000, MSG_DONTWAIT) == skbs * 65000
        assert stack.sockfd_lookup(fd).tcb.wmem_queued() == skbs * (65000 + TCP_SKB_TRUESIZE)


def test_writer_is_woken_only_when_a_third_of_the_buffer_is_free():
    bench = PeerBench()
    conn = passive_open(bench, syn_options=MSS_1000)
    stack, fd = bench.stack, conn.fd
    stack.setsockopt(fd, SOL_SOCKET, SO_SNDBUF, 15000)  # 30000 (Linux doubles it)
    # skbs of 32000 (half the peer's 65535 window, in whole segments). The first goes out at once as
    # far as cwnd allows (10 segments), which splits it; the rest, 22000, is topped up to 32000. The
    # next skb would start with 2 skbs and 42000 bytes queued, past 30000: the write stops there.
    assert stack.send(fd, b"x" * 100000) == 42000
    first = bench.take()[0].seq
    assert not stack.poll(fd) & POLLOUT
    woken = []
    stack.on_wake = woken.append
    conn.send("A", ack=first + 10000)  # cwnd 20: 10000:30000 leaves, which splits the skb at 30000
    conn.send("A", ack=first + 20000)  # cwnd 30: the rest, 30000:42000
    # A writer may go on once the free memory is half of what is queued, i.e. when at most 20000
    # is queued: the two skbs' truesize and 42000 less what is acknowledged.
    conn.send("A", ack=first + 42000 - 20000 + 2 * TCP_SKB_TRUESIZE - 1)
    assert not woken and not stack.poll(fd) & POLLOUT
    conn.send("A", ack=first + 42000 - 20000 + 2 * TCP_SKB_TRUESIZE)
    assert woken and stack.poll(fd) & POLLOUT


def test_a_blocked_writer_waits_to_be_woken_where_a_non_blocking_one_tops_up_the_last_skb():
    """Linux's blocked writer sleeps until woken with room (sk_stream_wait_memory); a non-blocking
    write first fills the last skb, which needs no room."""
    bench = PeerBench()
    conn = passive_open(bench, syn_options=MSS_1000)
    stack, fd = bench.stack, conn.fd
    stack.setsockopt(fd, SOL_SOCKET, SO_SNDBUF, 15000)
    assert stack.send(fd, b"x" * 100000) == 42000  # as above: the write stops for room
    first = bench.take()[0].seq
    conn.send("A", ack=first + 10000)  # 10000:30000 leaves: the last skb, 30000:42000, has room again
    with pytest.raises(BlockingIOError):
        stack.send(fd, b"x" * 100000)
    assert stack.send(fd, b"x" * 100000, MSG_DONTWAIT) == 32000 - 12000


def test_tcp_notsent_lowat_stops_a_write():
    """A write starts no new skb while TCP_NOTSENT_LOWAT or more is unsent (tcp_stream_memory_free)."""
    bench = PeerBench()
    conn = passive_open(bench, syn_options=[("MSS", 1000), ("WScale", 7)], window=32896)
    stack, fd = bench.stack, conn.fd
    stack.setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, 4000)
    # skbs of 16000 (half the 32896 window); the first: 10 segments leave (cwnd), and the 6000 left
    # is topped up to 16000, all of it unsent: no new skb.
    assert stack.send(fd, b"x" * 59000, MSG_DONTWAIT) == 26000
    assert len(bench.take()) == 10


def test_send_buffer_sized_from_cwnd_unless_set():
    """Linux sizes an unset send buffer for twice cwnd, each segment a kmalloc'd skb (tcp_sndbuf_expand)."""
    per_segment = 2048 + 256  # 1000 + MAX_TCP_HEADER + shared info, to a power of two; the sk_buff
    bench = PeerBench(TcpConfig(wmem_default=16384))
    conn = passive_open(bench, syn_options=MSS_1000)
    assert bench.stack.getsockopt(conn.fd, SOL_SOCKET, SO_SNDBUF) == 2 * 10 * per_segment
    bench = PeerBench(TcpConfig(wmem_default=16384))
    conn = passive_open(bench, syn_options=MSS_1000,
                        setup_listener=lambda fd: bench.stack.setsockopt(fd, SOL_SOCKET, SO_SNDBUF, 4096))
    assert bench.stack.getsockopt(conn.fd, SOL_SOCKET, SO_SNDBUF) == 8192  # set: kept (SOCK_SNDBUF_LOCK)


def test_send_buffer_grows_with_cwnd_when_a_writer_waits():
    """A writer that found no room lets the buffer grow with cwnd once cwnd has room to spare,
    checked after each packet sent (Linux tcp_event_new_data_sent), and is woken."""
    per_segment = 2048 + 256
    bench = PeerBench(TcpConfig(wmem_default=16384))
    conn = passive_open(bench, syn_options=MSS_1000)
    stack, fd = bench.stack, conn.fd
    tcb = stack.sockfd_lookup(fd).tcb
    stack.send(fd, b"x" * 500000, MSG_DONTWAIT)  # stops for room: 74000 queued, in skbs of 32000
    first = bench.take()[0].seq
    woken = []
    stack.on_wake = woken.append
    conn.send("A", ack=first + 10000)  # cwnd 20, all of it used
    assert stack.getsockopt(fd, SOL_SOCKET, SO_SNDBUF) <= 2 * tcb.cwnd * per_segment and not woken
    conn.send("A", ack=first + 30000)  # cwnd 40: the skb 30000:42000 leaves, 12 segments, room to spare
    assert stack.getsockopt(fd, SOL_SOCKET, SO_SNDBUF) == 2 * tcb.cwnd * per_segment > 2 * 20 * per_segment
    assert woken


def test_tcp_notsent_lowat_gates_pollout_on_unsent_bytes():
    bench = PeerBench()
    conn = passive_open(bench)
    stack, fd = bench.stack, conn.fd
    assert stack.getsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT) == 0
    stack.setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, 4000)
    assert stack.getsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT) == 4000
    stack.send(fd, b"x" * 10 * 1448)  # the initial window, all sent
    stack.send(fd, b"x" * 1999)  # unsent: twice that is below 4000
    assert stack.poll(fd) & POLLOUT
    stack.send(fd, b"x")  # 2000 unsent
    assert not stack.poll(fd) & POLLOUT
    stack.setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, 0xFFFFFFFF)
    assert stack.getsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT) == -1  # an int, as getsockopt gives it
    assert stack.poll(fd) & POLLOUT


def test_so_zerocopy_is_a_boolean_option():
    bench = PeerBench()
    stack = bench.stack
    fd = stack.socket()
    stack.setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, 1)
    assert stack.getsockopt(fd, SOL_SOCKET, SO_ZEROCOPY) == 1
    with pytest.raises(OSError) as bad:
        stack.setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, 2)
    assert bad.value.errno == errno.EINVAL


def test_loopback_bulk_transfer_completes_without_challenge_acks():
    """One stack talking to itself: the receiver's ACK is processed before the sender's transmit
    returns, so the sender must have counted the segment as sent first (else: an ACK of unsent
    data, a challenge ACK, and once the windows disagree the transfer stalls)."""
    clock = VirtualClock()
    stack = Stack(clock=clock, seed=1)
    listener = stack.socket(type=SOCK_STREAM)
    stack.bind(listener, ("127.0.0.1", 80))
    stack.listen(listener)
    client = stack.socket(type=SOCK_STREAM)
    with pytest.raises(BlockingIOError):
        stack.connect(client, ("127.0.0.1", 80))
    server, _ = stack.accept(listener)
    data = random.Random(3).randbytes(1_000_000)
    sent, got = 0, bytearray()
    for _ in range(10_000):
        with contextlib.suppress(BlockingIOError):
            while sent < len(data):
                sent += stack.send(server, data[sent:])
        with contextlib.suppress(BlockingIOError):
            while chunk := stack.recv(client, 65536):
                got += chunk
        deadline = stack.next_deadline()
        if len(got) == len(data) or deadline is None:
            break
        clock.advance(max(0.0, deadline - clock.now()))
        stack.run_timers()
    assert bytes(got) == data
    assert stack.counters.tcp["ChallengeACK"] == 0
    assert not {name: n for name, n in stack.counters.drops.items() if n}


def test_a_burst_ends_each_gso_packet_with_psh():
    """Linux sends a cwnd-limited burst as GSO packets of about a millisecond at the pacing rate,
    at least two segments, each ending with PSH; a lone segment carries none."""
    bench = PeerBench()
    conn = passive_open(bench, rtt=0.1)  # 100 ms: the pacing rate makes two-segment GSO packets
    bench.stack.send(conn.fd, b"x" * 30000)
    burst = bench.take()
    assert len(burst) == 10
    assert [p.flags for p in burst] == ["A", "PA"] * 5
    bench.advance(0.1)
    conn.send("A", ack=burst[0].seq + 1448)  # cwnd 11, 9 in flight: two more, one packet
    assert [p.flags for p in bench.take()] == ["A", "PA"]


def test_msg_eor_ends_a_segment_that_later_writes_do_not_join():
    bench = PeerBench()
    conn = passive_open(bench, rtt=0.1)
    stack, fd = bench.stack, conn.fd
    stack.send(fd, b"r" * 3000, MSG_EOR)
    stack.send(fd, b"s" * 3000)
    sizes = [(len(p.payload), p.flags) for p in bench.take()]
    # The record's last 104 bytes go alone, with PSH; without MSG_EOR the writes would share a
    # segment. The second write's own 104-byte tail waits (Nagle: a small segment is unacknowledged).
    assert sizes == [(1448, "A"), (1448, "PA"), (104, "PA"), (1448, "A"), (1448, "PA")]


def _time_wait_on_the_stack() -> tuple[PeerBench, object, int]:
    """The stack closes first and ends in TIME-WAIT, its listener still open; returns (bench, peer
    connection, the stack's sequence number after its FIN)."""
    bench = PeerBench()
    conn = passive_open(bench)
    bench.stack.close(conn.fd)
    fin = bench.expect(flags="FA")
    conn.note(fin)
    conn.ts += 10
    conn.send("FA", ack=fin.seq + 1)
    bench.expect(flags="A")
    assert [t.state_name for t in bench.stack.tcp.conns.values()] == ["TIME-WAIT"]
    return bench, conn, fin.seq + 1


def test_syn_beyond_the_old_connection_reopens_it_from_time_wait():
    bench, conn, snd_nxt = _time_wait_on_the_stack()
    conn.ts += 10
    conn.seq += 100_000
    conn.send("S", options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (conn.ts, 0)), ("NOP", None),
                            ("WScale", 7)])
    # Linux: the new incarnation's ISN is the old snd_nxt + 65535 + 2.
    bench.expect(flags="SA", seq=snd_nxt + 65537, ack=conn.seq)
    assert [t.state_name for t in bench.stack.tcp.conns.values()] == ["SYN-RECEIVED"]


def test_syn_with_an_old_timestamp_gets_only_an_ack_in_time_wait():
    bench, conn, _ = _time_wait_on_the_stack()
    conn.seq += 100_000  # beyond, but PAWS rejects its TS value
    conn.send("S", options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (conn.ts - 1000, 0)),
                            ("NOP", None), ("WScale", 7)])
    bench.expect(flags="A")
    assert [t.state_name for t in bench.stack.tcp.conns.values()] == ["TIME-WAIT"]


def test_msg_zerocopy_completions_come_from_the_error_queue_when_acknowledged():
    bench = PeerBench()
    conn = passive_open(bench, setup_listener=lambda fd: bench.stack.setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, 1))
    stack, fd = bench.stack, conn.fd
    with pytest.raises(BlockingIOError):
        stack.recvmsg(fd, 0, MSG_ERRQUEUE)  # nothing yet, and it never waits
    stack.send(fd, b"z" * 1000, MSG_ZEROCOPY)
    seq = bench.take()[0].seq
    assert not stack.poll(fd) & POLLERR  # not acknowledged yet
    conn.send("A", ack=seq + 1000)
    stack.send(fd, b"z" * 1000, MSG_ZEROCOPY)
    conn.send("A", ack=seq + 2000)
    assert stack.poll(fd) & POLLERR
    data, ancillary, msg_flags, _ = stack.recvmsg(fd, 0, MSG_ERRQUEUE)
    (level, kind, info), = ancillary
    errno_, origin, _, code, _, lo, hi = EXTENDED_ERR.unpack(info)
    # Two sends (ids 0 and 1), acknowledged one after the other: one notification for both.
    assert (data, msg_flags, level, kind) == (b"", MSG_ERRQUEUE, IPPROTO_IP, IP_RECVERR)
    assert (errno_, origin, code, lo, hi) == (0, SO_EE_ORIGIN_ZEROCOPY, SO_EE_CODE_ZEROCOPY_COPIED, 0, 1)
    assert not stack.poll(fd) & POLLERR


def test_msg_zerocopy_skb_full_of_frags_ends_a_segment_with_psh():
    """Each buffer of a MSG_ZEROCOPY sendmsg is a page frag of its own, 17 at most per skb: the
    18th starts a segment, and the first ends with PSH (Linux; packetdrill's zerocopy/maxfrags.pkt).
    Copied, the same buffers make one segment."""
    bench = PeerBench()
    conn = passive_open(bench, setup_listener=lambda fd: bench.stack.setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, 1))
    stack, fd = bench.stack, conn.fd
    stack.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, 1)
    stack.sendmsg(fd, [b"c"] * 18)
    (copied,) = bench.take()
    assert (len(copied.payload), copied.flags) == (18, "PA")
    conn.send("A", ack=copied.seq + 18)
    stack.sendmsg(fd, [b"z"] * 18, flags=MSG_ZEROCOPY)
    assert [(len(p.payload), p.flags) for p in bench.take()] == [(17, "PA"), (1, "PA")]


def test_tcp_inq_reports_what_is_left_to_read_and_a_fin_as_one():
    bench = PeerBench()
    conn = passive_open(bench)
    stack, fd = bench.stack, conn.fd
    stack.setsockopt(fd, IPPROTO_TCP, TCP_INQ, 1)
    assert stack.getsockopt(fd, IPPROTO_TCP, TCP_INQ) == 1
    conn.send("PA", payload=b"q" * 3000)
    data, ancillary, _, _ = stack.recvmsg(fd, 1000)
    assert len(data) == 1000 and ancillary == [(IPPROTO_TCP, TCP_CM_INQ, struct.pack("i", 2000))]
    conn.send("FA")
    data, ancillary, _, _ = stack.recvmsg(fd, 5000)
    assert len(data) == 2000 and ancillary == [(IPPROTO_TCP, TCP_CM_INQ, struct.pack("i", 1))]
    with pytest.raises(OSError) as bad:
        stack.setsockopt(fd, IPPROTO_TCP, TCP_INQ, 2)
    assert bad.value.errno == errno.EINVAL


def test_send_on_a_socket_never_connected_is_epipe():
    bench = PeerBench()
    fd = bench.stack.socket(type=SOCK_STREAM)
    with pytest.raises(OSError) as never:
        bench.stack.send(fd, b"x")
    assert never.value.errno == errno.EPIPE  # Linux sk_stream_wait_connect


def test_so_mark_and_ip_freebind_are_kept_and_freebind_allows_a_nonlocal_bind():
    stack = PeerBench().stack
    fd = stack.socket(type=SOCK_STREAM)
    stack.setsockopt(fd, SOL_SOCKET, SO_MARK, 666)
    assert stack.getsockopt(fd, SOL_SOCKET, SO_MARK) == 666
    with pytest.raises(OSError) as nonlocal_address:
        stack.bind(fd, ("198.18.99.1", 80))
    assert nonlocal_address.value.errno == errno.EADDRNOTAVAIL
    stack.setsockopt(fd, IPPROTO_IP, IP_FREEBIND, 1)
    assert stack.getsockopt(fd, IPPROTO_IP, IP_FREEBIND) == 1
    stack.bind(fd, ("198.18.99.1", 80))
    assert stack.getsockname(fd) == ("198.18.99.1", 80)
    udp = stack.socket(type=SOCK_DGRAM)
    stack.setsockopt(udp, IPPROTO_IP, IP_FREEBIND, 1)
    stack.bind(udp, ("198.18.99.1", 53))


def test_a_bad_user_buffer_fails_with_efault_after_the_sockets_own_checks():
    """Linux: EFAULT where the copy from or to user space fails; nothing sent, nothing consumed."""
    bench = PeerBench()
    conn = passive_open(bench)
    stack, fd = bench.stack, conn.fd
    stack.fcntl(fd, F_SETFL, O_NONBLOCK)
    for send in (lambda: stack.send(fd, BadUserBuffer(1000)), lambda: stack.sendto(fd, BadUserBuffer(1000))):
        with pytest.raises(OSError) as fault:
            send()
        assert fault.value.errno == errno.EFAULT
    assert stack.send(fd, BadUserBuffer(0)) == 0  # nothing to copy
    assert not bench.take() and stack.ioctl(fd, SIOCOUTQ) == 0
    with pytest.raises(BlockingIOError):  # nothing to read: no copy is tried
        stack.recv_into(fd, BadUserBuffer(1000))
    conn.send("PA", payload=b"d" * 1000)
    with pytest.raises(OSError) as fault:
        stack.recv_into(fd, BadUserBuffer(1000), 1000)
    assert fault.value.errno == errno.EFAULT
    buffer = bytearray(1000)
    assert stack.recv_into(fd, buffer) == 1000 and buffer == b"d" * 1000  # the data stayed queued
    stack.shutdown(fd, SHUT_WR)
    with pytest.raises(OSError) as shut:
        stack.send(fd, BadUserBuffer(1000))
    assert shut.value.errno == errno.EPIPE  # the state is checked before the buffer


def test_a_bad_user_buffer_faults_a_datagram_and_drops_the_one_it_could_not_take():
    stack = PeerBench().stack
    fd = stack.socket(type=SOCK_DGRAM)
    stack.bind(fd, ("127.0.0.1", 5000))
    sender = stack.socket(type=SOCK_DGRAM)
    with pytest.raises(OSError) as sent:
        stack.sendto(sender, BadUserBuffer(5), 0, ("127.0.0.1", 5000))
    assert sent.value.errno == errno.EFAULT
    for payload in (b"first", b"second"):
        stack.sendto(sender, payload, 0, ("127.0.0.1", 5000))
    with pytest.raises(OSError) as fault:
        stack.recv_into(fd, BadUserBuffer(100))
    assert fault.value.errno == errno.EFAULT
    assert stack.recv(fd, 100) == b"second"  # as Linux udp_recvmsg, which frees the skb


def test_proc_net_tcp_shows_listeners_and_connections_as_linux_prints_them():
    bench = PeerBench()
    conn = passive_open(bench, port=8080)
    stack, fd = bench.stack, conn.fd
    conn.send("PA", payload=b"r" * 300)
    stack.send(fd, b"w" * 100)
    lines = proc_net_tcp(stack).splitlines(keepends=True)
    assert all(len(line) == 150 for line in lines)  # padded as seq_pad pads them
    assert lines[0].startswith("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt")
    fields = [line.split() for line in lines[1:]]
    # The listener on 0.0.0.0:8080 (state 0A), then 198.18.0.2:8080 to 198.18.0.1:40000, established (01),
    # 100 bytes unacknowledged, 300 unread, the retransmission timer (1) armed, in clock ticks.
    assert fields[0][:6] == ["0:", "00000000:1F90", "00000000:0000", "0A", "00000000:00000000", "00:00000000"]
    assert fields[1][:5] == ["1:", "020012C6:1F90", "010012C6:9C40", "01", "00000064:0000012C"]
    assert fields[1][5].startswith("01:") and fields[1][-2:] == ["10", "-1"]  # cwnd; ssthresh: initial
    stack.recv(fd, 300)
    stack.close(fd)
    fin = bench.take()[-1]
    assert "F" in fin.flags
    conn.send("FA", ack=fin.seq + 1)  # our FIN acknowledged with the peer's: TIME-WAIT
    time_wait = proc_net_tcp(stack).splitlines()[2].split()
    assert time_wait[3:6] == ["06", "00000000:00000000", "03:00001770"]  # 60 s left, in ticks


TX_ALL = SOF_TIMESTAMPING_TX_SCHED | SOF_TIMESTAMPING_TX_SOFTWARE | SOF_TIMESTAMPING_TX_ACK


def errqueue(stack: Stack, fd: int, bufsize: int = 0) -> list[tuple]:
    """Every report on the error queue: (type, key, stamp or None, packet length, msg_flags)."""
    reports = []
    with contextlib.suppress(BlockingIOError):
        while True:
            data, ancillary, flags, _ = stack.recvmsg(fd, bufsize, MSG_ERRQUEUE)
            stamp = None
            for level, kind, value in ancillary:
                if (level, kind) == (SOL_SOCKET, SCM_TIMESTAMPING):
                    seconds, nanoseconds = struct.unpack_from("qq", value)
                    stamp = seconds + nanoseconds / 1e9
            level, kind, info = ancillary[-1]
            assert (level, kind) == (IPPROTO_IP, IP_RECVERR)
            ee_errno, origin, _, _, _, info_, key = EXTENDED_ERR.unpack(info)
            assert (ee_errno, origin) == (errno.ENOMSG, SO_EE_ORIGIN_TIMESTAMPING)
            reports.append((info_, key, stamp, len(data), flags))
    return reports


def test_so_timestamping_reports_each_writes_last_byte_when_sent_and_when_acknowledged():
    bench = PeerBench()
    conn = passive_open(bench)
    stack, fd = bench.stack, conn.fd
    stack.setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPING, TX_ALL | SOF_TIMESTAMPING_SOFTWARE | SOF_TIMESTAMPING_OPT_ID)
    assert stack.getsockopt(fd, SOL_SOCKET, SO_TIMESTAMPING) == TX_ALL | 0x90
    bench.advance(0.01)
    stack.send(fd, b"a" * 2896)  # two full segments each: no Nagle
    stack.send(fd, b"b" * 2896)
    first = bench.take()[0].seq
    sent_at = bench.now
    assert stack.poll(fd) & POLLERR
    # The keys count from snd_una when OPT_ID was set: the last bytes of the writes are 2895 and 5791.
    assert errqueue(stack, fd) == [
        (SCM_TSTAMP_SCHED, 2895, sent_at, 0, MSG_ERRQUEUE | MSG_TRUNC),
        (SCM_TSTAMP_SND, 2895, sent_at, 0, MSG_ERRQUEUE | MSG_TRUNC),
        (SCM_TSTAMP_SCHED, 5791, sent_at, 0, MSG_ERRQUEUE | MSG_TRUNC),
        (SCM_TSTAMP_SND, 5791, sent_at, 0, MSG_ERRQUEUE | MSG_TRUNC),
    ]
    bench.advance(0.01)
    conn.send("A", ack=first + 2895)  # short of the first write's last byte
    assert errqueue(stack, fd) == []
    conn.send("A", ack=first + 5792)
    acked = [(SCM_TSTAMP_ACK, key, bench.now, 1448, MSG_ERRQUEUE) for key in (2895, 5791)]
    assert errqueue(stack, fd, 2000) == acked  # the segment that carried the byte, read whole


def test_so_timestamping_without_opt_id_software_or_with_tsonly():
    bench = PeerBench()
    conn = passive_open(bench)
    stack, fd = bench.stack, conn.fd
    stack.setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPING, SOF_TIMESTAMPING_TX_SOFTWARE | SOF_TIMESTAMPING_OPT_TSONLY)
    stack.send(fd, b"a" * 100)
    assert errqueue(stack, fd, 100) == [(SCM_TSTAMP_SND, 0, None, 0, MSG_ERRQUEUE)]  # no key, stamp, packet
    stack.setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPING, 0)
    stack.send(fd, b"a" * 100)
    assert errqueue(stack, fd) == []


def test_so_timestamping_reports_a_write_held_by_the_window_when_it_leaves():
    bench = PeerBench()
    conn = passive_open(bench, window=1000)
    stack, fd = bench.stack, conn.fd
    stack.setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPING, SOF_TIMESTAMPING_TX_SOFTWARE | SOF_TIMESTAMPING_OPT_ID)
    stack.send(fd, b"a" * 1500)
    first = bench.take()
    start, end = first[0].seq, first[-1].seq + len(first[-1].payload)
    assert end - start < 1500 and errqueue(stack, fd) == []  # the write's last byte, 1499, waits
    while end - start < 1500:
        bench.advance(0.05)
        conn.send("A", ack=end)
        sent = bench.take()
        end = sent[-1].seq + len(sent[-1].payload)
        assert errqueue(stack, fd) == ([(SCM_TSTAMP_SND, 1499, None, 0, MSG_ERRQUEUE | MSG_TRUNC)]
                                       if end - start == 1500 else [])


@pytest.mark.parametrize("flags", [
    0x40000,  # not a flag Linux knows
    SOF_TIMESTAMPING_OPT_ID_TCP,  # without OPT_ID
    SOF_TIMESTAMPING_OPT_STATS,  # without OPT_TSONLY
])
def test_so_timestamping_refuses_what_linux_refuses(flags):
    bench = PeerBench()
    conn = passive_open(bench)
    with pytest.raises(OSError) as bad:
        bench.stack.setsockopt(conn.fd, SOL_SOCKET, SO_TIMESTAMPING, flags)
    assert bad.value.errno == errno.EINVAL
    with pytest.raises(OSError) as listener:  # OPT_ID counts sequence numbers: a connection's
        bench.stack.setsockopt(conn.listener, SOL_SOCKET, SO_TIMESTAMPING, SOF_TIMESTAMPING_OPT_ID)
    assert listener.value.errno == errno.EINVAL


def send_urgent(bench: PeerBench, conn, payload: bytes, pointer: int) -> None:
    """A segment with URG and the urgent pointer ``pointer`` (from its first byte, BSD style)."""
    packet = IP(bytes(bench.segment(conn.sport, conn.dport, "UA", conn.seq, conn.ack, 65535, [], payload)))
    packet[TCP].urgptr = pointer
    del packet[TCP].chksum
    bench.inject(bytes(packet))
    conn.seq += len(payload)


def test_urgent_byte_is_out_of_band_and_reads_stop_at_its_mark():
    """Linux without SO_OOBINLINE: the byte before the urgent pointer leaves the stream; a read
    stops before it, the next one skips it."""
    bench = PeerBench()
    conn = passive_open(bench)
    stack, fd = bench.stack, conn.fd
    stack.fcntl(fd, F_SETFL, O_NONBLOCK)
    send_urgent(bench, conn, b"a" * 99 + b"!", 100)
    assert stack.recv(fd, 1000) == b"a" * 99
    with pytest.raises(BlockingIOError):
        stack.recv(fd, 1000)  # the urgent byte, skipped: nothing in band is left
    send_urgent(bench, conn, b"xyz", 2)  # the urgent byte, y, is in this segment
    conn.send("PA", payload=b"tail")
    assert stack.recv(fd, 1000, MSG_PEEK) == b"x"
    assert stack.recv(fd, 1000) == b"x"
    assert stack.recv(fd, 1000, MSG_PEEK) == b"ztail"
    assert stack.recv(fd, 1000) == b"ztail"


def test_splice_reads_up_to_the_urgent_mark_and_then_gives_nothing():
    """Linux tcp_splice_read: at the mark, a blocking splice returns 0 (it does not wait: data is
    queued), a non-blocking one fails with EAGAIN; without an urgent byte, all that is there."""
    bench = PeerBench()
    conn = passive_open(bench)
    stack, fd = bench.stack, conn.fd
    send_urgent(bench, conn, b"a" * 99 + b"!", 100)
    assert stack.splice_read(fd, 1000) == b"a" * 99
    assert stack.splice_read(fd, 1) == b""
    stack.fcntl(fd, F_SETFL, O_NONBLOCK)
    with pytest.raises(BlockingIOError):
        stack.splice_read(fd, 1)
    with pytest.raises(BlockingIOError):
        stack.recv(fd, 10)  # skips the urgent byte, then nothing
    conn.send("PA", payload=b"more")
    assert stack.splice_read(fd, 1000) == b"more"
    with pytest.raises(BlockingIOError):
        stack.splice_read(fd, 1000)


def test_the_urgent_byte_is_read_once_with_msg_oob_or_inline_with_so_oobinline():
    bench = PeerBench()
    conn = passive_open(bench)
    stack, fd = bench.stack, conn.fd
    stack.fcntl(fd, F_SETFL, O_NONBLOCK)
    with pytest.raises(OSError) as none:
        stack.recv(fd, 1, MSG_OOB)
    assert none.value.errno == errno.EINVAL  # no urgent data (Linux: "Yes this is right!")
    send_urgent(bench, conn, b"ab!", 3)
    assert stack.recv(fd, 1, MSG_OOB | MSG_PEEK) == b"!"
    assert stack.recvmsg(fd, 1, MSG_OOB | MSG_PEEK)[2] == MSG_OOB
    assert stack.recv(fd, 1, MSG_OOB) == b"!"
    with pytest.raises(OSError) as again:
        stack.recv(fd, 1, MSG_OOB)
    assert again.value.errno == errno.EINVAL
    assert stack.recv(fd, 100) == b"ab"
    with pytest.raises(BlockingIOError):
        stack.recv(fd, 100)  # the byte read out of band is skipped
    stack.setsockopt(fd, SOL_SOCKET, SO_OOBINLINE, 1)
    send_urgent(bench, conn, b"cd?", 3)
    assert stack.recv(fd, 100) == b"cd"  # a read still stops at the mark
    assert stack.recv(fd, 100) == b"?"  # and the byte is in the stream


def test_an_urgent_pointer_beyond_the_segment_waits_for_its_byte():
    """Linux TCP_URG_NOTYET: the mark is known before the byte; MSG_OOB says EAGAIN until it comes."""
    bench = PeerBench()
    conn = passive_open(bench)
    stack, fd = bench.stack, conn.fd
    stack.fcntl(fd, F_SETFL, O_NONBLOCK)
    send_urgent(bench, conn, b"abc", 5)  # the urgent byte is the 5th: two bytes later
    with pytest.raises(BlockingIOError):
        stack.recv(fd, 1, MSG_OOB)
    assert stack.recv(fd, 100) == b"abc"
    conn.send("PA", payload=b"d!e")
    assert stack.recv(fd, 1, MSG_OOB) == b"!"
    assert stack.recv(fd, 100) == b"d"
    assert stack.recv(fd, 100) == b"e"
