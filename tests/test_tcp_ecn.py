"""ECN (RFC 3168) with Linux's tcp_ecn values, and the Disorder state Linux reports."""

from __future__ import annotations

import pytest
from scapy.all import IP

from pystack.tcp.tcb import CA_CWR, CA_DISORDER, CA_OPEN, TcpConfig

from .tcp_harness import LINUX_SYN_OPTIONS, PeerBench, active_open
from .test_tcp_recovery import MSS, opened, send_window, tcb_of

NOT_ECT, ECT_0, CE = 0, 2, 3


def ecn_syn_bench(ecn: int):
    """A listener, and a SYN that asks for ECN (ECE and CWR set): what the stack answers."""
    bench = PeerBench(config=TcpConfig(ecn=ecn))
    lfd = bench.stack.socket(type=1)
    bench.stack.bind(lfd, ("0.0.0.0", 80))
    bench.stack.listen(lfd, 4)
    bench.inject(bench.segment(40000, 80, "SEC", 1000, 0, 65535, LINUX_SYN_OPTIONS))
    return bench, bench.take()


@pytest.mark.parametrize("ecn, agreed", [(2, True), (1, True), (0, False)])
def test_syn_asking_for_ecn_is_answered_with_ece_unless_tcp_ecn_is_0(ecn, agreed):
    _, out = ecn_syn_bench(ecn)
    assert [p.flags for p in out] == ["SAE" if agreed else "SA"]


def ce_marked(packet: bytes) -> bytes:
    ip = IP(packet)
    ip.tos = CE
    del ip.chksum
    return bytes(ip)


def test_active_open_asks_for_ecn_with_tcp_ecn_1_only():
    bench = PeerBench()  # tcp_ecn=2, Linux's default: accept ECN, do not ask for it
    active_open(bench)
    assert not any(tcb.want_ecn or tcb.ecn_ok for tcb in bench.stack.tcp.conns.values())
    bench = PeerBench(config=TcpConfig(ecn=1))
    fd = bench.stack.socket(type=1)
    with pytest.raises(BlockingIOError):
        bench.stack.connect(fd, ("198.18.0.1", 80))
    syn = bench.take()[0]
    assert syn.flags == "SEC"
    bench.advance(1.0)
    assert bench.take()[0].flags == "S"  # sent again: without ECN (a path may drop ECN SYNs)


def test_ecn_connection_marks_new_data_ect0_echoes_ce_and_reduces_on_ece():
    bench = PeerBench()
    lfd = bench.stack.socket(type=1)
    bench.stack.bind(lfd, ("0.0.0.0", 80))
    bench.stack.listen(lfd, 4)
    bench.inject(bench.segment(40000, 80, "SEC", 1000, 0, 65535, [("MSS", 1460), ("SAckOK", b"")]))
    synack = bench.take()[0]
    assert synack.ip.tos & 3 == NOT_ECT
    una = synack.seq + 1
    bench.inject(bench.segment(40000, 80, "A", 1001, una))
    fd, _ = bench.stack.accept(lfd)
    tcb = bench.stack.sockets[fd].tcb
    assert tcb.ecn_ok
    # The sender: new data ECT(0).
    bench.stack.send(fd, bytes(4 * 1460))
    data = bench.take()
    assert [p.ip.tos & 3 for p in data] == [ECT_0] * 4
    # The receiver: a CE mark is echoed with ECE on every ACK until the peer's CWR.
    bench.inject(ce_marked(bench.segment(40000, 80, "PA", 1001, una, payload=b"x" * 10)))
    ack = bench.take()[-1]
    assert "E" in ack.flags and ack.ip.tos & 3 == NOT_ECT
    bench.inject(bench.segment(40000, 80, "PA", 1011, una, payload=b"y" * 10))
    bench.advance(0.05)
    acks = bench.take()
    assert acks and all("E" in p.flags for p in acks)
    bench.inject(bench.segment(40000, 80, "PAC", 1021, una, payload=b"z" * 10))
    bench.advance(0.05)
    assert all("E" not in p.flags for p in bench.take())
    # The sender again: ECE on an ACK enters CWR, cwnd goes down by PRR to CUBIC's ssthresh,
    # and the next new segment carries CWR.
    cwnd = tcb.cwnd
    bench.inject(bench.segment(40000, 80, "AE", 1031, una + 1460))
    assert tcb.ca_state == CA_CWR and tcb.ssthresh == cwnd * 717 // 1024
    bench.take()
    bench.stack.send(fd, bytes(1460))
    sent = bench.take()
    assert "C" in sent[0].flags and sent[0].ip.tos & 3 == ECT_0
    assert all("C" not in p.flags for p in sent[1:])
    bench.inject(bench.segment(40000, 80, "A", 1031, sent[-1].seq + len(sent[-1].payload)))
    assert tcb.ca_state == CA_OPEN and tcb.cwnd == tcb.ssthresh


def test_no_ecn_marks_without_agreement():
    bench, conn = opened()
    tcb = tcb_of(bench, conn)
    assert not tcb.ecn_ok
    assert all(p.ip.tos & 3 == NOT_ECT and "C" not in p.flags for p in send_window(bench, conn, 4))


def test_sacked_segments_make_the_state_disorder_without_reducing_cwnd():
    """Linux tcp_try_keep_open: Disorder while anything is SACKed or lost; cwnd kept."""
    bench, conn = opened(rtt=0.1)  # RACK waits a quarter of it before calling segment 0 lost
    tcb = tcb_of(bench, conn)
    s = [p.seq for p in send_window(bench, conn, 4)]
    bench.advance(0.1)  # the round trip (the SACKed segment's RTT is a sample too)
    conn.send("A", ack=s[0], sack=[(s[1], s[1] + MSS)])
    assert tcb.ca_state == CA_DISORDER and tcb.cwnd == 10
    conn.send("A", ack=s[3] + MSS)
    assert tcb.ca_state == CA_OPEN
