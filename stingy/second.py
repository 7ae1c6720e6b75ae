"""The second program (demos/thttpd_like.py, a loop over connection states) in simulated memory.

The same tracer, cost model and allocators as tux_like's run (:mod:`stingy.simulate`),
on a program of another shape: no stage queue, a loop that runs each connection's
state handler. The variants differ as tux_like's do: ``original`` is the program's
round-robin loop over kmalloc-style addresses, ``stingy`` memwalk and stingygen's
map of this program with the Stingy allocator, and the Stingy scheduler (by stage,
in batches, DynCheck before electing) ordering the loop's steps.

Traced: the read, response and log buffers (every slice read and write the
handlers make, at the addresses their allocator gave), the allocator's free-list
word, each handler's frame (memwalk's estimate). The load is ab's closed loop in
its plainest form: ``c`` keep-alive connections, each with its next request
always waiting (``requests / c`` of them), so ``c`` requests are in flight
throughout; the figures are per request over the whole run.
"""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType

from .cache import PENTIUM_III, Machine
from .load import Result
from .simulate import (
    INSTRUCTIONS_PER_STAGE,
    Layout,
    TracedMalloc,
    TracedStingy,
    TracedStingyScheduler,
    layout_of,
    traced_scheduler,
    tracer_for,
)

PROGRAM = Path(__file__).resolve().parents[1] / "demos" / "thttpd_like.py"


def load(path: Path = PROGRAM) -> ModuleType:
    """The program, imported from its file (demos/ is not an installed package)."""
    name = "demos.thttpd_like"
    if name in sys.modules and Path(sys.modules[name].__file__).resolve() == path.resolve():
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or not path.exists():
        raise FileNotFoundError(f"the second program is not at {path}")
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def second_layout(cache_size: int | None = None, path: Path = PROGRAM) -> Layout:
    """memwalk and stingygen on the second program."""
    return layout_of([str(path)], [], cache_size)


def closed_loop(variant: str, concurrency: int, requests: int, layout: Layout | None = None,
                machine: Machine = PENTIUM_III, seed: int = 1) -> Result:
    """``concurrency`` connections in flight, ``requests`` answers in all (at least one each)."""
    if concurrency < 1 or requests < 1:
        raise ValueError("concurrency and requests must be positive")
    program = load()
    layout = layout or second_layout(machine.l2.size)
    tracer = tracer_for(variant, layout, machine)
    if variant == "stingy":
        allocator = TracedStingy(tracer, layout.memory, layout.labels, layout.needs)
        scheduler = TracedStingyScheduler(allocator, layout.order)
    else:
        allocator = TracedMalloc(tracer)
        scheduler = traced_scheduler(program.RoundRobin)()
    scheduler.tracer = tracer
    heap = program.Heap(allocator)
    rng = random.Random(seed)
    paths = [*sorted(program.FILES), "/missing"]
    connections, wanted = [], []
    for index in range(concurrency):
        count = requests // concurrency + (index < requests % concurrency) or 1
        lines = [paths[rng.randrange(len(paths))] for _ in range(count)]
        wanted.append(lines)
        connections.append(program.Connection(b"".join(b"GET %s\n" % p.encode() for p in lines)))
    program.serve(connections, heap, scheduler)
    errors = sum(_wrong(program, conn.sent, lines) for conn, lines in zip(connections, wanted, strict=True))
    if any(heap.live.values()) or allocator.live_objects():
        raise RuntimeError(f"objects left live after serving: {heap.live}")
    l1, l2 = tracer.cache.misses()
    served = sum(len(lines) for lines in wanted)
    return Result(variant, concurrency, 0.0, served, machine.cost.seconds(tracer.cycles()), l2, l1, errors, 0,
                  tracer.stage_runs, machine.cost.cycles(tracer.stage_runs * INSTRUCTIONS_PER_STAGE, 0, 0),
                  machine.cost.cycles(0, l1, l2))


def _wrong(program: ModuleType, sent: bytes, paths: list[str]) -> int:
    """The answers that are not what the program's files say (one per request, in order)."""
    expected = b"".join((b"HTTP/1.0 200 OK\r\n\r\n" + program.FILES[p]) if p in program.FILES
                        else b"HTTP/1.0 404 Not Found\r\n\r\n" for p in paths)
    return 0 if sent == expected else len(paths)
