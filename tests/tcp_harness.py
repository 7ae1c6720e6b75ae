"""Test benches for TCP in virtual time.

Both run on a :class:`pystack.links.virtual.VirtualNetwork` (time moves
from event to event: packet deliveries and the stacks' timers), which
checks every connection's scoreboard after each event here.

``Pair``: two stacks back to back (A = 198.18.0.1, B = 198.18.0.2), linked
directly or through a seeded :class:`ImpairmentModel` per direction; every
packet sent is captured, and a test can drop or rewrite packets.

``PeerBench``: one stack (198.18.0.2) and a test that plays the peer
(198.18.0.1) with scapy-crafted segments, packetdrill style: inject a SYN,
expect a SYN-ACK with given options at a given virtual time, and so on.

scapy only crafts and dissects; the stack's own codecs never check the stack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from scapy.all import IP, TCP, Raw

from pystack.links.impair import ImpairmentModel, Impairments
from pystack.links.virtual import Transmission, VirtualNetwork
from pystack.socket import SOCK_STREAM
from pystack.stack import Stack
from pystack.tcp.tcb import TcpConfig

A_ADDR = "198.18.0.1"
B_ADDR = "198.18.0.2"
ME = B_ADDR  # PeerBench: the stack under test
PEER = A_ADDR  # PeerBench: the test playing the other end

AB = "a>b"
BA = "b>a"


def check_scoreboards(stack: Stack) -> None:
    """Every connection's scoreboard counts match its retransmission queue's flags (the
    counts are kept as the flags change; a missed update would skew in_flight for good)."""
    for tcb in stack.tcp.conns.values():
        errors = tcb.scoreboard_errors()
        assert not errors, f"{tcb.key}: {errors}"


@dataclass
class Captured(Transmission):
    """One packet as its sender put it on the wire, dissected by scapy when asked."""

    _ip: IP | None = field(default=None, repr=False)

    @property
    def ip(self) -> IP:
        if self._ip is None:
            self._ip = IP(self.raw)
        return self._ip

    @property
    def tcp(self) -> TCP:
        return self.ip[TCP]

    @property
    def flags(self) -> str:
        return str(self.tcp.flags)

    @property
    def payload(self) -> bytes:
        return bytes(self.tcp.payload)

    @property
    def seq(self) -> int:
        return self.tcp.seq

    @property
    def ack(self) -> int:
        return self.tcp.ack


def option_kinds(tcp: TCP) -> list[str]:
    """Option names in wire order, as scapy names them (MSS, SAckOK, Timestamp, NOP, WScale, SAck)."""
    return [name for name, _ in tcp.options]


def option(tcp: TCP, name: str) -> object:
    for kind, value in tcp.options:
        if kind == name:
            return value
    return None


def has_flags(flags: str, wanted: str) -> bool:
    return set(flags) == set(wanted)


class Pair(VirtualNetwork):
    """Two stacks on a virtual network, wired back to back; every packet captured in ``log``.

    A test may set ``filter(packet)``: None delivers it as is, False drops it,
    bytes are delivered instead.
    """

    def __init__(
        self,
        *,
        config_a: TcpConfig | None = None,
        config_b: TcpConfig | None = None,
        delay: float = 0.0,
        impair_ab: Impairments | None = None,
        impair_ba: Impairments | None = None,
        seed: int = 1,
        mtu: int = 1500,
        max_steps: int = 2_000_000,
    ):
        super().__init__(record=Captured, log=True, check=check_scoreboards, max_steps=max_steps)
        self.a = self.add_stack(seed=seed, tcp_config=config_a)
        self.b = self.add_stack(seed=seed + 7919, tcp_config=config_b)
        self.models = {AB: ImpairmentModel(impair_ab, seed=seed * 2 + 1) if impair_ab else None,
                       BA: ImpairmentModel(impair_ba, seed=seed * 2 + 2) if impair_ba else None}
        self.link(self.attach(self.a, "eth0", A_ADDR, 24, mtu=mtu, direction=AB),
                  self.attach(self.b, "eth0", B_ADDR, 24, mtu=mtu, direction=BA),
                  delay, self.models[AB], self.models[BA])

    # ------------------------------------------------------------ captures

    def packets(self, direction: str | None = None, since: float = -1.0) -> list[Captured]:
        return [p for p in self.log if (direction is None or p.direction == direction) and p.time >= since]

    def data_segments(self, direction: str, since: float = -1.0) -> list[Captured]:
        return [p for p in self.packets(direction, since) if p.payload]

    def clear_log(self) -> None:
        self.log.clear()

    # ------------------------------------------------------------ sockets

    def stack(self, side: str) -> Stack:
        return self.a if side == "a" else self.b

    def connect(self, port: int = 80, setup_client: Callable[[int], None] | None = None,
                setup_listener: Callable[[int], None] | None = None, backlog: int = 16) -> tuple[int, int, int]:
        """A connects to B:port; returns (client fd on A, accepted fd on B, listening fd on B)."""
        lfd = self.b.socket(type=SOCK_STREAM)
        if setup_listener:
            setup_listener(lfd)
        self.b.bind(lfd, ("0.0.0.0", port))
        self.b.listen(lfd, backlog)
        cfd = self.a.socket(type=SOCK_STREAM)
        if setup_client:
            setup_client(cfd)
        sfd = self.establish(self.a, cfd, (B_ADDR, port), self.b, lfd)
        return cfd, sfd, lfd

    def tcb(self, side: str, fd: int):
        return self.stack(side).sockets[fd].tcb

    def exchange(
        self,
        a_fd: int,
        b_fd: int,
        a_data: bytes = b"",
        b_data: bytes = b"",
        timeout: float = 60.0,
        write_sizes: list[int] | None = None,
        read_size: int = 1 << 20,
        close_after: bool = False,
    ) -> tuple[bytes, bytes, float]:
        """Send a_data from A to B and b_data from B to A at once; returns (got at B, got at A, time taken).

        Applications write whenever there is room (``write_sizes`` cycles as the
        size of each write) and read whatever arrives. With ``close_after``
        each side shuts down writing when done and the exchange ends at EOF.
        """
        start = self.clock.now()
        plan = [(self.a, a_fd, a_data, self.b, b_fd), (self.b, b_fd, b_data, self.a, a_fd)]
        sent = [0, 0]
        shut = [False, False]
        got = [bytearray(), bytearray()]
        eof = [False, False]
        sizes = write_sizes or [65536]
        write_index = [0, 0]

        def poll() -> None:
            for i, (src, sfd, data, dst, dfd) in enumerate(plan):
                while sent[i] < len(data):
                    size = sizes[write_index[i] % len(sizes)]
                    try:
                        n = src.send(sfd, data[sent[i] : sent[i] + size])
                    except BlockingIOError:
                        break
                    write_index[i] += 1
                    sent[i] += n
                    if n < size:
                        break
                if close_after and sent[i] == len(data) and not shut[i]:
                    src.shutdown(sfd, 1)
                    shut[i] = True
                while not eof[i]:
                    try:
                        chunk = dst.recv(dfd, read_size)
                    except BlockingIOError:
                        break
                    if not chunk:
                        eof[i] = True
                        break
                    got[i] += chunk

        def done() -> bool:
            if close_after:
                return all(eof)
            return len(got[0]) >= len(a_data) and len(got[1]) >= len(b_data)

        self.run_until(done, timeout, poll)
        return bytes(got[0]), bytes(got[1]), self.clock.now() - start


# ---------------------------------------------------------------- the test plays the peer


class PeerBench:
    """One stack (198.18.0.2 on pst0) driven by scapy segments from a scripted peer (198.18.0.1)."""

    def __init__(self, config: TcpConfig | None = None, mtu: int = 1500, seed: int = 1):
        self.net = VirtualNetwork(record=Captured, check=check_scoreboards)
        self.clock = self.net.clock
        self.stack = self.net.add_stack(seed=seed, tcp_config=config)
        self.port = self.net.attach(self.stack, "pst0", ME, 24, mtu=mtu, direction=BA)
        self.out: list[Captured] = self.port.sent
        self.counters = self.stack.counters

    # ------------------------------------------------------------ time

    @property
    def now(self) -> float:
        return self.clock.now()

    def advance(self, seconds: float) -> None:
        """Let time pass, firing the stack's timers at their exact deadlines."""
        self.net.run(seconds)

    def advance_to(self, when: float) -> None:
        self.advance(max(0.0, when - self.clock.now()))

    # ------------------------------------------------------------ packets in

    def segment(self, sport: int, dport: int, flags: str, seq: int, ack: int = 0, window: int = 65535,
                options: list | None = None, payload: bytes = b"", src: str = PEER, dst: str = ME) -> bytes:
        tcp = TCP(sport=sport, dport=dport, flags=flags, seq=seq & 0xFFFFFFFF, ack=ack & 0xFFFFFFFF,
                  window=window, options=options or [])
        packet = IP(src=src, dst=dst) / tcp
        if payload:
            packet = packet / Raw(payload)
        return bytes(packet)

    def inject(self, packet: bytes) -> None:
        self.net.deliver(self.port, bytes(packet))

    # ------------------------------------------------------------ packets out

    def take(self) -> list[Captured]:
        packets = list(self.out)
        self.out.clear()
        return packets

    def expect(self, flags: str | None = None, seq: int | None = None, ack: int | None = None,
               payload: bytes | None = None, length: int | None = None, at: float | None = None) -> Captured:
        """The next packet the stack sent, checked field by field."""
        assert self.out, "expected a segment, none was sent"
        pkt = self.out.pop(0)
        tcp = pkt.tcp
        if flags is not None:
            assert has_flags(pkt.flags, flags), f"flags {pkt.flags}, expected {flags}"
        if seq is not None:
            assert tcp.seq == seq & 0xFFFFFFFF, f"seq {tcp.seq}, expected {seq & 0xFFFFFFFF}"
        if ack is not None:
            assert tcp.ack == ack & 0xFFFFFFFF, f"ack {tcp.ack}, expected {ack & 0xFFFFFFFF}"
        if payload is not None:
            assert pkt.payload == payload
        if length is not None:
            assert len(pkt.payload) == length, f"payload length {len(pkt.payload)}, expected {length}"
        if at is not None:
            assert abs(pkt.time - at) < 1e-9, f"sent at {pkt.time}, expected {at}"
        return pkt

    def expect_nothing(self) -> None:
        assert not self.out, f"unexpected segments: {[(p.time, p.flags, p.seq, len(p.payload)) for p in self.out]}"


# Peer option lists (scapy), in Linux's order.
LINUX_SYN_OPTIONS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1000, 0)), ("NOP", None), ("WScale", 7)]


@dataclass
class PeerConn:
    """The scripted peer's side of one connection on a PeerBench."""

    bench: PeerBench
    sport: int  # the peer's port
    dport: int  # the stack's port
    seq: int  # the peer's next sequence number
    ack: int = 0  # what the peer acknowledges (the stack's next sequence number)
    ts: int | None = None  # the peer's timestamp clock value to send, None: no timestamps
    ts_ecr: int = 0
    window: int = 65535  # bytes; sent as window >> wscale (unscaled on SYNs)
    wscale: int = 0  # the peer's window scale, as its SYN announced (0 when the stack did not agree)
    fd: int = -1
    listener: int = -1

    def send(self, flags: str = "A", payload: bytes = b"", seq: int | None = None, ack: int | None = None,
             window: int | None = None, options: list | None = None, sack: list[tuple[int, int]] | None = None,
             advance: bool = True) -> None:
        opts = list(options or [])
        if options is None and self.ts is not None:
            opts = [("NOP", None), ("NOP", None), ("Timestamp", (self.ts, self.ts_ecr))]
        if sack:
            opts += [("NOP", None), ("NOP", None), ("SAck", tuple(x for block in sack for x in block))]
        s = self.seq if seq is None else seq
        a = self.ack if ack is None else ack
        win = self.window if window is None else window
        raw = min(win if "S" in flags else win >> self.wscale, 0xFFFF)
        self.bench.inject(self.bench.segment(self.sport, self.dport, flags, s, a, raw, opts, payload))
        if advance and seq is None:
            self.seq = (self.seq + len(payload) + ("S" in flags) + ("F" in flags)) & 0xFFFFFFFF

    def note(self, pkt: Captured) -> Captured:
        """Remember the stack's timestamp (for our TSecr) from a segment it sent."""
        value = option(pkt.tcp, "Timestamp")
        if value is not None:
            self.ts_ecr = value[0]
        return pkt


def passive_open(bench: PeerBench, port: int = 80, peer_port: int = 40000, peer_isn: int = 1_000_000,
                 syn_options: list | None = None, backlog: int = 16, window: int = 65535,
                 setup_listener: Callable[[int], None] | None = None, rtt: float = 0.0) -> PeerConn:
    """The peer connects to a listening stack: SYN, SYN-ACK, ACK; the stack's socket accepted.

    The handshake's last ACK comes ``rtt`` after the SYN-ACK: the stack's first RTT sample.
    """
    stack = bench.stack
    lfd = stack.socket(type=SOCK_STREAM)
    if setup_listener:
        setup_listener(lfd)
    stack.bind(lfd, ("0.0.0.0", port))
    stack.listen(lfd, backlog)
    opts = LINUX_SYN_OPTIONS if syn_options is None else syn_options
    conn = PeerConn(bench, peer_port, port, peer_isn, window=window)
    ts = option_value(opts, "Timestamp")
    conn.ts = ts[0] if ts else None
    conn.send("S", options=opts)
    synack = bench.expect(flags="SA", ack=peer_isn + 1)
    conn.ack = (synack.seq + 1) & 0xFFFFFFFF
    conn.note(synack)
    agreed = option(synack.tcp, "WScale") is not None
    conn.wscale = int(option_value(opts, "WScale") or 0) if agreed else 0  # type: ignore[arg-type]
    bench.advance(rtt)
    if conn.ts is not None:
        conn.ts += int(rtt * 1000)
    conn.send("A")
    conn.fd, _ = stack.accept(lfd)
    conn.listener = lfd
    return conn


def active_open(bench: PeerBench, port: int = 80, peer_isn: int = 5_000_000,
                synack_options: list | None = None, window: int = 65535,
                setup_client: Callable[[int], None] | None = None) -> PeerConn:
    """The stack connects to the peer: SYN, the peer's SYN-ACK, the stack's ACK."""
    stack = bench.stack
    fd = stack.socket(type=SOCK_STREAM)
    if setup_client:
        setup_client(fd)
    try:
        stack.connect(fd, (PEER, port))
    except BlockingIOError:
        pass
    syn = bench.expect(flags="S")
    opts = LINUX_SYN_OPTIONS if synack_options is None else synack_options
    ts = option_value(opts, "Timestamp")
    conn = PeerConn(bench, port, syn.tcp.sport, peer_isn, ack=(syn.seq + 1) & 0xFFFFFFFF, window=window, fd=fd)
    if ts:
        conn.ts = ts[0]
        conn.note(syn)
        opts = [(k, (ts[0], conn.ts_ecr) if k == "Timestamp" else v) for k, v in opts]
    conn.send("SA", options=opts)
    if option(syn.tcp, "WScale") is not None:
        conn.wscale = int(option_value(opts, "WScale") or 0)  # type: ignore[arg-type]
    bench.expect(flags="A", seq=conn.ack, ack=peer_isn + 1)
    assert stack.connect_result(fd) == 0
    return conn


def option_value(options: list, name: str) -> object:
    for kind, value in options:
        if kind == name:
            return value
    return None
