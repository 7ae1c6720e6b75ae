"""TCP connection establishment in virtual time: options, retransmission, refusals, queues, ISNs."""

from __future__ import annotations

import errno

import pytest

from pystack.socket import IPPROTO_TCP, SOCK_STREAM
from pystack.tcp.api import TCP_MAXSEG
from pystack.tcp.tcb import ESTABLISHED, SYN_RECEIVED, TcpConfig

from .tcp_harness import (
    AB,
    B_ADDR,
    BA,
    ME,
    PEER,
    Pair,
    PeerBench,
    PeerConn,
    active_open,
    option,
    option_kinds,
    passive_open,
)

LINUX_SYN_ORDER = ["MSS", "SAckOK", "Timestamp", "NOP", "WScale"]
LINUX_SYN_ORDER_NO_TS = ["MSS", "NOP", "NOP", "SAckOK", "NOP", "WScale"]


def start_connect(stack, port: int = 80, addr: str = PEER, bind_port: int = 0) -> int:
    fd = stack.socket(type=SOCK_STREAM)
    if bind_port:
        stack.bind(fd, ("0.0.0.0", bind_port))
    with pytest.raises(BlockingIOError) as info:
        stack.connect(fd, (addr, port))
    assert info.value.errno == errno.EINPROGRESS
    return fd


# ---------------------------------------------------------------- active and passive open


def test_active_open_sends_linux_syn_and_completes():
    bench = PeerBench()
    fd = start_connect(bench.stack)
    assert bench.stack.connect_result(fd) == errno.EINPROGRESS
    syn = bench.expect(flags="S", ack=0, at=0.0)
    tcp = syn.tcp
    assert option_kinds(tcp) == LINUX_SYN_ORDER
    assert option(tcp, "MSS") == 1460
    assert option(tcp, "WScale") == 7
    assert option(tcp, "Timestamp")[1] == 0  # TSecr is zero on a SYN (RFC 7323)
    assert tcp.window == 65535  # the SYN's window is never scaled
    assert tcp.dport == 80 and syn.ip.src == ME and syn.ip.dst == PEER

    peer_isn = 77_000
    bench.inject(bench.segment(80, tcp.sport, "SA", peer_isn, syn.seq + 1, 65535,
                               [("MSS", 1400), ("SAckOK", b""), ("Timestamp", (555, option(tcp, "Timestamp")[0])),
                                ("NOP", None), ("WScale", 9)]))
    ack = bench.expect(flags="A", seq=syn.seq + 1, ack=peer_isn + 1, length=0)
    assert option_kinds(ack.tcp) == ["NOP", "NOP", "Timestamp"]
    assert option(ack.tcp, "Timestamp")[1] == 555
    tcb = bench.stack.sockets[fd].tcb
    # Our window is scaled by our shift (7): the receive space over 128.
    assert ack.tcp.window == (bench.stack.sockets[fd].rcvbuf // 2) >> 7
    assert bench.stack.connect_result(fd) == 0
    assert tcb.state == ESTABLISHED
    assert (tcb.snd_wscale, tcb.rcv_wscale, tcb.sack_ok, tcb.ts_ok) == (9, 7, True, True)
    assert tcb.mss == 1400 - 12  # the peer's MSS less the timestamp option
    assert tcb.snd_wnd == 65535  # the SYN-ACK's window is not scaled either
    bench.expect_nothing()


def test_passive_open_answers_with_linux_synack():
    bench = PeerBench()
    lfd = bench.stack.socket(type=SOCK_STREAM)
    bench.stack.bind(lfd, ("0.0.0.0", 80))
    bench.stack.listen(lfd, 8)
    with pytest.raises(BlockingIOError):
        bench.stack.accept(lfd)
    bench.inject(bench.segment(40000, 80, "S", 1000, 0, 64240,
                               [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (4242, 0)), ("NOP", None),
                                ("WScale", 7)]))
    synack = bench.expect(flags="SA", ack=1001)
    assert option_kinds(synack.tcp) == LINUX_SYN_ORDER
    assert option(synack.tcp, "Timestamp")[1] == 4242
    assert option(synack.tcp, "MSS") == 1460 and option(synack.tcp, "WScale") == 7
    assert synack.tcp.window == 65535
    with pytest.raises(BlockingIOError):
        bench.stack.accept(lfd)  # not established until the ACK
    bench.inject(bench.segment(40000, 80, "A", 1001, synack.seq + 1, 502,
                               [("NOP", None), ("NOP", None), ("Timestamp", (4243, option(synack.tcp, "Timestamp")[0]))]))
    bench.expect_nothing()  # the handshake's last ACK is not answered
    fd, peer = bench.stack.accept(lfd)
    assert peer == (PEER, 40000)
    tcb = bench.stack.sockets[fd].tcb
    assert tcb.state == ESTABLISHED
    assert tcb.snd_wnd == 502 << 7
    assert tcb.mss == 1448


def test_options_without_timestamps_use_linux_padding():
    bench = PeerBench(config=TcpConfig(timestamps=False))
    start_connect(bench.stack)
    syn = bench.expect(flags="S")
    assert option_kinds(syn.tcp) == LINUX_SYN_ORDER_NO_TS

    bench = PeerBench()
    conn = passive_open(bench, syn_options=[("MSS", 1460), ("NOP", None), ("NOP", None), ("SAckOK", b""),
                                            ("NOP", None), ("WScale", 7)])
    tcb = bench.stack.sockets[conn.fd].tcb
    assert not tcb.ts_ok and tcb.sack_ok and tcb.mss == 1460


def test_synack_without_timestamps_has_linux_order():
    bench = PeerBench()
    lfd = bench.stack.socket(type=SOCK_STREAM)
    bench.stack.bind(lfd, ("0.0.0.0", 80))
    bench.stack.listen(lfd, 8)
    bench.inject(bench.segment(40000, 80, "S", 1000, 0, 64240,
                               [("MSS", 1460), ("NOP", None), ("NOP", None), ("SAckOK", b""), ("NOP", None),
                                ("WScale", 7)]))
    synack = bench.expect(flags="SA", ack=1001)
    assert option_kinds(synack.tcp) == LINUX_SYN_ORDER_NO_TS


def test_peer_without_options_gets_mss_536_and_no_scaling():
    bench = PeerBench()
    lfd = bench.stack.socket(type=SOCK_STREAM)
    bench.stack.bind(lfd, ("0.0.0.0", 80))
    bench.stack.listen(lfd, 8)
    bench.inject(bench.segment(40000, 80, "S", 1000, 0, 8192, []))
    synack = bench.expect(flags="SA", ack=1001)
    assert option_kinds(synack.tcp) == ["MSS"]  # only what the peer offered, and our MSS
    bench.inject(bench.segment(40000, 80, "A", 1001, synack.seq + 1, 8192))
    fd, _ = bench.stack.accept(lfd)
    tcb = bench.stack.sockets[fd].tcb
    assert (tcb.mss, tcb.snd_wscale, tcb.rcv_wscale, tcb.sack_ok, tcb.ts_ok) == (536, 0, 0, False, False)
    assert tcb.snd_wnd == 8192
    bench.stack.send(fd, bytes(2000))
    sizes = [len(p.payload) for p in bench.take()]
    assert sizes == [536, 536, 536, 392]
    assert not bench.stack.sockets[fd].tcb.out_of_order
    # Unscaled windows: the advertised window is the raw field, capped at 65535.
    bench.inject(bench.segment(40000, 80, "A", 1001, synack.seq + 1 + 2000, 8192, payload=b"x"))
    bench.advance(0.05)
    ack = bench.take()[-1]
    assert ack.tcp.window == 65535
    assert not ack.tcp.options


def test_simultaneous_open_synack_repeats_every_option_of_our_syn():
    bench = PeerBench()
    fd = start_connect(bench.stack)
    syn = bench.expect(flags="S")
    # The peer's crossing SYN offers only an MSS; Linux's SYN-ACK still repeats its own SYN.
    bench.inject(bench.segment(80, syn.tcp.sport, "S", 5000, 0, 65535, [("MSS", 1460)]))
    synack = bench.expect(flags="SA", seq=syn.seq, ack=5001)
    assert option_kinds(synack.tcp) == LINUX_SYN_ORDER
    bench.inject(bench.segment(80, syn.tcp.sport, "SA", 5000, syn.seq + 1, 65535, [("MSS", 1460)]))
    bench.expect(flags="A", seq=syn.seq + 1, ack=5001)
    assert bench.stack.connect_result(fd) == 0
    tcb = bench.stack.sockets[fd].tcb
    # ...but only what both offered is used.
    assert (tcb.sack_ok, tcb.ts_ok, tcb.snd_wscale, tcb.rcv_wscale, tcb.mss) == (False, False, 0, 0, 1460)


def test_simultaneous_open_like_linux():
    pair = Pair()
    fa = pair.a.socket(type=SOCK_STREAM)
    fb = pair.b.socket(type=SOCK_STREAM)
    pair.a.bind(fa, ("0.0.0.0", 5000))
    pair.b.bind(fb, ("0.0.0.0", 6000))
    with pytest.raises(BlockingIOError):
        pair.a.connect(fa, (B_ADDR, 6000))
    with pytest.raises(BlockingIOError):
        pair.b.connect(fb, ("198.18.0.1", 5000))
    pair.run(0.5)
    assert pair.a.connect_result(fa) == 0 and pair.b.connect_result(fb) == 0
    assert pair.tcb("a", fa).state == ESTABLISHED and pair.tcb("b", fb).state == ESTABLISHED
    # SYNs cross; each side answers SYN-ACK (RFC 9293 3.5); each SYN-ACK completes the other
    # side, which acknowledges it (as Linux does).
    flags = [(p.direction, p.flags) for p in pair.log]
    assert flags == [(AB, "S"), (BA, "S"), (BA, "SA"), (AB, "SA"), (AB, "A"), (BA, "A")]
    synack = pair.log[2]
    assert synack.seq == pair.log[1].seq and synack.ack == pair.log[0].seq + 1
    assert option_kinds(synack.tcp) == LINUX_SYN_ORDER
    got_b, got_a, _ = pair.exchange(fa, fb, b"hello from a" * 1000, b"hello from b" * 1000)
    assert got_b == b"hello from a" * 1000 and got_a == b"hello from b" * 1000


# ---------------------------------------------------------------- retransmission and failure


def test_syn_retransmission_schedule_then_etimedout():
    bench = PeerBench()
    fd = start_connect(bench.stack)
    bench.advance(200)
    syns = bench.take()
    # RFC 6298 initial RTO 1 s, doubled each time; Linux tcp_syn_retries = 6.
    assert [p.time for p in syns] == [0, 1, 3, 7, 15, 31, 63]
    assert all(p.flags == "S" and p.seq == syns[0].seq for p in syns)
    assert bench.stack.connect_result(fd) == errno.ETIMEDOUT
    assert not bench.stack.tcp.conns


def test_syn_gives_up_exactly_at_127_seconds():
    bench = PeerBench()
    fd = start_connect(bench.stack)
    bench.advance(126.999)
    assert bench.stack.connect_result(fd) == errno.EINPROGRESS
    bench.advance(0.001)
    assert bench.stack.connect_result(fd) == errno.ETIMEDOUT
    assert all(p.flags == "S" for p in bench.take())  # no RST when a SYN times out


def test_synack_retransmission_and_half_open_connection_dropped():
    bench = PeerBench()
    lfd = bench.stack.socket(type=SOCK_STREAM)
    bench.stack.bind(lfd, ("0.0.0.0", 80))
    bench.stack.listen(lfd, 8)
    bench.inject(bench.segment(40000, 80, "S", 1000, 0, 65535, [("MSS", 1460)]))
    bench.advance(100)
    synacks = bench.take()
    # tcp_synack_retries = 5: 1, 2, 4, 8, 16 s apart, then the request is dropped at 63 s.
    assert [p.time for p in synacks] == [0, 1, 3, 7, 15, 31]
    assert all(p.flags == "SA" for p in synacks)
    assert not bench.stack.tcp.conns
    assert bench.stack.sockets[lfd].tcb.syn_queue == 0


def test_retransmitted_syn_gets_the_synack_again_at_once():
    bench = PeerBench()
    lfd = bench.stack.socket(type=SOCK_STREAM)
    bench.stack.bind(lfd, ("0.0.0.0", 80))
    bench.stack.listen(lfd, 8)
    syn = bench.segment(40000, 80, "S", 1000, 0, 65535, [("MSS", 1460)])
    bench.inject(syn)
    first = bench.expect(flags="SA", ack=1001, at=0)
    bench.advance(0.5)
    bench.inject(syn)  # our SYN-ACK was lost: the peer retransmits its SYN
    bench.expect(flags="SA", seq=first.seq, ack=1001, at=0.5)
    bench.expect_nothing()


def test_connect_to_closed_port_is_refused_by_rst():
    pair = Pair()
    fd = pair.a.socket(type=SOCK_STREAM)
    with pytest.raises(BlockingIOError):
        pair.a.connect(fd, (B_ADDR, 81))
    pair.run(0.1)
    syn, rst = pair.log
    assert syn.flags == "S"
    # RFC 9293 3.10.7.1, segment without ACK: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>
    assert rst.direction == BA and rst.flags == "RA" and rst.seq == 0 and rst.ack == syn.seq + 1
    assert rst.tcp.window == 0
    assert pair.a.connect_result(fd) == errno.ECONNREFUSED
    assert pair.a.connect_result(fd) == 0  # the error is reported once
    assert pair.b.counters.tcp["OutRsts"] == 1
    assert not pair.a.tcp.conns


# ---------------------------------------------------------------- queues


def connect_from(pair: Pair, port: int = 80) -> int:
    fd = pair.a.socket(type=SOCK_STREAM)
    with pytest.raises(BlockingIOError):
        pair.a.connect(fd, (B_ADDR, port))
    return fd


def test_accept_queue_is_fifo_and_bounded_by_backlog():
    pair = Pair()
    lfd = pair.b.socket(type=SOCK_STREAM)
    pair.b.bind(lfd, ("0.0.0.0", 80))
    pair.b.listen(lfd, 1)  # Linux queues backlog + 1 connections
    with pytest.raises(BlockingIOError):
        pair.b.accept(lfd)
    clients = []
    for _ in range(3):
        clients.append(connect_from(pair))
        pair.run(0.01)
    assert [pair.a.connect_result(c) for c in clients] == [0, 0, errno.EINPROGRESS]
    assert pair.b.counters.tcp["ListenOverflows"] == 1  # the third SYN was dropped
    ports = [pair.a.getsockname(c)[1] for c in clients]
    fd1, peer1 = pair.b.accept(lfd)
    assert peer1[1] == ports[0]
    pair.run(1.0)  # the third client's SYN is retransmitted at 1 s and now fits
    assert pair.a.connect_result(clients[2]) == 0
    fd2, peer2 = pair.b.accept(lfd)
    fd3, peer3 = pair.b.accept(lfd)
    assert [peer2[1], peer3[1]] == ports[1:]
    with pytest.raises(BlockingIOError):
        pair.b.accept(lfd)


def test_final_ack_dropped_while_accept_queue_is_full():
    pair = Pair()
    lfd = pair.b.socket(type=SOCK_STREAM)
    pair.b.bind(lfd, ("0.0.0.0", 80))
    pair.b.listen(lfd, 1)  # as Linux: the accept queue is full past 1, the SYN queue too
    connect_from(pair)
    pair.run(0.01)  # one connection waits to be accepted
    clients = [connect_from(pair) for _ in range(2)]
    pair.run(0.01)
    # Both SYNs found room (one half-open, one queued: neither queue past 1); the first
    # handshake's ACK fills the accept queue, so the second's is dropped (Linux
    # tcp_v4_syn_recv_sock: ListenOverflows) and its child stays in SYN-RECEIVED.
    assert pair.b.counters.tcp["ListenOverflows"] == 1
    states = sorted(t.state for t in pair.b.tcp.conns.values())
    assert states == [SYN_RECEIVED, ESTABLISHED, ESTABLISHED]
    assert len(pair.b.sockets[lfd].tcb.accept_queue) == 2
    pair.b.accept(lfd)
    pair.b.accept(lfd)
    pair.run(1.0)  # the SYN-ACK retransmission brings an ACK that now fits
    assert len(pair.b.sockets[lfd].tcb.accept_queue) == 1
    fd, peer = pair.b.accept(lfd)
    assert peer[1] == pair.a.getsockname(clients[1])[1]


def test_syn_queue_limit_drops_syns():
    """Without SYN cookies (tcp_syncookies=0), a SYN beyond the queue's limit is dropped: as
    Linux's inet_csk_reqsk_queue_is_full, the queue is full past the listen backlog."""
    bench = PeerBench(config=TcpConfig(syncookies=0))
    lfd = bench.stack.socket(type=SOCK_STREAM)
    bench.stack.bind(lfd, ("0.0.0.0", 80))
    bench.stack.listen(lfd, 1)
    for port in (40001, 40002, 40003):
        bench.inject(bench.segment(port, 80, "S", 1000, 0, 65535, [("MSS", 1460)]))
    answered = [p.tcp.dport for p in bench.take()]
    assert answered == [40001, 40002]
    assert bench.counters.tcp["ListenDrops"] == 1
    assert bench.stack.sockets[lfd].tcb.syn_queue == 2


# ---------------------------------------------------------------- ISN and MSS


def test_isn_differs_per_four_tuple_and_follows_the_clock():
    bench = PeerBench()
    fd = start_connect(bench.stack, port=80, bind_port=30000)
    start_connect(bench.stack, port=81, bind_port=30000 + 1)
    first, second = bench.take()
    assert first.seq != second.seq
    bench.stack.close(fd)  # a SYN-SENT socket just goes away
    bench.advance(1.0)
    bench.take()
    start_connect(bench.stack, port=80, bind_port=30000)
    again = bench.expect(flags="S")
    # RFC 6528: same 4-tuple, same keyed hash; the 4-microsecond clock moved 250000 ticks.
    assert (again.seq - first.seq) & 0xFFFFFFFF == 250_000


def test_isn_differs_between_stacks():
    seqs = []
    for seed in (1, 2):
        bench = PeerBench(seed=seed)
        start_connect(bench.stack, bind_port=30000)
        seqs.append(bench.expect(flags="S").seq)
    assert seqs[0] != seqs[1]  # the hash key is secret per stack


def test_tcp_maxseg_before_connect_lowers_advertised_mss():
    bench = PeerBench()

    def setup(fd: int) -> None:
        assert bench.stack.getsockopt(fd, IPPROTO_TCP, TCP_MAXSEG) == 536
        bench.stack.setsockopt(fd, IPPROTO_TCP, TCP_MAXSEG, 1000)
        assert bench.stack.getsockopt(fd, IPPROTO_TCP, TCP_MAXSEG) == 1000

    fd = bench.stack.socket(type=SOCK_STREAM)
    setup(fd)
    with pytest.raises(BlockingIOError):
        bench.stack.connect(fd, (PEER, 80))
    syn = bench.expect(flags="S")
    assert option(syn.tcp, "MSS") == 1000
    bench.inject(bench.segment(80, syn.tcp.sport, "SA", 9000, syn.seq + 1, 65535,
                               [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, option(syn.tcp, "Timestamp")[0])),
                                ("NOP", None), ("WScale", 7)]))
    bench.expect(flags="A")
    # Linux: mss_cache = min(user_mss, peer MSS) less the timestamp option; getsockopt reports it.
    assert bench.stack.getsockopt(fd, IPPROTO_TCP, TCP_MAXSEG) == 988
    bench.stack.send(fd, bytes(3000))
    assert [len(p.payload) for p in bench.take()] == [988, 988, 988, 36]


def test_tcp_maxseg_on_listener_is_inherited():
    bench = PeerBench()
    conn = passive_open(bench, setup_listener=lambda fd: bench.stack.setsockopt(fd, IPPROTO_TCP, TCP_MAXSEG, 700))
    assert bench.stack.sockets[conn.fd].tcb.mss == 700 - 12


def test_handshake_helpers_agree():
    bench = PeerBench()
    conn = active_open(bench)
    assert isinstance(conn, PeerConn) and conn.wscale == 7
    tcb = bench.stack.sockets[conn.fd].tcb
    assert tcb.state == ESTABLISHED and tcb.snd_wnd == 65535


def test_icmp_host_unreachable_ends_a_connection_attempt():
    from scapy.all import ICMP, IP

    bench = PeerBench()
    fd = start_connect(bench.stack)
    syn = bench.expect(flags="S")
    # Linux tcp_v4_err: in SYN-SENT any ICMP error (even a "soft" one) ends connect().
    bench.inject(bytes(IP(src="198.18.0.1", dst=ME) / ICMP(type=3, code=1) / syn.raw[:28]))
    assert bench.stack.connect_result(fd) == errno.EHOSTUNREACH
    assert not bench.stack.tcp.conns


def test_icmp_soft_error_on_an_established_connection_is_kept_for_a_timeout():
    from scapy.all import ICMP, IP

    bench = PeerBench()
    conn = passive_open(bench)
    bench.stack.send(conn.fd, b"data")
    data = bench.expect(payload=b"data")
    bench.inject(bytes(IP(src="198.18.0.1", dst=ME) / ICMP(type=3, code=1) / data.raw[:28]))
    tcb = bench.stack.sockets[conn.fd].tcb
    assert tcb.state == ESTABLISHED and tcb.soft_error == errno.EHOSTUNREACH
    bench.advance(2000)
    assert bench.stack.connect_result(conn.fd) == errno.EHOSTUNREACH  # reported instead of ETIMEDOUT


def test_closing_a_listener_resets_queued_connections():
    pair = Pair()
    cfd, sfd, lfd = pair.connect()
    other = connect_from(pair)
    pair.run(0.01)
    assert pair.a.connect_result(other) == 0
    pair.clear_log()
    pair.b.close(lfd)
    pair.run(0.01)
    assert [(p.direction, p.flags) for p in pair.log] == [(BA, "RA")]
    with pytest.raises(ConnectionResetError):
        pair.a.recv(other, 10)
    assert pair.tcb("a", cfd).state == ESTABLISHED  # the accepted one is not the listener's any more


def test_connect_af_unspec_aborts_with_rst():
    pair = Pair()
    cfd, sfd, _ = pair.connect()
    pair.clear_log()
    pair.a.connect(cfd, None)
    pair.run(0.01)
    assert [(p.direction, p.flags) for p in pair.log] == [(AB, "RA")]
    with pytest.raises(ConnectionResetError):
        pair.b.recv(sfd, 10)


def test_a_socket_can_connect_again_after_a_failed_attempt():
    bench = PeerBench()
    fd = start_connect(bench.stack)
    bench.advance(200)
    assert bench.stack.connect_result(fd) == errno.ETIMEDOUT
    bench.take()
    t = bench.now
    with pytest.raises(BlockingIOError):
        bench.stack.connect(fd, (PEER, 80))
    bench.advance(1.5)
    # Fresh state: the first retransmission is 1 s after the SYN again, not 64 s.
    assert [p.time - t for p in bench.take()] == [0, 1]
    assert bench.stack.connect_result(fd) == errno.EINPROGRESS


def synack_for(bench: PeerBench, syn, ts: bool = True, isn: int = 9000) -> None:
    opts = [("MSS", 1460), ("SAckOK", b""), ("NOP", None), ("WScale", 7)]
    if ts:
        opts.insert(2, ("Timestamp", (1, option(syn.tcp, "Timestamp")[0])))
    bench.inject(bench.segment(80, syn.tcp.sport, "SA", isn, syn.seq + 1, 65535, opts))


def test_rtt_after_a_retransmitted_syn_comes_from_the_timestamp_echo():
    bench = PeerBench()
    fd = start_connect(bench.stack)
    bench.take()
    bench.advance(1.0)
    again = bench.expect(flags="S", at=1.0)
    bench.advance(0.1)
    synack_for(bench, again)
    tcb = bench.stack.sockets[fd].tcb
    assert tcb.rtt.samples == 1 and tcb.rtt.srtt == pytest.approx(0.1)
    assert tcb.cwnd == 10  # one retransmission keeps the initial window (Linux: more than one)


def test_rto_falls_back_to_3s_after_a_retransmitted_syn_without_timestamps():
    bench = PeerBench(config=TcpConfig(timestamps=False, early_retrans=0))  # the RTO, not a loss probe
    fd = start_connect(bench.stack)
    bench.advance(3.5)
    syns = bench.take()
    assert [p.time for p in syns] == [0, 1, 3]
    synack_for(bench, syns[-1], ts=False)
    tcb = bench.stack.sockets[fd].tcb
    assert tcb.rtt.samples == 0
    assert tcb.rtt.rto == 3.0  # RFC 6298 5.7
    assert tcb.cwnd == 1  # RFC 6928: the SYN was lost (twice), start from one segment
    bench.take()
    bench.stack.send(fd, bytes(5000))
    first = bench.take()
    assert len(first) == 1
    bench.advance(3.0)
    bench.expect(seq=first[0].seq, at=first[0].time + 3.0)
