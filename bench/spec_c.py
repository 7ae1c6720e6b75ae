"""The C backend: what native code costs to get, and what it gains per packet.

**Getting it** (UDP ``send`` on a connected socket, scenario udp_send_connected): new
sockets on one Stack, each bound to its own port (so each residual has other integers);
per socket, timed with perf_counter around each call:

- the specializer itself (``specialize``: partial evaluation and the Python residual),
  which every variant needs first;
- **C compiled per request**: translate the residual, compile it (cffi and the system C
  compiler, a new module every time) and load it;
- **C from a filled template**: the scenario's C compiled once, with its integers as
  holes (``Template.compile``, timed once); per socket, ``Template.fill``: translate with
  holes, check the shape, bind the integers and objects. No compiler.

**Per packet** (the SendWorld of bench.spec_common: a no-op sink), 64 B and 1 KB payloads
(a byte pattern), loops interleaved in chunks of 50 calls (spec_common.interleaved):

- ``generic``: ``stack.send(fd, data)``, the generic Python send path;
- ``Python residual``: the specialized residual function, called directly;
- ``C, full send``: the C of that residual, compiled for the socket, through its shell:
  the same call, the same effects (counters, IP ID, the sink), the same results;
- ``C, filled template``: the same from a filled template;
- ``C function from Python``: only the compiled function, called through cffi with the
  socket's fields as arguments: it builds the packet in its buffer and returns the path;
  no effect is done (no counters, no IP ID increment, no sink call);
- ``C function in a C loop``: the same function called N times by a C loop compiled
  beside it (one cffi call per chunk): the packet building alone, natively.

Before timing, three worlds with the same seed (generic, Python residual, C) must emit
byte-identical packets and return the same values (payloads 0 to 4000 bytes), and the C
function must build the same bytes as the full send.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import cffi

from pystack.stack import Stack
from pystack.tokens.scenario import all_scenarios
from specializer import cbackend
from specializer.cbackend.build import load_module, module_source
from specializer.cbackend.shell import OUT_CAPACITY
from specializer.residual import CompiledResidual
from specializer.system import specialize

from .common import STACK_ADDR, Settings, Table, median, note, percentile, ratio
from .spec_common import PEER, SendWorld, interleaved, no_op

NAME = "spec_c"
NEEDS_ROOT = False
SIZES = (64, 1024)
SPEED_GOAL = 30.0
FILL_GOAL_MS = 1.0
VARIANTS = ("generic", "Python residual", "C, full send", "C, filled template", "C function from Python",
            "C function in a C loop")


def payload_of(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def residual_of(world: SendWorld) -> CompiledResidual:
    from pystack.tokens.system import system_of

    return system_of(world.stack).token(world.send_token).entry.compiled


def check_packets(sizes: list[int]) -> None:
    """Generic, Python residual and C (compiled and from a template): same packets, same results."""
    outs: list[list[bytes]] = [[], [], [], []]
    worlds = [SendWorld.make(out.append) for out in outs]
    template = cbackend.Template.compile(residual_of(worlds[3]))
    sends: list[Callable[[bytes], int]] = [
        lambda d: worlds[0].stack.send(worlds[0].connected, d),
        residual_of(worlds[1]).function,
        cbackend.load(cbackend.translate(residual_of(worlds[2]).tree, residual_of(worlds[2]).constants),
                      residual_of(worlds[2])),
        template.fill(residual_of(worlds[3])),
    ]
    for size in sizes:
        data = payload_of(size)
        for _ in range(3):
            results = [send(data) for send in sends]
            if len(set(results)) != 1 or any(out != outs[0] for out in outs) or not outs[0]:
                raise AssertionError(f"{size} bytes: generic, Python residual and C differ ({results})")
            for out in outs:
                out.clear()


class Harness:
    """The residual's C with a loop beside it that calls it ``n`` times (one cffi call)."""

    def __init__(self, program: cbackend.CProgram, compiled: CompiledResidual):
        inputs = [f"in{i}" for i in range(len(program.inputs))]
        params = "".join(f", int64_t {name}" for name in inputs)
        signature = f"int64_t cb_loop(int64_t n, const char *p, int64_t len{params}, int64_t *io, char *out, " \
                    "int64_t cap, const int64_t *K)"
        loop = (f"{signature} {{\n    int64_t last = 0;\n    for (int64_t i = 0; i < n; i++)\n"
                f"        last = {program.name}(p, len, {''.join(f'{name}, ' for name in inputs)}io, out, cap, K);\n"
                "    return last;\n}\n")
        ffi = cffi.FFI()
        ffi.cdef(f"{program.signature};\n{signature};")
        name = f"_pystack_c_bench_{id(self)}"
        ffi.set_source(name, module_source(program) + loop, extra_compile_args=["-O2"])
        self.module = load_module(ffi, name)
        self.program = program
        self.values = [getattr(compiled.constants[obj], name) for obj, name in program.inputs]
        self.io = self.module.ffi.new("int64_t[]", program.slots)
        self.out = self.module.ffi.new("char[]", OUT_CAPACITY)
        self.K = self.module.ffi.new("int64_t[]", 1)

    def function_loop(self, data: bytes) -> Callable[[int], None]:
        """The C function called from Python, ``n`` times."""
        function = getattr(self.module.lib, self.program.name)
        values, io, out, K, n_data = self.values, self.io, self.out, self.K, len(data)

        def loop(n: int) -> None:
            for _ in range(n):
                function(data, n_data, *values, io, out, OUT_CAPACITY, K)
        return loop

    def c_loop(self, data: bytes) -> Callable[[int], None]:
        """The C function called by C, ``n`` times per call."""
        run, values, io, out, K = self.module.lib.cb_loop, self.values, self.io, self.out, self.K

        def loop(n: int) -> None:
            run(n, data, len(data), *values, io, out, OUT_CAPACITY, K)
        return loop

    def packet(self, data: bytes) -> bytes:
        mask = getattr(self.module.lib, self.program.name)(data, len(data), *self.values, self.io, self.out,
                                                           OUT_CAPACITY, self.K)
        sink = next(e for e in self.program.effects if e.kind == "call")
        offset, length = self.io[sink.args[0][1]], self.io[sink.args[0][1] + 1]
        if mask < 0:
            raise AssertionError("the C function went back to Python on the fast path")
        return bytes(self.module.ffi.buffer(self.out, OUT_CAPACITY)[offset:offset + length])


def latencies(settings: Settings) -> tuple[dict[str, list[float]], dict[str, list[float]], float]:
    """Seconds per request: the specializer, C compiled per request, C from a filled template;
    wall time, and this process's CPU time (on a loaded machine, the wall time waits for a CPU)."""
    stack = Stack(seed=3)
    stack.add_interface("bench0", STACK_ADDR, 24, sink=no_op)
    scenario = all_scenarios()["udp_send_connected"]
    times: dict[str, list[float]] = {"specializer (Python residual)": [], "C compiled per request": [],
                                     "C from a filled template": []}
    cpu: dict[str, list[float]] = {label: [] for label in times}

    def timed(label: str, call: Callable[[], object]) -> object:
        wall, used = time.perf_counter(), time.process_time()
        result = call()
        times[label].append(time.perf_counter() - wall)
        cpu[label].append(time.process_time() - used)
        return result

    template_seconds = 0.0
    template = None
    for i in range(settings.pick(200, 40)):
        fd = stack.socket()
        stack.bind(fd, (STACK_ADDR, 20000 + i))
        stack.connect(fd, PEER)
        compiled = timed("specializer (Python residual)",
                         lambda fd=fd: specialize(scenario, {"self": stack, "fd": fd, "flags": 0}).compiled)
        if template is None:
            t0 = time.perf_counter()
            template = cbackend.Template.compile(compiled, fresh=True)
            template_seconds = time.perf_counter() - t0
        if i < settings.pick(8, 3):  # the compiler runs in a child process: its CPU time is not ours
            timed("C compiled per request", lambda c=compiled: cbackend.load(cbackend.translate(c.tree, c.constants),
                                                                               c, fresh=True))
        timed("C from a filled template", lambda c=compiled, t=template: t.fill(c))
        stack.close(fd)
    return times, cpu, template_seconds


def run(settings: Settings) -> Table:
    if cbackend.compiler_problem() is not None:
        raise RuntimeError(f"spec_c needs a C compiler: {cbackend.compiler_problem()}")
    check_packets([0, 1, 64, 1024, 1472, 1473, 4000])
    times, cpu, template_seconds = latencies(settings)
    world = SendWorld.make()
    compiled = residual_of(world)
    program = cbackend.translate(compiled.tree, compiled.constants)
    native = cbackend.load(program, compiled)
    filled = cbackend.Template.compile(compiled).fill(compiled)
    harness = Harness(program, compiled)
    stack, fd = world.stack, world.connected
    loops: dict[int, dict[str, Callable[[int], None]]] = {}
    for size in SIZES:
        data = payload_of(size)
        loops[size] = {
            "generic": _repeat(lambda d=data: stack.send(fd, d)),
            "Python residual": _repeat(lambda d=data: compiled.function(d)),
            "C, full send": _repeat(lambda d=data: native(d)),
            "C, filled template": _repeat(lambda d=data: filled(d)),
            "C function from Python": harness.function_loop(data),
            "C function in a C loop": harness.c_loop(data),
        }
        _check_function_packet(harness, data)
    max_calls, max_seconds = settings.pick(60_000, 6_000), settings.pick(0.8, 0.12)
    for size_loops in loops.values():  # warm-up
        for loop in size_loops.values():
            loop(100)
    samples: dict[tuple[int, str], list[float]] = {}
    for repeat in range(settings.repeats):
        for size in SIZES:
            for variant, timing in interleaved(loops[size], max_calls, max_seconds,
                                               reverse=bool(repeat & 1)).items():
                samples.setdefault((size, variant), []).append(timing.ns_median)
        note(f"{NAME} #{repeat + 1}: " + "; ".join(
            f"{size} B C full send {ratio(samples[(size, 'generic')][-1], samples[(size, 'C, full send')][-1]):.1f}x"
            for size in SIZES))

    table = Table(NAME, "C backend: getting native code, and per packet against generic Python and the Python "
                  "residual (UDP send, no-op sink)", ["what", "variant", "n", "median", "p90 / range", "x generic",
                                                      "x Python residual"])
    for label, values in times.items():
        table.add("latency per request", label, len(values), f"{median(values) * 1e3:.3f} ms",
                  f"{percentile(values, 90) * 1e3:.3f} ms", None, None)
    table.add("latency, once per shape", "Template.compile", 1, f"{template_seconds * 1e3:.1f} ms", "-", None, None)
    speedups: dict[tuple[int, str], float] = {}
    for size in SIZES:
        for variant in VARIANTS:
            values = samples[(size, variant)]
            speedups[(size, variant)] = median([ratio(g, v) for g, v in zip(samples[(size, 'generic')], values,
                                                                            strict=True)])
            over_residual = median([ratio(r, v) for r, v in zip(samples[(size, 'Python residual')], values,
                                                               strict=True)])
            table.add(f"{size} B per packet", variant, settings.repeats, f"{median(values):,.0f} ns",
                      f"{min(values):,.0f}..{max(values):,.0f} ns", speedups[(size, variant)], over_residual)
    fill_ms = median(times["C from a filled template"]) * 1e3
    fill_cpu_ms = median(cpu["C from a filled template"]) * 1e3
    table.notes += [
        f"goal: template fill < {FILL_GOAL_MS:g} ms: median {fill_ms:.3f} ms wall "
        f"({'met' if fill_ms < FILL_GOAL_MS else 'NOT MET'}), {fill_cpu_ms:.3f} ms of CPU "
        f"({'met' if fill_cpu_ms < FILL_GOAL_MS else 'NOT MET'}); C compiled per request median "
        f"{median(times['C compiled per request']) * 1e3:.0f} ms, "
        f"{median(times['C compiled per request']) / median(times['C from a filled template']):,.0f}x the fill",
        "latency medians in this process's CPU time (time.process_time; the compiler's child process not "
        "counted): " + ", ".join(f"{label} {median(values) * 1e3:.3f} ms" for label, values in cpu.items()),
        f"goal: C >= {SPEED_GOAL:g}x the generic Python send per packet built: " + "; ".join(
            f"{size} B {variant} {speedups[(size, variant)]:.1f}x "
            f"({'met' if speedups[(size, variant)] >= SPEED_GOAL else 'NOT MET'})"
            for size in SIZES for variant in VARIANTS[2:]),
        "baseline: generic = stack.send(fd, data) on a connected UDP socket, building and 'sending' (no-op sink) "
        "one packet per call, same payloads; 'full send' variants do everything the generic call does; the two "
        "'C function' variants only build the packet (no counters, no IP ID increment, no sink call)",
        f"ns per packet: medians of {settings.repeats} repeat(s), each the median chunk of 50 calls "
        f"(the C loop: 50 packets per cffi call); loops interleaved; up to {max_calls:,} calls or {max_seconds:g} s",
        "checked before timing: generic, Python residual, C compiled and C from a template emit byte-identical "
        "packets and return the same values (payloads 0, 1, 64, 1024, 1472, 1473, 4000 B, 3 calls each; 1473 "
        "and 4000 B fragment: the C hands those calls to the Python residual); the C function alone builds the "
        "bytes the full send emits",
    ]
    table.data = {
        "latency_seconds": times,
        "latency_cpu_seconds": cpu,
        "template_compile_seconds": template_seconds,
        "ns_per_packet": {f"{s} {v}": values for (s, v), values in samples.items()},
        "speedup_vs_generic": {f"{s} {v}": value for (s, v), value in speedups.items()},
        "goals": {"fill_ms": FILL_GOAL_MS, "speedup": SPEED_GOAL},
    }
    return table


def _repeat(call: Callable[[], object]) -> Callable[[int], None]:
    def loop(n: int) -> None:
        for _ in range(n):
            call()
    return loop


def _check_function_packet(harness: Harness, data: bytes) -> None:
    """The C function alone builds the bytes the full send emits from the same fields."""
    captured: list[bytes] = []
    other = residual_of(SendWorld.make(captured.append))
    for (obj, name), value in zip(harness.program.inputs, harness.values, strict=True):
        setattr(other.constants[obj], name, value)
    other.function(data)
    if harness.packet(data) != bytes(captured[0]):
        raise AssertionError(f"the C function builds other bytes than the send for {len(data)} bytes")
