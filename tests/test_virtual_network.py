"""The virtual network the test benches, benchmarks and ``spec show`` share (pystack/links/virtual.py)."""

from __future__ import annotations

import pytest
from scapy.all import IP, UDP, Raw

from pystack.links.virtual import Transmission, VirtualNetwork
from pystack.socket import SOCK_STREAM

A, B = "198.18.0.1", "198.18.0.2"


def two_stacks(**options):
    net = VirtualNetwork(**options)
    a, b = net.add_stack(seed=1), net.add_stack(seed=2)
    pa = net.attach(a, "eth0", A, direction="a>b")
    pb = net.attach(b, "eth0", B, direction="b>a")
    return net, a, b, pa, pb


def listening(stack, port: int = 80) -> int:
    fd = stack.socket(type=SOCK_STREAM)
    stack.bind(fd, ("0.0.0.0", port))
    stack.listen(fd, 4)
    return fd


def test_a_port_without_peer_keeps_what_it_sends_and_time_stands_still():
    net, a, _, pa, _ = two_stacks()
    fd = a.socket()
    a.sendto(fd, b"hi", 0, (B, 9))
    (packet,) = pa.sent
    assert bytes(IP(packet)[Raw].load) == b"hi"
    assert net.next_event() is None and net.clock.now() == 0.0


def test_linked_ports_deliver_after_the_delay_and_log_each_direction():
    net, a, b, pa, pb = two_stacks(record=Transmission, log=True)
    net.link(pa, pb, delay=0.25)
    rx = b.socket()
    b.bind(rx, ("0.0.0.0", 9))
    a.sendto(a.socket(), b"x", 0, (B, 9))
    assert [r.direction for r in net.log] == ["a>b"] and isinstance(net.log[0], Transmission)
    assert len(net.pending(pb)) == 1 and net.pending(pa) == []
    net.run(0.2)
    with pytest.raises(BlockingIOError):
        b.recvfrom(rx, 100)
    net.run(0.1)
    assert b.recvfrom(rx, 100) == (b"x", (A, a.sockets[max(a.sockets)].local_port))
    assert net.clock.now() == pytest.approx(0.3) and pb.sent == []


def test_a_filter_drops_or_rewrites_packets_on_the_wire():
    net, a, b, pa, pb = two_stacks()
    net.link(pa, pb)
    rx = b.socket()
    b.bind(rx, ("0.0.0.0", 9))
    rewritten = bytes(IP(src=A, dst=B) / UDP(sport=5, dport=9) / Raw(b"new"))
    verdicts = iter([False, rewritten])
    net.filter = lambda record: next(verdicts)
    tx = a.socket()
    a.sendto(tx, b"lost", 0, (B, 9))
    a.sendto(tx, b"old", 0, (B, 9))
    net.run()
    assert b.recvfrom(rx, 100) == (b"new", (A, 5))
    with pytest.raises(BlockingIOError):
        b.recvfrom(rx, 100)


def test_establish_connects_and_the_server_accepts():
    net, a, b, pa, pb = two_stacks()
    net.link(pa, pb)
    listener = listening(b)
    fd = a.socket(type=SOCK_STREAM)
    accepted = net.establish(a, fd, (B, 80), b, listener)
    a.send(fd, b"ping")
    net.run()
    assert b.recv(accepted, 100) == b"ping"


def test_establish_reports_a_refused_connection():
    net, a, b, pa, pb = two_stacks()
    net.link(pa, pb)
    listener = listening(b, 81)
    with pytest.raises(ConnectionRefusedError):
        net.establish(a, a.socket(type=SOCK_STREAM), (B, 80), b, listener)


def test_after_unlink_both_ports_keep_what_they_send():
    net, a, _, pa, pb = two_stacks()
    net.link(pa, pb)
    a.sendto(a.socket(), b"x", 0, (B, 9))
    net.unlink(pa)
    a.sendto(a.socket(), b"y", 0, (B, 9))
    assert len(net.pending(pb)) == 1 and len(pa.sent) == 1 and pa.iface.sink == pa.sent.append


def test_bad_wiring_gets_a_clear_error():
    net, a, b, pa, pb = two_stacks()
    with pytest.raises(ValueError, match="port 'a>b' already"):
        net.attach(b, "eth1", "198.18.1.2", direction="a>b")
    with pytest.raises(ValueError, match="not on this network"):
        VirtualNetwork().attach(a, "eth1", "198.18.1.1")
    net.link(pa, pb)
    with pytest.raises(ValueError, match="one peer only"):
        net.link(pa, net.attach(b, "eth1", "198.18.1.2"))
    with pytest.raises(ValueError, match="not linked"):
        net.unlink(net.ports["eth1"])
