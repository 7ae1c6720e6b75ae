"""Specialization latency: how long ``do_specialize_send`` / ``do_specialize_sendto`` take.

Three cases, for ``send`` on a connected UDP socket (scenario
udp_send_connected), ``sendto`` a fixed destination (udp_sendto_fixed) and
``send`` on an established TCP connection (tcp_send, with the connection's
output routine, tcp_output: one request specializes both):

- **miss**: a new socket each time, so a new cache key: the partial
  evaluator runs and the residual code is compiled. The module ASTs are
  warm (one request of each scenario ran before timing), as they are for
  every request after a process's first.
- **hit**: the same fd in the same context while a token holds the code:
  the code cache answers (route-cache refresh, cache key, new token);
  measured twice, with a code cache of a few entries and with a cache
  filled to its capacity (64) first, as in a long-running process.
- **cold first request**: in a fresh interpreter (pystack and the
  specializer imported, nothing else), the first ``do_specialize_send``:
  it also loads the scenario declarations and parses the source modules
  of the functions it unfolds. The same process then times its first
  ``do_specialize_sendto`` and a warm miss, and re-parses the modules the
  first request parsed, to show what the parsing alone costs.

Each request is timed with perf_counter around the one call; the release
(``done_specialize_*``, closing the socket) is outside the timing. Misses
and hits are checked against the system's counters.
"""

from __future__ import annotations

import ast
import gc
import json
import os
import subprocess
import sys
import time
from typing import Any

from pystack.links.virtual import VirtualNetwork
from pystack.socket import SOCK_STREAM
from pystack.stack import Stack

from .common import KERNEL_ADDR, PREFIXLEN, STACK_ADDR, Settings, Table, median, note, percentile

NAME = "spec_latency"
NEEDS_ROOT = False
PEER = (KERNEL_ADDR, 9)
TCP_PORT = 80
MISS_GOAL_MS = 20.0
HIT_GOAL_US = 20.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class World:
    """A stack on a virtual network, and the peer its TCP sockets connect to: a stack in
    memory that plays the handshake of each and accepts it (its UDP sockets only point at it)."""

    def __init__(self) -> None:
        self.net = VirtualNetwork()
        self.stack = self.net.add_stack(seed=1)
        port = self.net.attach(self.stack, "bench0", STACK_ADDR, PREFIXLEN)
        self.stack.add_route("0.0.0.0", 0, "bench0", gateway=KERNEL_ADDR)
        self.peer = self.net.add_stack(seed=99)
        self.net.link(port, self.net.attach(self.peer, "peer0", KERNEL_ADDR, PREFIXLEN))
        self.listener = self.peer.socket(type=SOCK_STREAM)
        self.peer.bind(self.listener, ("0.0.0.0", TCP_PORT))
        self.peer.listen(self.listener)

    def new_socket(self, op: str) -> int:
        stack = self.stack
        if op == "tcp send":
            fd = stack.socket(type=SOCK_STREAM)
            self.net.establish(stack, fd, (KERNEL_ADDR, TCP_PORT), self.peer, self.listener)
            return fd
        fd = stack.socket()
        if op == "send":
            stack.connect(fd, PEER)
        return fd


OPS = ("send", "sendto", "tcp send")
SCENARIOS = {"send": 1, "sendto": 1, "tcp send": 2}  # residual functions one request makes


def request(stack: Stack, op: str, fd: int) -> tuple[int, float]:
    """One specialization request; returns the token and the seconds it took."""
    from specializer import do_specialize_send, do_specialize_sendto

    clock = time.perf_counter
    if op != "sendto":
        started = clock()
        token = do_specialize_send(stack, fd)
    else:
        started = clock()
        token = do_specialize_sendto(stack, fd, PEER)
    return token, clock() - started


def release(stack: Stack, op: str, token: int) -> None:
    from specializer import done_specialize_send, done_specialize_sendto

    (done_specialize_sendto if op == "sendto" else done_specialize_send)(stack, token)


def misses(world: World, op: str, count: int, cpu: list[float] | None = None,
           functions: list[float] | None = None) -> list[float]:
    """``count`` misses; their wall times (their CPU times appended to ``cpu``, and the time
    each residual function of the request took, as the system measured it, to ``functions``)."""
    from pystack.tokens.system import system_of

    stack = world.stack
    system = system_of(stack)
    times = []
    for _ in range(count):
        fd = world.new_socket(op)
        before = system.misses
        cpu_started = time.thread_time()
        token, seconds = request(stack, op, fd)
        if cpu is not None:
            cpu.append(time.thread_time() - cpu_started)
        if system.misses != before + SCENARIOS[op]:
            raise AssertionError(f"{op}: a new socket's request was not a cache miss")
        times.append(seconds)
        if functions is not None:
            made = system.token(token)
            for number in (token, *made.companions):
                functions.append(system.token(number).entry.latency)
        release(stack, op, token)
        stack.close(fd)
    return times


class GcWatch:
    """Counts the garbage collections that start while it is installed, and, for the
    hits that take over a millisecond, whether one ran during them (outliers: GC or
    the scheduler?)."""

    def __init__(self) -> None:
        self.collections = 0
        self.slow = 0
        self.slow_during_gc = 0

    def __enter__(self) -> GcWatch:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.collections += 1


def hits(world: World, op: str, count: int, watch: GcWatch | None = None) -> list[float]:
    from pystack.tokens.system import system_of

    stack = world.stack
    system = system_of(stack)
    fd = world.new_socket(op)
    holder, _ = request(stack, op, fd)  # keeps the entry in the cache
    before = system.hits
    times = []
    for _ in range(count):
        collections = watch.collections if watch is not None else 0
        token, seconds = request(stack, op, fd)
        times.append(seconds)
        if watch is not None and seconds > 1e-3:
            watch.slow += 1
            watch.slow_during_gc += watch.collections != collections
        release(stack, op, token)
    if system.hits != before + count * SCENARIOS[op]:
        raise AssertionError(f"{op}: {count} requests in the same context made {system.hits - before} hits")
    release(stack, op, holder)
    stack.close(fd)
    return times


def probe() -> dict[str, Any]:
    """In a fresh interpreter: the cold first request, then what follows it."""
    started = time.perf_counter()
    import specializer
    from specializer import source

    imported = time.perf_counter() - started
    assert specializer is not None
    world = World()
    stack = world.stack
    _token, first_send = request(stack, "send", world.new_socket("send"))
    files = sorted(source._MODULE_FUNCTIONS)  # the modules the first request parsed
    _token, first_sendto = request(stack, "sendto", world.new_socket("sendto"))
    _token, warm_miss = request(stack, "send", world.new_socket("send"))
    parse = index = 0.0
    for path in files:  # again, as function_ast does it: parse, then walk the tree for the functions
        started = time.perf_counter()
        with open(path, encoding="utf-8") as source:
            tree = ast.parse(source.read(), path)
        parsed = time.perf_counter()
        functions = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)]
        assert functions is not None
        parse += parsed - started
        index += time.perf_counter() - parsed
    return {"import_s": imported, "first_send_s": first_send, "first_sendto_s": first_sendto,
            "warm_miss_s": warm_miss, "parse_s": parse, "index_s": index, "modules_parsed": len(files)}


def cold(repeats: int) -> list[dict[str, Any]]:
    runs = []
    for _ in range(repeats):
        done = subprocess.run([sys.executable, "-m", "bench.spec_latency", "--probe"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"cold probe failed: {done.stderr.strip()[-2000:]}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return runs


def run(settings: Settings) -> Table:
    # (imported here, not at the top: the cold probe imports this module and times the import)
    from pystack.tokens.system import system_of

    miss_count = settings.pick(20, 5)
    hit_count = settings.pick(2_000, 200)
    # Two stacks: on one the code cache holds only what the hits use; the other's cache is
    # filled to its capacity first (and stays full: every miss evicts), as in a long-running
    # process. What a hit costs can depend on the size of the cache.
    full = World()
    for op in OPS:  # warm the module AST cache and the declarations
        misses(full, op, 1)
    capacity = system_of(full.stack).capacity
    misses(full, "send", capacity)
    small = World()
    samples: dict[tuple[str, str], list[list[float]]] = {}
    watch = GcWatch()
    miss_cpu: dict[str, list[float]] = {op: [] for op in OPS}
    per_function: dict[str, list[float]] = {op: [] for op in OPS}
    sizes: dict[str, int] = {}
    for repeat in range(settings.repeats):
        for op in OPS:
            samples.setdefault(("miss", op), []).append(misses(full, op, miss_count, miss_cpu[op], per_function[op]))
            with watch:
                samples.setdefault(("hit", op), []).append(hits(full, op, hit_count, watch))
                samples.setdefault(("hit-small", op), []).append(hits(small, op, hit_count, watch))
        sizes = {"full": len(system_of(full.stack).cache), "small": len(system_of(small.stack).cache)}
        note(f"{NAME} #{repeat + 1}: " + ", ".join(
            f"{kind} {op} {median(runs[-1]) * (1e3 if kind == 'miss' else 1e6):.2f} "
            f"{'ms' if kind == 'miss' else 'us'}" for (kind, op), runs in samples.items()))
    cold_runs = cold(settings.repeats)
    note(f"{NAME}: cold first request " + ", ".join(f"{r['first_send_s'] * 1e3:.0f} ms" for r in cold_runs))

    table = Table(NAME, "Specialization latency (lower is better)",
                  ["request", "op", "requests", "median ms", "median us", "p90 us", "max us", "goal", "met"])
    verdicts = []
    for (kind, op), runs in samples.items():
        flat = [s for run_ in runs for s in run_]
        value = median([median(r) for r in runs])
        goal_s = MISS_GOAL_MS / 1e3 if kind == "miss" else HIT_GOAL_US / 1e6
        goal = f"<= {MISS_GOAL_MS:g} ms" if kind == "miss" else f"<= {HIT_GOAL_US:g} us"
        met = "yes" if value <= goal_s else "NO"
        label = {"miss": "miss (new socket, warm ASTs)",
                 "hit": f"hit (same fd and context), cache full ({sizes['full']} entries)",
                 "hit-small": f"hit (same fd and context), cache of <= {sizes['small']} entries"}[kind]
        table.add(label, op, len(flat), value * 1e3, value * 1e6, percentile(flat, 90) * 1e6,
                  max(flat) * 1e6, goal, met)
        short = {"miss": "miss", "hit": "hit (full cache)", "hit-small": "hit (small cache)"}[kind]
        verdicts.append(f"{short} {op} {value * (1e3 if kind == 'miss' else 1e6):.2f} "
                        f"{'ms' if kind == 'miss' else 'us'} ({'met' if met == 'yes' else 'NOT MET'})")
    first = [r["first_send_s"] for r in cold_runs]
    table.add("cold first request (fresh process)", "send", len(first), median(first) * 1e3,
              median(first) * 1e6, percentile(first, 90) * 1e6, max(first) * 1e6, "-", "-")
    after = [r["first_sendto_s"] for r in cold_runs]
    table.add("first of the other scenario (same process)", "sendto", len(after), median(after) * 1e3,
              median(after) * 1e6, percentile(after, 90) * 1e6, max(after) * 1e6, "-", "-")
    warm = [r["warm_miss_s"] for r in cold_runs]
    table.add("then a miss (same process)", "send", len(warm), median(warm) * 1e3,
              median(warm) * 1e6, percentile(warm, 90) * 1e6, max(warm) * 1e6, "-", "-")
    table.notes += [
        "goals: " + "; ".join(verdicts),
        f"medians of the per-repeat medians over {settings.repeats} repeat(s) of {miss_count} misses and "
        f"{hit_count:,} hits per op and cache; p90 and max over every request; the full cache was "
        f"filled with {capacity} misses before timing",
        "CPU time of a miss (this thread, user + system; what the load of other processes does not "
        "add): " + ", ".join(f"{op} median {median(v) * 1e3:.1f} ms, min {min(v) * 1e3:.1f} ms"
                             for op, v in miss_cpu.items()),
        "a request specializes one residual function per scenario it makes (send, sendto: 1; tcp send: "
        "2, tcp_send and the connection's output routine tcp_output); each function alone, as the system "
        "timed it: " + ", ".join(f"{op} median {median(v) * 1e3:.1f} ms" for op, v in per_function.items())
        + "; the goal counts the whole request",
        f"hits over 1 ms: {watch.slow} of {2 * len(OPS) * hit_count * settings.repeats:,}, {watch.slow_during_gc} of them "
        "with a garbage collection during the request (no GC in the others: most likely the process "
        "was preempted; the machine is shared)",
        f"cold: {len(cold_runs)} fresh interpreter(s); of the first request, reading the "
        f"{cold_runs[0]['modules_parsed']} source modules it unfolds takes about "
        f"{median([r['parse_s'] for r in cold_runs]) * 1e3:.0f} ms of ast.parse and "
        f"{median([r['index_s'] for r in cold_runs]) * 1e3:.0f} ms of ast.walk to find the functions "
        "(done again afterwards, medians); importing "
        f"pystack and the specializer before it {median([r['import_s'] for r in cold_runs]) * 1e3:.0f} ms "
        "(not counted in the request)",
        "thesis 3.3 (fig. 3.3(c)) shows the overhead of remote specialization on a server, and 4.3.1 how "
        "to hide it; the text gives no figure to set beside ours",
    ]
    table.data = {
        "seconds": {f"{kind} {op}": runs for (kind, op), runs in samples.items()},
        "miss_cpu_seconds": miss_cpu,
        "function_seconds": per_function,
        "cold": cold_runs,
        "goals": {"miss_ms": MISS_GOAL_MS, "hit_us": HIT_GOAL_US},
    }
    return table


if __name__ == "__main__":
    if sys.argv[1:] == ["--probe"]:
        print(json.dumps(probe()), flush=True)
    else:
        sys.exit("internal: run as `python -m bench --only spec_latency`")
