"""UDP and the fd API in the core, with Linux's semantics (errors, options, buffers, demultiplexing)."""

from __future__ import annotations

import errno
import struct

import pytest
from scapy.all import IP, UDP
from scapy.utils import checksum as scapy_checksum

from pystack.ports import EPHEMERAL_PORTS
from pystack.socket import (
    F_GETFL,
    F_SETFL,
    IP_MULTICAST_TTL,
    IP_TOS,
    IP_TTL,
    IPPROTO_IP,
    MSG_DONTWAIT,
    MSG_PEEK,
    MSG_TRUNC,
    O_NONBLOCK,
    RMEM_MAX,
    SKB_OVERHEAD,
    SO_BROADCAST,
    SO_NO_CHECK,
    SO_RCVBUF,
    SO_REUSEADDR,
    SO_SNDBUF,
    SOCK_DGRAM,
    SOCK_MIN_RCVBUF,
    SOCK_MIN_SNDBUF,
    SOCK_NONBLOCK,
    SOL_SOCKET,
)

from .core_helpers import ME, NEIGHBOUR, PEER, SUBNET_BCAST, Bench, udp_packet


@pytest.fixture
def bench() -> Bench:
    return Bench()


def raises_errno(code: int):
    class _Check:
        def __enter__(self):
            self.ctx = pytest.raises(OSError)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self.ctx.__exit__(*exc)
            assert self.info.value.errno == code, self.info.value
            return handled

    return _Check()


def in_ephemeral_range(port: int) -> bool:
    return EPHEMERAL_PORTS[0] <= port <= EPHEMERAL_PORTS[1]


# ---------------------------------------------------------------- binding


def test_bind_conflicts(bench):
    s = bench.stack
    bench.udp_socket(5000)
    with raises_errno(errno.EADDRINUSE):
        bench.udp_socket(5000)
    with raises_errno(errno.EADDRINUSE):
        bench.udp_socket(5000, ME)  # a specific address under a wildcard one
    bench.udp_socket(5001, ME)
    with raises_errno(errno.EADDRINUSE):
        bench.udp_socket(5001)  # a wildcard over a specific one
    bench.udp_socket(5001, "127.0.0.1")  # different specific addresses do not clash
    fd = s.socket()
    s.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, 1)  # on one side only: not enough
    with raises_errno(errno.EADDRINUSE):
        s.bind(fd, ("0.0.0.0", 5000))


def test_reuseaddr_on_both_shares_the_port_and_last_bound_gets_unicast(bench):
    a = bench.udp_socket(5000, reuse=True)
    b = bench.udp_socket(5000, reuse=True)
    bench.inject(udp_packet(4000, 5000, b"uni"))
    assert bench.stack.recvfrom(b, 10) == (b"uni", (PEER, 4000))
    with pytest.raises(BlockingIOError):
        bench.stack.recvfrom(a, 10)


def test_bind_twice_is_einval(bench):
    fd = bench.udp_socket(5000)
    with raises_errno(errno.EINVAL):
        bench.stack.bind(fd, ("0.0.0.0", 5001))
    fd2 = bench.stack.socket()
    bench.stack.sendto(fd2, b"x", 0, (PEER, 9))  # autobind
    with raises_errno(errno.EINVAL):
        bench.stack.bind(fd2, ("0.0.0.0", 5002))


def test_bind_foreign_address_is_eaddrnotavail(bench):
    fd = bench.stack.socket()
    with raises_errno(errno.EADDRNOTAVAIL):
        bench.stack.bind(fd, (NEIGHBOUR, 0))
    bench.stack.bind(fd, (ME, 0))
    assert bench.stack.getsockname(fd)[0] == ME


def test_ephemeral_port_on_autobind_and_connect(bench):
    s = bench.stack
    fd = s.socket()
    s.sendto(fd, b"x", 0, (PEER, 9))
    addr, port = s.getsockname(fd)
    assert addr == "0.0.0.0" and in_ephemeral_range(port)
    assert bench.sent()[0][UDP].sport == port
    fd2 = s.socket()
    s.connect(fd2, (PEER, 9))
    addr2, port2 = s.getsockname(fd2)
    assert addr2 == ME and in_ephemeral_range(port2) and port2 != port
    assert s.getpeername(fd2) == (PEER, 9)
    fd3 = bench.udp_socket(0)
    assert in_ephemeral_range(s.getsockname(fd3)[1])


# ---------------------------------------------------------------- demultiplexing


def test_connected_socket_only_gets_its_peer(bench):
    s = bench.stack
    fd = bench.udp_socket(5000)
    s.connect(fd, (PEER, 4000))
    bench.inject(udp_packet(4001, 5000, b"stranger"))
    bench.inject(udp_packet(4000, 5000, b"friend", src=NEIGHBOUR))
    bench.inject(udp_packet(4000, 5000, b"peer"))
    assert s.recvfrom(fd, 100) == (b"peer", (PEER, 4000))
    with pytest.raises(BlockingIOError):
        s.recvfrom(fd, 100)
    assert bench.counters.udp["NoPorts"] == 2
    assert len(bench.sent()) == 2  # port unreachable to the strangers


@pytest.mark.parametrize("connected_first", [True, False])
def test_more_specific_socket_wins(bench, connected_first):
    s = bench.stack

    def connected():
        fd = bench.udp_socket(5000, reuse=True)
        s.connect(fd, (PEER, 4000))
        return fd

    if connected_first:
        c, w = connected(), bench.udp_socket(5000, reuse=True)
    else:
        w, c = bench.udp_socket(5000, reuse=True), connected()
    bench.inject(udp_packet(4000, 5000, b"for c"))
    bench.inject(udp_packet(4001, 5000, b"for w"))
    assert s.recvfrom(c, 100)[0] == b"for c"
    assert s.recvfrom(w, 100)[0] == b"for w"


def test_specific_address_beats_wildcard(bench):
    s = bench.stack
    specific = bench.udp_socket(5000, ME, reuse=True)
    wildcard = bench.udp_socket(5000, reuse=True)  # bound later, still loses
    bench.inject(udp_packet(4000, 5000, b"x"))
    assert s.recvfrom(specific, 10)[0] == b"x"
    with pytest.raises(BlockingIOError):
        s.recvfrom(wildcard, 10)


@pytest.mark.parametrize("dst", [SUBNET_BCAST, "255.255.255.255", "224.0.0.1"])
def test_broadcast_delivered_to_every_matching_socket(bench, dst):
    s = bench.stack
    a = bench.udp_socket(6000, reuse=True)
    b = bench.udp_socket(6000, reuse=True)
    specific = bench.udp_socket(6000, ME, reuse=True)  # bound to the unicast address: not for it
    other_port = bench.udp_socket(6001)
    bench.inject(udp_packet(4000, 6000, b"all", dst=dst))
    assert s.recvfrom(a, 10) == (b"all", (PEER, 4000))
    assert s.recvfrom(b, 10) == (b"all", (PEER, 4000))
    for fd in (specific, other_port):
        with pytest.raises(BlockingIOError):
            s.recvfrom(fd, 10)
    assert bench.out == []


# ---------------------------------------------------------------- sending errors


def test_send_without_destination_is_edestaddrreq(bench):
    fd = bench.udp_socket()
    with raises_errno(errno.EDESTADDRREQ):
        bench.stack.send(fd, b"x")


def test_sendto_port_zero_is_einval(bench):
    fd = bench.udp_socket()
    with raises_errno(errno.EINVAL):
        bench.stack.sendto(fd, b"x", 0, (PEER, 0))


def test_emsgsize_above_65507(bench):
    fd = bench.udp_socket()
    with raises_errno(errno.EMSGSIZE):
        bench.stack.sendto(fd, bytes(65508), 0, (PEER, 9))
    assert bench.out == []
    assert bench.stack.sendto(fd, bytes(65507), 0, (PEER, 9)) == 65507
    frags = bench.sent()
    assert sum(len(f) - 20 for f in frags) == 65515


@pytest.mark.parametrize("dst", ["255.255.255.255", SUBNET_BCAST])
def test_broadcast_needs_so_broadcast(bench, dst):
    s = bench.stack
    fd = bench.udp_socket()
    with raises_errno(errno.EACCES):
        s.sendto(fd, b"x", 0, (dst, 9))
    fd2 = s.socket()
    with raises_errno(errno.EACCES):
        s.connect(fd2, (dst, 9))
    assert bench.out == []
    s.setsockopt(fd, SOL_SOCKET, SO_BROADCAST, 1)
    s.sendto(fd, b"x", 0, (dst, 9))
    (p,) = bench.sent()
    assert (p.src, p.dst, p[UDP].dport) == (ME, dst, 9)


# ---------------------------------------------------------------- receiving


def test_nonblocking_flavours(bench):
    s = bench.stack
    fd = bench.udp_socket(5000)
    with pytest.raises(BlockingIOError) as info:
        s.recvfrom(fd, 10, MSG_DONTWAIT)
    assert info.value.errno == errno.EAGAIN
    assert s.is_nonblocking(fd, MSG_DONTWAIT) and not s.is_nonblocking(fd)
    assert s.fcntl(fd, F_GETFL) & O_NONBLOCK == 0
    s.fcntl(fd, F_SETFL, O_NONBLOCK)
    assert s.is_nonblocking(fd) and s.fcntl(fd, F_GETFL) & O_NONBLOCK
    with pytest.raises(BlockingIOError):
        s.recvfrom(fd, 10)
    s.fcntl(fd, F_SETFL, 0)
    assert not s.is_nonblocking(fd)
    nb = s.socket(type=SOCK_DGRAM | SOCK_NONBLOCK)
    s.bind(nb, ("0.0.0.0", 5001))
    assert s.is_nonblocking(nb) and s.fcntl(nb, F_GETFL) & O_NONBLOCK
    with pytest.raises(BlockingIOError) as info:
        s.recv(nb, 10)
    assert info.value.errno == errno.EAGAIN


def test_msg_peek_does_not_consume(bench):
    s = bench.stack
    fd = bench.udp_socket(5000)
    bench.inject(udp_packet(4000, 5000, b"first"))
    bench.inject(udp_packet(4000, 5000, b"second"))
    assert s.recvfrom(fd, 100, MSG_PEEK) == (b"first", (PEER, 4000))
    assert s.recvfrom(fd, 3, MSG_PEEK) == (b"fir", (PEER, 4000))
    assert s.recvfrom(fd, 100) == (b"first", (PEER, 4000))
    assert s.recv(fd, 100) == b"second"
    with pytest.raises(BlockingIOError):
        s.recv(fd, 100)


def test_recvmsg_reports_truncation(bench):
    s = bench.stack
    fd = bench.udp_socket(5000)
    bench.inject(udp_packet(4000, 5000, b"0123456789"))
    bench.inject(udp_packet(4000, 5000, b"abc"))
    data, ancdata, flags, source = s.recvmsg(fd, 4)
    assert (data, ancdata, source) == (b"0123", [], (PEER, 4000))
    assert flags & MSG_TRUNC
    data, _, flags, _ = s.recvmsg(fd, 4)  # the rest of the first datagram is gone
    assert data == b"abc" and not flags & MSG_TRUNC


def test_so_rcvbuf_doubled_with_minimum(bench):
    s = bench.stack
    fd = bench.udp_socket(5000)
    s.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, 4096)
    assert s.getsockopt(fd, SOL_SOCKET, SO_RCVBUF) == 8192
    s.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, 1)
    assert s.getsockopt(fd, SOL_SOCKET, SO_RCVBUF) == SOCK_MIN_RCVBUF
    s.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, 1 << 30)
    assert s.getsockopt(fd, SOL_SOCKET, SO_RCVBUF) == 2 * RMEM_MAX
    assert s.getsockopt(fd, SOL_SOCKET, SO_RCVBUF, 4) == struct.pack("i", 2 * RMEM_MAX)


def test_datagrams_over_the_receive_buffer_are_dropped(bench):
    s = bench.stack
    fd = bench.udp_socket(5000)
    s.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, 1)  # 2304 bytes
    size = 1000
    assert size + SKB_OVERHEAD < SOCK_MIN_RCVBUF < 2 * (size + SKB_OVERHEAD)
    for _ in range(4):
        bench.inject(udp_packet(4000, 5000, bytes(size)))
    # Linux queues while the buffer is not yet over its limit: two fit, two are dropped.
    c = bench.counters.udp
    assert (c["InDatagrams"], c["RcvbufErrors"], c["InErrors"]) == (2, 2, 2)
    assert bench.counters.drops["udp.rcvbuf_full"] == 2
    s.recv(fd, size)
    bench.inject(udp_packet(4000, 5000, b"room again"))
    assert s.recv(fd, size) == bytes(size)
    assert s.recv(fd, size) == b"room again"


def test_so_sndbuf_limits_packets_waiting_in_txq(bench):
    s = bench.stack
    woken = []
    s.on_wake = woken.append
    iface = s.add_interface("pst1", "198.19.0.2", 24)  # no sink: packets wait in txq
    fd = bench.udp_socket()
    s.setsockopt(fd, SOL_SOCKET, SO_SNDBUF, 1)
    assert s.getsockopt(fd, SOL_SOCKET, SO_SNDBUF) == SOCK_MIN_SNDBUF
    s.setsockopt(fd, SOL_SOCKET, SO_SNDBUF, 3000)
    assert s.getsockopt(fd, SOL_SOCKET, SO_SNDBUF) == 6000
    sent = 0
    with pytest.raises(BlockingIOError) as info:
        for _ in range(100):
            s.sendto(fd, bytes(1000), 0, ("198.19.0.9", 9))
            sent += 1
    assert info.value.errno == errno.EAGAIN
    assert sent == 4 and len(iface.txq) == 4  # 4 x 1664 bytes of truesize (1048-byte packets) reach 6000
    assert bench.counters.udp["SndbufErrors"] == 1
    with pytest.raises(BlockingIOError):
        s.sendto(fd, b"x", 0, ("198.19.0.9", 9))
    assert bench.counters.udp["SndbufErrors"] == 2
    woken.clear()
    packets = iface.drain()
    assert len(packets) == 4 and IP(packets[0])[UDP].dport == 9
    assert s.sockets[fd] in woken
    s.sendto(fd, b"x", 0, ("198.19.0.9", 9))
    assert len(iface.txq) == 1


# ---------------------------------------------------------------- sendmsg and options


def test_sendmsg_gathers_buffers(bench):
    fd = bench.udp_socket()
    n = bench.stack.sendmsg(fd, [b"ab", bytearray(b"cd"), memoryview(b"ef")], [], 0, (PEER, 9))
    assert n == 6
    (p,) = bench.sent()
    assert bytes(p[UDP].payload) == b"abcdef"
    check = p.copy()
    del check[UDP].chksum
    assert IP(bytes(check))[UDP].chksum == p[UDP].chksum


def test_sendmsg_control_messages_set_ttl_and_tos(bench):
    fd = bench.udp_socket()
    control = [(IPPROTO_IP, IP_TTL, struct.pack("i", 5)), (IPPROTO_IP, IP_TOS, bytes([0x10]))]
    bench.stack.sendmsg(fd, [b"x"], control, 0, (PEER, 9))
    bench.stack.sendmsg(fd, [b"x"], [(IPPROTO_IP, IP_TOS, struct.pack("i", 0xB8))], 0, (PEER, 9))
    bench.stack.sendto(fd, b"x", 0, (PEER, 9))  # control messages last one call only
    a, b, c = bench.sent()
    assert (a.ttl, a.tos) == (5, 0x10)
    assert (b.ttl, b.tos) == (64, 0xB8)
    assert (c.ttl, c.tos) == (64, 0)
    assert scapy_checksum(bytes(a)[:20]) == 0


@pytest.mark.parametrize(
    "control",
    [
        [(IPPROTO_IP, IP_TTL, struct.pack("i", 0))],
        [(IPPROTO_IP, IP_TTL, struct.pack("i", 256))],
        [(IPPROTO_IP, IP_TTL, b"\x05")],
        [(IPPROTO_IP, IP_TOS, b"\x00\x10")],
        [(IPPROTO_IP, IP_TOS, struct.pack("i", 256))],
        [(IPPROTO_IP, IP_TOS, struct.pack("i", -1))],
        [(IPPROTO_IP, 99, b"\x00\x00\x00\x00")],
    ],
    ids=["ttl0", "ttl256", "ttl-short", "tos-2-bytes", "tos256", "tos-neg", "unknown-type"],
)
def test_bad_control_message_is_einval(bench, control):
    fd = bench.udp_socket()
    with raises_errno(errno.EINVAL):
        bench.stack.sendmsg(fd, [b"x"], control, 0, (PEER, 9))
    assert bench.out == []


def test_ip_ttl_option(bench):
    s = bench.stack
    fd = bench.udp_socket()
    assert s.getsockopt(fd, IPPROTO_IP, IP_TTL) == 64
    for bad in (0, 256, -2):
        with raises_errno(errno.EINVAL):
            s.setsockopt(fd, IPPROTO_IP, IP_TTL, bad)
    s.setsockopt(fd, IPPROTO_IP, IP_TTL, 9)
    s.sendto(fd, b"x", 0, (PEER, 9))
    assert bench.sent()[0].ttl == 9
    s.setsockopt(fd, IPPROTO_IP, IP_TTL, -1)  # back to the default
    assert s.getsockopt(fd, IPPROTO_IP, IP_TTL) == 64


def test_unknown_options_are_enoprotoopt(bench):
    s = bench.stack
    fd = bench.udp_socket()
    with raises_errno(errno.ENOPROTOOPT):
        s.setsockopt(fd, SOL_SOCKET, 9999, 1)
    with raises_errno(errno.ENOPROTOOPT):
        s.setsockopt(fd, IPPROTO_IP, 9999, 1)
    with raises_errno(errno.ENOPROTOOPT):
        s.getsockopt(fd, SOL_SOCKET, 9999)
    with raises_errno(errno.ENOPROTOOPT):
        s.setsockopt(fd, 6, 1, 1)  # a TCP option on a UDP socket


def test_no_check_sends_zero_checksum(bench):
    fd = bench.udp_socket()
    bench.stack.setsockopt(fd, SOL_SOCKET, SO_NO_CHECK, 1)
    bench.stack.sendto(fd, b"unchecked", 0, (PEER, 9))
    assert bench.sent()[0][UDP].chksum == 0


def test_received_zero_checksum_is_accepted_and_bad_one_counted(bench):
    s = bench.stack
    fd = bench.udp_socket(5000)
    bench.inject(IP(src=PEER, dst=ME) / UDP(sport=4000, dport=5000, chksum=0) / b"no sum")
    assert s.recv(fd, 100) == b"no sum"
    bench.inject(IP(src=PEER, dst=ME) / UDP(sport=4000, dport=5000, chksum=0x1234) / b"bad sum")
    c = bench.counters.udp
    assert (c["InDatagrams"], c["InErrors"], c["InCsumErrors"]) == (1, 1, 1)
    assert bench.counters.drops["udp.checksum"] == 1


def test_closed_fd_is_ebadf(bench):
    s = bench.stack
    fd = bench.udp_socket(5000)
    s.close(fd)
    for call in (
        lambda: s.sendto(fd, b"x", 0, (PEER, 9)),
        lambda: s.recvfrom(fd, 10),
        lambda: s.setsockopt(fd, IPPROTO_IP, IP_TTL, 5),
        lambda: s.bind(fd, ("0.0.0.0", 0)),
        lambda: s.close(fd),
        lambda: s.send(12345, b"x"),
    ):
        with raises_errno(errno.EBADF):
            call()
    bench.udp_socket(5000)  # the port was released


# ---------------------------------------------------------------- connect(None), loopback, multicast


def test_connect_none_dissolves_the_association(bench):
    s = bench.stack
    fd = bench.udp_socket(5000)
    s.connect(fd, (PEER, 4000))
    assert s.getsockname(fd) == (ME, 5000)
    s.connect(fd, None)
    with raises_errno(errno.ENOTCONN):
        s.getpeername(fd)
    with raises_errno(errno.EDESTADDRREQ):
        s.send(fd, b"x")
    # Linux (__udp_disconnect): an address picked by connect is forgotten, a bound port kept.
    assert s.getsockname(fd) == ("0.0.0.0", 5000)
    bench.inject(udp_packet(4001, 5000, b"anyone"))
    bench.inject(udp_packet(4001, 5000, b"broadcast", dst=SUBNET_BCAST))
    assert s.recv(fd, 100) == b"anyone"
    assert s.recv(fd, 100) == b"broadcast"


def test_connect_none_releases_an_autobound_port(bench):
    s = bench.stack
    fd = s.socket()
    s.connect(fd, (PEER, 4000))
    port = s.getsockname(fd)[1]
    s.connect(fd, None)
    assert s.getsockname(fd) == ("0.0.0.0", 0)
    assert port not in s.udp_ports
    explicit = bench.udp_socket(0, ME)
    s.connect(explicit, (PEER, 4000))
    s.connect(explicit, None)
    assert s.getsockname(explicit) == (ME, 0)  # the bound address stays


@pytest.mark.parametrize("dst", [ME, "127.0.0.1"])
def test_sending_to_ourselves_loops_back(bench, dst):
    s = bench.stack
    server = bench.udp_socket(7000)
    client = bench.udp_socket()
    s.sendto(client, b"self", 0, (dst, 7000))
    data, (src, port) = s.recvfrom(server, 100)
    assert data == b"self" and port == s.getsockname(client)[1]
    assert src == dst  # the source is the address the datagram was sent to
    assert bench.out == [] and s.loopback.rx_packets == 1


def test_sending_to_a_closed_local_port_refuses_a_connected_socket(bench):
    s = bench.stack
    fd = s.socket()
    s.connect(fd, ("127.0.0.1", 7001))
    s.send(fd, b"anyone?")
    with pytest.raises(ConnectionRefusedError):
        s.recv(fd, 100)
    assert bench.out == []


def test_multicast_send_uses_multicast_ttl(bench):
    s = bench.stack
    fd = bench.udp_socket()
    s.setsockopt(fd, IPPROTO_IP, IP_TTL, 30)  # unicast TTL: not used for multicast
    s.sendto(fd, b"m", 0, ("239.1.2.3", 5000))
    s.setsockopt(fd, IPPROTO_IP, IP_MULTICAST_TTL, 7)
    s.sendto(fd, b"m", 0, ("239.1.2.3", 5000))
    s.sendmsg(fd, [b"m"], [(IPPROTO_IP, IP_TTL, struct.pack("i", 3))], 0, ("239.1.2.3", 5000))
    s.sendto(fd, b"u", 0, (PEER, 5000))
    assert [p.ttl for p in bench.sent()] == [1, 7, 3, 30]
    assert s.getsockopt(fd, IPPROTO_IP, IP_MULTICAST_TTL) == 7
