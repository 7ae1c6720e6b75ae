"""What every benchmark shares: settings, statistics, result tables, namespaces and TUNs.

pystack runs as ``pystack up`` runs it, through ``pystack.host.tun_host``: a
namespace we create and remove ourselves, a TUN device moved into it with
the kernel side at 198.18.0.1/24, and a Stack at 198.18.0.2 with a default
route through the kernel. The floor responder gets the same namespace and
TUN with no stack; the kernel-kernel reference a veth pair between two
more namespaces, 198.19.0.1/24 and 198.19.0.2/24. Every address is in
198.18.0.0/15 and every namespace goes away on exit, errors and Ctrl-C
included.

Load on the kernel side comes from :mod:`bench.kernel_side`, run as a
separate process (so that it has a CPU of its own and does not share the
GIL or the trio loop with the stack it measures) on kernel sockets that
this process created inside the namespaces with ``Namespace.socket`` and
hands over by file descriptor.
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from pystack.host.netns import Namespace, why_not
from pystack.host.tun import TunLink
from pystack.host.tun_host import TunHost, tun_host

KERNEL_ADDR = "198.18.0.1"
STACK_ADDR = "198.18.0.2"
PREFIXLEN = 24
MTU = 1500
VETH_ADDRS = ("198.19.0.1", "198.19.0.2")  # also 198.18.0.0/15

KERNEL_SIDE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernel_side.py")

# Namespaces and root-namespace links this process created and has not
# removed yet: removed by cleanup_leftovers() whatever happened.
_live_namespaces: set[str] = set()
_live_links: set[str] = set()
_OWNER = os.getpid()  # a forked copy of this process (pyroute2 forks) never cleans up


# ---------------------------------------------------------------- settings and results


@dataclass
class Settings:
    """How much work a run does; --quick shrinks everything."""

    quick: bool = False
    repeats: int = 5

    @classmethod
    def make(cls, quick: bool, repeats: int | None) -> Settings:
        default = 1 if quick else 5
        return cls(quick=quick, repeats=repeats if repeats is not None else default)

    def pick(self, full: Any, quick: Any) -> Any:
        return quick if self.quick else full


@dataclass
class Table:
    """One benchmark's result: a printable table, notes, and the raw data for --json."""

    name: str
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def add(self, *cells: Any) -> None:
        self.rows.append(list(cells))

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "columns": self.columns,
            "rows": self.rows,
            "notes": self.notes,
            "data": self.data,
        }


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_table(table: Table) -> str:
    """Plain text: a title, aligned columns (numbers right-aligned), then the notes."""
    header = table.columns
    body = [[cell(v) for v in row] for row in table.rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in body)) if body else len(str(h))
              for i, h in enumerate(header)]
    numeric = [all(isinstance(row[i], int | float) or row[i] is None for row in table.rows)
               for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    out = [f"== {table.title} ==", line([str(h) for h in header]), line(["-" * w for w in widths])]
    out += [line(r) for r in body]
    out += [f"  * {note}" for note in table.notes]
    return "\n".join(out)


def print_table(table: Table) -> None:
    try:
        from rich.console import Console
        from rich.table import Table as RichTable
    except ImportError:
        print(format_table(table), flush=True)
        return
    rich_table = RichTable(title=table.title, title_justify="left")
    for i, column in enumerate(table.columns):
        numeric = all(isinstance(row[i], int | float) or row[i] is None for row in table.rows)
        rich_table.add_column(column, justify="right" if numeric else "left")
    for row in table.rows:
        rich_table.add_row(*(cell(v) for v in row))
    console = Console()
    console.print(rich_table)
    for note in table.notes:
        console.print(f"  * {note}", highlight=False)


def note(message: str) -> None:
    """Progress on stderr, so stdout stays the tables."""
    print(f"  .. {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    clean = [v for v in values if v == v]
    return statistics.median(clean) if clean else float("nan")


def median_runs(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per key, the median of the numeric values over repeated runs (the first value otherwise)."""
    merged: dict[str, Any] = {}
    for key in runs[0]:
        values = [run[key] for run in runs if key in run]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            merged[key] = median(values)
        else:
            merged[key] = values[0]
    return merged


def spread(runs: Sequence[dict[str, Any]], key: str) -> str:
    """min-max of one figure over the repeats, for the notes."""
    values = [run[key] for run in runs if run.get(key) == run.get(key)]
    if not values:
        return "-"
    return f"{cell(float(min(values)))}..{cell(float(max(values)))}"


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def paired_ratio(runs_a: Sequence[dict[str, Any]], runs_b: Sequence[dict[str, Any]], key: str,
                 key_b: str | None = None) -> float:
    """Median over repeats of a[key] / b[key_b]: each pair was measured in the same repeat,
    so a drift of the machine between repeats cancels out."""
    return median([ratio(a[key], b[key_b or key]) for a, b in zip(runs_a, runs_b, strict=True)])


CHUNK = 1000  # calls between two looks at the clock


class Bounded:
    """Chunks of CHUNK calls until max_calls or max_seconds, whichever first.

    ``for n in bounded: loop(n)`` (or ``await loop(n)``); afterwards
    ``calls`` and ``seconds`` say how many calls took how long.
    """

    def __init__(self, max_calls: int, max_seconds: float):
        self.max_calls = max_calls
        self.max_seconds = max_seconds
        self.calls = 0
        self.seconds = 0.0

    def __iter__(self) -> Iterator[int]:
        gc.collect()
        self.calls, self.seconds = 0, 0.0
        start = time.perf_counter()
        while self.calls < self.max_calls and self.seconds < self.max_seconds:
            yield CHUNK
            self.calls += CHUNK
            self.seconds = time.perf_counter() - start

    @property
    def ns_per_call(self) -> float:
        return self.seconds / self.calls * 1e9 if self.calls else float("nan")


def time_loop(loop: Callable[[int], None], max_calls: int, max_seconds: float) -> Bounded:
    """Run ``loop(n)`` over Bounded chunks; returns the Bounded with calls and seconds."""
    bounded = Bounded(max_calls, max_seconds)
    for n in bounded:
        loop(n)
    return bounded


# ---------------------------------------------------------------- the machine


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "trio": trio.__version__,
        "loadavg": loadavg(),
        "pystack_tree": source_tree(),
    }


def source_tree() -> str:
    """The commit measured, and whether pystack/ had uncommitted changes (others edit it)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", root, *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown (not a git checkout)"
    changed = [line for line in git("status", "--porcelain", "--", "pystack").splitlines() if line]
    return f"{commit}" + (f" + {len(changed)} uncommitted change(s) in pystack/" if changed else "")


def loadavg() -> str:
    """The 1/5/15-minute load averages: how busy the (shared) machine was."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


def root_reason() -> str | None:
    """Why the TUN benchmarks cannot run here (one line), or None."""
    return why_not()


# ---------------------------------------------------------------- namespaces, TUN, veth


def unique(prefix: str) -> str:
    """A fresh interface or namespace name (<= 15 characters)."""
    return f"{prefix}{secrets.token_hex(3)}"[:15]


@contextmanager
def namespace(prefix: str) -> Iterator[Namespace]:
    ns = Namespace(unique(prefix))
    _live_namespaces.add(ns.name)
    with ns:
        yield ns
    # Only after a clean exit: an interrupted creation or removal leaves the
    # name for cleanup_leftovers(), which deletes it if it is still there.
    _live_namespaces.discard(ns.name)


@contextmanager
def tun_namespace(tag: str) -> Iterator[tuple[Namespace, TunLink]]:
    """A bare TUN in a new namespace, kernel side at KERNEL_ADDR/24, and no stack on it:
    the same wiring as pystack.host.tun_host, for a responder that is not pystack (the floor)."""
    with namespace(f"pstb-{tag}-") as ns, TunLink(unique("pstb"), MTU) as tun:
        ns.move_link(tun.name)
        ns.configure_link(tun.name, KERNEL_ADDR, PREFIXLEN, MTU)
        yield ns, tun


@contextmanager
def veth_namespaces(tag: str) -> Iterator[tuple[Namespace, Namespace, str, str]]:
    """Two namespaces joined by a veth pair: (ns_a, ns_b, addr_a, addr_b)."""
    with namespace(f"pstb-{tag}a-") as ns_a, namespace(f"pstb-{tag}b-") as ns_b:
        end_a, end_b = unique("pstva"), unique("pstvb")
        _live_links.add(end_a)
        try:
            subprocess.run(["ip", "link", "add", end_a, "type", "veth", "peer", "name", end_b],
                           check=True, capture_output=True, text=True)
            ns_a.move_link(end_a)
            ns_b.move_link(end_b)
        except BaseException:
            _delete_root_link(end_a)
            raise
        finally:
            _live_links.discard(end_a)
        ns_a.configure_link(end_a, VETH_ADDRS[0], PREFIXLEN, MTU)
        ns_b.configure_link(end_b, VETH_ADDRS[1], PREFIXLEN, MTU)
        yield ns_a, ns_b, VETH_ADDRS[0], VETH_ADDRS[1]


def _delete_root_link(name: str) -> None:
    subprocess.run(["ip", "link", "del", name], capture_output=True)


def cleanup_leftovers() -> list[str]:
    """Remove whatever an interrupted run left behind; returns what it removed."""
    if os.getpid() != _OWNER:
        return []
    removed = []
    for name in sorted(_live_namespaces):
        if subprocess.run(["ip", "netns", "del", name], capture_output=True).returncode == 0:
            removed.append(name)
    for name in sorted(_live_links):
        _delete_root_link(name)
    _live_namespaces.clear()
    _live_links.clear()
    return removed


def interface_stats(ns: Namespace, ifname: str) -> dict[str, int]:
    """The kernel's counters of ``ifname`` inside ``ns`` (rx/tx packets, dropped)."""
    out = ns.run(["ip", "-s", "-j", "link", "show", "dev", ifname],
                 capture_output=True, text=True, check=True).stdout
    stats = json.loads(out)[0]["stats64"]
    return {
        "rx_packets": stats["rx"]["packets"],
        "rx_dropped": stats["rx"]["dropped"],
        "tx_packets": stats["tx"]["packets"],
        "tx_dropped": stats["tx"]["dropped"],
    }


def udp_mib(ns: Namespace) -> dict[str, int]:
    """The namespace's ``Udp:`` counters from /proc/net/snmp (InDatagrams, RcvbufErrors...)."""
    text = ns.run(["cat", "/proc/net/snmp"], capture_output=True, text=True, check=True).stdout
    lines = [line.split() for line in text.splitlines() if line.startswith("Udp:")]
    return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:], strict=True)}


# ---------------------------------------------------------------- pystack on a TUN


@asynccontextmanager
async def pystack_host(tag: str) -> AsyncIterator[TunHost]:
    """pystack up, as ``pystack up`` brings it up (pystack.host.tun_host): a new namespace and TUN,
    the kernel at KERNEL_ADDR/24, the stack at STACK_ADDR, driven by trio until the body ends."""
    name = unique(f"pstb-{tag}-")
    _live_namespaces.add(name)
    async with tun_host(name, unique("pstb"), f"{KERNEL_ADDR}/{PREFIXLEN}", STACK_ADDR, MTU) as host:
        yield host
    _live_namespaces.discard(name)


# ---------------------------------------------------------------- kernel-side load processes


class KernelSide:
    """A :mod:`bench.kernel_side` program, running on a socket from a namespace.

    It prints ``ready`` once set up and one JSON line with its result at
    the end; closing its stdin asks it to stop (receivers wait for that).
    """

    def __init__(self, command: str, fds: Sequence[int], args: Sequence[str]):
        self.argv = [sys.executable, KERNEL_SIDE, command]
        for fd in fds:
            self.argv += ["--fd", str(fd)]
        self.argv += args
        self.fds = tuple(fds)
        self.process: trio.Process | None = None
        self._stderr = tempfile.TemporaryFile()
        self._buffer = b""

    async def start(self) -> None:
        self.process = await trio.lowlevel.open_process(
            self.argv, pass_fds=self.fds, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._stderr,
        )
        line = await self._line()
        if line != "ready":
            raise RuntimeError(f"kernel side did not start: {line!r} {self._errors()}")

    async def _line(self) -> str:
        assert self.process is not None and self.process.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self.process.stdout.receive_some(65536)
            if not chunk:
                break
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode().strip()

    def _errors(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip()[-2000:]

    async def stop(self) -> None:
        """Tell a receiver to finish (close its stdin)."""
        assert self.process is not None and self.process.stdin is not None
        await self.process.stdin.aclose()

    async def result(self) -> dict[str, Any]:
        """Wait for the program to end and return its JSON result."""
        assert self.process is not None
        line = await self._line()
        await self.process.wait()
        if self.process.returncode != 0 or not line.startswith("{"):
            raise RuntimeError(
                f"kernel side {self.argv[2]} failed (exit {self.process.returncode}): {self._errors()}"
            )
        return json.loads(line)

    async def aclose(self) -> None:
        process = self.process
        if process is not None and process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
        self._stderr.close()


@asynccontextmanager
async def kernel_side(command: str, socks: Sequence[socket.socket],
                      *args: object) -> AsyncIterator[KernelSide]:
    """Start a kernel-side program on ``socks``; it is killed if the body fails or is cancelled.

    Once it has started, our copies of the sockets are closed: the program owns them.
    """
    program = KernelSide(command, [sock.fileno() for sock in socks], [str(a) for a in args])
    try:
        await program.start()
        for sock in socks:
            sock.close()
        yield program
    finally:
        await program.aclose()
