"""Differential scenarios: each is written once and run against Linux and pystack.

A scenario sends crafted packets (scapy), makes socket calls on the DUT
and records what comes back (see :mod:`conformance.testbench`).
It asserts nothing about the answers itself: the Linux transcript *is*
the expectation, and test_difftest.py compares pystack's to it field by
field. Scenarios that expect silence end with a positive control.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Awaitable, Callable

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption, fragment
from scapy.packet import Raw

from conformance.normalize import parse_ipv4
from conformance.testbench import Scenario, Testbench

SCENARIOS: dict[str, Scenario] = {}

SYN_ALL = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1000, 0)), ("NOP", None), ("WScale", 7)]
SYN_SACK = [("MSS", 1460), ("NOP", None), ("NOP", None), ("SAckOK", b"")]
SO_LINGER_OFF_0 = struct.pack("ii", 1, 0)


def scenario(fn: Callable[[Testbench], Awaitable[None]] | None = None, *, timeout: float = 20.0):
    def register(f: Callable[[Testbench], Awaitable[None]]):
        SCENARIOS[f.__name__] = Scenario(f.__name__, f, (f.__doc__ or "").strip(), timeout=timeout)
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
