"""The differential test bench: one scenario, written once with scapy, run against both DUTs.

A scenario is an ``async def scenario(tb: Testbench)``. It crafts
packets with scapy (``tb.send(tb.ip() / ICMP() / b"x")``), makes socket
calls on the DUT (``await tb.call("accept", listener.accept)``), and
collects what the DUT sends back (``await tb.expect("reply")``). Every
observation lands in the bench's transcript, normalized
(:class:`~conformance.normalize.Normalizer`); the transcripts of
the Linux run and the pystack run are then compared record by record and
field by field (:func:`compare`), through the documented
:data:`~conformance.normalize.ALLOWANCES`.

Scenarios that expect silence from the DUT follow it with a positive
control (a packet that must be answered), so that a broken bench cannot
pass for agreement.
"""

from __future__ import annotations

import errno as _errno
import inspect
import socket as _socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from scapy.layers.inet import IP, TCP
from scapy.packet import Packet, Raw

from .dut import Dut, DutConfig, DutSocket, Unsupported, open_dut
from .normalize import ALLOWANCES, FIN, SYN, Normalizer, describe, parse_ipv4, parse_tcp

TIME_FLOOR = 0.02
TIME_SHARE = 0.25
BENCH_IP_ID = 0x4242  # the bench's own IP ID, so that quotes in ICMP errors compare exactly
FIRST_BENCH_PORT = 40000

# Linux's compiled-in defaults for the settings a fresh namespace would
# otherwise inherit from the host (tcp_rmem/tcp_wmem are copied from the
# host's namespace, the congestion control too): pinned, so that a tuned
# host does not leak into the comparison. pystack gets the same values.
BASELINE_SYSCTLS = {
    "net.ipv4.tcp_rmem": "4096 131072 6291456",
    "net.ipv4.tcp_wmem": "4096 16384 4194304",
    "net.ipv4.tcp_congestion_control": "cubic",
}


@dataclass
class Record:
    kind: str  # packets, call, note
    label: str
    value: Any  # packets: list of (time, normalized dict); call/note: a plain value

    def text(self) -> str:
        if self.kind != "packets":
            return f"{self.label}: {self.value}"
        lines = [f"{self.label}: {len(self.value)} packet(s)"]
        lines += [f"    +{t:.3f}s {summary}" for t, _view, summary in self.value]
        return "\n".join(lines)


@dataclass
class TcpPeer:
    """The bench's end of one TCP connection: ports, sequence numbers, a simple in-order receiver."""

    tb: Testbench
    sport: int
    dport: int
    isn: int = 1_000_000
    window: int = 65535
    snd_nxt: int = 0
    rcv_nxt: int = 0
    ts_val: int = 5000
    timestamps: bool = False  # send TS options on every segment once the handshake had them

    def __post_init__(self) -> None:
        self.snd_nxt = self.isn
        self.tb.peers.append(self)

    def segment(self, flags: str = "A", data: bytes = b"", *, seq: int | None = None, ack: int | None = None,
                window: int | None = None, options: list | None = None, urgent: int = 0, tos: int = 0) -> Packet:
        if options is None:
            options = []
            if self.timestamps:
                self.ts_val += 1
                options = [("NOP", None), ("NOP", None), ("Timestamp", (self.ts_val, self.tb.last_dut_ts))]
        tcp = TCP(sport=self.sport, dport=self.dport, seq=self.snd_nxt if seq is None else seq,
                  ack=(self.rcv_nxt if ack is None else ack) if "A" in flags else (ack or 0),
                  flags=flags, window=self.window if window is None else window, options=options,
                  urgptr=urgent)
        packet = self.tb.ip(tos=tos) / tcp
        return packet / Raw(data) if data else packet

    def send(self, flags: str = "A", data: bytes = b"", *, advance: bool = True, **fields: Any) -> None:
        """Send one segment; unless ``seq`` was given or ``advance`` is False, move snd_nxt past it."""
        self.tb.send(self.segment(flags, data, **fields))
        if advance and "seq" not in fields:
            self.snd_nxt = (self.snd_nxt + len(data) + ("S" in flags) + ("F" in flags)) & 0xFFFFFFFF

    def observe(self, sport: int, dport: int, seq: int, flags: int, length: int) -> None:
        if (sport, dport) != (self.dport, self.sport):
            return
        if flags & SYN:
            self.rcv_nxt = (seq + 1) & 0xFFFFFFFF
            return
        if seq == self.rcv_nxt:
            self.rcv_nxt = (seq + length + (1 if flags & FIN else 0)) & 0xFFFFFFFF


class Testbench:
    def __init__(self, dut: Dut):
        self.dut = dut
        self.norm = Normalizer(dut.address, dut.peer)
        self.transcript: list[Record] = []
        self.peers: list[TcpPeer] = []
        self.ports = iter(range(FIRST_BENCH_PORT, FIRST_BENCH_PORT + 10000))
        self.last_dut_ts = 0
        self.sockets: list[DutSocket] = []  # every DUT socket stays open until the scenario ends

    def socket(self, type: int = _socket.SOCK_STREAM) -> DutSocket:
        """A socket on the DUT, owned by the bench (a kernel socket would close when collected)."""
        sock = self.dut.socket(type)
        self.sockets.append(sock)
        return sock

    # -- stimuli

    def ip(self, **fields: Any) -> IP:
        """An IP header from the bench to the DUT (fixed IP ID, so quoted headers compare)."""
        fields.setdefault("id", BENCH_IP_ID)
        fields.setdefault("src", self.dut.peer)
        fields.setdefault("dst", self.dut.address)
        return IP(**fields)

    def send(self, *packets: Packet | bytes) -> None:
        for packet in packets:
            data = packet if isinstance(packet, bytes) else bytes(packet)
            self.norm.sent_by_bench(data)
            self.dut.inject(data)

    def port(self) -> int:
        return next(self.ports)

    def peer(self, dport: int, **fields: Any) -> TcpPeer:
        return TcpPeer(self, self.port(), dport, **fields)

    # -- observations

    async def expect(self, label: str, within: float = 0.3, count: int | None = None,
                     record: bool = True) -> list[bytes]:
        """Record every packet the DUT sends within ``within`` seconds (or until ``count`` came).

        ``record=False`` collects without recording, for a scenario that notes a digest of the
        packets instead (a trend such as a growing window, where packet-by-packet detail is noise).
        """
        start = self.dut.now()
        got: list[tuple[float, bytes]] = []
        while count is None or len(got) < count:
            item = await self.dut.receive(start + within)
            if item is None:
                break
            got.append(item)
            self._observe(item[1])
        if record:
            self.transcript.append(Record("packets", label, [
                (when - start, self.norm.packet(data), describe(data)) for when, data in got]))
        return [data for _, data in got]

    def _observe(self, data: bytes) -> None:
        try:
            ip = parse_ipv4(data)
        except ValueError:
            return
        if ip.protocol != 6 or ip.frag_offset or len(ip.payload) < 20:
            return
        tcp = parse_tcp(ip.payload)
        for kind, value in tcp.options:
            if kind == 8 and len(value) == 8:
                self.last_dut_ts = int.from_bytes(value[:4], "big")
        for peer in self.peers:
            peer.observe(tcp.sport, tcp.dport, tcp.seq, tcp.flags, len(tcp.payload))

    async def call(self, label: str, fn: Callable[..., Any], *args: Any, timeout: float = 1.0) -> Any:
        """Make a DUT call; record its result, its errno name, or "blocked" if it did not return."""
        result: Any = None
        with trio.move_on_after(timeout) as scope:
            try:
                result = fn(*args)
                if inspect.isawaitable(result):
                    result = await result
            except OSError as exc:
                self.transcript.append(Record("call", label, _errno.errorcode.get(exc.errno or 0, str(exc))))
                return exc
            except Unsupported as missing:  # the pystack DUT lacks the call: a difference, recorded
                self.transcript.append(Record("call", label, f"unsupported: {missing}"))
                return missing
        if scope.cancelled_caught:
            self.transcript.append(Record("call", label, "blocked"))
            return None
        self.transcript.append(Record("call", label, self._plain(result)))
        return result

    def note(self, label: str, value: Any) -> None:
        self.transcript.append(Record("note", label, self._plain(value)))

    def _plain(self, value: Any) -> Any:
        if isinstance(value, DutSocket):
            return "socket"
        if isinstance(value, tuple):
            return tuple(self._plain(v) for v in value)
        if isinstance(value, str):
            return {self.dut.address: "dut", self.dut.peer: "bench"}.get(value, value)
        if isinstance(value, bytes):
            return value if len(value) <= 32 else f"{len(value)} bytes"
        return value

    # -- TCP conveniences

    async def listener(self, port: int = 8080, backlog: int = 5) -> DutSocket:
        sock = self.socket(_socket.SOCK_STREAM)
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        await sock.bind((self.dut.address, port))
        sock.listen(backlog)
        self.norm.dut_ports.add(port)
        return sock

    async def passive_open(self, port: int = 8080, options: list | None = None, window: int = 65535,
                           label: str = "handshake") -> tuple[TcpPeer, DutSocket, DutSocket]:
        """Listen on the DUT, connect from the bench; returns (peer, listener, accepted socket)."""
        listener = await self.listener(port)
        peer = self.peer(port, window=window)
        syn_options = [("MSS", 1460)] if options is None else options
        peer.timestamps = any(o[0] == "Timestamp" for o in syn_options)
        peer.send("S", options=syn_options)
        await self.expect(f"{label}: SYN-ACK", count=1)
        peer.send("A")
        accepted = await self.call(f"{label}: accept", listener.accept)
        if not isinstance(accepted, tuple):
            raise AssertionError(f"accept did not return a connection on {self.dut.kind}: {accepted!r}")
        self.sockets.append(accepted[0])
        return peer, listener, accepted[0]

    async def active_open(self, port: int = 9000, options: list | None = None, window: int = 65535,
                          label: str = "connect") -> tuple[TcpPeer, DutSocket]:
        """The DUT connects to the bench's ``port``; the bench completes the handshake."""
        sock = self.socket(_socket.SOCK_STREAM)
        sock.set_nonblocking(True)
        await self.call(f"{label}: connect", sock.connect, (self.dut.peer, port))
        packets = await self.expect(f"{label}: SYN", count=1)
        if not packets:
            raise AssertionError(f"no SYN from the {self.dut.kind} DUT")
        syn = parse_tcp(parse_ipv4(packets[0]).payload)
        peer = TcpPeer(self, port, syn.sport, window=window)
        peer.rcv_nxt = (syn.seq + 1) & 0xFFFFFFFF
        synack_options = [("MSS", 1460)] if options is None else options
        peer.timestamps = any(o[0] == "Timestamp" for o in synack_options)
        if peer.timestamps:
            ts = next(v for k, v in syn.options if k == 8)
            self.last_dut_ts = int.from_bytes(ts[:4], "big")
            synack_options = [(k, (v[0], self.last_dut_ts)) if k == "Timestamp" else (k, v)
                              for k, v in synack_options]
        peer.send("SA", options=synack_options)
        await self.expect(f"{label}: ACK", count=1)
        sock.set_nonblocking(False)
        return peer, sock


# ---------------------------------------------------------------- running and comparing


@dataclass
class Scenario:
    name: str
    run: Callable[[Testbench], Awaitable[None]]
    doc: str = ""
    sysctls: dict[str, str] = field(default_factory=dict)
    timeout: float = 20.0


async def run_scenario(scenario: Scenario, kind: str) -> list[Record]:
    """Run one scenario on a fresh DUT of ``kind``; its transcript (an "error" note if it broke)."""
    config = DutConfig(sysctls={**BASELINE_SYSCTLS, **scenario.sysctls}, realtime_priority=False)
    async with open_dut(kind, config) as dut:
        tb = Testbench(dut)
        with trio.move_on_after(scenario.timeout) as scope:
            await scenario.run(tb)
        if scope.cancelled_caught:
            tb.note("scenario", f"timed out after {scenario.timeout} s")
        return tb.transcript


def _times_close(a: float, b: float) -> bool:
    """Within 25% or 20 ms: real-time noise passes, a 40 ms delayed ACK against an immediate one does not."""
    return abs(a - b) <= max(TIME_FLOOR, TIME_SHARE * max(a, b))


def compare(linux: list[Record], pystack: list[Record]) -> list[str]:
    """Field-by-field differences between two transcripts (empty: they agree)."""
    problems: list[str] = []
    for index in range(max(len(linux), len(pystack))):
        if index >= len(linux) or index >= len(pystack):
            extra = (pystack if index >= len(linux) else linux)[index]
            who = "pystack" if index >= len(linux) else "linux"
            problems.append(f"only {who} has record {index} ({extra.label})")
            continue
        a, b = linux[index], pystack[index]
        if (a.kind, a.label) != (b.kind, b.label):
            problems.append(f"record {index}: linux {a.kind} {a.label!r} vs pystack {b.kind} {b.label!r}")
            break
        if a.kind != "packets":
            if a.value != b.value:
                problems.append(f"{a.label}: linux={a.value!r} pystack={b.value!r}")
            continue
        if len(a.value) != len(b.value):
            problems.append(f"{a.label}: linux sent {len(a.value)} packet(s), pystack {len(b.value)}\n"
                            f"  linux:   {[s for _, _, s in a.value]}\n  pystack: {[s for _, _, s in b.value]}")
        for number, ((ta, va, _sa), (tb_, vb, _sb)) in enumerate(zip(a.value, b.value, strict=False)):
            for key in sorted(set(va) | set(vb)):
                x, y = va.get(key, "(absent)"), vb.get(key, "(absent)")
                if key in ALLOWANCES:
                    x, y = ALLOWANCES[key].view(x), ALLOWANCES[key].view(y)
                if x != y:
                    problems.append(f"{a.label} #{number} {key}: linux={va.get(key, '(absent)')!r} "
                                    f"pystack={vb.get(key, '(absent)')!r}")
            if not _times_close(ta, tb_):
                problems.append(f"{a.label} #{number} time: linux=+{ta:.3f}s pystack=+{tb_:.3f}s")
    return problems


def transcript_text(records: list[Record]) -> str:
    return "\n".join(r.text() for r in records)

