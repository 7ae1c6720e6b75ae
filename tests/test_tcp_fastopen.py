"""TCP Fast Open (RFC 7413) as Linux does it: cookies, the server's SYN data, the option's forms.

The cookie vectors are the ones packetdrill's fastopen scripts check
Linux against (addresses and tcp_fastopen_key as the scripts set them).
"""

from __future__ import annotations

import errno
import socket as pysocket

import pytest

from pystack.links.virtual import VirtualNetwork
from pystack.socket import IPPROTO_TCP, MSG_DONTWAIT, SOCK_STREAM
from pystack.tcp.api import MSG_FASTOPEN
from pystack.tcp.fastopen import (
    TCP_FASTOPEN,
    TCP_FASTOPEN_CONNECT,
    TCP_FASTOPEN_KEY,
    make_cookie,
    parse_key,
)
from pystack.tcp.tcb import TcpConfig
from pystack.wire.tcp import TcpOptions, build_options, parse_options
from tests.tcp_harness import ME, PEER, PeerBench, PeerConn

SCRIPT_KEY = "a0bf63f7-ed803d81-cd641d30-cebc4a90"
PEER_ISN = 1_000_000


def addr(text: str) -> bytes:
    return pysocket.inet_aton(text)


@pytest.mark.parametrize(("client", "server", "key", "cookie"), [
    ("10.248.0.2", "192.168.0.2", SCRIPT_KEY, "00abaaabe8e954c2"),
    ("10.248.0.3", "192.168.0.2", SCRIPT_KEY, "1313a2da994a0951"),
    ("10.248.0.3", "192.168.0.3", SCRIPT_KEY, "76d2c1c530f51f79"),
    ("192.0.2.1", "192.168.0.1", "a1a1a1a1-b2b2b2b2-c3c3c3c3-d4d4d4d4", "3021b9d889017eeb"),
    ("10.248.0.2", "192.168.0.2", "00000000-00000000-00000000-00000000", "93b7aa4f550f8a1a"),
])
def test_cookie_is_linux_siphash_of_both_addresses(client, server, key, cookie):
    assert make_cookie(parse_key(key), addr(client), addr(server)).hex() == cookie


def test_sockopt_key_bytes_are_the_sysctl_words_little_endian():
    raw = bytes.fromhex("f763bfa0813d80ed301d64cd904abcce")  # sockopt-fastopen-key.pkt's TCP_FASTOPEN_KEY
    assert parse_key(SCRIPT_KEY) == raw
    with pytest.raises(ValueError):
        parse_key("a0bf63f7-ed803d81")


@pytest.mark.parametrize(("cookie", "exp", "wire"), [
    (b"", False, "2202" "0101"),  # a request: kind 34, padded with two NOPs
    (bytes.fromhex("abcd1234"), False, "2206abcd1234" "0101"),
    (bytes.fromhex("112233445566"), False, "2208112233445566"),
    (b"", True, "fe04f989"),  # the experimental form needs no padding for a request
    (bytes.fromhex("0011223344556677"), True, "fe0cf9890011223344556677"),
])
def test_fastopen_option_goes_last_in_linux_form(cookie, exp, wire):
    raw = build_options(TcpOptions(mss=1460, fastopen=cookie, fastopen_exp=exp), syn=True)
    assert raw[4:].hex() == wire
    parsed = parse_options(raw)
    assert (parsed.fastopen, parsed.fastopen_exp) == (cookie, exp)


def server(bits: int = 0x403, key: str = SCRIPT_KEY) -> tuple[PeerBench, int]:
    bench = PeerBench(TcpConfig(fastopen=bits, fastopen_key=parse_key(key)))
    lfd = bench.stack.socket(type=SOCK_STREAM)
    bench.stack.bind(lfd, ("0.0.0.0", 80))
    bench.stack.listen(lfd, 4)
    return bench, lfd


def syn(bench: PeerBench, fo: bytes | None, payload: bytes = b"", exp: bool = False) -> PeerConn:
    conn = PeerConn(bench, 40000, 80, PEER_ISN)
    options: list = [("MSS", 1460), ("SAckOK", b"")]
    if fo is not None:
        options.append((254, b"\xf9\x89" + fo) if exp else (34, fo))
    conn.send("S", payload=payload, options=options)
    return conn


def fastopen_option(pkt) -> tuple[bytes | None, bool]:
    """The Fast Open option of a segment the stack sent: (cookie, experimental form)."""
    raw = bytes(pkt.tcp)
    options = parse_options(raw[20 : pkt.tcp.dataofs * 4])
    return options.fastopen, options.fastopen_exp


def valid_cookie() -> bytes:
    return make_cookie(parse_key(SCRIPT_KEY), addr(PEER), addr(ME))


def test_cookie_request_is_answered_with_the_cookie_in_the_form_asked():
    bench, _ = server()
    syn(bench, b"", exp=True)
    synack = bench.expect(flags="SA", ack=PEER_ISN + 1)
    assert fastopen_option(synack) == (valid_cookie(), True)
    assert bench.counters.tcp["TCPFastOpenCookieReqd"] == 1


def test_valid_cookie_data_is_acknowledged_and_readable_before_the_handshake_ends():
    bench, lfd = server()
    conn = syn(bench, valid_cookie(), b"hello")
    synack = bench.expect(flags="SA", ack=PEER_ISN + 1 + 5)
    assert fastopen_option(synack) == (None, False)  # a valid cookie is not sent back
    fd, _ = bench.stack.accept(lfd)  # queued at once, before the peer's ACK
    assert bench.stack.recv(fd, 100) == b"hello"
    assert bench.stack.sockfd_lookup(fd).tcb.syn_data_acked
    assert bench.stack.send(fd, b"x" * 100) == 100  # and it may send in SYN-RECEIVED
    bench.expect(flags="PA", seq=synack.seq + 1, length=100)
    conn.ack = synack.seq + 1 + 100
    conn.send("A")
    assert bench.stack.sockfd_lookup(fd).tcb.state_name == "ESTABLISHED"
    assert bench.counters.tcp["TCPFastOpenPassive"] == 1


def test_wrong_cookie_falls_back_to_a_handshake_and_returns_the_right_cookie():
    bench, lfd = server()
    syn(bench, bytes(8), b"hello")
    synack = bench.expect(flags="SA", ack=PEER_ISN + 1)  # the data is not acknowledged
    assert fastopen_option(synack) == (valid_cookie(), False)
    with pytest.raises(BlockingIOError):
        bench.stack.accept(lfd)
    assert bench.counters.tcp["TCPFastOpenPassiveFail"] == 1


def test_cookie_not_required_takes_data_without_any_option():
    bench, lfd = server(bits=0x603)
    syn(bench, None, b"hello")
    bench.expect(flags="SA", ack=PEER_ISN + 1 + 5)
    fd, _ = bench.stack.accept(lfd)
    assert bench.stack.recv(fd, 100) == b"hello"


def test_listener_without_fastopen_ignores_the_data_and_sends_no_cookie():
    bench, lfd = server(bits=0x3)  # server enabled, but no TCP_FASTOPEN on the listener
    syn(bench, b"", b"hello")
    synack = bench.expect(flags="SA", ack=PEER_ISN + 1)
    assert fastopen_option(synack) == (None, False)
    bench.stack.setsockopt(lfd, IPPROTO_TCP, TCP_FASTOPEN, 1)
    assert bench.stack.getsockopt(lfd, IPPROTO_TCP, TCP_FASTOPEN) == 1


def test_listener_key_sockopt_makes_the_cookies():
    bench, lfd = server(key="00000000-00000000-00000000-00000000")
    key = parse_key(SCRIPT_KEY)
    bench.stack.setsockopt(lfd, IPPROTO_TCP, TCP_FASTOPEN_KEY, key)
    with pytest.raises(OSError) as info:
        bench.stack.setsockopt(lfd, IPPROTO_TCP, TCP_FASTOPEN_KEY, b"abc")
    assert info.value.errno == errno.EINVAL
    syn(bench, b"")
    assert fastopen_option(bench.expect(flags="SA")) == (valid_cookie(), False)


def test_reset_before_accept_leaves_the_data_then_the_error():
    bench, lfd = server()
    conn = syn(bench, valid_cookie(), b"0123456789")
    bench.expect(flags="SA")
    conn.send("R")
    fd, _ = bench.stack.accept(lfd)
    assert bench.stack.recv(fd, 512) == b"0123456789"
    with pytest.raises(ConnectionResetError):
        bench.stack.recv(fd, 512)


def test_closing_the_listener_resets_its_fastopen_child():
    bench, lfd = server()
    syn(bench, valid_cookie(), b"0123456789")
    synack = bench.expect(flags="SA")
    bench.stack.close(lfd)
    bench.expect(flags="RA", seq=synack.seq + 1, ack=PEER_ISN + 11)


def test_fastopen_queue_limit_falls_back_when_full():
    bench, lfd = server()
    bench.stack.setsockopt(lfd, IPPROTO_TCP, TCP_FASTOPEN, 1)
    syn(bench, valid_cookie(), b"a")
    bench.expect(flags="SA", ack=PEER_ISN + 2)
    other = PeerConn(bench, 40001, 80, PEER_ISN)
    other.send("S", payload=b"b", options=[("MSS", 1460), (34, valid_cookie())])
    bench.expect(flags="SA", ack=PEER_ISN + 1)  # the first still waits for its ACK: no room
    assert bench.counters.tcp["TCPFastOpenListenOverflow"] == 1


# ---------------------------------------------------------------- client


def client(bits: int = 0x1) -> tuple[PeerBench, int]:
    bench = PeerBench(TcpConfig(fastopen=bits))
    return bench, bench.stack.socket(type=SOCK_STREAM)


def answer(bench: PeerBench, syn_pkt, ack: int, cookie: bytes | None = None, mss: int = 1460) -> PeerConn:
    """The peer's SYN-ACK to the stack's SYN (acknowledging up to ``ack``), with a cookie if given."""
    conn = PeerConn(bench, 80, syn_pkt.tcp.sport, PEER_ISN, ack=ack)
    options: list = [("MSS", mss)] + ([(34, cookie)] if cookie is not None else [])
    conn.send("SA", options=options)
    return conn


def fastopen_send(bench: PeerBench, fd: int, data: bytes) -> int:
    try:
        return bench.stack.sendto(fd, data, MSG_FASTOPEN | MSG_DONTWAIT, (PEER, 80))
    except BlockingIOError as pending:
        if pending.errno != errno.EINPROGRESS:
            raise
        return 0


def warm_cache(bench: PeerBench, cookie: bytes, mss: int = 1460) -> None:
    """A first connection asks for a cookie (a SYN without data) and is given ``cookie``."""
    fd = bench.stack.socket(type=SOCK_STREAM)
    assert fastopen_send(bench, fd, b"x" * 100) == 0
    request = bench.expect(flags="S", length=0)
    assert fastopen_option(request) == (b"", False)
    answer(bench, request, request.seq + 1, cookie, mss)
    bench.expect(flags="A")
    bench.stack.close(fd)
    bench.take()


def test_client_sends_data_in_the_syn_once_it_has_a_cookie():
    bench, fd = client()
    warm_cache(bench, bytes.fromhex("abcd1234"), mss=940)
    sent = fastopen_send(bench, fd, b"y" * 2000)
    assert sent == 900  # the server's cached MSS less 40 bytes of options (Linux)
    syn_pkt = bench.expect(flags="S", length=900)
    assert fastopen_option(syn_pkt) == (bytes.fromhex("abcd1234"), False)
    answer(bench, syn_pkt, syn_pkt.seq + 1 + 900)
    bench.expect(flags="A", ack=PEER_ISN + 1, length=0)
    tcb = bench.stack.sockfd_lookup(fd).tcb
    assert tcb.syn_data_acked and tcb.state_name == "ESTABLISHED"
    assert bench.counters.tcp["TCPFastOpenActive"] == 1


def test_client_sends_the_syn_data_again_when_the_server_acks_only_the_syn():
    bench, fd = client()
    warm_cache(bench, bytes.fromhex("abcd1234"))
    assert fastopen_send(bench, fd, b"y" * 1000) == 1000
    syn_pkt = bench.expect(flags="S", length=1000)
    answer(bench, syn_pkt, syn_pkt.seq + 1, bytes.fromhex("aaaabbbbccccdddd"))
    bench.expect(flags="PA", seq=syn_pkt.seq + 1, length=1000)
    assert not bench.stack.sockfd_lookup(fd).tcb.syn_data_acked
    assert bench.stack.tcp.fastopen_cache[bench.stack.sockfd_lookup(fd).tcb.remote_addr].cookie == \
        bytes.fromhex("aaaabbbbccccdddd")


def test_client_syn_retransmission_carries_neither_data_nor_cookie():
    bench, fd = client()
    warm_cache(bench, bytes.fromhex("abcd1234"))
    fastopen_send(bench, fd, b"y" * 100)
    first = bench.expect(flags="S", length=100)
    bench.advance(1.0)
    again = [p for p in bench.take() if p.tcp.sport == first.tcp.sport]  # not the warm-up's FIN
    assert [(p.flags, p.seq, len(p.payload), fastopen_option(p)) for p in again] == \
        [("S", first.seq, 0, (None, False))]


def test_client_errnos():
    bench, fd = client(bits=0)
    with pytest.raises(OSError) as info:
        fastopen_send(bench, fd, b"y")
    assert info.value.errno == errno.EOPNOTSUPP
    bench, fd = client()
    fastopen_send(bench, fd, b"y")
    with pytest.raises(OSError) as info:
        fastopen_send(bench, fd, b"y")
    assert info.value.errno == errno.EALREADY


def test_fastopen_connect_defers_the_syn_to_the_first_write():
    bench, fd = client()
    warm_cache(bench, bytes.fromhex("abcd1234"))
    bench.stack.setsockopt(fd, IPPROTO_TCP, TCP_FASTOPEN_CONNECT, 1)
    bench.stack.connect(fd, (PEER, 80))  # returns at once: a cookie is cached
    bench.expect_nothing()
    with pytest.raises(OSError) as info:
        bench.stack.connect(fd, (PEER, 80))
    assert info.value.errno == errno.EISCONN
    assert bench.stack.send(fd, b"z" * 500) == 500
    assert fastopen_option(bench.expect(flags="S", length=500))[0] == bytes.fromhex("abcd1234")


# ---------------------------------------------------------------- two pystack stacks


def test_pystack_to_pystack_fastopen_over_a_virtual_network():
    """A client and a server stack, Fast Open on both: the first connection gets a cookie, the second
    carries its request in the SYN, which the server reads before the handshake ends (one RTT)."""
    net = VirtualNetwork()
    config = TcpConfig(fastopen=0x403)
    client_stack, server_stack = net.add_stack(seed=1, tcp_config=config), net.add_stack(seed=2, tcp_config=config)
    net.link(net.attach(client_stack, "eth0", "198.18.0.1"),
             net.attach(server_stack, "eth0", "198.18.0.2", direction="server"), delay=0.01)
    listener = server_stack.socket(type=SOCK_STREAM)
    server_stack.bind(listener, ("0.0.0.0", 80))
    server_stack.listen(listener, 8)
    first = client_stack.socket(type=SOCK_STREAM)
    with pytest.raises(BlockingIOError):  # no cookie yet: the SYN asks for one
        client_stack.sendto(first, b"GET /", MSG_FASTOPEN | MSG_DONTWAIT, ("198.18.0.2", 80))
    net.run_until(lambda: client_stack.connect_result(first) != errno.EINPROGRESS, 1.0)
    assert [c.cookie for c in client_stack.tcp.fastopen_cache.values()] == [
        make_cookie(config.fastopen_key, addr("198.18.0.1"), addr("198.18.0.2"))]
    net.run_until(lambda: bool(server_stack.sockets[listener].tcb.accept_queue), 1.0)
    server_stack.accept(listener)  # the first connection
    second = client_stack.socket(type=SOCK_STREAM)
    assert client_stack.sendto(second, b"GET /", MSG_FASTOPEN | MSG_DONTWAIT, ("198.18.0.2", 80)) == 5
    start = net.clock.now()
    net.run_until(lambda: bool(server_stack.sockets[listener].tcb.accept_queue), 1.0)
    assert net.clock.now() - start == pytest.approx(0.01)  # one way: the SYN itself
    fd, _ = server_stack.accept(listener)
    assert server_stack.recv(fd, 100) == b"GET /"
