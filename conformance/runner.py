"""Run a packetdrill script against a DUT, with packetdrill's semantics.

What is faithful to packetdrill (gtests/net/packetdrill/run*.c):

- Times: relative events are relative to the moment the previous event
  finished, except consecutive inbound packets, which are anchored to the
  previous one's script time; an event is on time within
  ``--tolerance_usecs`` (default 4 ms) or 12.5% of the gap since the
  previous event, whichever is larger; ``*`` means any time and
  ``a~b`` a range.
- Outbound packets are sniffed as soon as the event is reached and
  checked field by field after mapping live values into script space:
  sequence and ACK numbers (and SACK blocks) relative to each side's ISN,
  TS val relative to the first TS val seen (checked only with
  ``--tcp_ts_tick_usecs``), flags, window (only when the script gives
  ``win``), urgent pointer, options in order (``<...>``: not checked),
  payload. Packets of other connections are ignored.
- TSO: where the script expects one segment larger than the MSS, a run
  of segments covering the same range is accepted (packetdrill's
  aggregation, on unless ``--strict_segments``): each piece must agree
  with the previous one in flags, ACK, window and header length, and
  continue its sequence range; PSH and FIN count from the last piece.
- Inbound packets get live addresses, ports and sequence numbers, and a
  TS ecr is mapped back to the live TS val the script's value stood for.
- System calls with an end time (``+0...0.2 accept(...)``) run in the
  background while the script goes on, and must return by that time; the
  next system call waits for them (at most 1 s). Others must return at
  once. ``...`` arguments get live values: ``bind`` and ``connect`` use
  port 8080, the DUT's address and the bench's.
- ``%{ assert tcpi_... }%`` code blocks are evaluated (a restricted
  expression evaluator, no ``exec``) against the socket under test's
  ``tcp_info`` when the event is reached.

What differs, deliberately: the init command (``defaults.sh``) and
sysctl commands are emulated, not executed (:mod:`.commands`); a script
whose lines need something this runner does not do (IPv6, UDP and ICMP
packet lines, encapsulation, poll/epoll/sendfile, unknown commands) is
skipped with the reason, before anything runs. A code block naming a
``tcpi_`` field the DUT cannot report is skipped (and noted), the rest of
the script runs.
"""

from __future__ import annotations

import ast
import errno as _errno
import operator
import shlex
import struct
from dataclasses import dataclass, field
from pathlib import Path

import trio
import trio.testing

from pystack.addr import aton
from pystack.checksum import internet_checksum, pseudo_header_sum
from pystack.host.netns import NeedsNetAdmin

from .dut import PACKETDRILL_DEFAULTS, Dut, DutConfig, DutSocket, open_dut, run_on
from .normalize import (
    ACK,
    AE,
    CWR,
    ECE,
    EOL,
    FASTOPEN,
    FIN,
    MD5,
    MSS,
    NOP,
    PSH,
    RST,
    SACK,
    SACK_PERM,
    SYN,
    TIMESTAMP,
    URG,
    WSCALE,
    TcpHeader,
    describe,
    flags_text,
    format_options,
    parse_ipv4,
    parse_tcp,
)
from .packetdrill import (
    ELLIPSIS,
    Call,
    CodeSpec,
    CommandSpec,
    Event,
    Or,
    PacketSpec,
    ParseError,
    Script,
    Str,
    Struct,
    Symbol,
    SyscallSpec,
    TcpOption,
    parse_file,
)

BIND_PORT = 8080  # packetdrill's --bind_port and --connect_port
FIRST_REMOTE_PORT = 48000  # the bench's ports for passive connections (packetdrill picks ephemerals)
DEFAULT_TOLERANCE_USECS = 4000
DEFAULT_TOLERANCE_PERCENT = 12.5
BLOCKING_WAIT = 1.0  # packetdrill's await_idle_thread limit
NONBLOCKING_LIMIT = 1.0  # a call that should return at once, but has not after this, has blocked
LATE_GRACE = 1.0  # how long past its time an outbound packet is still waited for (to report it)
ANY_TIME_LIMIT = 10.0  # how long ``*`` waits

PASS, FAIL, SKIP, ERROR = "pass", "fail", "skip", "error"


@dataclass
class Outcome:
    status: str  # pass, fail, skip, error
    line: int | None = None
    message: str = ""
    notes: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    trace: list[str] = field(default_factory=list)  # every packet in and out, and every call

    @property
    def passed(self) -> bool:
        return self.status == PASS

    def brief(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.message}".splitlines()[0] if (self.message or where) else ""


class Failure(Exception):
    def __init__(self, line: int | None, message: str):
        super().__init__(message)
        self.line = line
        self.message = message


class Skip(Exception):
    def __init__(self, line: int | None, reason: str):
        super().__init__(reason)
        self.line = line
        self.reason = reason


# ---------------------------------------------------------------- symbols

SYMBOLS: dict[str, int] = {
    "AF_INET": 2, "AF_INET6": 10, "AF_UNSPEC": 0, "PF_INET": 2,
    "SOCK_STREAM": 1, "SOCK_DGRAM": 2, "SOCK_RAW": 3,
    "SOCK_NONBLOCK": 0o4000, "SOCK_CLOEXEC": 0o2000000,
    "IPPROTO_IP": 0, "IPPROTO_TCP": 6, "IPPROTO_UDP": 17, "IPPROTO_ICMP": 1,
    "SOL_SOCKET": 1, "SOL_TCP": 6, "SOL_IP": 0, "SOL_UDP": 17,
    "SO_DEBUG": 1, "SO_REUSEADDR": 2, "SO_TYPE": 3, "SO_ERROR": 4, "SO_DONTROUTE": 5,
    "SO_BROADCAST": 6, "SO_SNDBUF": 7, "SO_RCVBUF": 8, "SO_KEEPALIVE": 9, "SO_OOBINLINE": 10,
    "SO_NO_CHECK": 11, "SO_PRIORITY": 12, "SO_LINGER": 13, "SO_REUSEPORT": 15,
    "SO_RCVLOWAT": 18, "SO_SNDLOWAT": 19, "SO_RCVTIMEO": 20, "SO_SNDTIMEO": 21,
    "SO_SNDBUFFORCE": 32, "SO_RCVBUFFORCE": 33, "SO_MARK": 36, "SO_ZEROCOPY": 60,
    "TCP_NODELAY": 1, "TCP_MAXSEG": 2, "TCP_CORK": 3, "TCP_KEEPIDLE": 4, "TCP_KEEPINTVL": 5,
    "TCP_KEEPCNT": 6, "TCP_SYNCNT": 7, "TCP_LINGER2": 8, "TCP_DEFER_ACCEPT": 9,
    "TCP_WINDOW_CLAMP": 10, "TCP_INFO": 11, "TCP_QUICKACK": 12, "TCP_CONGESTION": 13,
    "TCP_USER_TIMEOUT": 18, "TCP_FASTOPEN": 23, "TCP_NOTSENT_LOWAT": 25,
    "IP_TOS": 1, "IP_TTL": 2, "IP_MTU_DISCOVER": 10, "IP_MTU": 14,
    "MSG_OOB": 0x1, "MSG_PEEK": 0x2, "MSG_DONTROUTE": 0x4, "MSG_TRUNC": 0x20,
    "MSG_DONTWAIT": 0x40, "MSG_EOR": 0x80, "MSG_WAITALL": 0x100, "MSG_NOSIGNAL": 0x4000,
    "MSG_MORE": 0x8000, "MSG_ERRQUEUE": 0x2000, "MSG_FASTOPEN": 0x20000000, "MSG_ZEROCOPY": 0x4000000,
    "F_GETFL": 3, "F_SETFL": 4, "F_GETFD": 1, "F_SETFD": 2,
    "O_RDONLY": 0, "O_WRONLY": 1, "O_RDWR": 2, "O_NONBLOCK": 0o4000, "O_CLOEXEC": 0o2000000,
    "SHUT_RD": 0, "SHUT_WR": 1, "SHUT_RDWR": 2,
}

SUPPORTED_SYSCALLS = {
    "socket", "bind", "listen", "accept", "connect", "read", "recv", "recvfrom", "write", "send",
    "sendto", "sendmsg", "writev", "readv", "close", "shutdown", "setsockopt", "getsockopt", "fcntl",
}
SUPPORTED_OPTIONS = {"tolerance_usecs", "tolerance_percent", "tcp_ts_tick_usecs", "strict_segments",
                     "ip_version", "non_fatal", "verbose", "tcp_ts_ecr_scaled"}


# ---------------------------------------------------------------- commands (emulated)


def emulate_command(text: str, line: int | None = None) -> dict[str, str]:
    """The sysctl settings a packetdrill command line stands for; Skip if it is not one we emulate.

    ``defaults.sh`` becomes :data:`~conformance.dut.PACKETDRILL_DEFAULTS`;
    ``sysctl [-q] [-w] name=value``, ``set_sysctls.py /proc/sys/x/y=v`` and
    ``echo v > /proc/sys/x/y`` become settings; ``ip tcp_metrics flush``,
    ``tc qdisc`` and the ``sysctl_restore`` clean-up need nothing (every
    run has a fresh namespace).
    """
    settings: dict[str, str] = {}
    for raw in text.replace(";", "\n").splitlines():
        command = raw.strip()
        if not command:
            continue
        try:
            words = shlex.split(command)
        except ValueError:
            raise Skip(line, f"command not emulated: {command}") from None
        head = words[0]
        if head.endswith("defaults.sh"):
            settings.update(PACKETDRILL_DEFAULTS)
        elif head == "sysctl":
            for word in words[1:]:
                if word.startswith("-"):
                    continue
                name, sep, value = word.partition("=")
                if not sep:
                    raise Skip(line, f"command not emulated: {command}")
                settings[name.strip()] = value.strip()
        elif head.endswith("set_sysctls.py"):
            for word in words[1:]:
                path, sep, value = word.partition("=")
                if not sep or not path.startswith("/proc/sys/"):
                    raise Skip(line, f"command not emulated: {command}")
                settings[path.removeprefix("/proc/sys/").replace("/", ".")] = value
        elif head == "echo" and len(words) == 4 and words[2] == ">" and words[3].startswith("/proc/sys/"):
            settings[words[3].removeprefix("/proc/sys/").replace("/", ".")] = words[1]
        elif words[:2] == ["ip", "tcp_metrics"] or head == "tc" or "sysctl_restore" in head:
            continue
        else:
            raise Skip(line, f"command not emulated: {command}")
    return settings


def plan(script: Script) -> DutConfig:
    """The DUT settings a script needs; raises Skip when the script needs what the runner cannot do."""
    for name, value in script.options.items():
        if name not in SUPPORTED_OPTIONS:
            raise Skip(None, f"option --{name} is not supported")
        if name == "ip_version" and value != "ipv4":
            raise Skip(None, f"--ip_version={value}: only IPv4 is supported")
    sysctls = emulate_command(script.init_command) if script.init_command else {}
    for event in script.events:
        action = event.action
        if isinstance(action, PacketSpec):
            if action.unsupported:
                raise Skip(event.line, action.unsupported)
            if action.protocol != "tcp":
                raise Skip(event.line, f"{action.protocol.upper()} packet lines are not supported")
        elif isinstance(action, SyscallSpec):
            if action.name not in SUPPORTED_SYSCALLS:
                raise Skip(event.line, f"system call {action.name}() is not supported")
        elif isinstance(action, CommandSpec):
            emulate_command(action.text, event.line)  # raises Skip if not emulated
    return DutConfig(sysctls=sysctls)


# ---------------------------------------------------------------- the connection under test


@dataclass
class Flow:
    """packetdrill's "socket under test": the live 4-tuple and the ISNs that map script to live."""

    protocol: str
    state: str  # listening, syn_received, synack_sent, connecting, syn_sent, established
    local: tuple[str, int]
    remote: tuple[str, int]
    script_local_isn: int = 0
    live_local_isn: int = 0
    script_remote_isn: int = 0
    live_remote_isn: int = 0
    ts_map: dict[int, int] = field(default_factory=dict)  # script TS val -> live TS val
    first_ts: tuple[int, int] | None = None  # (script, live) of the first outbound TS val

    @property
    def local_offset(self) -> int:
        return (self.live_local_isn - self.script_local_isn) & 0xFFFFFFFF

    @property
    def remote_offset(self) -> int:
        return (self.live_remote_isn - self.script_remote_isn) & 0xFFFFFFFF


@dataclass
class _Blocking:
    event: Event
    expected_end: float
    start: float
    done: trio.Event = field(default_factory=trio.Event)


@dataclass
class _Live:
    time: float
    tcp: TcpHeader
    ip_tos: int
    ip_ttl: int
    raw: bytes


# ---------------------------------------------------------------- code blocks


class _Unavailable(Exception):
    pass


_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.BitAnd: operator.and_,
           ast.BitOr: operator.or_}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge}


def evaluate_code(text: str, names: dict[str, int]) -> str | None:
    """Run a ``%{ assert tcpi_x == 10, tcpi_x }%`` block: None if every assert holds, else the failure.

    Only asserts over ``tcpi_*`` names, numbers and arithmetic/comparisons
    are understood; a name the DUT does not report raises _Unavailable.
    """
    try:
        tree = ast.parse(text.strip())
    except SyntaxError as exc:
        raise _Unavailable(f"code block is not Python: {exc.msg}") from None

    def value(node: ast.AST) -> object:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in names:
                raise _Unavailable(f"{node.id} is not reported by this DUT")
            return names[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)  # type: ignore[operator]
        if isinstance(node, ast.BoolOp):
            results = [value(v) for v in node.values]
            return all(results) if isinstance(node.op, ast.And) else any(results)
        if isinstance(node, ast.Compare):
            left = value(node.left)
            for op, right_node in zip(node.ops, node.comparators, strict=True):
                if type(op) not in _COMPARE:
                    raise _Unavailable("unsupported comparison in code block")
                right = value(right_node)
                if not _COMPARE[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.Tuple):
            return tuple(value(e) for e in node.elts)
        raise _Unavailable(f"unsupported code in block: {ast.unparse(node)}")

    for statement in tree.body:
        if isinstance(statement, ast.Assert):
            if not value(statement.test):
                detail = f" ({value(statement.msg)})" if statement.msg is not None else ""
                return f"assert {ast.unparse(statement.test)} failed{detail}"
        elif isinstance(statement, ast.Expr):
            value(statement.value)
        else:
            raise _Unavailable(f"unsupported statement in code block: {ast.unparse(statement)}")
    return None


# ---------------------------------------------------------------- the runner


class Runner:
    def __init__(self, script: Script, dut: Dut):
        self.script = script
        self.dut = dut
        opts = script.options
        self.tolerance = float(opts.get("tolerance_usecs") or DEFAULT_TOLERANCE_USECS) / 1e6
        self.tolerance_percent = float(opts.get("tolerance_percent") or DEFAULT_TOLERANCE_PERCENT)
        tick = opts.get("tcp_ts_tick_usecs")
        self.ts_tick = float(tick) / 1e6 if tick else 0.0
        self.strict_segments = "strict_segments" in opts
        self.fds: dict[int, DutSocket] = {}
        self.nonblocking: set[int] = set()
        self.flow: Flow | None = None
        self.listening = False
        self.bound_port = BIND_PORT
        self.test_socket: DutSocket | None = None
        self.remote_ports = iter(range(FIRST_REMOTE_PORT, FIRST_REMOTE_PORT + 1000))
        self.t0 = 0.0
        self.last_event: Event | None = None
        self.last_time = 0.0  # script time of the last event
        self.blocking: _Blocking | None = None
        self.async_failure: Failure | None = None
        self.notes: list[str] = []
        self.trace: list[str] = []
        self.nursery: trio.Nursery | None = None

    def log(self, text: str, when: float | None = None) -> None:
        self.trace.append(f"{self.live() if when is None else when:9.6f} {text}")

    # -- time

    def live(self) -> float:
        """Seconds since the script started, on the DUT's clock."""
        return self.dut.now() - self.t0

    def tolerance_for(self, expected: float, last: float | None) -> float:
        tolerance = self.tolerance
        if last is not None:
            tolerance = max(tolerance, self.tolerance_percent / 100.0 * (expected - last))
        return tolerance + self.dut.timing_slack

    def check_time(self, what: str, kind: str, expected: float, expected_end: float | None,
                   actual: float, last: float | None, line: int) -> None:
        if kind == "any":
            return
        tolerance = self.tolerance_for(expected, last)
        if expected_end is not None:
            if actual < expected - tolerance or actual > expected_end + tolerance:
                raise Failure(line, f"timing error: expected {what} in time range "
                                    f"{expected:.6f}~{expected_end:.6f} sec but happened at {actual:.6f} sec")
        elif abs(actual - expected) > tolerance:
            raise Failure(line, f"timing error: expected {what} at {expected:.6f} sec but happened at "
                                f"{actual:.6f} sec; tolerance {tolerance:.6f} sec")

    def schedule(self, event: Event) -> tuple[float, float | None, float | None]:
        """Script times (start, range end, blocking end) of ``event``, as packetdrill adjusts them."""
        spec = event.time
        if spec.kind == "absolute" or spec.kind == "absolute_range":
            return spec.start, spec.end, spec.blocking_end
        if self.last_event is not None and _anchored(self.last_event) and _anchored(event):
            offset = self.last_time
        else:
            offset = self.live()
        start = offset + spec.start
        end = offset + spec.end if spec.end is not None else None
        blocking_end = offset + spec.blocking_end if spec.blocking_end is not None else None
        return start, end, blocking_end

    async def wait_until(self, event: Event, when: float) -> None:
        await self.dut.sleep_until(self.t0 + when)
        if self.last_event is not None:
            self.check_time(_description(event), event.time.kind, when, None, self.live(),
                            self.last_time, event.line)

    # -- main loop

    async def run(self) -> None:
        events = self.script.events
        if events[0].time.kind != "absolute" or events[0].time.start != 0:
            raise Failure(events[0].line, "first event should be at time 0")
        self.t0 = self.dut.now()
        stopped: Failure | Skip | None = None
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            try:
                for event in events:
                    start, end, blocking_end = self.schedule(event)
                    await self.step(event, start, end, blocking_end)
                    self.raise_async_failure()
                    self.last_event = event
                    self.last_time = start
                await self.await_idle(None, at_end=True)
            except (Failure, Skip) as exc:
                stopped = exc
            nursery.cancel_scope.cancel()
        if stopped is not None:
            raise stopped

    def raise_async_failure(self) -> None:
        if self.async_failure is not None:
            raise self.async_failure

    async def step(self, event: Event, start: float, end: float | None, blocking_end: float | None) -> None:
        action = event.action
        if isinstance(action, PacketSpec):
            if action.direction == "<":
                await self.wait_until(event, start)
                self.inbound(event, action)
            else:
                await self.outbound(event, action, start, end)
        elif isinstance(action, SyscallSpec):
            await self.syscall(event, action, start, blocking_end)
        elif isinstance(action, CommandSpec):
            await self.wait_until(event, start)
            for name, value in emulate_command(action.text, event.line).items():
                if not self.dut.set_sysctl(name, value):
                    self.notes.append(f"line {event.line}: {name} has no counterpart on {self.dut.kind}")
        elif isinstance(action, CodeSpec):
            await self.wait_until(event, start)
            self.code(event, action)

    # -- inbound packets

    def inbound(self, event: Event, spec: PacketSpec) -> None:
        flow = self.flow
        if spec.has("S") and not spec.has(".") and (flow is None or flow.state == "listening"):
            if not self.listening:
                raise Failure(event.line, "inbound SYN but no socket is listening")
            flow = self.flow = Flow(
                "tcp", "syn_received", (self.dut.address, self.bound_port),
                (self.dut.peer, next(self.remote_ports)),
                script_remote_isn=spec.seq, live_remote_isn=spec.seq,
            )
        if flow is None or flow.state == "listening":
            raise Failure(event.line, "no matching socket for script packet")
        if flow.state == "synack_sent" and spec.has("."):
            flow.state = "established"
        elif flow.state == "syn_sent" and spec.has("S") and spec.has("."):
            flow.state = "established"
            flow.script_remote_isn = flow.live_remote_isn = spec.seq
        elif flow.state == "syn_sent" and spec.has("S"):
            flow.script_remote_isn = flow.live_remote_isn = spec.seq  # simultaneous open
        seq = (spec.seq + flow.remote_offset) & 0xFFFFFFFF
        ack = spec.ack or 0
        if spec.has("."):
            ack = (ack + flow.local_offset) & 0xFFFFFFFF
        options = b"".join(self.inbound_option(event, flow, option, spec.has(".")) for option in spec.options or [])
        sport, dport = spec.ports or (flow.remote[1], flow.local[1])
        self.dut.inject(build_segment(
            flow.remote[0], flow.local[0], sport, dport, seq, ack, _flag_bits(spec.flags),
            spec.window or 0, spec.urg, options, bytes(spec.payload_len), ttl=spec.ip.ttl or 64,
            tos=_tos_byte(spec),
        ))
        self.log(f"line {event.line}: injected {_spec_text(spec)}")

    def inbound_option(self, event: Event, flow: Flow, option: TcpOption, has_ack: bool) -> bytes:
        """One option of an inbound segment, as bytes: SACK blocks and TS ecr mapped to live values."""
        if option.name == "sack":
            return _option_bytes(SACK, b"".join(
                struct.pack("!II", (a + flow.local_offset) & 0xFFFFFFFF, (b + flow.local_offset) & 0xFFFFFFFF)
                for a, b in option.values))
        if option.name == "TS":
            val, ecr = option.values
            if has_ack:
                if ecr not in flow.ts_map:
                    raise Failure(event.line, f"unable to infer live TS ecr for script TS ecr {ecr}; "
                                              "no matching or preceding outbound TS val")
                ecr = flow.ts_map[ecr]
            return _option_bytes(TIMESTAMP, struct.pack("!II", val, ecr))
        return _script_option_bytes([option])

    # -- outbound packets

    def matches(self, data: bytes) -> _Live | None:
        """The packet as seen for the flow under test, or None if it belongs to something else."""
        flow = self.flow
        if flow is None:
            return None
        try:
            ip = parse_ipv4(data)
        except (ValueError, struct.error):
            return None
        if ip.version != 4 or ip.protocol != 6 or ip.frag_offset or len(ip.payload) < 20:
            return None
        tcp = parse_tcp(ip.payload)
        live = _Live(self.live(), tcp, ip.tos, ip.ttl, data)
        if ((ip.src, tcp.sport) == flow.local and (ip.dst, tcp.dport) == flow.remote
                and flow.state != "connecting"):
            return live
        if (flow.state == "connecting" and tcp.has(SYN) and not tcp.has(ACK)
                and (ip.dst, tcp.dport) == flow.remote):
            flow.local = (ip.src, tcp.sport)
            flow.live_local_isn = tcp.seq
            flow.state = "syn_sent"
            return live
        return None

    async def outbound(self, event: Event, spec: PacketSpec, start: float, end: float | None) -> None:
        flow = self.flow
        if flow is None or flow.state == "listening":
            raise Failure(event.line, "no socket under test for this outbound packet")
        if spec.has("S") and spec.has(".") and flow.state == "syn_received":
            flow.script_local_isn = spec.seq
            learn_isn = True
        else:
            learn_isn = False
        if flow.state == "connecting" and spec.has("S") and not spec.has("."):
            flow.script_local_isn = spec.seq
        tolerance = self.tolerance_for(start, self.last_time if self.last_event else None)
        if event.time.kind == "any":
            deadline = self.t0 + self.live() + ANY_TIME_LIMIT
        else:
            deadline = self.t0 + (end if end is not None else start) + tolerance + LATE_GRACE
        pieces: list[_Live] = []
        total = 0
        while True:
            got = await self.dut.receive(deadline)
            if got is None:
                if pieces:
                    raise Failure(event.line, f"live packet payload: expected {spec.payload_len} bytes "
                                              f"vs actual {total} bytes (no more segments)")
                raise Failure(event.line, f"expected outbound packet {_spec_text(spec)} at "
                                          f"{start:.6f} sec, but none arrived")
            when, data = got
            live = self.matches(data)
            if live is None:
                self.log(f"ignored (another flow): {describe(data)}", when - self.t0)
                continue
            live.time = when - self.t0
            if learn_isn and not pieces:
                flow.live_local_isn = live.tcp.seq
                flow.state = "synack_sent"
            self.log(f"line {event.line}: sniffed > {self.actual_text(live, flow)}", live.time)
            if pieces:
                self.check_piece(event, spec, pieces[-1], live, total)
            pieces.append(live)
            total += len(live.tcp.payload)
            if total >= spec.payload_len or self.strict_segments:
                break
        if total != spec.payload_len:
            raise Failure(event.line, f"live packet payload: expected {spec.payload_len} bytes vs actual "
                                      f"{total} bytes\n  script: {_spec_text(spec)}\n  actual: "
                                      f"{self.actual_text(pieces[0], flow)}")
        self.verify(event, spec, flow, pieces)
        self.check_time("outbound packet", event.time.kind, start, end, pieces[0].time,
                        self.last_time if self.last_event else None, event.line)

    def check_piece(self, event: Event, spec: PacketSpec, previous: _Live, live: _Live, sniffed: int) -> None:
        """packetdrill's verify_packet_fragments: one more TSO piece must fit after the previous."""
        a, b = previous.tcp, live.tcp
        same = ~(FIN | PSH | CWR)
        problem = None
        if a.flags & same != b.flags & same:
            problem = f"flags {flags_text(a.flags)} then {flags_text(b.flags)}"
        elif (a.seq + len(a.payload)) & 0xFFFFFFFF != b.seq:
            problem = "sequence numbers do not continue"
        elif (a.ack, a.window, a.urgent, a.data_offset) != (b.ack, b.window, b.urgent, b.data_offset):
            problem = "ACK, window, urgent pointer or header length changed"
        elif len(b.payload) < spec.payload_len - sniffed and len(b.payload) != len(a.payload):
            problem = f"piece of {len(b.payload)} bytes after one of {len(a.payload)}"
        if problem:
            raise Failure(event.line, f"segments do not add up to the expected one ({problem}): "
                                      f"script {_spec_text(spec)}")

    def actual_text(self, live: _Live, flow: Flow) -> str:
        tcp = live.tcp
        seq = (tcp.seq - flow.local_offset) & 0xFFFFFFFF
        ack = (tcp.ack - flow.remote_offset) & 0xFFFFFFFF if tcp.has(ACK) else tcp.ack
        return (f"{flags_text(tcp.flags)} {seq}:{(seq + len(tcp.payload)) & 0xFFFFFFFF}({len(tcp.payload)}) "
                f"ack {ack} win {tcp.window} <{format_options(tcp.options)}>")

    def verify(self, event: Event, spec: PacketSpec, flow: Flow, pieces: list[_Live]) -> None:
        first, last = pieces[0], pieces[-1]
        tcp = first.tcp
        flags = (tcp.flags & ~(FIN | PSH)) | (last.tcp.flags & (FIN | PSH))
        payload = b"".join(p.tcp.payload for p in pieces)
        seq = (tcp.seq - flow.local_offset) & 0xFFFFFFFF
        ack = (tcp.ack - flow.remote_offset) & 0xFFFFFFFF if tcp.has(ACK) else tcp.ack
        # TS val: remember script -> live, and map the live value into script space.
        script_ts = _script_ts(spec)
        live_ts = next((struct.unpack("!II", d) for k, d in tcp.options if k == TIMESTAMP and len(d) == 8), None)
        mapped_ts = None
        if script_ts is not None and live_ts is not None:
            flow.ts_map[script_ts[0]] = live_ts[0]
            if flow.first_ts is None:
                flow.first_ts = (script_ts[0], live_ts[0])
            mapped_ts = (flow.first_ts[0] + live_ts[0] - flow.first_ts[1]) & 0xFFFFFFFF

        def mismatch(name: str, expected: object, actual: object) -> Failure:
            return Failure(event.line, f"live packet field {name}: expected: {expected} vs actual: {actual}\n"
                                       f"  script: {_spec_text(spec)}\n  actual: {self.actual_text(first, flow)}")

        script_options = _script_option_bytes(spec.options) if spec.options is not None else None
        if script_options is not None and tcp.data_offset != 20 + len(script_options):
            raise mismatch("tcp_data_offset", 20 + len(script_options), tcp.data_offset)
        if spec.ip.tos is not None and first.ip_tos != spec.ip.tos:
            raise mismatch("tos", spec.ip.tos, first.ip_tos)
        if spec.ip.ecn is not None:
            ecn = first.ip_tos & 3
            wanted = {"no_ecn": (0,), "ect1": (1,), "ect0": (2,), "ce": (3,), "ect01": (1, 2)}[spec.ip.ecn]
            if ecn not in wanted:
                raise mismatch("ip_ecn", spec.ip.ecn, ecn)
        if spec.ip.ttl is not None and first.ip_ttl != spec.ip.ttl:
            raise mismatch("ttl", spec.ip.ttl, first.ip_ttl)
        wanted_flags = _flag_bits(spec.flags)
        for bit, name in ((FIN, "tcp_fin"), (SYN, "tcp_syn"), (RST, "tcp_rst"), (PSH, "tcp_psh"),
                          (ACK, "tcp_ack"), (URG, "tcp_urg"), (ECE, "tcp_ece"), (CWR, "tcp_cwr"),
                          (AE, "tcp_ae")):
            if bool(flags & bit) != bool(wanted_flags & bit):
                raise mismatch(name, int(bool(wanted_flags & bit)), int(bool(flags & bit)))
        if tcp.reserved:
            raise mismatch("tcp_reserved_bits", 0, tcp.reserved)
        if seq != spec.seq:
            raise mismatch("tcp_seq", spec.seq, seq)
        if ack != (spec.ack or 0):
            raise mismatch("tcp_ack_seq", spec.ack or 0, ack)
        if spec.window is not None and tcp.window != spec.window:
            raise mismatch("tcp_window", spec.window, tcp.window)
        if tcp.urgent != spec.urg:
            raise mismatch("tcp_urg_ptr", spec.urg, tcp.urgent)
        if script_options is not None:
            problem = self.compare_options(spec.options or [], tcp.options, flow, mapped_ts)
            if problem:
                raise mismatch("tcp_options", format_options(_options_as_pairs(spec.options or [])),
                               f"{format_options(tcp.options)} ({problem})")
        if payload != bytes(len(payload)):
            raise Failure(event.line, "incorrect outbound data payload (not the zeros the script wrote)")

    def compare_options(self, script: list[TcpOption], live: list[tuple[int, bytes]], flow: Flow,
                        mapped_ts: int | None) -> str | None:
        wanted = _options_as_pairs(script)
        if [k for k, _ in wanted] != [k for k, _ in live]:
            return "bad outbound TCP options"
        for (kind, want), (_, got) in zip(wanted, live, strict=True):
            if kind == TIMESTAMP:
                if self.ts_tick and mapped_ts is not None:
                    script_val = struct.unpack("!I", want[:4])[0]
                    if abs(_s32(mapped_ts - script_val)) * self.ts_tick > self.tolerance + 1e-9:
                        return f"bad outbound TCP timestamp value, tolerance {int(self.tolerance * 1e6)}"
                continue
            if kind == SACK:
                edges = struct.unpack(f"!{len(got) // 4}I", got) if len(got) % 4 == 0 else ()
                got = struct.pack(f"!{len(edges)}I", *((e - flow.remote_offset) & 0xFFFFFFFF for e in edges))
            if len(want) != len(got):
                return f"bad lengths for outbound TCP option {kind}"
            if want != got:
                return f"bad value outbound TCP option {kind}"
        return None

    # -- system calls

    async def syscall(self, event: Event, spec: SyscallSpec, start: float, blocking_end: float | None) -> None:
        await self.await_idle(event)
        await self.wait_until(event, start)
        if blocking_end is None:
            with trio.move_on_after(NONBLOCKING_LIMIT) as scope:
                outcome = await self.invoke(event, spec)
            if scope.cancelled_caught:
                raise Failure(event.line, f"{spec.name}() blocked, but the script does not mark it as "
                                          "a blocking call (with ...end_time)")
            self.check_result(event, spec, outcome)
            return
        assert self.nursery is not None
        blocking = self.blocking = _Blocking(event, blocking_end, start)
        self.nursery.start_soon(self.run_blocking, blocking, spec)
        await trio.testing.wait_all_tasks_blocked()

    async def run_blocking(self, blocking: _Blocking, spec: SyscallSpec) -> None:
        event = blocking.event
        try:
            outcome = await self.invoke(event, spec)
            self.check_result(event, spec, outcome)
            self.check_time("system call return", event.time.kind, blocking.expected_end, None,
                            self.live(), blocking.start, event.line)
        except Failure as failure:
            if self.async_failure is None:
                self.async_failure = failure
        except Skip as skip:
            if self.async_failure is None:
                self.async_failure = Failure(skip.line, skip.reason)
        finally:
            blocking.done.set()

    async def await_idle(self, event: Event | None, at_end: bool = False) -> None:
        blocking = self.blocking
        if blocking is None:
            return
        with trio.move_on_after(BLOCKING_WAIT):
            await blocking.done.wait()
        self.raise_async_failure()
        if not blocking.done.is_set():
            what = ("exiting while a blocking system call is in progress" if at_end else
                    "blocking system call while another blocking system call is already in progress")
            raise Failure(blocking.event.line, what)
        self.blocking = None

    async def invoke(self, event: Event, spec: SyscallSpec) -> tuple[int, int | None]:
        """Run the call on the DUT: (return value, errno or None)."""
        handler = getattr(self, f"sys_{spec.name}")
        self.log(f"line {event.line}: {spec.name}() starts")
        try:
            result = await handler(event, spec, [self.value(a) for a in spec.args])
        except (Failure, Skip):
            raise
        except OSError as exc:
            self.log(f"line {event.line}: {spec.name}() = -1 {_errno.errorcode.get(exc.errno or 0, exc.errno)}")
            return -1, exc.errno
        except Exception as exc:
            raise Failure(event.line, f"{spec.name}() raised {type(exc).__name__}: {exc}") from exc
        self.log(f"line {event.line}: {spec.name}() = {result}")
        return result, None

    def check_result(self, event: Event, spec: SyscallSpec, outcome: tuple[int, int | None]) -> None:
        result, error = outcome
        expected = spec.result
        if expected is ELLIPSIS:
            return
        expected_value = self.value(expected)
        if not isinstance(expected_value, int):
            raise Skip(event.line, f"cannot check result {expected!r}")
        if error is not None or spec.errno:
            wanted = getattr(_errno, spec.errno, None) if spec.errno else None
            if result != expected_value or error != wanted:
                got = _errno.errorcode.get(error, str(error)) if error else "success"
                raise Failure(event.line, f"{spec.name}() returned {result} ({got}); expected "
                                          f"{expected_value}{' ' + spec.errno if spec.errno else ''}")
            return
        if result != expected_value:
            raise Failure(event.line, f"{spec.name}() returned {result}; expected {expected_value}")

    def value(self, expr: object) -> object:
        if isinstance(expr, Symbol):
            if expr.name in SYMBOLS:
                return SYMBOLS[expr.name]
            if hasattr(_errno, expr.name):
                return getattr(_errno, expr.name)
            return expr
        if isinstance(expr, Or):
            total = 0
            for item in expr.items:
                v = self.value(item)
                if not isinstance(v, int):
                    raise Skip(None, f"unknown symbol in {expr!r}")
                total |= v
            return total
        if isinstance(expr, list):
            return [self.value(e) for e in expr]
        return expr

    def sock(self, event: Event, fd: object) -> DutSocket:
        if not isinstance(fd, int) or fd not in self.fds:
            raise Failure(event.line, f"bad file descriptor {fd!r} in script")
        return self.fds[fd]

    def new_fd(self, event: Event, spec: SyscallSpec, sock: DutSocket) -> int:
        expected = self.value(spec.result)
        if not isinstance(expected, int) or expected < 0:
            raise Failure(event.line, f"{spec.name}() returned a socket, but the script expected {expected}")
        self.fds[expected] = sock
        return expected

    async def sys_socket(self, event: Event, spec: SyscallSpec, args: list) -> int:
        kind = args[1] if len(args) > 1 and isinstance(args[1], int) else SYMBOLS["SOCK_STREAM"]
        proto = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
        nonblocking = bool(kind & SYMBOLS["SOCK_NONBLOCK"])
        sock = self.dut.socket(kind & 0xF, proto)
        if nonblocking:
            sock.set_nonblocking(True)
        fd = self.new_fd(event, spec, sock)
        if nonblocking:
            self.nonblocking.add(fd)
        await trio.lowlevel.checkpoint()
        return fd

    def _address(self, event: Event, expr: object, default: tuple[str, int]) -> tuple[str, int]:
        if expr is ELLIPSIS:
            return default
        if isinstance(expr, Struct):
            try:
                port = expr.field("sin_port")
                addr = expr.field("sin_addr")
            except KeyError:
                raise Skip(event.line, "unsupported socket address") from None
            if isinstance(port, Call) and port.name == "htons" and port.args:
                port = port.args[0]
            if isinstance(addr, Call) and addr.name == "inet_addr" and addr.args and isinstance(addr.args[0], Str):
                addr = addr.args[0].value
            if isinstance(port, int) and isinstance(addr, str):
                return addr, port
        raise Skip(event.line, f"unsupported socket address {expr!r}")

    async def sys_bind(self, event: Event, spec: SyscallSpec, args: list) -> int:
        address = self._address(event, args[1], (self.dut.address, BIND_PORT))
        await self.sock(event, args[0]).bind(address)
        self.bound_port = address[1]
        return 0

    async def sys_listen(self, event: Event, spec: SyscallSpec, args: list) -> int:
        self.sock(event, args[0]).listen(args[1] if isinstance(args[1], int) else 1)
        self.listening = True
        if self.flow is None:
            self.flow = Flow("tcp", "listening", (self.dut.address, self.bound_port), (self.dut.peer, 0))
        await trio.lowlevel.checkpoint()
        return 0

    async def sys_accept(self, event: Event, spec: SyscallSpec, args: list) -> int:
        child, _peer = await self.sock(event, args[0]).accept()
        self.test_socket = child
        return self.new_fd(event, spec, child)

    async def sys_connect(self, event: Event, spec: SyscallSpec, args: list) -> int:
        sock = self.sock(event, args[0])
        address = self._address(event, args[1], (self.dut.peer, BIND_PORT))
        self.flow = Flow("tcp", "connecting", (self.dut.address, 0), address)
        self.test_socket = sock
        await sock.connect(address)
        return 0

    async def sys_read(self, event: Event, spec: SyscallSpec, args: list) -> int:
        return len(await self.sock(event, args[0]).recv(_int(args[2])))

    async def sys_recv(self, event: Event, spec: SyscallSpec, args: list) -> int:
        flags = args[3] if len(args) > 3 and isinstance(args[3], int) else 0
        return len(await self.sock(event, args[0]).recv(_int(args[2]), flags))

    sys_recvfrom = sys_recv

    async def sys_readv(self, event: Event, spec: SyscallSpec, args: list) -> int:
        return len(await self.sock(event, args[0]).recv(sum(_iov_lengths(event, args[1]))))

    async def sys_write(self, event: Event, spec: SyscallSpec, args: list) -> int:
        return await self.sock(event, args[0]).send(bytes(_int(args[2])))

    async def sys_send(self, event: Event, spec: SyscallSpec, args: list) -> int:
        flags = args[3] if len(args) > 3 and isinstance(args[3], int) else 0
        return await self.sock(event, args[0]).send(bytes(_int(args[2])), flags)

    sys_sendto = sys_send

    async def sys_writev(self, event: Event, spec: SyscallSpec, args: list) -> int:
        return await self.sock(event, args[0]).sendmsg([bytes(n) for n in _iov_lengths(event, args[1])])

    async def sys_sendmsg(self, event: Event, spec: SyscallSpec, args: list) -> int:
        header = args[1]
        if not isinstance(header, Struct):
            raise Skip(event.line, "sendmsg() needs a msghdr")
        try:
            iov = header.field("msg_iov")
        except KeyError:
            raise Skip(event.line, "sendmsg() msghdr without msg_iov") from None
        flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
        buffers = [bytes(n) for n in _iov_lengths(event, self.value(iov))]
        return await self.sock(event, args[0]).sendmsg(buffers, flags)

    async def sys_close(self, event: Event, spec: SyscallSpec, args: list) -> int:
        sock = self.sock(event, args[0])
        del self.fds[args[0]]
        self.nonblocking.discard(args[0])
        sock.close()
        await trio.lowlevel.checkpoint()
        return 0

    async def sys_shutdown(self, event: Event, spec: SyscallSpec, args: list) -> int:
        self.sock(event, args[0]).shutdown(_int(args[1]))
        await trio.lowlevel.checkpoint()
        return 0

    async def sys_setsockopt(self, event: Event, spec: SyscallSpec, args: list) -> int:
        sock = self.sock(event, args[0])
        sock.setsockopt(_int(args[1]), _int(args[2]), self.option_value(event, args[3]))
        await trio.lowlevel.checkpoint()
        return 0

    def option_value(self, event: Event, expr: object) -> int | bytes:
        expr = self.value(expr)
        if isinstance(expr, list) and len(expr) == 1 and isinstance(expr[0], int):
            return expr[0]
        if isinstance(expr, int):
            return expr
        if isinstance(expr, Str):
            return expr.value.encode()
        if isinstance(expr, Struct):
            try:
                return struct.pack("ii", _int(expr.field("onoff")), _int(expr.field("linger")))
            except KeyError:
                pass
        raise Skip(event.line, f"unsupported socket option value {expr!r}")

    async def sys_getsockopt(self, event: Event, spec: SyscallSpec, args: list) -> int:
        sock = self.sock(event, args[0])
        wanted = self.value(args[3])
        level, option = _int(args[1]), _int(args[2])
        if isinstance(wanted, Struct):
            raw = sock.getsockopt(level, option, 8)
            onoff, seconds = struct.unpack("ii", raw if isinstance(raw, bytes) else struct.pack("ii", raw, 0))
            expected = (_int(wanted.field("onoff")), _int(wanted.field("linger")))
            if (onoff, seconds) != expected:
                raise Failure(event.line, f"getsockopt: expected {{onoff={expected[0]}, linger={expected[1]}}}, "
                                          f"got {{onoff={onoff}, linger={seconds}}}")
        else:
            value = sock.getsockopt(level, option)
            if isinstance(value, bytes):
                value = int.from_bytes(value[:4], "little", signed=True)
            if isinstance(wanted, list) and len(wanted) == 1 and isinstance(wanted[0], int) and value != wanted[0]:
                raise Failure(event.line, f"getsockopt({_symbol_name(option)}): expected {wanted[0]}, got {value}")
        await trio.lowlevel.checkpoint()
        return 0

    async def sys_fcntl(self, event: Event, spec: SyscallSpec, args: list) -> int:
        fd = args[0]
        sock = self.sock(event, fd)
        cmd = _int(args[1])
        await trio.lowlevel.checkpoint()
        if cmd == SYMBOLS["F_SETFL"]:
            nonblocking = bool(_int(args[2]) & SYMBOLS["O_NONBLOCK"])
            sock.set_nonblocking(nonblocking)
            if nonblocking:
                self.nonblocking.add(fd)
            else:
                self.nonblocking.discard(fd)
            return 0
        if cmd == SYMBOLS["F_GETFL"]:
            return SYMBOLS["O_RDWR"] | (SYMBOLS["O_NONBLOCK"] if fd in self.nonblocking else 0)
        raise Skip(event.line, f"fcntl command {cmd} is not supported")

    # -- code blocks

    def code(self, event: Event, spec: CodeSpec) -> None:
        if self.test_socket is None:
            self.notes.append(f"line {event.line}: code block skipped (no socket under test)")
            return
        try:
            info = self.test_socket.tcp_info()
        except OSError as exc:
            raise Failure(event.line, f"cannot read tcp_info: {exc}") from exc
        try:
            problem = evaluate_code(spec.text, info)
        except _Unavailable as why:
            self.notes.append(f"line {event.line}: code block skipped ({why})")
            return
        if problem:
            raise Failure(event.line, problem)


# ---------------------------------------------------------------- helpers


def _anchored(event: Event) -> bool:
    action = event.action
    return isinstance(action, PacketSpec) and action.direction == "<"


def _description(event: Event) -> str:
    action = event.action
    if isinstance(action, PacketSpec):
        return "inbound packet" if action.direction == "<" else "outbound packet"
    if isinstance(action, SyscallSpec):
        return "system call start"
    if isinstance(action, CommandSpec):
        return "command"
    return "data collection for code"


def _int(value: object) -> int:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, int):
        raise Skip(None, f"expected a number, got {value!r}")
    return value


def _iov_lengths(event: Event, iov: object) -> list[int]:
    lengths = []
    for item in iov if isinstance(iov, list) else []:
        if isinstance(item, Struct) and len(item.items) == 2 and isinstance(item.items[1], int):
            lengths.append(item.items[1])
        else:
            raise Skip(event.line, f"unsupported iovec {item!r}")
    return lengths


def _symbol_name(value: int) -> str:
    return next((k for k, v in SYMBOLS.items() if v == value and k.startswith(("SO_", "TCP_"))), str(value))


def _s32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _flag_bits(flags: str) -> int:
    bits = 0
    for c, bit in (("F", FIN), ("S", SYN), ("R", RST), ("P", PSH), (".", ACK), ("U", URG),
                   ("E", ECE), ("W", CWR), ("A", AE)):
        if c in flags:
            bits |= bit
    ace = next((int(c) for c in flags if c.isdigit()), 0)
    if ace:
        bits |= (ECE if ace & 1 else 0) | (CWR if ace & 2 else 0) | (AE if ace & 4 else 0)
    return bits


def _tos_byte(spec: PacketSpec) -> int:
    if spec.ip.tos is not None:
        return spec.ip.tos
    return {"ect1": 1, "ect0": 2, "ce": 3}.get(spec.ip.ecn or "", 0)


def _script_ts(spec: PacketSpec) -> tuple[int, int] | None:
    for option in spec.options or []:
        if option.name == "TS":
            return option.values[0], option.values[1]
    return None


def _options_as_pairs(options: list[TcpOption]) -> list[tuple[int, bytes]]:
    pairs: list[tuple[int, bytes]] = []
    for option in options:
        name, values = option.name, option.values
        if name == "nop":
            pairs.append((NOP, b""))
        elif name == "eol":
            pairs.append((EOL, b""))
        elif name == "mss":
            pairs.append((MSS, struct.pack("!H", values[0])))
        elif name == "wscale":
            pairs.append((WSCALE, bytes([values[0]])))
        elif name == "sackOK":
            pairs.append((SACK_PERM, b""))
        elif name == "sack":
            pairs.append((SACK, b"".join(struct.pack("!II", a, b) for a, b in values)))
        elif name == "TS":
            pairs.append((TIMESTAMP, struct.pack("!II", *values)))
        elif name == "FO":
            pairs.append((FASTOPEN, bytes.fromhex(values[0]) if values else b""))
        elif name == "FOEXP":
            pairs.append((254, b"\xf9\x89" + (bytes.fromhex(values[0]) if values else b"")))
        elif name == "md5":
            pairs.append((MD5, bytes(16)))
    return pairs


def _option_bytes(kind: int, data: bytes) -> bytes:
    return bytes([kind]) if kind in (NOP, EOL) else bytes([kind, len(data) + 2]) + data


def _script_option_bytes(options: list[TcpOption]) -> bytes:
    return b"".join(_option_bytes(kind, data) for kind, data in _options_as_pairs(options))


def build_segment(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int, window: int,
                  urgent: int, options: bytes, payload: bytes, ttl: int = 64, tos: int = 0) -> bytes:
    """An IPv4/TCP packet with correct checksums, built with struct.

    The runner builds inbound segments itself rather than with scapy:
    scapy takes over a millisecond a packet, and three back-to-back
    inbound packets would then miss packetdrill's 4 ms tolerance.
    """
    if len(options) % 4:
        raise ValueError("TCP options must be padded to a multiple of 4 bytes")
    offset = (20 + len(options)) // 4
    header = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                         (offset << 4) | (1 if flags & AE else 0), flags & 0xFF, window, 0, urgent)
    segment = header + options + payload
    saddr, daddr = aton(src), aton(dst)
    csum = internet_checksum(segment, pseudo_header_sum(saddr, daddr, 6, len(segment)))
    segment = segment[:16] + struct.pack("!H", csum) + segment[18:]
    ip = struct.pack("!BBHHHBBHII", 0x45, tos, 20 + len(segment), 0, 0, ttl, 6, 0, saddr, daddr)
    ip = ip[:10] + struct.pack("!H", internet_checksum(ip)) + ip[12:]
    return ip + segment


def _spec_text(spec: PacketSpec) -> str:
    text = f"{spec.direction} {spec.flags or '-'} {spec.seq}:{spec.end_seq}({spec.payload_len})"
    if spec.ack is not None:
        text += f" ack {spec.ack}"
    if spec.window is not None:
        text += f" win {spec.window}"
    if spec.options is None:
        text += " <...>"
    elif spec.options:
        text += f" <{format_options(_options_as_pairs(spec.options))}>"
    return text


# ---------------------------------------------------------------- entry points


async def run_script(script: Script, dut: Dut) -> Outcome:
    """Run ``script`` on an open DUT (set up with ``plan(script)``'s config)."""
    runner = Runner(script, dut)
    started = dut.now()
    try:
        await runner.run()
    except Failure as failure:
        outcome = Outcome(FAIL, failure.line, failure.message, runner.notes)
    except Skip as skip:
        outcome = Outcome(SKIP, skip.line, skip.reason, runner.notes)
    else:
        outcome = Outcome(PASS, None, "", runner.notes)
    outcome.elapsed = dut.now() - started
    outcome.trace = runner.trace
    return outcome


async def run_on_dut(script: Script, kind: str) -> Outcome:
    """Plan, open a fresh DUT of ``kind`` with the script's settings, run, close."""
    try:
        config = plan(script)
    except Skip as skip:
        return Outcome(SKIP, skip.line, skip.reason)
    async with open_dut(kind, config) as dut:
        outcome = await run_script(script, dut)
        if dut.unapplied:
            outcome.notes.append(f"settings without effect on {kind}: {', '.join(dut.unapplied)}")
    return outcome


def run_file(path: str | Path, kind: str) -> Outcome:
    """Parse and run one script on a fresh DUT (Linux in real time, pystack in virtual time)."""
    try:
        script = parse_file(path)
    except (ParseError, OSError) as exc:
        return Outcome(ERROR, getattr(exc, "line", None), str(exc))
    try:
        return run_on(kind, run_on_dut, script, kind)
    except NeedsNetAdmin as exc:
        return Outcome(SKIP, None, str(exc))
    except Exception as exc:  # noqa: BLE001 - one broken run must not stop a conformance table
        return Outcome(ERROR, None, f"runner error: {type(exc).__name__}: {exc}")
