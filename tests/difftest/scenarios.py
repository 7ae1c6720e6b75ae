"""Differential scenarios: each is written once and run against Linux and pystack.

A scenario sends crafted packets (scapy), makes socket calls on the DUT
and records what comes back (see :mod:`conformance.testbench`).
It asserts nothing about the answers itself: the Linux transcript *is*
the expectation, and test_difftest.py compares pystack's to it field by
field. Scenarios that expect silence end with a positive control.
"""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import Awaitable, Callable

import trio
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption, fragment
from scapy.packet import Raw

from conformance.normalize import PSH, parse_ipv4, parse_tcp
from conformance.testbench import Scenario, TcpPeer, Testbench
from pystack.tcp.fastopen import make_cookie, parse_key

SCENARIOS: dict[str, Scenario] = {}

SYN_ALL = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1000, 0)), ("NOP", None), ("WScale", 7)]
SYN_SACK = [("MSS", 1460), ("NOP", None), ("NOP", None), ("SAckOK", b"")]
SO_LINGER_OFF_0 = struct.pack("ii", 1, 0)


def scenario(fn: Callable[[Testbench], Awaitable[None]] | None = None, *, timeout: float = 20.0,
             sysctls: dict[str, str] | None = None):
    """Register a scenario; ``sysctls`` are set in the Linux namespace (and on pystack where it has them)."""
    def register(f: Callable[[Testbench], Awaitable[None]]):
        SCENARIOS[f.__name__] = Scenario(f.__name__, f, (f.__doc__ or "").strip(), dict(sysctls or {}),
                                         timeout=timeout)
        return f
    return register(fn) if fn is not None else register


async def control_ping(tb: Testbench) -> None:
    """Positive control: the DUT is alive and the bench hears it."""
    tb.send(tb.ip() / ICMP(id=0x77, seq=9) / b"control")
    await tb.expect("control: echo reply", within=0.2)


def echo(tb: Testbench, size: int, ident: int = 1, seq: int = 1, **ip: object) -> IP:
    return tb.ip(**ip) / ICMP(id=ident, seq=seq) / Raw(bytes((i * 7) & 0xFF for i in range(size)))


# ---------------------------------------------------------------- ICMP echo


@scenario
async def ping_8_bytes(tb: Testbench) -> None:
    """Echo request with 8 bytes of data."""
    tb.send(echo(tb, 8))
    await tb.expect("echo reply")


@scenario
async def ping_odd_length(tb: Testbench) -> None:
    """Echo request with an odd data length (checksum over an odd byte count)."""
    tb.send(echo(tb, 33))
    await tb.expect("echo reply")


@scenario
async def ping_largest_unfragmented(tb: Testbench) -> None:
    """Echo request of exactly the MTU (1472 bytes of data)."""
    tb.send(echo(tb, 1472))
    await tb.expect("echo reply")


@scenario
async def ping_fragmented(tb: Testbench) -> None:
    """A 3000-byte echo request in three fragments; the reply is larger than the MTU."""
    tb.send(*fragment(echo(tb, 3000), fragsize=1480))
    await tb.expect("fragmented echo reply")


@scenario
async def ping_fragments_out_of_order(tb: Testbench) -> None:
    """The fragments of an echo request, last first."""
    tb.send(*reversed(fragment(echo(tb, 1000), fragsize=256)))
    await tb.expect("echo reply")


@scenario
async def ping_tiny_fragments(tb: Testbench) -> None:
    """An echo request cut into 8-byte fragments."""
    tb.send(*fragment(echo(tb, 56), fragsize=8))
    await tb.expect("echo reply")


@scenario
async def ping_duplicate_fragment(tb: Testbench) -> None:
    """One fragment of an echo request arrives twice."""
    pieces = fragment(echo(tb, 200), fragsize=64)
    tb.send(pieces[0], pieces[1], pieces[1], *pieces[2:])
    await tb.expect("echo reply")


@scenario
async def ping_overlapping_fragments(tb: Testbench) -> None:
    """Two fragments that overlap with different bytes (RFC 5722 style: drop the datagram)."""
    whole = bytes(echo(tb, 48))
    header, body = whole[:20], whole[20:]  # body: 8 ICMP + 48 data = 56 bytes
    first = IP(header)
    first.flags, first.frag = "MF", 0
    del first.len, first.chksum
    second = IP(header)
    second.flags, second.frag = 0, 3  # offset 24 bytes, while the first runs to 32
    del second.len, second.chksum
    tb.send(first / Raw(body[:32]), second / Raw(b"\xee" * 8 + body[32:]))
    await tb.expect("overlap: nothing")
    await control_ping(tb)


@scenario
async def ping_missing_fragment(tb: Testbench) -> None:
    """Only the first fragment: nothing before the reassembly timeout."""
    tb.send(fragment(echo(tb, 1000), fragsize=512)[0])
    await tb.expect("incomplete datagram: nothing", within=0.5)
    await control_ping(tb)


@scenario
async def ping_ttl_0(tb: Testbench) -> None:
    """An echo request with TTL 0 addressed to the DUT itself."""
    tb.send(echo(tb, 16, ttl=0))
    await tb.expect("echo reply")


@scenario
async def ping_ttl_1(tb: Testbench) -> None:
    """An echo request with TTL 1 addressed to the DUT itself."""
    tb.send(echo(tb, 16, ttl=1))
    await tb.expect("echo reply")


@scenario
async def ping_broadcast(tb: Testbench) -> None:
    """An echo request to the subnet's broadcast address (ignored by default on Linux)."""
    tb.send(echo(tb, 16, dst="198.18.20.255"))
    await tb.expect("broadcast echo")
    await control_ping(tb)


@scenario
async def icmp_unknown_type(tb: Testbench) -> None:
    """An ICMP message of an unassigned type."""
    tb.send(tb.ip() / ICMP(type=42, code=0) / b"????")
    await tb.expect("unknown type: nothing")
    await control_ping(tb)


# ---------------------------------------------------------------- IP options and malformed headers


@scenario
async def ip_options_nop(tb: Testbench) -> None:
    """An echo request whose IP header carries four NOP options."""
    tb.send(echo(tb, 16, options=[IPOption(b"\x01\x01\x01\x01")]))
    await tb.expect("echo reply")


@scenario
async def ip_option_record_route(tb: Testbench) -> None:
    """An echo request with a Record Route option with two free slots."""
    tb.send(echo(tb, 16, options=[IPOption(b"\x07\x0b\x04" + bytes(8)), IPOption(b"\x00")]))
    await tb.expect("echo reply")


@scenario
async def ip_option_timestamp(tb: Testbench) -> None:
    """An echo request with an IP Timestamp option (timestamps only, two slots)."""
    tb.send(echo(tb, 16, options=[IPOption(b"\x44\x0c\x05\x00" + bytes(8))]))
    await tb.expect("echo reply")


@scenario
async def ip_bad_checksum(tb: Testbench) -> None:
    """An echo request with a wrong IP header checksum."""
    tb.send(echo(tb, 16, chksum=0x1234))
    await tb.expect("bad checksum: nothing")
    await control_ping(tb)


@scenario
async def ip_total_length_too_long(tb: Testbench) -> None:
    """An echo request whose total length claims more bytes than the packet has."""
    tb.send(echo(tb, 16, len=200))
    await tb.expect("truncated packet: nothing")
    await control_ping(tb)


@scenario
async def ip_total_length_shorter_than_packet(tb: Testbench) -> None:
    """Trailing bytes after the datagram (link padding) are not part of it."""
    tb.send(bytes(echo(tb, 16)) + b"\xde\xad\xbe\xef")
    await tb.expect("echo reply")


@scenario
async def ip_bad_version(tb: Testbench) -> None:
    """An IPv4 header with version 5."""
    tb.send(echo(tb, 16, version=5))
    await tb.expect("version 5: nothing")
    await control_ping(tb)


@scenario
async def ip_bad_header_length(tb: Testbench) -> None:
    """An IPv4 header claiming 16 bytes (IHL 4)."""
    tb.send(echo(tb, 16, ihl=4))
    await tb.expect("IHL 4: nothing")
    await control_ping(tb)


@scenario
async def ip_unknown_protocol(tb: Testbench) -> None:
    """A datagram for an IP protocol nobody handles (protocol unreachable)."""
    tb.send(tb.ip(proto=253) / Raw(b"payload!"))
    await tb.expect("protocol unreachable")


# ---------------------------------------------------------------- UDP


@scenario
async def udp_closed_port(tb: Testbench) -> None:
    """A datagram to a port nobody listens on: ICMP port unreachable, and what it quotes."""
    tb.send(tb.ip() / UDP(sport=tb.port(), dport=9) / b"hello?")
    await tb.expect("port unreachable")


@scenario
async def udp_closed_port_large(tb: Testbench) -> None:
    """A 1200-byte datagram to a closed port: how much of it the error quotes."""
    tb.send(tb.ip() / UDP(sport=tb.port(), dport=9) / (b"x" * 1200))
    await tb.expect("port unreachable")


async def _udp_socket(tb: Testbench, port: int = 7777):
    sock = tb.socket(socket.SOCK_DGRAM)
    await sock.bind((tb.dut.address, port))
    sock.set_nonblocking(True)
    tb.norm.dut_ports.add(port)
    return sock


@scenario
async def udp_checksum_zero(tb: Testbench) -> None:
    """A datagram without a checksum (0) is delivered; the DUT answers from its socket."""
    sock = await _udp_socket(tb)
    sport = tb.port()
    tb.send(tb.ip() / UDP(sport=sport, dport=7777, chksum=0) / b"no checksum")
    await tb.call("recvfrom", sock.recvfrom, 100)
    await tb.call("sendto", sock.sendto, b"answer", (tb.dut.peer, sport))
    await tb.expect("answer")


@scenario
async def udp_bad_checksum(tb: Testbench) -> None:
    """A datagram with a wrong checksum is dropped silently; a good one then arrives."""
    sock = await _udp_socket(tb)
    sport = tb.port()
    tb.send(tb.ip() / UDP(sport=sport, dport=7777, chksum=0xBAD) / b"corrupted")
    await tb.expect("bad checksum: nothing")
    await tb.call("recvfrom after bad", sock.recvfrom, 100)
    tb.send(tb.ip() / UDP(sport=sport, dport=7777) / b"fine")
    await tb.call("recvfrom after good", sock.recvfrom, 100)


@scenario
async def udp_send_fragmented(tb: Testbench) -> None:
    """The DUT sends a 3000-byte datagram: how it fragments it."""
    sock = await _udp_socket(tb)
    await tb.call("sendto", sock.sendto, bytes(range(250)) * 12, (tb.dut.peer, tb.port()))
    await tb.expect("fragments")


@scenario
async def udp_fragmented_to_socket(tb: Testbench) -> None:
    """A fragmented datagram is reassembled and delivered whole."""
    sock = await _udp_socket(tb)
    datagram = tb.ip() / UDP(sport=tb.port(), dport=7777) / (b"frag" * 500)
    tb.send(*fragment(datagram, fragsize=800))
    await tb.expect("nothing back")
    await tb.call("recvfrom", sock.recvfrom, 4000)


# ---------------------------------------------------------------- TCP to closed ports


@scenario
async def tcp_syn_closed_port(tb: Testbench) -> None:
    """SYN to a closed port: RST+ACK, and its fields."""
    tb.peer(81).send("S", options=[("MSS", 1460)])
    await tb.expect("reset")


@scenario
async def tcp_syn_with_data_closed_port(tb: Testbench) -> None:
    """SYN carrying 10 bytes to a closed port: the RST acknowledges SYN and data."""
    tb.peer(81).send("S", b"0123456789")
    await tb.expect("reset")


@scenario
async def tcp_ack_closed_port(tb: Testbench) -> None:
    """A bare ACK to a closed port: RST with the ACK's number as its sequence."""
    tb.peer(81).send("A", ack=123456)
    await tb.expect("reset")


@scenario
async def tcp_fin_closed_port(tb: Testbench) -> None:
    """FIN (no ACK) to a closed port."""
    tb.peer(81).send("F")
    await tb.expect("reset")


@scenario
async def tcp_rst_closed_port(tb: Testbench) -> None:
    """RST to a closed port is never answered."""
    peer = tb.peer(81)
    peer.send("R")
    await tb.expect("nothing")
    peer.send("S", seq=peer.isn + 100)
    await tb.expect("control: reset")


@scenario
async def tcp_ack_to_listener(tb: Testbench) -> None:
    """An ACK without a SYN to a listening port."""
    await tb.listener(8080)
    tb.peer(8080).send("A", ack=777)
    await tb.expect("reset")


@scenario
async def tcp_syn_bad_checksum(tb: Testbench) -> None:
    """A SYN with a wrong TCP checksum to a listener is dropped."""
    await tb.listener(8080)
    peer = tb.peer(8080)
    tb.send(tb.ip() / TCP(sport=peer.sport, dport=8080, seq=peer.isn, flags="S", chksum=0x1234,
                          options=[("MSS", 1460)]))
    await tb.expect("nothing")
    peer.send("S", options=[("MSS", 1460)])
    await tb.expect("control: SYN-ACK", within=0.2)


# ---------------------------------------------------------------- SYN-ACK options


def _synack_scenario(name: str, options: list, doc: str) -> None:
    async def run(tb: Testbench) -> None:
        await tb.listener(8080)
        tb.peer(8080).send("S", options=options)
        await tb.expect("SYN-ACK", within=0.25)
    run.__name__ = name
    run.__doc__ = doc
    scenario(run)


_synack_scenario("synack_no_options", [], "SYN without options: SYN-ACK options")
_synack_scenario("synack_mss", [("MSS", 1460)], "SYN with MSS only")
_synack_scenario("synack_mss_sack", SYN_SACK, "SYN with MSS and SACK-permitted")
_synack_scenario("synack_mss_ts", [("MSS", 1460), ("NOP", None), ("NOP", None), ("Timestamp", (1000, 0))],
                 "SYN with MSS and timestamps")
_synack_scenario("synack_mss_wscale", [("MSS", 1460), ("NOP", None), ("WScale", 7)],
                 "SYN with MSS and window scale")
_synack_scenario("synack_all_options", SYN_ALL, "SYN with MSS, SACK, timestamps and window scale (Linux's order)")
_synack_scenario("synack_small_mss", [("MSS", 536), ("NOP", None), ("WScale", 2)], "SYN with MSS 536")
_synack_scenario("synack_wscale_15", [("MSS", 1460), ("NOP", None), ("WScale", 15)],
                 "SYN with a window scale above the maximum of 14")
_synack_scenario("synack_unknown_option", [("MSS", 1460), (99, b"\x01\x02")],
                 "SYN with an unknown option kind (99)")


@scenario
async def synack_retransmission(tb: Testbench) -> None:
    """A SYN never acknowledged: the SYN-ACK is sent again after the initial RTO."""
    await tb.listener(8080)
    tb.peer(8080).send("S", options=[("MSS", 1460)])
    await tb.expect("SYN-ACK and its retransmission", within=1.5)


# ---------------------------------------------------------------- established connections


@scenario
async def tcp_data_in(tb: Testbench) -> None:
    """Handshake, 100 bytes from the bench: the ACK, and what recv() returns."""
    peer, _listener, conn = await tb.passive_open()
    peer.send("PA", b"x" * 100)
    await tb.expect("ACK of data")
    await tb.call("recv", conn.recv, 1000)


@scenario
async def tcp_data_out(tb: Testbench) -> None:
    """The DUT writes 2500 bytes to a peer with MSS 1000: the segments."""
    peer, _listener, conn = await tb.passive_open(options=[("MSS", 1000)])
    await tb.call("send", conn.send, bytes(2500))
    await tb.expect("data segments")
    peer.send("A")
    await tb.expect("after the ACK: nothing")


@scenario
async def tcp_data_and_fin_together(tb: Testbench) -> None:
    """Data and FIN in one segment."""
    peer, _listener, conn = await tb.passive_open()
    peer.send("FPA", b"bye")
    await tb.expect("ACK of data and FIN")
    conn.set_nonblocking(True)
    await tb.call("recv", conn.recv, 100)
    await tb.call("recv at end", conn.recv, 100)


@scenario
async def tcp_timestamps(tb: Testbench) -> None:
    """With timestamps negotiated: TS echo on ACKs and data."""
    peer, _listener, conn = await tb.passive_open(options=SYN_ALL)
    peer.send("PA", b"ping")
    await tb.expect("ACK echoes TS")
    await tb.call("send", conn.send, b"pong")
    await tb.expect("data with TS")


@scenario
async def tcp_out_of_order_sack(tb: Testbench) -> None:
    """The second 100 bytes arrive first: duplicate ACK with a SACK block, then the full ACK."""
    peer, _listener, _conn = await tb.passive_open(options=SYN_SACK)
    start = peer.snd_nxt
    peer.send("PA", b"b" * 100, seq=start + 100)
    await tb.expect("dupack with SACK")
    peer.send("PA", b"a" * 100, seq=start)
    await tb.expect("cumulative ACK")


@scenario
async def tcp_old_duplicate(tb: Testbench) -> None:
    """Data already received arrives again: a duplicate ACK (with D-SACK when SACK is on)."""
    peer, _listener, _conn = await tb.passive_open(options=SYN_SACK)
    start = peer.snd_nxt
    peer.send("PA", b"d" * 100)
    await tb.expect("ACK")
    peer.send("PA", b"d" * 50, seq=start + 50)
    await tb.expect("duplicate: dupack")


@scenario
async def tcp_out_of_window_data(tb: Testbench) -> None:
    """Data far beyond the receive window: a duplicate ACK, data not delivered."""
    peer, _listener, conn = await tb.passive_open()
    peer.send("PA", b"z" * 10, seq=peer.snd_nxt + 10_000_000)
    await tb.expect("dupack")
    conn.set_nonblocking(True)
    await tb.call("recv", conn.recv, 100)


@scenario
async def tcp_ack_of_unsent_data(tb: Testbench) -> None:
    """An ACK for data the DUT never sent."""
    peer, _listener, conn = await tb.passive_open()
    await tb.call("send", conn.send, b"hello")
    await tb.expect("data")
    peer.send("A", ack=peer.rcv_nxt + 50_000)
    await tb.expect("answer to ACK beyond snd_nxt")


@scenario
async def tcp_rst_exact(tb: Testbench) -> None:
    """RST with exactly the expected sequence number resets the connection."""
    peer, _listener, conn = await tb.passive_open()
    peer.send("R")
    await tb.expect("nothing")
    conn.set_nonblocking(True)
    await tb.call("recv after reset", conn.recv, 100)
    await tb.call("send after reset", conn.send, b"x")


@scenario
async def tcp_rst_in_window(tb: Testbench) -> None:
    """RST in the window but not exact (RFC 5961 3.2): a challenge ACK, the connection survives."""
    peer, _listener, conn = await tb.passive_open()
    peer.send("R", seq=peer.snd_nxt + 1000)
    await tb.expect("challenge ACK")
    conn.set_nonblocking(True)
    await tb.call("recv", conn.recv, 100)


@scenario
async def tcp_rst_out_of_window(tb: Testbench) -> None:
    """RST outside the window is ignored."""
    peer, _listener, conn = await tb.passive_open()
    peer.send("R", seq=peer.snd_nxt + 10_000_000)
    await tb.expect("nothing")
    peer.send("PA", b"still here")
    await tb.expect("ACK: connection alive")


@scenario
async def tcp_syn_on_established(tb: Testbench) -> None:
    """SYN on an established connection (RFC 5961 4.2): a challenge ACK."""
    peer, _listener, conn = await tb.passive_open()
    peer.send("S", seq=peer.snd_nxt + 5000, options=[("MSS", 1460)])
    await tb.expect("challenge ACK")
    conn.set_nonblocking(True)
    await tb.call("recv", conn.recv, 100)


@scenario
async def tcp_zero_window_probe(tb: Testbench) -> None:
    """The peer's window is zero: the DUT holds its data and probes."""
    peer, _listener, conn = await tb.passive_open(window=0)
    await tb.call("send", conn.send, b"w" * 100)
    await tb.expect("zero-window probes", within=1.6)
    peer.window = 65535
    peer.send("A")
    await tb.expect("window opens: data")


@scenario
async def tcp_peer_window_limits_data(tb: Testbench) -> None:
    """A peer window of 1000 bytes (less than the MSS): the DUT sends no more than that."""
    peer, _listener, conn = await tb.passive_open(window=1000)
    await tb.call("send", conn.send, bytes(3000))
    await tb.expect("first 1000 bytes", within=0.1)
    peer.send("A")
    await tb.expect("next 1000 bytes", within=0.1)


@scenario
async def tcp_ack_after_rto(tb: Testbench) -> None:
    """Two segments out, the first resent by the RTO, then one ACK for both: what follows."""
    peer, _listener, conn = await tb.passive_open(options=[("MSS", 1000)], window=2000)
    await tb.call("send", conn.send, bytes(6000))
    await tb.expect("two segments, then the RTO resend", within=0.3)
    peer.send("A")
    await tb.expect("after the ACK of both", within=0.1)


@scenario
async def tcp_urgent_in(tb: Testbench) -> None:
    """Data with URG: what recv() returns and the urgent byte (SO_OOBINLINE off)."""
    peer, _listener, conn = await tb.passive_open()
    peer.send("PAU", b"abc", urgent=3)
    await tb.expect("ACK")
    conn.set_nonblocking(True)
    await tb.call("recv", conn.recv, 100)
    await tb.call("recv MSG_OOB", conn.recv, 100, socket.MSG_OOB)


@scenario
async def tcp_urgent_out(tb: Testbench) -> None:
    """send(MSG_OOB): the segment with URG and its urgent pointer."""
    _peer, _listener, conn = await tb.passive_open()
    await tb.call("send MSG_OOB", conn.send, b"!", socket.MSG_OOB)
    await tb.expect("urgent segment")


@scenario
async def tcp_close_peer_first(tb: Testbench) -> None:
    """The peer closes first: ACK of FIN, recv() at end, then the DUT's FIN."""
    peer, _listener, conn = await tb.passive_open()
    peer.send("FA")
    await tb.expect("ACK of FIN")
    await tb.call("recv at end", conn.recv, 100)
    await tb.call("close", conn.close)
    await tb.expect("FIN")
    peer.send("A")
    await tb.expect("nothing more")


@scenario
async def tcp_close_dut_first(tb: Testbench) -> None:
    """The DUT closes first: FIN, the peer's ACK then FIN, the DUT's last ACK (TIME-WAIT)."""
    peer, _listener, conn = await tb.passive_open()
    await tb.call("close", conn.close)
    await tb.expect("FIN")
    peer.send("A")
    await tb.expect("nothing")
    peer.send("FA")
    await tb.expect("last ACK")


@scenario
async def tcp_simultaneous_close(tb: Testbench) -> None:
    """Both send FIN before seeing the other's."""
    peer, _listener, conn = await tb.passive_open()
    fin_ack = peer.rcv_nxt
    await tb.call("close", conn.close)
    await tb.expect("FIN")
    peer.send("FA", ack=fin_ack)
    await tb.expect("ACK of the peer's FIN")
    peer.send("A")
    await tb.expect("nothing")


@scenario
async def tcp_half_close_by_peer(tb: Testbench) -> None:
    """The peer sends FIN; the DUT can still send data, then closes."""
    peer, _listener, conn = await tb.passive_open()
    peer.send("FA")
    await tb.expect("ACK of FIN")
    await tb.call("send", conn.send, b"more data")
    await tb.expect("data after the peer's FIN")
    peer.send("A")
    await tb.call("close", conn.close)
    await tb.expect("FIN")


@scenario
async def tcp_half_close_by_dut(tb: Testbench) -> None:
    """shutdown(SHUT_WR) on the DUT: FIN; the peer's data is still received."""
    peer, _listener, conn = await tb.passive_open()
    await tb.call("shutdown", conn.shutdown, socket.SHUT_WR)
    await tb.expect("FIN")
    peer.send("PA", b"late data")
    await tb.expect("ACK of data")
    conn.set_nonblocking(True)
    await tb.call("recv", conn.recv, 100)
    await tb.call("send after shutdown", conn.send, b"x")


@scenario
async def tcp_abort_unread_data(tb: Testbench) -> None:
    """close() with unread data: RST instead of FIN."""
    peer, _listener, conn = await tb.passive_open()
    peer.send("PA", b"unread")
    await tb.expect("ACK")
    await tb.call("close", conn.close)
    await tb.expect("RST")


@scenario
async def tcp_linger_zero(tb: Testbench) -> None:
    """SO_LINGER {1, 0} then close(): RST."""
    _peer, _listener, conn = await tb.passive_open()
    await tb.call("SO_LINGER", conn.setsockopt, socket.SOL_SOCKET, socket.SO_LINGER, SO_LINGER_OFF_0)
    await tb.call("close", conn.close)
    await tb.expect("RST")


@scenario
async def tcp_data_after_close(tb: Testbench) -> None:
    """Data arriving after the DUT closed and the peer acknowledged its FIN: RST."""
    peer, _listener, conn = await tb.passive_open()
    await tb.call("close", conn.close)
    await tb.expect("FIN")
    peer.send("PA", b"too late")
    await tb.expect("RST")


@scenario(timeout=30.0)
async def tcp_keepalive(tb: Testbench) -> None:
    """Keepalive: idle 1 s, interval 1 s, 2 probes, none answered."""
    _peer, _listener, conn = await tb.passive_open()
    for name, option, value in (("SO_KEEPALIVE", (socket.SOL_SOCKET, socket.SO_KEEPALIVE), 1),
                                ("TCP_KEEPIDLE", (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE), 1),
                                ("TCP_KEEPINTVL", (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL), 1),
                                ("TCP_KEEPCNT", (socket.IPPROTO_TCP, socket.TCP_KEEPCNT), 2)):
        await tb.call(name, conn.setsockopt, *option, value)
    await tb.expect("probes, then the end", within=3.6)
    conn.set_nonblocking(True)
    await tb.call("recv", conn.recv, 100)


@scenario
async def tcp_connect_refused(tb: Testbench) -> None:
    """The DUT connects; the peer answers RST: ECONNREFUSED."""
    sock = tb.socket(socket.SOCK_STREAM)
    sock.set_nonblocking(True)
    await tb.call("connect", sock.connect, (tb.dut.peer, 9000))
    packets = await tb.expect("SYN", count=1)
    syn = parse_ipv4(packets[0]).payload
    sport, seq = struct.unpack_from("!H", syn)[0], struct.unpack_from("!I", syn, 4)[0]
    tb.send(tb.ip() / TCP(sport=9000, dport=sport, flags="RA", seq=0, ack=seq + 1))
    await tb.expect("nothing")
    await tb.call("SO_ERROR", sock.getsockopt, socket.SOL_SOCKET, socket.SO_ERROR)


@scenario
async def tcp_active_open(tb: Testbench) -> None:
    """The DUT connects; handshake with all options; data both ways."""
    peer, sock = await tb.active_open(options=SYN_ALL)
    await tb.call("send", sock.send, b"request")
    await tb.expect("request")
    peer.send("PA", b"response")
    await tb.expect("ACK of response")
    await tb.call("recv", sock.recv, 100)


@scenario
async def tcp_simultaneous_open(tb: Testbench) -> None:
    """Both ends send SYN: SYN-ACK from the DUT, then the connection is up."""
    sock = tb.socket(socket.SOCK_STREAM)
    sock.set_nonblocking(True)
    await tb.call("connect", sock.connect, (tb.dut.peer, 9000))
    packets = await tb.expect("SYN", count=1)
    syn = parse_ipv4(packets[0]).payload
    sport, seq = struct.unpack_from("!H", syn)[0], struct.unpack_from("!I", syn, 4)[0]
    tb.send(tb.ip() / TCP(sport=9000, dport=sport, flags="S", seq=5000, options=[("MSS", 1460)]))
    await tb.expect("SYN-ACK")
    tb.send(tb.ip() / TCP(sport=9000, dport=sport, flags="SA", seq=5000, ack=seq + 1,
                          options=[("MSS", 1460)]))
    await tb.expect("after the peer's SYN-ACK")
    await tb.call("SO_ERROR", sock.getsockopt, socket.SOL_SOCKET, socket.SO_ERROR)
    sock.set_nonblocking(False)
    await tb.call("send", sock.send, b"hi")
    await tb.expect("data")


@scenario
async def tcp_pmtu_frag_needed(tb: Testbench) -> None:
    """ICMP fragmentation needed (MTU 1000) for a full-size segment: smaller retransmissions."""
    peer, _listener, conn = await tb.passive_open()
    await tb.call("send", conn.send, bytes(1460))
    packets = await tb.expect("full-size segment")
    if packets:
        tb.send(tb.ip() / ICMP(type=3, code=4, nexthopmtu=1000) / Raw(packets[0][:28]))
    await tb.expect("resent in smaller segments")
    peer.send("A")


# ================================================================ TCP as Linux does it (issue 16)
# Each behaviour the issue names, against the live kernel. Helpers first.

SYN_MSS_1000 = [("MSS", 1000)]
SYN_MSS_1000_SACK = [("MSS", 1000), ("NOP", None), ("NOP", None), ("SAckOK", b"")]
# No tail loss probe: where TLP is not what a scenario checks, its ~10 ms probe would blur the flights.
NO_TLP = {"net.ipv4.tcp_early_retrans": "0"}
SYN_TS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1000, 0)), ("NOP", None), ("WScale", 7)]
SIOCINQ, SIOCOUTQ, SIOCOUTQNSD = 0x541B, 0x5411, 0x894B
TCP_NOTSENT_LOWAT = 25
TCP_INFO_FIELDS = ("tcpi_state", "tcpi_ca_state", "tcpi_retransmits", "tcpi_backoff", "tcpi_snd_wscale",
                   "tcpi_rcv_wscale", "tcpi_snd_mss", "tcpi_advmss", "tcpi_unacked", "tcpi_snd_ssthresh",
                   "tcpi_snd_cwnd", "tcpi_reordering")


def _segments(packets: list[bytes]) -> list:
    return [parse_tcp(ip.payload) for ip in map(parse_ipv4, packets) if ip.protocol == 6 and not ip.frag_offset]


def note_psh(tb: Testbench, label: str, packets: list[bytes]) -> None:
    """PSH per data segment ("1000", "500P"): the suite's flag comparison leaves PSH out, this puts it back."""
    tb.note(label, [f"{len(s.payload)}{'P' if s.flags & PSH else ''}" for s in _segments(packets) if s.payload])


def note_windows(tb: Testbench, label: str, packets: list[bytes]) -> None:
    """The exact windows the DUT advertised (the packet comparison only says zero or open)."""
    tb.note(label, [s.window for s in _segments(packets)])


def note_tcp_info(tb: Testbench, label: str, conn) -> None:
    info = conn.tcp_info()
    tb.note(label, {name.removeprefix("tcpi_"): info.get(name, "(missing)") for name in TCP_INFO_FIELDS})


def sack_option(base: int, *blocks: tuple[int, int]) -> list:
    """A SACK option for byte ranges of the DUT's data (``base``: the DUT's first data sequence number)."""
    edges = tuple((base + edge) & 0xFFFFFFFF for block in blocks for edge in block)
    return [("NOP", None), ("NOP", None), ("SAck", edges)]


def ack_dut(peer: TcpPeer, base: int, acked: int, **fields) -> None:
    """ACK ``acked`` bytes of the DUT's data (``base``: the DUT's first data sequence number)."""
    peer.send("A", ack=(base + acked) & 0xFFFFFFFF, **fields)


async def sending_flight(tb: Testbench, total: int, options: list | None = None, window: int = 65535,
                         label: str = "first flight"):
    """Passive open (MSS 1000 unless ``options``), the DUT writes ``total`` bytes: its first flight.

    Without SACK there is no tail loss probe (Linux sends none), so a flight
    is only what cwnd and the window allow. SO_SNDBUF is set large so that
    the write is queued at once on both DUTs (Linux grows its send buffer
    at connection setup, pystack does not: sndbuf_initial_size shows it).
    """
    peer, _listener, conn = await tb.passive_open(options=SYN_MSS_1000 if options is None else options,
                                                  window=window)
    base = peer.rcv_nxt
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 200000)
    await tb.call(f"send {total}", conn.send, bytes(total))
    packets = await tb.expect(label, within=0.1)
    return peer, conn, base, packets


async def accept(tb: Testbench, listener, label: str = "accept"):
    """accept(), keeping the connection open for the rest of the scenario (a collected socket would close)."""
    accepted = await tb.call(label, listener.accept)
    if not isinstance(accepted, tuple):
        return None
    tb.sockets.append(accepted[0])
    return accepted[0]


async def drain(conn) -> int:
    """Read everything the DUT socket holds now (non-blocking); how many bytes."""
    conn.set_nonblocking(True)
    total = 0
    while True:
        try:
            data = await conn.recv(65536)
        except BlockingIOError:
            break
        if not data:
            break
        total += len(data)
    return total


# ---------------------------------------------------------------- PSH placement


@scenario
async def psh_writes_of_one_mss(tb: Testbench) -> None:
    """Two writes of exactly one MSS with TCP_NODELAY: each segment ends a write and carries PSH.

    (A write of several MSS is not checked here: where Linux puts PSH inside
    it depends on how its GSO chunks fall, which varies between runs.)
    """
    _peer, _listener, conn = await tb.passive_open(options=SYN_MSS_1000)
    await tb.call("TCP_NODELAY", conn.setsockopt, socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(2):
        await tb.call(f"send {i}", conn.send, bytes(1000))
    note_psh(tb, "PSH marks", await tb.expect("segments", within=0.1))


@scenario
async def psh_small_writes_nodelay(tb: Testbench) -> None:
    """Three 300-byte writes with TCP_NODELAY: three segments, each the end of a write (PSH)."""
    _peer, _listener, conn = await tb.passive_open(options=SYN_MSS_1000)
    await tb.call("TCP_NODELAY", conn.setsockopt, socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(3):
        await tb.call(f"send {i}", conn.send, bytes(300))
    note_psh(tb, "PSH marks", await tb.expect("segments", within=0.1))


@scenario
async def psh_nagle_coalesced_burst(tb: Testbench) -> None:
    """Nagle: the first small write leaves, the next two wait for its ACK and leave as one segment with PSH."""
    peer, _listener, conn = await tb.passive_open(options=SYN_MSS_1000)
    base = peer.rcv_nxt
    for i in range(3):
        await tb.call(f"send {i}", conn.send, bytes(300))
    note_psh(tb, "before the ACK", await tb.expect("first write alone", within=0.1))
    ack_dut(peer, base, 300)
    note_psh(tb, "after the ACK", await tb.expect("the rest, coalesced", within=0.1))


@scenario
async def psh_window_limited_write(tb: Testbench) -> None:
    """A 5000-byte write into a 3000-byte window: where PSH falls when the window cuts the write."""
    peer, _conn, base, packets = await sending_flight(tb, 5000, window=3000)
    note_psh(tb, "first window", packets)
    ack_dut(peer, base, 3000)
    note_psh(tb, "second window", await tb.expect("the rest", within=0.1))


# ---------------------------------------------------------------- slow start and cwnd validation


@scenario
async def cwnd_slow_start_cumulative_acks(tb: Testbench) -> None:
    """Slow start, cwnd-limited: each flight acknowledged by one ACK; the flights grow 10, 20, ..."""
    peer, conn, base, packets = await sending_flight(tb, 60000)
    acked = 0
    for round_ in range(2):
        acked += 1000 * len(packets)
        ack_dut(peer, base, acked)
        packets = await tb.expect(f"flight {round_ + 2}", within=0.1)
    note_tcp_info(tb, "tcp_info", conn)


@scenario
async def cwnd_slow_start_per_segment_acks(tb: Testbench) -> None:
    """Slow start with one ACK per segment: each ACK releases two segments."""
    peer, _conn, base, _packets = await sending_flight(tb, 40000)
    for i in range(1, 4):
        ack_dut(peer, base, 1000 * i)
        await tb.expect(f"after ACK {i}", within=0.05)


@scenario
async def cwnd_application_limited(tb: Testbench) -> None:
    """cwnd validation: four small acknowledged writes do not grow cwnd; the next big write sends IW."""
    peer, _listener, conn = await tb.passive_open(options=SYN_MSS_1000)
    base = peer.rcv_nxt
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 200000)
    for i in range(4):
        await tb.call(f"send {i}", conn.send, bytes(2000))
        await tb.expect(f"write {i}", within=0.05)
        ack_dut(peer, base, 2000 * (i + 1))
    note_tcp_info(tb, "tcp_info while application-limited", conn)
    await tb.call("send 30000", conn.send, bytes(30000))
    await tb.expect("flight after the idle-free small writes", within=0.1)


async def _grow_then_idle(tb: Testbench) -> None:
    peer, conn, base, packets = await sending_flight(tb, 30000)
    ack_dut(peer, base, 1000 * len(packets))
    more = await tb.expect("second flight", within=0.1)
    ack_dut(peer, base, 1000 * (len(packets) + len(more)))
    await tb.expect("after the ACK of both flights", within=0.1)
    await trio.sleep(0.5)
    await tb.call("send after 0.5 s idle", conn.send, bytes(40000))
    await tb.expect("flight after idle", within=0.1)


@scenario
async def cwnd_restart_after_idle(tb: Testbench) -> None:
    """tcp_slow_start_after_idle=1 (default): after an idle RTO, the flight is back to the initial window."""
    await _grow_then_idle(tb)


@scenario(sysctls={"net.ipv4.tcp_slow_start_after_idle": "0"})
async def cwnd_no_restart_after_idle(tb: Testbench) -> None:
    """tcp_slow_start_after_idle=0: the grown cwnd survives the idle period."""
    await _grow_then_idle(tb)


# ---------------------------------------------------------------- SACK recovery and PRR


@scenario(sysctls=NO_TLP)
async def sack_recovery_first_segment_lost(tb: Testbench) -> None:
    """Ten segments, the first lost: dup ACKs SACK 2, 2-3, 2-4; what is retransmitted and when."""
    peer, _conn, base, _packets = await sending_flight(tb, 10000, options=SYN_MSS_1000_SACK)
    for k in range(1, 4):
        ack_dut(peer, base, 0, options=sack_option(base, (1000, 1000 + 1000 * k)))
        await tb.expect(f"after dupack {k}", within=0.05)
    ack_dut(peer, base, 10000)
    await tb.expect("after the full ACK", within=0.1)


@scenario(sysctls=NO_TLP)
async def sack_recovery_prr_sequence(tb: Testbench) -> None:
    """PRR: first segment lost, nine dup ACKs each SACKing one more segment; what each ACK releases."""
    peer, conn, base, _packets = await sending_flight(tb, 30000, options=SYN_MSS_1000_SACK)
    for k in range(1, 10):
        ack_dut(peer, base, 0, options=sack_option(base, (1000, 1000 + 1000 * k)))
        await tb.expect(f"after dupack {k}", within=0.03)
    note_tcp_info(tb, "tcp_info in recovery", conn)


@scenario(sysctls=NO_TLP)
async def sack_recovery_two_holes(tb: Testbench) -> None:
    """Segments 1 and 4 lost: SACK blocks for 2-3 then 5-8; the order of the retransmissions."""
    peer, _conn, base, _packets = await sending_flight(tb, 10000, options=SYN_MSS_1000_SACK)
    ack_dut(peer, base, 0, options=sack_option(base, (1000, 3000)))
    await tb.expect("dupack 1", within=0.05)
    for k in range(1, 5):
        ack_dut(peer, base, 0, options=sack_option(base, (4000, 4000 + 1000 * k), (1000, 3000)))
        await tb.expect(f"dupack {k + 1}", within=0.05)
    ack_dut(peer, base, 3000, options=sack_option(base, (4000, 8000)))
    await tb.expect("partial ACK", within=0.05)


@scenario
async def sack_dup_acks_without_sack(tb: Testbench) -> None:
    """No SACK (NewReno): three duplicate ACKs, fast retransmit, then a partial ACK."""
    peer, _conn, base, _packets = await sending_flight(tb, 10000)
    for k in range(1, 4):
        ack_dut(peer, base, 0)
        await tb.expect(f"after dupack {k}", within=0.05)
    ack_dut(peer, base, 4000)
    await tb.expect("after a partial ACK", within=0.05)


@scenario(sysctls=NO_TLP)
async def sack_rack_reordering_timer(tb: Testbench) -> None:
    """One dup ACK SACKing segment 3 only: RACK's reordering timer decides when 1 and 2 are resent."""
    peer, _conn, base, _packets = await sending_flight(tb, 5000, options=SYN_MSS_1000_SACK)
    ack_dut(peer, base, 0, options=sack_option(base, (2000, 3000)))
    await tb.expect("after one dupack", within=0.3)


# ---------------------------------------------------------------- RACK-TLP and F-RTO


@scenario
async def tlp_tail_loss_probe(tb: Testbench) -> None:
    """Five segments, the last two lost: the tail loss probe resends the last one before the RTO."""
    peer, _conn, base, _packets = await sending_flight(tb, 5000, options=SYN_MSS_1000_SACK)
    ack_dut(peer, base, 3000)
    await tb.expect("probe, then the RTO", within=0.6)


@scenario
async def tlp_single_segment(tb: Testbench) -> None:
    """A single unacknowledged segment: probe timing (with the delayed-ACK allowance) against the RTO."""
    _peer, _conn, _base, _packets = await sending_flight(tb, 500, options=SYN_MSS_1000_SACK)
    await tb.expect("probe or RTO", within=0.7)


@scenario(sysctls=NO_TLP)
async def frto_spurious_rto_with_sack(tb: Testbench) -> None:
    """SACK on: the RTO resends segment 1, then one ACK covers both originals: F-RTO sends new data."""
    peer, _conn, base, _packets = await sending_flight(tb, 8000, window=2000, options=SYN_MSS_1000_SACK)
    await tb.expect("the RTO resend", within=0.35)
    ack_dut(peer, base, 2000)
    await tb.expect("after the ACK of both", within=0.1)


@scenario
async def frto_genuine_loss(tb: Testbench) -> None:
    """The RTO resend of segment 1 is acknowledged alone: F-RTO's next step, then a dup ACK."""
    peer, _conn, base, _packets = await sending_flight(tb, 8000, window=3000)
    await tb.expect("the RTO resend", within=0.35)
    ack_dut(peer, base, 1000)
    await tb.expect("after the ACK of the resent segment", within=0.1)
    ack_dut(peer, base, 1000)
    await tb.expect("after a dup ACK", within=0.1)


async def frto_first_ack_after_rto(tb: Testbench, options: list) -> tuple[TcpPeer, object, int]:
    """Ten segments out and none acknowledged: the RTO resends segment 1, whose ACK comes alone;
    F-RTO (step 2b) answers it with new data, not with segment 2 again."""
    peer, conn, base, _packets = await sending_flight(tb, 20000, options=options)
    await tb.expect("the RTO resend", within=0.35)
    ack_dut(peer, base, 1000)
    await tb.expect("after the ACK of segment 1", within=0.1)
    return peer, conn, base


@scenario(sysctls=NO_TLP)
async def frto_spurious_rto_undone(tb: Testbench) -> None:
    """F-RTO step 3b: the next ACK covers the rest of the first flight, never resent: the RTO was
    spurious, cwnd and ssthresh are undone and the state is Open again. (All of it: a segment of
    it left unacknowledged would be lost to RACK at once, sent before the resend seen delivered,
    once its reordering window passed: a quarter of the minimum RTT, zero in virtual time.)"""
    peer, conn, base = await frto_first_ack_after_rto(tb, SYN_MSS_1000_SACK)
    ack_dut(peer, base, 10000)
    await tb.expect("after the ACK of originals", within=0.1)
    note_tcp_info(tb, "tcp_info after the undo", conn)


@scenario
async def frto_spurious_rto_undone_without_sack(tb: Testbench) -> None:
    """F-RTO without SACK (RFC 5682's basic algorithm): the same spurious RTO, undone alike."""
    peer, conn, base = await frto_first_ack_after_rto(tb, SYN_MSS_1000)
    ack_dut(peer, base, 10000)
    await tb.expect("after the ACK of originals", within=0.1)
    note_tcp_info(tb, "tcp_info after the undo", conn)


@scenario(sysctls=NO_TLP)
async def frto_sack_shows_real_loss(tb: Testbench) -> None:
    """F-RTO step 3a: the next ACK only SACKs the new data: the loss was real, the resends go on
    and cwnd stays reduced."""
    peer, conn, base = await frto_first_ack_after_rto(tb, SYN_MSS_1000_SACK)
    ack_dut(peer, base, 1000, options=sack_option(base, (10000, 11000)))
    await tb.expect("after the SACK of new data", within=0.1)
    note_tcp_info(tb, "tcp_info in loss recovery", conn)


@scenario(sysctls={"net.ipv4.tcp_frto": "0"})
async def frto_disabled(tb: Testbench) -> None:
    """tcp_frto=0: after the RTO, one ACK for both originals; what conventional recovery sends."""
    peer, _conn, base, _packets = await sending_flight(tb, 8000, window=2000)
    await tb.expect("the RTO resend", within=0.35)
    ack_dut(peer, base, 2000)
    await tb.expect("after the ACK of both", within=0.1)


# ---------------------------------------------------------------- ECN (RFC 3168)

ECN_SYSCTL = {"net.ipv4.tcp_ecn": "1"}


async def ecn_passive_open(tb: Testbench, syn_flags: str = "SEC") -> tuple[TcpPeer, object]:
    listener = await tb.listener(8080)
    peer = tb.peer(8080)
    peer.send(syn_flags, options=[("MSS", 1000)])
    await tb.expect("SYN-ACK", count=1)
    peer.send("A")
    return peer, await accept(tb, listener)


@scenario
async def ecn_syn_accepted_by_default(tb: Testbench) -> None:
    """tcp_ecn=2 (Linux's default): an ECN-setup SYN (ECE|CWR) gets an ECN-setup SYN-ACK (ECE)."""
    await ecn_passive_open(tb)


@scenario(sysctls={"net.ipv4.tcp_ecn": "0"})
async def ecn_syn_refused_when_off(tb: Testbench) -> None:
    """tcp_ecn=0: an ECN-setup SYN gets a plain SYN-ACK."""
    await ecn_passive_open(tb)


@scenario
async def ecn_syn_ece_without_cwr(tb: Testbench) -> None:
    """A SYN with ECE but not CWR is not an ECN-setup SYN."""
    await ecn_passive_open(tb, "SE")


@scenario
async def ecn_ce_answered_with_ece(tb: Testbench) -> None:
    """ECN connection: a CE-marked segment is answered with ECE until the peer sends CWR."""
    peer, _conn = await ecn_passive_open(tb)
    peer.send("PA", b"a" * 100, tos=3)
    await tb.expect("ACK of CE data", within=0.1)
    peer.send("PA", b"b" * 100, tos=2)
    await tb.expect("ACK of the next data", within=0.1)
    peer.send("PAC", b"c" * 100, tos=2)
    await tb.expect("ACK after CWR", within=0.1)


@scenario
async def ecn_data_is_ect(tb: Testbench) -> None:
    """ECN connection: the DUT's data is ECT(0); its pure ACKs are not ECT."""
    peer, conn = await ecn_passive_open(tb)
    await tb.call("send", conn.send, b"x" * 100)
    await tb.expect("data", within=0.1)
    peer.send("PA", b"y" * 10, tos=2)
    await tb.expect("ACK", within=0.1)


@scenario
async def ecn_ece_makes_cwr(tb: Testbench) -> None:
    """ECN connection: an ACK with ECE reduces cwnd, and the next data segment carries CWR."""
    peer, conn = await ecn_passive_open(tb)
    base = peer.rcv_nxt
    await tb.call("send", conn.send, bytes(3000))
    await tb.expect("data", within=0.1)
    peer.send("AE", ack=(base + 1000) & 0xFFFFFFFF)
    await tb.call("send more", conn.send, bytes(1000))
    await tb.expect("after ECE", within=0.1)
    note_tcp_info(tb, "tcp_info after ECE", conn)


@scenario
async def ecn_ce_on_non_ecn_connection(tb: Testbench) -> None:
    """No ECN negotiated: a CE mark is not echoed."""
    peer, _listener, _conn = await tb.passive_open()
    peer.send("PA", b"a" * 100, tos=3)
    await tb.expect("plain ACK", within=0.1)


async def _ecn_active(tb: Testbench, synack_flags: str) -> None:
    sock = tb.socket(socket.SOCK_STREAM)
    sock.set_nonblocking(True)
    await tb.call("connect", sock.connect, (tb.dut.peer, 9000))
    packets = await tb.expect("SYN", count=1)
    syn = parse_tcp(parse_ipv4(packets[0]).payload)
    peer = TcpPeer(tb, 9000, syn.sport)
    peer.rcv_nxt = (syn.seq + 1) & 0xFFFFFFFF
    peer.send(synack_flags, options=[("MSS", 1000)])
    await tb.expect("ACK", count=1)
    sock.set_nonblocking(False)
    await tb.call("send", sock.send, b"z" * 100)
    await tb.expect("data", within=0.1)


@scenario(sysctls=ECN_SYSCTL)
async def ecn_active_open_negotiated(tb: Testbench) -> None:
    """tcp_ecn=1: the DUT's SYN asks for ECN (ECE|CWR); the peer agrees (SYN-ACK with ECE); data is ECT."""
    await _ecn_active(tb, "SAE")


@scenario(sysctls=ECN_SYSCTL)
async def ecn_active_open_declined(tb: Testbench) -> None:
    """tcp_ecn=1, the peer's SYN-ACK without ECE: no ECN, data not ECT."""
    await _ecn_active(tb, "SA")


@scenario
async def ecn_active_open_default_off(tb: Testbench) -> None:
    """tcp_ecn=2: the DUT does not ask for ECN on its own connections."""
    await _ecn_active(tb, "SAE")


# ---------------------------------------------------------------- MSG_MORE, MSG_EOR, TCP_CORK


@scenario
async def msg_more_holds_partial_segment(tb: Testbench) -> None:
    """send(MSG_MORE) of 100 bytes: held; a plain write then sends both in one segment."""
    _peer, _listener, conn = await tb.passive_open(options=SYN_MSS_1000)
    await tb.call("send MSG_MORE", conn.send, bytes(100), socket.MSG_MORE)
    await tb.expect("held", within=0.1)
    await tb.call("send", conn.send, bytes(100))
    note_psh(tb, "PSH marks", await tb.expect("both together", within=0.1))


@scenario
async def msg_more_full_segments_leave(tb: Testbench) -> None:
    """send(MSG_MORE) of 2500 bytes at MSS 1000: full segments leave, the 500-byte tail is held."""
    _peer, _listener, conn = await tb.passive_open(options=SYN_MSS_1000)
    await tb.call("send MSG_MORE", conn.send, bytes(2500), socket.MSG_MORE)
    note_psh(tb, "PSH marks", await tb.expect("full segments only", within=0.3))


@scenario
async def msg_eor_is_not_coalesced(tb: Testbench) -> None:
    """Nagle holds two writes, the first with MSG_EOR: they are not coalesced into one segment."""
    peer, _listener, conn = await tb.passive_open(options=SYN_MSS_1000)
    base = peer.rcv_nxt
    await tb.call("send", conn.send, bytes(100))
    await tb.expect("first write", within=0.05)
    await tb.call("send MSG_EOR", conn.send, bytes(100), socket.MSG_EOR)
    await tb.call("send", conn.send, bytes(100))
    await tb.expect("held by Nagle", within=0.05)
    ack_dut(peer, base, 100)
    await tb.expect("after the ACK", within=0.05)
    ack_dut(peer, base, 200)
    await tb.expect("after the next ACK", within=0.05)


@scenario
async def tcp_cork_coalesces(tb: Testbench) -> None:
    """TCP_CORK: three small writes are held, uncorking sends them as one segment."""
    _peer, _listener, conn = await tb.passive_open(options=SYN_MSS_1000)
    await tb.call("TCP_CORK on", conn.setsockopt, socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    for i in range(3):
        await tb.call(f"send {i}", conn.send, bytes(100))
    await tb.expect("corked", within=0.05)
    await tb.call("TCP_CORK off", conn.setsockopt, socket.IPPROTO_TCP, socket.TCP_CORK, 0)
    await tb.expect("uncorked", within=0.05)


@scenario
async def tcp_cork_held_alone(tb: Testbench) -> None:
    """TCP_CORK with a 100-byte write and nothing else: how long it is held."""
    _peer, _listener, conn = await tb.passive_open(options=SYN_MSS_1000)
    await tb.call("TCP_CORK on", conn.setsockopt, socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    await tb.call("send", conn.send, bytes(100))
    await tb.expect("corked write", within=0.3)


@scenario
async def tcp_nagle_holds_second_write(tb: Testbench) -> None:
    """Nagle: a second small write waits for the ACK of the first."""
    peer, _listener, conn = await tb.passive_open(options=SYN_MSS_1000)
    base = peer.rcv_nxt
    await tb.call("send 1", conn.send, bytes(100))
    await tb.call("send 2", conn.send, bytes(100))
    await tb.expect("first only", within=0.1)
    ack_dut(peer, base, 100)
    await tb.expect("second after the ACK", within=0.05)


# ---------------------------------------------------------------- TCP_NOTSENT_LOWAT, SIOCINQ/SIOCOUTQ


async def _fill_notsent(tb: Testbench, conn) -> None:
    conn.set_nonblocking(True)
    for i in range(3):
        await tb.call(f"send 800 ({i})", conn.send, bytes(800))
    await tb.call("SIOCOUTQNSD", conn.ioctl, SIOCOUTQNSD)


@scenario
async def notsent_lowat_socket_option(tb: Testbench) -> None:
    """TCP_NOTSENT_LOWAT 1000 on a zero window: writes are refused once 1000 unsent bytes wait."""
    _peer, _listener, conn = await tb.passive_open(window=0)
    await tb.call("TCP_NOTSENT_LOWAT", conn.setsockopt, socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, 1000)
    await tb.call("getsockopt", conn.getsockopt, socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT)
    await _fill_notsent(tb, conn)


@scenario(sysctls={"net.ipv4.tcp_notsent_lowat": "1000"})
async def notsent_lowat_sysctl(tb: Testbench) -> None:
    """tcp_notsent_lowat=1000 (no socket option): the same limit for every socket."""
    _peer, _listener, conn = await tb.passive_open(window=0)
    await _fill_notsent(tb, conn)


@scenario
async def siocinq_counts_unread_bytes(tb: Testbench) -> None:
    """SIOCINQ: unread bytes; a FIN is not counted."""
    peer, _listener, conn = await tb.passive_open()
    peer.send("PA", b"q" * 300)
    await tb.expect("ACK", within=0.1)
    await tb.call("SIOCINQ", conn.ioctl, SIOCINQ)
    peer.send("FA")
    await tb.expect("ACK of FIN", within=0.1)
    await tb.call("SIOCINQ after FIN", conn.ioctl, SIOCINQ)


@scenario
async def siocoutq_counts_unacked_bytes(tb: Testbench) -> None:
    """SIOCOUTQ (unacknowledged) and SIOCOUTQNSD (not sent) while the window is zero, open, acknowledged."""
    peer, _listener, conn = await tb.passive_open(window=0)
    base = peer.rcv_nxt
    await tb.call("send", conn.send, bytes(500))
    await tb.call("SIOCOUTQ", conn.ioctl, SIOCOUTQ)
    await tb.call("SIOCOUTQNSD", conn.ioctl, SIOCOUTQNSD)
    peer.window = 65535
    ack_dut(peer, base, 0)
    await tb.expect("window opens: data", within=0.1)
    await tb.call("SIOCOUTQNSD once sent", conn.ioctl, SIOCOUTQNSD)
    ack_dut(peer, base, 500)
    await tb.expect("nothing", within=0.05)
    await tb.call("SIOCOUTQ once acknowledged", conn.ioctl, SIOCOUTQ)


@scenario
async def siocinq_on_listener(tb: Testbench) -> None:
    """SIOCINQ on a listening socket fails (EINVAL on Linux)."""
    listener = await tb.listener(8080)
    await tb.call("SIOCINQ", listener.ioctl, SIOCINQ)


# ---------------------------------------------------------------- TCP_INFO


@scenario
async def tcp_info_after_handshake(tb: Testbench) -> None:
    """TCP_INFO of a fresh connection with every option: state, scales, MSS, cwnd, ssthresh."""
    _peer, _listener, conn = await tb.passive_open(options=SYN_ALL)
    note_tcp_info(tb, "tcp_info", conn)


@scenario
async def tcp_info_without_options(tb: Testbench) -> None:
    """TCP_INFO of a connection whose SYN had only MSS 536."""
    _peer, _listener, conn = await tb.passive_open(options=[("MSS", 536)])
    note_tcp_info(tb, "tcp_info", conn)


@scenario
async def tcp_info_after_rto(tb: Testbench) -> None:
    """TCP_INFO after one retransmission timeout: retransmits, backoff, loss state, ssthresh."""
    _peer, conn, _base, _packets = await sending_flight(tb, 3000)
    await tb.expect("the RTO resend", within=0.35)
    note_tcp_info(tb, "tcp_info", conn)


@scenario
async def tcp_info_unacked(tb: Testbench) -> None:
    """TCP_INFO unacked counts segments in flight, then what is left after a partial ACK."""
    peer, conn, base, _packets = await sending_flight(tb, 5000)
    note_tcp_info(tb, "tcp_info in flight", conn)
    ack_dut(peer, base, 2000)
    await tb.expect("after a partial ACK", within=0.05)
    note_tcp_info(tb, "tcp_info after the ACK", conn)


# ---------------------------------------------------------------- path MTU probing (RFC 4821)


@scenario(sysctls={"net.ipv4.tcp_mtu_probing": "2"})
async def mtu_probing_always_on(tb: Testbench) -> None:
    """tcp_mtu_probing=2: segments start at tcp_base_mss and probes search upward."""
    peer, _conn, base, packets = await sending_flight(tb, 60000, options=[("MSS", 1460)])
    acked = 0
    for round_ in range(2):
        acked += sum(len(s.payload) for s in _segments(packets))
        ack_dut(peer, base, acked)
        packets = await tb.expect(f"flight {round_ + 2}", within=0.1)


@scenario(sysctls={"net.ipv4.tcp_mtu_probing": "1", "net.ipv4.tcp_retries1": "1"}, timeout=30.0)
async def mtu_probing_black_hole(tb: Testbench) -> None:
    """tcp_mtu_probing=1: full-size segments never acknowledged (a black hole); the RTOs shrink the MSS."""
    _peer, _conn, _base, _packets = await sending_flight(tb, 1460, options=[("MSS", 1460)])
    await tb.expect("retransmissions", within=1.6)


# ---------------------------------------------------------------- TIME-WAIT


async def _time_wait(tb: Testbench, options: list | None = None) -> TcpPeer:
    """Connection closed by the DUT first; it is now in TIME-WAIT."""
    peer, _listener, conn = await tb.passive_open(options=options)
    await tb.call("close", conn.close)
    await tb.expect("FIN", count=1)
    peer.send("FA")
    await tb.expect("last ACK", count=1)
    return peer


def _new_syn(tb: Testbench, old: TcpPeer, isn: int, options: list) -> TcpPeer:
    peer = TcpPeer(tb, old.sport, old.dport, isn=isn & 0xFFFFFFFF)
    peer.timestamps = any(o[0] == "Timestamp" for o in options)
    peer.send("S", options=options)
    return peer


@scenario
async def time_wait_syn_higher_seq(tb: Testbench) -> None:
    """A SYN above rcv_nxt on a TIME-WAIT connection opens a new one (SYN-ACK), accept() returns it."""
    old = await _time_wait(tb)
    listener = tb.sockets[0]
    peer = _new_syn(tb, old, old.snd_nxt + 100000, [("MSS", 1460)])
    await tb.expect("SYN-ACK", within=0.1)
    peer.send("A")
    await accept(tb, listener)


@scenario
async def time_wait_syn_lower_seq(tb: Testbench) -> None:
    """A SYN below rcv_nxt on a TIME-WAIT connection (no timestamps): the TIME-WAIT ACK, no new connection."""
    old = await _time_wait(tb)
    _new_syn(tb, old, old.snd_nxt - 100000, [("MSS", 1460)])
    await tb.expect("TIME-WAIT ACK", within=0.1)


@scenario
async def time_wait_syn_newer_timestamp(tb: Testbench) -> None:
    """Timestamps on: a SYN below rcv_nxt but with a newer timestamp is accepted from TIME-WAIT."""
    old = await _time_wait(tb, options=SYN_TS)
    _new_syn(tb, old, old.snd_nxt - 100000, [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (old.ts_val + 1000, 0)),
                                             ("NOP", None), ("WScale", 7)])
    await tb.expect("SYN-ACK", within=0.1)


@scenario
async def time_wait_fin_retransmitted(tb: Testbench) -> None:
    """In TIME-WAIT the peer's FIN comes again: the last ACK is sent again."""
    old = await _time_wait(tb)
    old.send("FA", seq=old.snd_nxt - 1)
    await tb.expect("ACK again", within=0.1)


@scenario
async def time_wait_rst_kills(tb: Testbench) -> None:
    """An RST in TIME-WAIT ends it (tcp_rfc1337=0): a lower SYN then gets a SYN-ACK."""
    old = await _time_wait(tb)
    old.send("R")
    await tb.expect("nothing", within=0.05)
    _new_syn(tb, old, old.snd_nxt - 100000, [("MSS", 1460)])
    await tb.expect("SYN-ACK", within=0.1)


# ---------------------------------------------------------------- send buffer: the writer woken at 2/3


@scenario
async def sndbuf_initial_size(tb: Testbench) -> None:
    """How much a non-blocking write may queue on a new connection (Linux sizes sndbuf from cwnd and MSS)."""
    _peer, _listener, conn = await tb.passive_open(window=0)
    conn.set_nonblocking(True)
    await tb.call("send 500000", conn.send, bytes(500000))


@scenario
async def sndbuf_blocked_writer_wakeup(tb: Testbench) -> None:
    """A blocked writer with SO_SNDBUF 16384: after which ACK its write returns (woken with a third free)."""
    peer, _listener, conn = await tb.passive_open(options=SYN_MSS_1000)
    base = peer.rcv_nxt
    await tb.call("SO_SNDBUF", conn.setsockopt, socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    done: list[int] = []

    async def writer() -> None:
        await conn.send(bytes(40000))
        done.append(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        packets = await tb.expect("first flight", within=0.1)
        acked = 0
        for k in range(1, 40):
            acked += 1000
            ack_dut(peer, base, acked)
            packets += await tb.expect(f"after ACK {k}", within=0.02)
            if done:
                break
        tb.note("writer returned after ACKs", k)
        nursery.cancel_scope.cancel()


async def _zero_window_write(tb: Testbench, label: str, port: int, mss: int, sndbuf: int | None) -> None:
    """A non-blocking write of 500000 into a zero window: how much the send buffer takes."""
    _peer, _listener, conn = await tb.passive_open(port=port, window=0, options=[("MSS", mss)])
    if sndbuf is not None:
        await tb.call(f"{label}: SO_SNDBUF {sndbuf}", conn.setsockopt, socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    await tb.call(f"{label}: SO_SNDBUF", conn.getsockopt, socket.SOL_SOCKET, socket.SO_SNDBUF)
    conn.set_nonblocking(True)
    await tb.call(f"{label}: send 500000", conn.send, bytes(500000))
    await tb.call(f"{label}: send 1 more", conn.send, bytes(1))
    # Abort it before the next: its zero-window probes would otherwise come in the next handshake.
    await tb.call(f"{label}: SO_LINGER", conn.setsockopt, socket.SOL_SOCKET, socket.SO_LINGER, SO_LINGER_OFF_0)
    await tb.call(f"{label}: close", conn.close)
    await tb.expect(f"{label}: RST", count=1)


@scenario
async def sndbuf_zero_window_write_per_sndbuf(tb: Testbench) -> None:
    """Zero window, MSS 1460: a write takes whole 64240-byte skbs while the memory queued (with each
    skb's truesize) is below SO_SNDBUF; values either side of one and two skbs' worth."""
    for port, sndbuf in enumerate((2304, 16384, 32536, 32537, 60000, 65000, 65600), start=8100):
        await _zero_window_write(tb, f"SO_SNDBUF {sndbuf}", port, 1460, sndbuf)


@scenario
async def sndbuf_zero_window_write_per_mss(tb: Testbench) -> None:
    """Zero window, the default send buffer: the skb size is the most whole segments a GSO packet holds."""
    for port, mss in enumerate((1460, 1000, 536, 1200), start=8200):
        await _zero_window_write(tb, f"MSS {mss}", port, mss, None)


@scenario
async def notsent_lowat_stops_a_partial_write(tb: Testbench) -> None:
    """TCP_NOTSENT_LOWAT 4000, a 32896-byte window, cwnd 10: a 59000-byte write is cut once the skb
    being filled leaves 4000 or more unsent (the first flight already gone)."""
    _peer, _listener, conn = await tb.passive_open(options=[("MSS", 1000), ("NOP", None), ("WScale", 7)],
                                                   window=257)  # the field: 32896 once scaled
    await tb.call("TCP_NOTSENT_LOWAT", conn.setsockopt, socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, 4000)
    conn.set_nonblocking(True)
    await tb.call("send 59000", conn.send, bytes(59000))
    await tb.expect("first flight", within=0.05)
    await tb.call("SIOCOUTQNSD", conn.ioctl, SIOCOUTQNSD)


# ---------------------------------------------------------------- receive buffer and window


@scenario
async def rcvbuf_autotuning_grows_window(tb: Testbench) -> None:
    """Receive-buffer autotuning: a reader keeping up with six bursts of 40 segments; does the window grow?"""
    peer, _listener, conn = await tb.passive_open(options=SYN_TS)
    peer.send("A", b"r" * 100)
    first = _segments(await tb.expect("ACK of the first data", within=0.05))
    await drain(conn)
    windows = []
    for round_ in range(6):
        for _ in range(40):
            peer.send("A", b"r" * 1448)
        windows += [s.window for s in _segments(await tb.expect(f"round {round_}", within=0.02, record=False))]
        await drain(conn)
    # Scaled by 7 on both DUTs here; 64 KiB is the initial receive space (tcp_rmem[1] / 2): only a
    # receive buffer that grew (tcp_rcv_space_adjust) can advertise more.
    tb.note("largest window beyond the initial 64 KiB", bool(first and windows) and max(windows) << 7 > 65536)


@scenario
async def rcvbuf_fixed_window(tb: Testbench) -> None:
    """SO_RCVBUF 8192 on the listener: the window the accepted connection advertises."""
    listener = await tb.listener(8080)
    await tb.call("SO_RCVBUF", listener.setsockopt, socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    peer = tb.peer(8080)
    peer.send("S", options=[("MSS", 1460)])
    note_windows(tb, "SYN-ACK window", await tb.expect("SYN-ACK", count=1))
    peer.send("A")
    await accept(tb, listener)
    peer.send("PA", b"w" * 1000)
    note_windows(tb, "ACK window", await tb.expect("ACK", within=0.1))


@scenario
async def rcvbuf_fills_to_zero_window(tb: Testbench) -> None:
    """A small receive buffer fills: the window closes, a probe gets a zero window, reading reopens it."""
    listener = await tb.listener(8080)
    await tb.call("SO_RCVBUF", listener.setsockopt, socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    peer = tb.peer(8080)
    peer.send("S", options=[("MSS", 1000)])
    await tb.expect("SYN-ACK", count=1)
    peer.send("A")
    conn = await accept(tb, listener)
    for _ in range(6):
        peer.send("A", b"f" * 1000)
    await tb.expect("ACKs as the buffer fills", within=0.1)
    peer.send("A", b"p", advance=False)
    await tb.expect("answer to a probe", within=0.1)
    await tb.call("read all", drain, conn)
    await tb.expect("window update", within=0.1)


@scenario
async def wscale_peer_scaled_window(tb: Testbench) -> None:
    """The peer scales its window by 4 (wscale 2): a window field of 250 lets 1000 bytes go."""
    _peer, _conn, _base, _packets = await sending_flight(tb, 5000, options=[("MSS", 1000), ("NOP", None),
                                                                           ("WScale", 2)], window=250)


@scenario
async def wscale_window_in_first_ack(tb: Testbench) -> None:
    """The window the DUT advertises (scaled by 7) in its first ACK of data."""
    peer, _listener, _conn = await tb.passive_open(options=SYN_ALL)
    peer.send("PA", b"x" * 100)
    note_windows(tb, "ACK window", await tb.expect("ACK", within=0.1))


@scenario
async def wscale_peer_without_scaling(tb: Testbench) -> None:
    """The peer offers no window scale: the DUT's windows fit 16 bits unscaled."""
    peer, _listener, _conn = await tb.passive_open(options=[("MSS", 1460)])
    peer.send("PA", b"x" * 100)
    note_windows(tb, "ACK window", await tb.expect("ACK", within=0.1))


# ---------------------------------------------------------------- zero-window probes


@scenario
async def zero_window_probe_answered(tb: Testbench) -> None:
    """Zero-window probes answered by a zero window: the probes keep backing off."""
    peer, _listener, conn = await tb.passive_open(window=0)
    await tb.call("send", conn.send, b"w" * 100)
    for k in range(3):
        if not await tb.expect(f"probe {k}", within=0.9, count=1):
            break
        peer.send("A")


@scenario
async def zero_window_opens_partially(tb: Testbench) -> None:
    """The window opens to 60 bytes: the DUT sends 60 of its 100."""
    peer, _listener, conn = await tb.passive_open(window=0)
    await tb.call("send", conn.send, b"w" * 100)
    await tb.expect("nothing yet", within=0.05)
    peer.window = 60
    peer.send("A")
    await tb.expect("60 bytes", within=0.05)


# ---------------------------------------------------------------- keepalive


@scenario(timeout=30.0)
async def keepalive_probes_answered(tb: Testbench) -> None:
    """Keepalive (idle 1 s, interval 1 s) with every probe answered: the connection stays."""
    peer, _listener, conn = await tb.passive_open()
    for name, option, value in (("SO_KEEPALIVE", (socket.SOL_SOCKET, socket.SO_KEEPALIVE), 1),
                                ("TCP_KEEPIDLE", (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE), 1),
                                ("TCP_KEEPINTVL", (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL), 1)):
        await tb.call(name, conn.setsockopt, *option, value)
    for k in range(2):
        await tb.expect(f"probe {k}", within=1.3, count=1)
        peer.send("A")
    await tb.expect("nothing", within=0.05)


@scenario(timeout=30.0, sysctls={"net.ipv4.tcp_keepalive_time": "1", "net.ipv4.tcp_keepalive_intvl": "1",
                                 "net.ipv4.tcp_keepalive_probes": "1"})
async def keepalive_sysctls(tb: Testbench) -> None:
    """SO_KEEPALIVE with the timing from sysctls (1 s, 1 s, 1 probe): one probe, then RST."""
    _peer, _listener, conn = await tb.passive_open()
    await tb.call("SO_KEEPALIVE", conn.setsockopt, socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    await tb.expect("probe, then RST", within=2.3)
    await tb.call("SO_ERROR", conn.getsockopt, socket.SOL_SOCKET, socket.SO_ERROR)


# ---------------------------------------------------------------- SYN cookies (RFC 4987)


@scenario(sysctls={"net.ipv4.tcp_syncookies": "1"})
async def syncookies_when_queue_overflows(tb: Testbench) -> None:
    """tcp_syncookies=1, listen backlog 2: SYNs beyond the queue get cookie SYN-ACKs; a cookie ACK connects."""
    listener = await tb.listener(8080, backlog=2)
    peers = [tb.peer(8080) for _ in range(4)]
    for k, peer in enumerate(peers):
        peer.send("S", options=SYN_SACK)
        await tb.expect(f"SYN-ACK {k}", within=0.05)
    peers[-1].send("A")
    await accept(tb, listener)
    peers[-1].send("PA", b"hello")
    await tb.expect("ACK of data", within=0.1)


@scenario(sysctls={"net.ipv4.tcp_syncookies": "2"})
async def syncookies_always(tb: Testbench) -> None:
    """tcp_syncookies=2: every SYN gets a cookie (no SACK without timestamps); the ACK completes it."""
    listener = await tb.listener(8080)
    peer = tb.peer(8080)
    peer.send("S", options=SYN_SACK)
    await tb.expect("cookie SYN-ACK", count=1)
    peer.send("A")
    conn = await accept(tb, listener)
    await tb.call("send", conn.send, b"data")
    await tb.expect("data", within=0.1)


@scenario(sysctls={"net.ipv4.tcp_syncookies": "2"})
async def syncookies_bad_cookie(tb: Testbench) -> None:
    """tcp_syncookies=2: an ACK whose number is no valid cookie is answered with RST, no connection."""
    listener = await tb.listener(8080)
    peer = tb.peer(8080)
    peer.send("S", options=SYN_SACK)
    await tb.expect("cookie SYN-ACK", count=1)
    peer.send("A", ack=(peer.rcv_nxt + 12345) & 0xFFFFFFFF)
    await tb.expect("RST", within=0.1)
    listener.set_nonblocking(True)
    await accept(tb, listener)


@scenario(sysctls={"net.ipv4.tcp_syncookies": "0"})
async def syncookies_off_queue_overflows(tb: Testbench) -> None:
    """tcp_syncookies=0, listen backlog 2: SYNs beyond the queue are dropped."""
    await tb.listener(8080, backlog=2)
    for k in range(4):
        tb.peer(8080).send("S", options=SYN_SACK)
        await tb.expect(f"SYN {k}", within=0.05)
    await control_ping(tb)


# ---------------------------------------------------------------- PAWS (RFC 7323)


def _ts_segment(peer: TcpPeer, data: bytes, ts_val: int, **fields) -> None:
    peer.send("PA", data, options=[("NOP", None), ("NOP", None), ("Timestamp", (ts_val, peer.tb.last_dut_ts))],
              **fields)


@scenario
async def paws_timestamp_one_older_accepted(tb: Testbench) -> None:
    """PAWS: a segment whose timestamp is one below ts_recent is accepted (Linux's PAWS window of 1)."""
    peer, _listener, conn = await tb.passive_open(options=SYN_TS)
    _ts_segment(peer, b"a" * 100, 6000)
    await tb.expect("ACK", within=0.1)
    _ts_segment(peer, b"b" * 100, 5999)
    await tb.expect("one older: ACK", within=0.1)
    conn.set_nonblocking(True)
    await tb.call("recv", conn.recv, 1000)


@scenario
async def paws_old_timestamp_dropped(tb: Testbench) -> None:
    """PAWS: a segment whose timestamp is 100 below ts_recent is dropped with a duplicate ACK."""
    peer, _listener, conn = await tb.passive_open(options=SYN_TS)
    _ts_segment(peer, b"a" * 100, 6000)
    await tb.expect("ACK", within=0.1)
    _ts_segment(peer, b"b" * 100, 5900)
    await tb.expect("old: dupack", within=0.1)
    conn.set_nonblocking(True)
    await tb.call("recv", conn.recv, 1000)


@scenario
async def paws_reordered_segments(tb: Testbench) -> None:
    """Reordering: the later segment (newer timestamp) first; the earlier, older-stamped one is still taken."""
    peer, _listener, conn = await tb.passive_open(options=SYN_TS)
    start = peer.snd_nxt
    _ts_segment(peer, b"b" * 100, 6010, seq=start + 100)
    await tb.expect("dupack", within=0.1)
    _ts_segment(peer, b"a" * 100, 6000, seq=start)
    await tb.expect("ACK of both", within=0.1)
    conn.set_nonblocking(True)
    await tb.call("recv", conn.recv, 1000)


@scenario
async def paws_rst_with_old_timestamp(tb: Testbench) -> None:
    """PAWS does not apply to RST: an exact RST with an old timestamp still resets."""
    peer, _listener, conn = await tb.passive_open(options=SYN_TS)
    _ts_segment(peer, b"a" * 100, 6000)
    await tb.expect("ACK", within=0.1)
    peer.send("R", options=[("NOP", None), ("NOP", None), ("Timestamp", (100, 0))])
    await tb.expect("nothing", within=0.05)
    conn.set_nonblocking(True)
    await tb.call("recv", conn.recv, 100)


# ---------------------------------------------------------------- IP reassembly edge cases


def _raw_fragment(whole: bytes, offset: int, body: bytes, more: bool) -> IP:
    """A fragment of ``whole`` (an IP datagram) carrying ``body`` at byte ``offset``."""
    header = IP(whole[:20])
    header.flags, header.frag = ("MF" if more else 0), offset // 8
    del header.len, header.chksum
    return header / Raw(body)


@scenario
async def frag_overlap_identical_bytes(tb: Testbench) -> None:
    """Overlapping fragments with the same bytes in the overlap."""
    whole = bytes(echo(tb, 48))
    body = whole[20:]
    tb.send(_raw_fragment(whole, 0, body[:32], True), _raw_fragment(whole, 24, body[24:], False))
    await tb.expect("reply or nothing")
    await control_ping(tb)


@scenario
async def frag_exact_duplicate_different_bytes(tb: Testbench) -> None:
    """A fragment repeated at the same offset with different bytes: which copy wins, or none."""
    whole = bytes(echo(tb, 48))
    body = whole[20:]
    tb.send(_raw_fragment(whole, 0, body[:32], True), _raw_fragment(whole, 0, b"\xee" * 32, True),
            _raw_fragment(whole, 32, body[32:], False))
    await tb.expect("reply or nothing")
    await control_ping(tb)


@scenario
async def frag_last_duplicated(tb: Testbench) -> None:
    """The last fragment twice, before and after the middle one."""
    pieces = fragment(echo(tb, 300), fragsize=104)
    tb.send(pieces[0], pieces[-1], *pieces[1:-1], pieces[-1])
    await tb.expect("echo reply")
    await control_ping(tb)


@scenario
async def frag_many_tiny(tb: Testbench) -> None:
    """A 1000-byte echo request in 126 fragments of 8 bytes."""
    tb.send(*fragment(echo(tb, 1000), fragsize=8))
    await tb.expect("echo reply")


@scenario
async def frag_shuffled(tb: Testbench) -> None:
    """The 8-byte fragments of a 400-byte echo request in a shuffled order (fixed seed)."""
    pieces = fragment(echo(tb, 400), fragsize=8)
    random.Random(16).shuffle(pieces)
    tb.send(*pieces)
    await tb.expect("echo reply")


@scenario
async def frag_unaligned_middle(tb: Testbench) -> None:
    """A non-last fragment whose length is not a multiple of 8 (Linux trims it to the boundary)."""
    whole = bytes(echo(tb, 48))
    body = whole[20:]
    tb.send(_raw_fragment(whole, 0, body[:30], True), _raw_fragment(whole, 32, body[32:], False))
    await tb.expect("nothing")
    tb.send(_raw_fragment(whole, 24, body[24:32], True))
    await tb.expect("after the gap is filled")
    await control_ping(tb)


@scenario
async def frag_oversized_datagram(tb: Testbench) -> None:
    """A last fragment at offset 65528 carrying 16 bytes: the datagram would exceed 65535 bytes."""
    whole = bytes(echo(tb, 48))
    body = whole[20:]
    tb.send(_raw_fragment(whole, 0, body[:32], True), _raw_fragment(whole, 65528, bytes(16), False))
    await tb.expect("nothing")
    await control_ping(tb)


@scenario
async def frag_udp_to_closed_port(tb: Testbench) -> None:
    """A fragmented datagram to a closed UDP port: the port unreachable quotes the reassembled header."""
    tb.send(*fragment(tb.ip() / UDP(sport=tb.port(), dport=9) / (b"u" * 2000), fragsize=1000))
    await tb.expect("port unreachable")


@scenario(sysctls={"net.ipv4.ipfrag_time": "1"}, timeout=30.0)
async def frag_reassembly_timeout(tb: Testbench) -> None:
    """ipfrag_time=1, only the first fragment: ICMP time exceeded (reassembly) after a second."""
    tb.send(fragment(echo(tb, 1000), fragsize=512)[0])
    await tb.expect("time exceeded", within=1.5)


@scenario(sysctls={"net.ipv4.ipfrag_time": "1"}, timeout=30.0)
async def frag_reassembly_timeout_no_first(tb: Testbench) -> None:
    """ipfrag_time=1, only the last fragment: no ICMP (RFC 792 needs fragment zero)."""
    tb.send(fragment(echo(tb, 1000), fragsize=512)[-1])
    await tb.expect("nothing", within=1.3)
    await control_ping(tb)


# ---------------------------------------------------------------- the out-of-order queue


@scenario
async def ooo_two_holes(tb: Testbench) -> None:
    """Two holes: SACK blocks (most recent first), then each hole filled in turn."""
    peer, _listener, conn = await tb.passive_open(options=SYN_SACK)
    start = peer.snd_nxt
    for offset in (100, 300):
        peer.send("PA", b"o" * 100, seq=start + offset)
        await tb.expect(f"dupack for {offset}", within=0.05)
    for offset in (0, 200):
        peer.send("PA", b"i" * 100, seq=start + offset)
        await tb.expect(f"ACK after filling {offset}", within=0.05)
    conn.set_nonblocking(True)
    await tb.call("recv", conn.recv, 1000)


@scenario
async def ooo_adjacent_segments_coalesce(tb: Testbench) -> None:
    """Out-of-order segments that touch are reported as one SACK block."""
    peer, _listener, _conn = await tb.passive_open(options=SYN_SACK)
    start = peer.snd_nxt
    for offset in (200, 100, 300):
        peer.send("PA", b"o" * 100, seq=start + offset)
        await tb.expect(f"dupack for {offset}", within=0.05)


@scenario
async def ooo_overlapping_segments(tb: Testbench) -> None:
    """Overlapping out-of-order segments: one merged SACK block; a duplicate gets a D-SACK."""
    peer, _listener, _conn = await tb.passive_open(options=SYN_SACK)
    start = peer.snd_nxt
    peer.send("PA", b"o" * 100, seq=start + 100)
    await tb.expect("dupack", within=0.05)
    peer.send("PA", b"o" * 100, seq=start + 150)
    await tb.expect("overlap: merged block", within=0.05)
    peer.send("PA", b"o" * 50, seq=start + 100)
    await tb.expect("duplicate: D-SACK", within=0.05)


@scenario
async def ooo_five_holes_sack_limit(tb: Testbench) -> None:
    """Five isolated out-of-order segments: at most four SACK blocks fit without timestamps."""
    peer, _listener, _conn = await tb.passive_open(options=SYN_SACK)
    start = peer.snd_nxt
    for k in range(5):
        peer.send("PA", b"o" * 10, seq=start + 20 * (k + 1))
        await tb.expect(f"dupack {k}", within=0.05)


@scenario
async def ooo_five_holes_sack_limit_timestamps(tb: Testbench) -> None:
    """Five isolated out-of-order segments with timestamps: three SACK blocks fit."""
    peer, _listener, _conn = await tb.passive_open(options=SYN_TS)
    start = peer.snd_nxt
    for k in range(5):
        peer.send("PA", b"o" * 10, seq=start + 20 * (k + 1))
        await tb.expect(f"dupack {k}", within=0.05)


@scenario
async def ooo_one_byte_segments(tb: Testbench) -> None:
    """Thirty 1-byte segments at rcv_nxt+1+2k (the CVE-2018-5390 pattern, small), then one filling all."""
    peer, _listener, conn = await tb.passive_open(options=SYN_SACK)
    start = peer.snd_nxt
    for k in range(30):
        peer.send("PA", b"x", seq=start + 1 + 2 * k)
    await tb.expect("dupacks", within=0.1)
    peer.send("PA", b"y" * 60, seq=start)
    await tb.expect("ACK of all", within=0.05)
    conn.set_nonblocking(True)
    await tb.call("recv", conn.recv, 1000)


@scenario
async def ooo_fin_beyond_hole(tb: Testbench) -> None:
    """A FIN beyond a hole waits; filling the hole acknowledges data and FIN."""
    peer, _listener, conn = await tb.passive_open(options=SYN_SACK)
    start = peer.snd_nxt
    peer.send("FPA", b"z" * 100, seq=start + 100)
    await tb.expect("dupack", within=0.05)
    peer.send("PA", b"a" * 100, seq=start)
    await tb.expect("ACK of data and FIN", within=0.05)
    conn.set_nonblocking(True)
    await tb.call("recv", conn.recv, 1000)
    await tb.call("recv at end", conn.recv, 1000)


@scenario(sysctls=NO_TLP)
async def ooo_sack_blocks_shrink_data_segments(tb: Testbench) -> None:
    """While the DUT reports a hole (a SACK block on every segment), its data segments shrink to fit the MTU."""
    peer, _listener, conn = await tb.passive_open(options=SYN_TS)
    peer.send("PA", b"o" * 100, seq=peer.snd_nxt + 100, advance=False)
    await tb.expect("dupack with SACK", within=0.05)
    await tb.call("send 4000", conn.send, bytes(4000))
    await tb.expect("data carrying the SACK block", within=0.05)


# ---------------------------------------------------------------- RFC 5961 challenge ACKs


@scenario
async def challenge_ack_rate_limited_per_socket(tb: Testbench) -> None:
    """Four in-window RSTs in a row: challenge ACKs are rate limited per socket (tcp_invalid_ratelimit)."""
    peer, _listener, _conn = await tb.passive_open()
    for k in range(4):
        peer.send("R", seq=peer.snd_nxt + 1000 + k)
    await tb.expect("challenge ACKs", within=0.1)
    peer.send("PA", b"alive")
    await tb.expect("control: ACK", within=0.1)


@scenario
async def out_of_window_acks_rate_limited_per_socket(tb: Testbench) -> None:
    """Pure ACKs beyond the window, 0.3 s apart, then a data segment beyond it: the duplicate
    ACKs for pure ACKs share the socket's rate limit (tcp_invalid_ratelimit, 0.5 s), data's do not."""
    peer, _listener, _conn = await tb.passive_open()
    for k in range(3):
        peer.send("A", seq=peer.snd_nxt + 200000)
        await tb.expect(f"answer to out-of-window ACK {k}", within=0.3)
    peer.send("PA", b"late", seq=peer.snd_nxt + 200000)
    await tb.expect("answer to out-of-window data", within=0.1)


@scenario
async def challenge_ack_then_out_of_window_ack(tb: Testbench) -> None:
    """A challenge ACK (in-window RST) and then an out-of-window pure ACK: one limit for both."""
    peer, _listener, _conn = await tb.passive_open()
    peer.send("R", seq=peer.snd_nxt + 1000)
    await tb.expect("challenge ACK", within=0.1)
    peer.send("A", seq=peer.snd_nxt + 200000)
    await tb.expect("answer to the out-of-window ACK", within=0.45)
    peer.send("A", seq=peer.snd_nxt + 200000)
    await tb.expect("answer to the next one, past the limit", within=0.2)


@scenario
async def challenge_ack_for_too_old_ack(tb: Testbench) -> None:
    """An ACK older than snd_una - max window (RFC 5961 5.2): a challenge ACK, the data is dropped."""
    peer, _listener, conn = await tb.passive_open()
    peer.send("PA", b"stale", ack=(peer.rcv_nxt - 200000) & 0xFFFFFFFF)
    await tb.expect("challenge ACK", within=0.1)
    conn.set_nonblocking(True)
    await tb.call("recv", conn.recv, 100)


# ---------------------------------------------------------------- urgent data


@scenario
async def urgent_oobinline(tb: Testbench) -> None:
    """SO_OOBINLINE: the urgent byte stays in the stream, recv() returns all three bytes."""
    peer, _listener, conn = await tb.passive_open()
    await tb.call("SO_OOBINLINE", conn.setsockopt, socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
    peer.send("PAU", b"abc", urgent=3)
    await tb.expect("ACK", within=0.1)
    conn.set_nonblocking(True)
    await tb.call("recv", conn.recv, 100)


@scenario
async def urgent_pointer_without_urg_flag(tb: Testbench) -> None:
    """An urgent pointer without URG is ignored: ordinary data."""
    peer, _listener, conn = await tb.passive_open()
    peer.send("PA", b"abc", urgent=2)
    await tb.expect("ACK", within=0.1)
    conn.set_nonblocking(True)
    await tb.call("recv", conn.recv, 100)


# ---------------------------------------------------------------- more TCP


@scenario
async def tcp_maxseg_before_connect(tb: Testbench) -> None:
    """TCP_MAXSEG 500 before connect(): the SYN's MSS option and the segment size."""
    sock = tb.socket(socket.SOCK_STREAM)
    await tb.call("TCP_MAXSEG", sock.setsockopt, socket.IPPROTO_TCP, socket.TCP_MAXSEG, 500)
    sock.set_nonblocking(True)
    await tb.call("connect", sock.connect, (tb.dut.peer, 9000))
    await tb.expect("SYN", count=1)


@scenario
async def tcp_syn_retransmission(tb: Testbench) -> None:
    """connect() never answered: the SYN is sent again after one second."""
    sock = tb.socket(socket.SOCK_STREAM)
    sock.set_nonblocking(True)
    await tb.call("connect", sock.connect, (tb.dut.peer, 9000))
    await tb.expect("SYN and its retransmission", within=1.2)


@scenario
async def tcp_synack_wrong_ack(tb: Testbench) -> None:
    """In SYN-SENT, a SYN-ACK acknowledging the wrong number: RST, then the right SYN-ACK connects."""
    sock = tb.socket(socket.SOCK_STREAM)
    sock.set_nonblocking(True)
    await tb.call("connect", sock.connect, (tb.dut.peer, 9000))
    packets = await tb.expect("SYN", count=1)
    syn = parse_tcp(parse_ipv4(packets[0]).payload)
    peer = TcpPeer(tb, 9000, syn.sport)
    peer.send("SA", ack=(syn.seq + 100) & 0xFFFFFFFF, options=[("MSS", 1460)], advance=False)
    await tb.expect("RST", within=0.1)
    peer.send("SA", ack=(syn.seq + 1) & 0xFFFFFFFF, options=[("MSS", 1460)])
    await tb.expect("ACK", within=0.1)
    await tb.call("SO_ERROR", sock.getsockopt, socket.SOL_SOCKET, socket.SO_ERROR)


@scenario
async def tcp_syn_with_data_to_listener(tb: Testbench) -> None:
    """A SYN carrying data (no Fast Open): the SYN-ACK acknowledges only the SYN."""
    listener = await tb.listener(8080)
    peer = tb.peer(8080)
    peer.send("S", b"early", options=[("MSS", 1460)], advance=False)
    peer.snd_nxt = (peer.isn + 1) & 0xFFFFFFFF
    await tb.expect("SYN-ACK", count=1)
    peer.send("A")
    conn = await accept(tb, listener)
    conn.set_nonblocking(True)
    await tb.call("recv", conn.recv, 100)


@scenario
async def tcp_third_ack_wrong(tb: Testbench) -> None:
    """The handshake's last ACK acknowledges the wrong number: RST; the half-open connection stays."""
    listener = await tb.listener(8080)
    peer = tb.peer(8080)
    peer.send("S", options=[("MSS", 1460)])
    await tb.expect("SYN-ACK", count=1)
    peer.send("A", ack=(peer.rcv_nxt + 1000) & 0xFFFFFFFF)
    await tb.expect("RST", within=0.1)
    peer.send("A")
    await accept(tb, listener)


@scenario
async def tcp_rst_in_syn_recv(tb: Testbench) -> None:
    """An RST for a half-open connection removes it: the ACK that follows gets RST."""
    await tb.listener(8080)
    peer = tb.peer(8080)
    peer.send("S", options=[("MSS", 1460)])
    await tb.expect("SYN-ACK", count=1)
    peer.send("R", advance=False)
    await tb.expect("nothing", within=0.05)
    peer.send("A")
    await tb.expect("RST", within=0.1)


@scenario
async def tcp_listener_closed_with_pending(tb: Testbench) -> None:
    """close() on a listener with a connection not yet accepted: that connection is reset."""
    listener = await tb.listener(8080)
    peer = tb.peer(8080)
    peer.send("S", options=[("MSS", 1460)])
    await tb.expect("SYN-ACK", count=1)
    peer.send("A")
    await tb.expect("nothing", within=0.05)
    await tb.call("close listener", listener.close)
    await tb.expect("RST", within=0.1)


@scenario
async def tcp_accept_queue_full(tb: Testbench) -> None:
    """listen(backlog 0) with one connection waiting: the next SYN is dropped while the queue is full."""
    listener = await tb.listener(8080, backlog=0)
    first = tb.peer(8080)
    first.send("S", options=[("MSS", 1460)])
    await tb.expect("SYN-ACK", count=1)
    first.send("A")
    await tb.expect("nothing", within=0.05)
    tb.peer(8080).send("S", options=[("MSS", 1460)])
    await tb.expect("second SYN", within=0.1)
    await accept(tb, listener)


@scenario(timeout=30.0)
async def tcp_user_timeout(tb: Testbench) -> None:
    """TCP_USER_TIMEOUT 500 ms with nothing acknowledged: retransmissions, then the connection ends."""
    _peer, _listener, conn = await tb.passive_open()
    await tb.call("TCP_USER_TIMEOUT", conn.setsockopt, socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 500)
    await tb.call("send", conn.send, b"t" * 100)
    await tb.expect("data, retransmissions, end", within=0.9)
    await tb.call("SO_ERROR", conn.getsockopt, socket.SOL_SOCKET, socket.SO_ERROR)


@scenario(sysctls={"net.ipv4.tcp_fin_timeout": "1"}, timeout=30.0)
async def tcp_fin_wait2_timeout(tb: Testbench) -> None:
    """tcp_fin_timeout=1: an orphaned FIN-WAIT-2 connection is gone after a second; a late FIN gets RST."""
    peer, _listener, conn = await tb.passive_open()
    await tb.call("close", conn.close)
    await tb.expect("FIN", count=1)
    peer.send("A")
    await trio.sleep(1.3)
    peer.send("FA")
    await tb.expect("answer to the late FIN", within=0.1)


@scenario
async def tcp_segment_partly_old(tb: Testbench) -> None:
    """A segment half already received, half new: the new half is taken."""
    peer, _listener, conn = await tb.passive_open()
    start = peer.snd_nxt
    peer.send("PA", b"a" * 100)
    await tb.expect("ACK", within=0.1)
    peer.send("PA", b"a" * 50 + b"b" * 50, seq=start + 50, advance=False)
    await tb.expect("ACK of the new half", within=0.1)
    conn.set_nonblocking(True)
    await tb.call("recv", conn.recv, 1000)


@scenario
async def tcp_shutdown_read(tb: Testbench) -> None:
    """shutdown(SHUT_RD), then data arrives: what is acknowledged and what recv() returns."""
    peer, _listener, conn = await tb.passive_open()
    await tb.call("shutdown SHUT_RD", conn.shutdown, socket.SHUT_RD)
    peer.send("PA", b"after shutdown")
    await tb.expect("ACK", within=0.1)
    conn.set_nonblocking(True)
    await tb.call("recv", conn.recv, 100)


@scenario
async def tcp_quickack_full_segments(tb: Testbench) -> None:
    """Four full-sized segments back to back at the start of a connection (quick-ACK mode)."""
    peer, _listener, _conn = await tb.passive_open(options=SYN_MSS_1000)
    for _ in range(4):
        peer.send("A", b"s" * 1000)
    await tb.expect("ACKs", within=0.1)


@scenario
async def tcp_rto_backoff(tb: Testbench) -> None:
    """A segment never acknowledged: retransmissions at the RTO, doubling each time."""
    _peer, _conn, _base, _packets = await sending_flight(tb, 100)
    await tb.expect("retransmissions", within=1.5)


# ---------------------------------------------------------------- more UDP


@scenario
async def udp_zero_length(tb: Testbench) -> None:
    """An empty datagram is delivered as b''."""
    sock = await _udp_socket(tb)
    tb.send(tb.ip() / UDP(sport=tb.port(), dport=7777))
    await tb.call("recvfrom", sock.recvfrom, 100)


@scenario
async def udp_recv_truncated(tb: Testbench) -> None:
    """recvfrom() with a buffer smaller than the datagram: the rest is discarded."""
    sock = await _udp_socket(tb)
    sport = tb.port()
    tb.send(tb.ip() / UDP(sport=sport, dport=7777) / b"0123456789")
    tb.send(tb.ip() / UDP(sport=sport, dport=7777) / b"next")
    await tb.call("recvfrom 4", sock.recvfrom, 4)
    await tb.call("recvfrom next", sock.recvfrom, 100)


@scenario
async def udp_length_field_short(tb: Testbench) -> None:
    """A UDP length field shorter than the IP payload: the datagram is what the length says."""
    sock = await _udp_socket(tb)
    tb.send(tb.ip() / UDP(sport=tb.port(), dport=7777, len=12, chksum=0) / b"abcdefgh")
    await tb.call("recvfrom", sock.recvfrom, 100)


@scenario
async def udp_length_field_long(tb: Testbench) -> None:
    """A UDP length field longer than the IP payload: dropped."""
    sock = await _udp_socket(tb)
    tb.send(tb.ip() / UDP(sport=tb.port(), dport=7777, len=100, chksum=0) / b"abcdefgh")
    await tb.call("recvfrom", sock.recvfrom, 100)
    await control_ping(tb)


@scenario
async def udp_small_datagram_df(tb: Testbench) -> None:
    """A small datagram from the DUT: DF set (path MTU discovery for UDP), TTL 64."""
    sock = await _udp_socket(tb)
    await tb.call("sendto", sock.sendto, b"small", (tb.dut.peer, tb.port()))
    await tb.expect("datagram")


@scenario
async def udp_connected_port_unreachable(tb: Testbench) -> None:
    """A connected UDP socket learns of an ICMP port unreachable: the next call fails ECONNREFUSED."""
    sock = await _udp_socket(tb)
    port = tb.port()
    await tb.call("connect", sock.connect, (tb.dut.peer, port))
    await tb.call("send", sock.send, b"anyone?")
    packets = await tb.expect("datagram", count=1)
    if packets:
        tb.send(tb.ip() / ICMP(type=3, code=3) / Raw(packets[0][:28]))
    await tb.expect("nothing", within=0.05)
    await tb.call("recv", sock.recv, 100)


@scenario
async def udp_unconnected_port_unreachable(tb: Testbench) -> None:
    """An unconnected UDP socket ignores ICMP port unreachable (no IP_RECVERR)."""
    sock = await _udp_socket(tb)
    await tb.call("sendto", sock.sendto, b"anyone?", (tb.dut.peer, tb.port()))
    packets = await tb.expect("datagram", count=1)
    if packets:
        tb.send(tb.ip() / ICMP(type=3, code=3) / Raw(packets[0][:28]))
    await tb.expect("nothing", within=0.05)
    await tb.call("recvfrom", sock.recvfrom, 100)


@scenario
async def udp_closed_port_burst(tb: Testbench) -> None:
    """Ten datagrams to a closed port at once: how many port unreachables (ICMP rate limiting)."""
    sport = tb.port()
    for k in range(10):
        tb.send(tb.ip() / UDP(sport=sport, dport=9) / bytes([k]))
    await tb.expect("port unreachables", within=0.2)


# ---------------------------------------------------------------- more ICMP


@scenario
async def icmp_echo_bad_checksum(tb: Testbench) -> None:
    """An echo request with a wrong ICMP checksum is dropped."""
    tb.send(tb.ip() / ICMP(id=1, seq=1, chksum=0x1234) / b"payload!")
    await tb.expect("nothing")
    await control_ping(tb)


@scenario
async def icmp_timestamp_request(tb: Testbench) -> None:
    """An ICMP timestamp request (type 13): answered with a timestamp reply (type 14) or not."""
    tb.send(tb.ip() / ICMP(type=13, id=5, seq=1) / bytes(12))
    replies = await tb.expect("replies", record=False)  # a timestamp reply carries clock values: type only
    tb.note("ICMP types answered", [parse_ipv4(p).payload[0] for p in replies])
    await control_ping(tb)


@scenario
async def icmp_address_mask_request(tb: Testbench) -> None:
    """An ICMP address mask request (type 17) is not answered."""
    tb.send(tb.ip() / ICMP(type=17, id=5, seq=1) / bytes(4))
    await tb.expect("nothing")
    await control_ping(tb)


@scenario
async def icmp_echo_keeps_tos(tb: Testbench) -> None:
    """An echo request with TOS 0x10: the reply's TOS."""
    tb.send(echo(tb, 16, tos=0x10))
    await tb.expect("echo reply")


@scenario
async def icmp_echo_with_df(tb: Testbench) -> None:
    """An echo request with DF set: the reply's DF."""
    tb.send(echo(tb, 16, flags="DF"))
    await tb.expect("echo reply")


@scenario
async def icmp_error_for_unknown_flow(tb: Testbench) -> None:
    """A port unreachable quoting a TCP segment of no connection: ignored."""
    quoted = bytes(IP(src=tb.dut.address, dst=tb.dut.peer) / TCP(sport=5555, dport=6666, seq=1))[:28]
    tb.send(tb.ip() / ICMP(type=3, code=3) / Raw(quoted))
    await tb.expect("nothing")
    await control_ping(tb)


async def _connect_then_icmp(tb: Testbench, code: int) -> None:
    sock = tb.socket(socket.SOCK_STREAM)
    sock.set_nonblocking(True)
    await tb.call("connect", sock.connect, (tb.dut.peer, 9000))
    packets = await tb.expect("SYN", count=1)
    if packets:
        tb.send(tb.ip() / ICMP(type=3, code=code) / Raw(packets[0][:28]))
    await tb.expect("after the ICMP error", within=0.1)
    await tb.call("SO_ERROR", sock.getsockopt, socket.SOL_SOCKET, socket.SO_ERROR)


@scenario
async def icmp_port_unreachable_in_syn_sent(tb: Testbench) -> None:
    """ICMP port unreachable for the DUT's SYN: connect() fails with ECONNREFUSED."""
    await _connect_then_icmp(tb, 3)


@scenario
async def icmp_host_unreachable_in_syn_sent(tb: Testbench) -> None:
    """ICMP host unreachable for the DUT's SYN: connect() fails with EHOSTUNREACH."""
    await _connect_then_icmp(tb, 1)


@scenario
async def icmp_port_unreachable_on_established(tb: Testbench) -> None:
    """ICMP port unreachable quoting an established connection's data: the connection continues."""
    peer, _listener, conn = await tb.passive_open()
    await tb.call("send", conn.send, b"data")
    packets = await tb.expect("data", count=1)
    if packets:
        tb.send(tb.ip() / ICMP(type=3, code=3) / Raw(packets[0][:28]))
    await tb.expect("after the ICMP error", within=0.05)
    peer.send("A")
    await tb.call("send again", conn.send, b"more")
    await tb.expect("more data", within=0.1)


@scenario
async def icmp_source_quench(tb: Testbench) -> None:
    """Source quench (deprecated, RFC 6633) for an established connection: ignored."""
    peer, _listener, conn = await tb.passive_open()
    await tb.call("send", conn.send, b"data")
    packets = await tb.expect("data", count=1)
    if packets:
        tb.send(tb.ip() / ICMP(type=4, code=0) / Raw(packets[0][:28]))
    peer.send("A")
    await tb.call("send again", conn.send, b"more")
    await tb.expect("more data", within=0.1)


# ---------------------------------------------------------------- more IP


@scenario
async def ip_option_unknown(tb: Testbench) -> None:
    """An echo request with an unknown IP option (type 30, length 4)."""
    tb.send(echo(tb, 16, options=[IPOption(b"\x1e\x04\x00\x00")]))
    await tb.expect("echo reply or nothing")
    await control_ping(tb)


@scenario
async def ip_option_router_alert(tb: Testbench) -> None:
    """An echo request with a Router Alert option."""
    tb.send(echo(tb, 16, options=[IPOption(b"\x94\x04\x00\x00")]))
    await tb.expect("echo reply")


@scenario
async def ip_option_loose_source_route(tb: Testbench) -> None:
    """An echo request with a loose source route (accept_source_route=0: dropped)."""
    tb.send(echo(tb, 16, options=[IPOption(b"\x83\x07\x04\xc6\x12\x14\x07"), IPOption(b"\x00")]))
    await tb.expect("nothing")
    await control_ping(tb)


@scenario
async def ip_source_broadcast(tb: Testbench) -> None:
    """An echo request from the subnet's broadcast address (a martian source): dropped."""
    tb.send(echo(tb, 16, src="198.18.20.255"))
    await tb.expect("nothing")
    await control_ping(tb)


@scenario
async def ip_destination_other_host(tb: Testbench) -> None:
    """An echo request for another address on the link (forwarding off): dropped."""
    tb.send(echo(tb, 16, dst="198.18.20.7"))
    await tb.expect("nothing")
    await control_ping(tb)


# ---------------------------------------------------------------- TCP Fast Open (RFC 7413)

# A Fast Open server (0x2, and 0x400: every listener) with a known key: both DUTs make the same
# cookie for the bench's address.
FASTOPEN_SERVER = {"net.ipv4.tcp_fastopen": "0x403",
                   "net.ipv4.tcp_fastopen_key": "a0bf63f7-ed803d81-cd641d30-cebc4a90"}
MSG_FASTOPEN = 0x20000000


def fastopen_cookie(tb: Testbench) -> bytes:
    """The cookie the DUT gives the bench (Linux: SipHash of both addresses under the key)."""
    key = parse_key(FASTOPEN_SERVER["net.ipv4.tcp_fastopen_key"])
    return make_cookie(key, socket.inet_aton(tb.dut.peer), socket.inet_aton(tb.dut.address))


@scenario(sysctls=FASTOPEN_SERVER)
async def tcp_fastopen_cookie_request(tb: Testbench) -> None:
    """A SYN asking for a Fast Open cookie (option 34, empty): the SYN-ACK carries the cookie."""
    await tb.listener(8080)
    tb.peer(8080).send("S", options=[("MSS", 1460), (34, b"")])
    await tb.expect("SYN-ACK with the cookie", count=1)


@scenario(sysctls=FASTOPEN_SERVER)
async def tcp_fastopen_cookie_request_experimental(tb: Testbench) -> None:
    """A cookie request in the experimental form (kind 254, magic 0xF989) is answered in that form."""
    await tb.listener(8080)
    tb.peer(8080).send("S", options=[("MSS", 1460), (254, b"\xf9\x89")])
    await tb.expect("SYN-ACK with the cookie", count=1)


@scenario(sysctls=FASTOPEN_SERVER)
async def tcp_fastopen_syn_data(tb: Testbench) -> None:
    """A SYN with the right cookie and data: the SYN-ACK acknowledges the data, which the
    application accepts and reads before the handshake ends; then the ACK."""
    listener = await tb.listener(8080)
    peer = tb.peer(8080)
    peer.send("S", b"hello", options=[("MSS", 1460), (34, fastopen_cookie(tb))])
    await tb.expect("SYN-ACK acknowledging the data", count=1)
    accepted = await tb.call("accept", listener.accept)
    tb.sockets.append(accepted[0])
    await tb.call("recv", accepted[0].recv, 100)
    peer.send("A")
    await tb.call("send", accepted[0].send, b"reply")
    await tb.expect("reply")


@scenario(sysctls=FASTOPEN_SERVER)
async def tcp_fastopen_wrong_cookie(tb: Testbench) -> None:
    """A SYN with a wrong cookie and data: the SYN-ACK acknowledges the SYN only, with the right cookie."""
    listener = await tb.listener(8080)
    peer = tb.peer(8080)
    peer.send("S", b"hello", options=[("MSS", 1460), (34, bytes(8))])
    await tb.expect("SYN-ACK, SYN only", count=1)
    listener.set_nonblocking(True)
    await tb.call("accept before the ACK", listener.accept)


@scenario(sysctls=FASTOPEN_SERVER)
async def tcp_fastopen_reset_before_accept(tb: Testbench) -> None:
    """A Fast Open connection reset before accept: it is still accepted, its data read, then ECONNRESET."""
    listener = await tb.listener(8080)
    peer = tb.peer(8080)
    peer.send("S", b"0123456789", options=[("MSS", 1460), (34, fastopen_cookie(tb))])
    await tb.expect("SYN-ACK", count=1)
    peer.send("R", seq=peer.snd_nxt)
    await tb.expect("nothing", within=0.05)
    accepted = await tb.call("accept", listener.accept)
    tb.sockets.append(accepted[0])
    await tb.call("recv", accepted[0].recv, 100)
    await tb.call("recv again", accepted[0].recv, 100)


@scenario(sysctls={"net.ipv4.tcp_fastopen": "1"})
async def tcp_fastopen_client(tb: Testbench) -> None:
    """sendto(MSG_FASTOPEN) without a cookie: a SYN asking for one, no data; the server's cookie and
    MSS are cached, and the next sendto's SYN carries the cookie and data (the MSS less 40 bytes)."""
    first = tb.socket(socket.SOCK_STREAM)
    first.set_nonblocking(True)
    await tb.call("sendto MSG_FASTOPEN", first.sendto, b"x" * 2000, (tb.dut.peer, 9000), MSG_FASTOPEN)
    packets = await tb.expect("SYN with a cookie request", count=1)
    syn = parse_tcp(parse_ipv4(packets[0]).payload)
    peer = TcpPeer(tb, 9000, syn.sport)
    peer.rcv_nxt = (syn.seq + 1) & 0xFFFFFFFF
    peer.send("SA", options=[("MSS", 1000), (34, bytes.fromhex("abcd1234"))])
    await tb.expect("ACK", count=1)
    second = tb.socket(socket.SOCK_STREAM)
    second.set_nonblocking(True)
    await tb.call("sendto MSG_FASTOPEN, a cookie cached", second.sendto, b"y" * 2000, (tb.dut.peer, 9000),
                  MSG_FASTOPEN)
    await tb.expect("SYN with the cookie and data", count=1)
