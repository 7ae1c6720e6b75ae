"""The real tux_like server in simulated memory and simulated time.

The server's own stages run, unchanged, over :class:`SimNet` (memnet with
tracing); what differs between the two variants is only the allocator
(where objects live) and the scheduler (what runs when):

- ``original``: kmalloc-style :class:`~stingy.heap.GeneralMalloc` addresses and
  TUX's three-priority scheduler;
- ``stingy``: the :class:`~stingy.allocator.StingyAllocator` over stingygen's
  memory map of tux_like and the :class:`~stingy.scheduler.StingyScheduler`.

**What is traced**, as loads and stores at simulated addresses fed to
:class:`~stingy.cache.CacheHierarchy`:

- every per-request object gets the address its allocator gives it; the
  allocator's own free-list touch (a word at the object's start) on
  allocation and on free;
- the request structure (``Request``) and HTTP state (``HttpState``): every
  read and write of one of their fields, as a word at the field's offset
  (fields in declaration order, 8 bytes each, as a C struct would hold them);
- receive, header and listing buffers: every index, slice read and write,
  ``find``/``count``/``startswith`` span the stages make on them (the
  read/parse cycle's reads, the recv's store of the bytes read, the headers
  written), and the bytes ``send`` takes out of them;
- file-cache data (global, the same addresses in both variants): the bytes
  copied out of it into the header buffer or sent from it;
- the stage's frame: memwalk's stack estimate for the stage, written and read
  at the stack's address (the slab's stack region for Stingy), per stage run.

**What is approximated**: CPython's own heap (the interpreter, the Python
objects behind each value, the dicts, the bytecode) is not simulated: the
figures are those of a C server whose data is what the Python server's data
is, so they leave out instruction fetches and the interpreter's misses,
which in CPython would swamp the effect (and are why running the Python
server itself shows nothing of it). The kernel's socket buffers and TCP
state are not simulated either. Instructions are not counted: each stage run
is charged :data:`INSTRUCTIONS_PER_STAGE` (a TUX atom is a few hundred lines
of C); cycles are that plus the misses at each level times their latency
(:class:`~stingy.cache.CostModel`), and the load generators run in those
seconds.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tux_like import http
from tux_like.config import make_config
from tux_like.core import Allocator, Request, Scheduler, Site, buffer_of, request_of
from tux_like.memnet import MemoryNet
from tux_like.server import Server

from .allocator import StingyAllocator
from .cache import PENTIUM_III, CacheHierarchy, Machine
from .heap import AddressSpace, GeneralMalloc
from .scheduler import StingyScheduler, stage_order

INSTRUCTIONS_PER_STAGE = 1000
WORD = 8
STACK_TOP = 0x7FFF_0000  # the original server's thread stack (any address apart from the heap)
DEFAULT_FRAME = 128  # a stage memwalk did not see (bytes of frame)
VARIANTS = ("original", "stingy")


# ---------------------------------------------------------------- traced objects


class TracedBuffer(bytearray):
    """A per-request buffer whose reads and writes are charged to the cache at its address."""

    __slots__ = ("_at", "_tr")

    def __getitem__(self, index: Any) -> Any:
        tracer = self._tr
        if tracer is not None:
            start, length = _span(index, len(self))
            tracer.cache.load(self._at + start, length)
        return bytearray.__getitem__(self, index)

    def __setitem__(self, index: Any, value: Any) -> None:
        tracer = self._tr
        if tracer is not None:
            start, length = _span(index, len(self))
            tracer.cache.store(self._at + start, length)
            if isinstance(value, memoryview):
                tracer.view(value)
        bytearray.__setitem__(self, index, value)

    def find(self, sub: Any, start: int = 0, end: int | None = None) -> int:
        found = bytearray.find(self, sub, start, end)
        self._scan(start, (found + len(sub)) if found >= 0 else (len(self) if end is None else end))
        return found

    def count(self, sub: Any, start: int = 0, end: int | None = None) -> int:
        self._scan(start, len(self) if end is None else end)
        return bytearray.count(self, sub, start, end)

    def startswith(self, prefix: Any, start: int = 0, end: int | None = None) -> bool:
        self._scan(start, start + len(prefix))
        return bytearray.startswith(self, prefix, start, end)

    def _scan(self, start: int, stop: int) -> None:
        if self._tr is not None and stop > start:
            self._tr.cache.load(self._at + start, stop - start)


def _span(index: Any, size: int) -> tuple[int, int]:
    if isinstance(index, slice):
        start, stop, _ = index.indices(size)
        return start, max(stop - start, 1)
    return index % size, 1


def _traced_struct(base: type, fields: tuple[str, ...]) -> type:
    """``base`` with every read and write of ``fields`` charged as a word at the field's offset."""
    offsets = {name: index * WORD for index, name in enumerate(fields)}
    get = object.__getattribute__

    def __getattribute__(self: Any, name: str) -> Any:
        offset = offsets.get(name)
        if offset is not None:
            tracer = get(self, "_tr")
            if tracer is not None:
                tracer.cache.load(get(self, "_at") + offset, WORD)
        return get(self, name)

    def __setattr__(self: Any, name: str, value: Any) -> None:
        offset = offsets.get(name)
        if offset is not None:
            tracer = get(self, "_tr")
            if tracer is not None:
                tracer.cache.store(get(self, "_at") + offset, WORD)
        object.__setattr__(self, name, value)

    return type(f"Traced{base.__name__}", (base,), {
        "__slots__": ("_at", "_tr"), "__getattribute__": __getattribute__, "__setattr__": __setattr__})


TracedRequest = _traced_struct(Request, tuple(f for f in Request.__dataclass_fields__))
TracedHttpState = _traced_struct(http.HttpState, http.HttpState.__slots__)


def _new(cls: type, init: Callable[..., None], *args: Any) -> Any:
    obj = cls.__new__(cls)
    object.__setattr__(obj, "_tr", None)
    object.__setattr__(obj, "_at", 0)
    init(obj, *args)
    return obj


# A site's maker -> the maker of its traced twin (the same object, observed).
TRACED_MAKERS: dict[Callable[[Site], Any], Callable[[Site], Any]] = {
    buffer_of: lambda site: _new(TracedBuffer, bytearray.__init__, site.size),
    request_of: lambda site: _new(TracedRequest, Request.__init__, None),
    http.http_state_of: lambda site: _new(TracedHttpState, http.HttpState.__init__),
}


# ---------------------------------------------------------------- the tracer


class Tracer:
    """The cache the traced objects report to, the global data's addresses, the stage count."""

    def __init__(self, machine: Machine = PENTIUM_III, stack_base: int = STACK_TOP,
                 frames: dict[str, int] | None = None):
        self.machine = machine
        self.cache = CacheHierarchy(machine)
        self.stack_base = stack_base
        self.frames = frames or {}
        self.stage_runs = 0
        self._sites: dict[str, Site] = {}
        self._globals = GeneralMalloc(AddressSpace(base=0x2000_0000, limit=0x3000_0000))
        self._global_at: dict[int, tuple[Any, int]] = {}

    def traced_site(self, site: Site) -> Site:
        twin = self._sites.get(site.name)
        if twin is None:
            maker = TRACED_MAKERS.get(site.make, site.make)
            twin = self._sites[site.name] = Site(site.name, site.size, maker)
        return twin

    def placed(self, obj: Any, address: int) -> None:
        """An object got its simulated address: from now on its accesses are charged there."""
        if hasattr(type(obj), "_tr"):
            object.__setattr__(obj, "_at", address)
            object.__setattr__(obj, "_tr", self)
        self.cache.load(address, WORD)  # the allocator reads the free list's link

    def released(self, obj: Any, address: int) -> None:
        if hasattr(type(obj), "_tr"):
            object.__setattr__(obj, "_tr", None)
        self.cache.store(address, WORD)  # the allocator links it back

    def stage(self, name: str) -> None:
        """A stage runs: its frame is written and read at the stack's address."""
        self.stage_runs += 1
        frame = self.frames.get(name, DEFAULT_FRAME)
        self.cache.store(self.stack_base - frame, frame)
        self.cache.load(self.stack_base - frame, frame)

    def address(self, buffer: Any) -> int:
        """A buffer's simulated address: a traced object's own, or (global data: the file
        cache) one given the first time it is seen, the same in both variants."""
        at = getattr(buffer, "_at", None)
        if at is not None:
            return at
        known = self._global_at.get(id(buffer))
        if known is None or known[0] is not buffer:
            known = self._global_at[id(buffer)] = (buffer, self._globals.malloc(max(len(buffer), 1)))
        return known[1]

    def view(self, view: memoryview) -> None:
        """The bytes of ``view`` are read (copied into a buffer, or sent)."""
        if not len(view):
            return
        base = view.obj
        offset = _pointer(view) - _pointer(memoryview(base))
        self.cache.load(self.address(base) + offset, len(view))

    def cycles(self) -> float:
        l1, l2 = self.cache.misses()
        return self.machine.cost.cycles(self.stage_runs * INSTRUCTIONS_PER_STAGE, l1, l2)


def _pointer(view: memoryview) -> int:
    return np.frombuffer(view, dtype=np.uint8).__array_interface__["data"][0]


# ---------------------------------------------------------------- allocators and schedulers


class TracedMalloc(Allocator):
    """The original server's allocator: its objects at kmalloc-style heap addresses."""

    def __init__(self, tracer: Tracer):
        super().__init__()
        self.tracer = tracer
        self.heap = GeneralMalloc()
        self._at: dict[int, int] = {}

    def allocate(self, site: Site) -> Any:
        obj = super().allocate(self.tracer.traced_site(site))
        address = self._at[id(obj)] = self.heap.malloc(site.size)
        self.tracer.placed(obj, address)
        return obj

    def free(self, obj: Any) -> None:
        super().free(obj)
        address = self._at.pop(id(obj))
        self.heap.free(address)
        self.tracer.released(obj, address)


class TracedStingy(StingyAllocator):
    """The Stingy allocator, its objects charged at the slab (or spill) addresses it gives."""

    def __init__(self, tracer: Tracer, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.tracer = tracer

    def allocate(self, site: Any, size: int | None = None) -> Any:
        obj = super().allocate(self.tracer.traced_site(site), size)
        self.tracer.placed(obj, self.address_of(obj))
        return obj

    def free(self, obj: Any) -> None:
        address = self.address_of(obj)
        super().free(obj)
        self.tracer.released(obj, address)


def traced_scheduler(base: type) -> type:
    """``base`` scheduler, telling the tracer each stage it elects."""

    def elect(self: Any) -> Any:
        entry = base.elect(self)
        if entry is not None:
            self.tracer.stage(entry[1].__name__)
        return entry

    return type(f"Traced{base.__name__}", (base,), {"elect": elect})


TracedScheduler = traced_scheduler(Scheduler)
TracedStingyScheduler = traced_scheduler(StingyScheduler)


class SimNet(MemoryNet):
    """memnet, charging what ``send`` takes out of a buffer, and telling the load generator
    when the server has answered a connection (it shuts its side down) or closed it."""

    def __init__(self, tracer: Tracer, answered: Callable[[Any], None]):
        super().__init__()
        self.tracer = tracer
        self.answered = answered

    def send(self, sock: Any, data: Any) -> int:
        taken = super().send(sock, data)
        if taken and isinstance(data, memoryview):
            self.tracer.view(data[:taken])
        return taken

    def shutdown_write(self, sock: Any) -> None:
        super().shutdown_write(sock)
        self.answered(sock)

    def close(self, sock: Any) -> None:
        answered = getattr(sock, "server_closed_write", True)
        super().close(sock)
        if not answered:
            self.answered(sock)


# ---------------------------------------------------------------- the Stingy layout of tux_like


@dataclass
class Layout:
    """What memwalk and stingygen say about tux_like, computed once per run."""

    memory: Any
    labels: dict[str, str]
    needs: dict[str, dict[str, int]]
    order: dict[str, int]
    frames: dict[str, int]


def layout_of(targets: list[str], exclude: list[str], cache_size: int | None = None) -> Layout:
    """memwalk and stingygen on a program: the map, its labels, each stage's allocations."""
    from .memwalk import memwalk
    from .stingygen import fixed_regions, memory_map, problem_from, solve

    cache_size = cache_size or PENTIUM_III.l2.size
    report = memwalk(targets, exclude=exclude)
    stack, finals = fixed_regions(report)
    solution = solve(problem_from(report, cache_size - stack - finals))
    memory = memory_map(report, solution.counts, cache_size)
    labels = {info.site.label: name for name, info in report.objects.items()}
    # A stage run holds one instance of each object it allocates past its end; one it also
    # frees (thttpd's log line) is back before the next run of the batch starts: no need.
    needs = {entry.rsplit(".", 1)[-1]: {o: 0 if o in stage.frees else 1 for o in stage.allocates}
             for entry, stage in report.stages.items()}
    frames = {entry.rsplit(".", 1)[-1]: stage.stack for entry, stage in report.stages.items()}
    return Layout(memory, labels, needs, stage_order(report), frames)


def tux_layout(cache_size: int | None = None, targets: tuple[str, ...] = ("tux_like",)) -> Layout:
    """memwalk and stingygen on tux_like's HTTP server (its socket layer, driver and FTP left out);
    a stingified tux_like is read with ``stingy.allocator`` beside it (where StingyAlloc is marked)."""
    from .cli import DEFAULT_EXCLUDE

    return layout_of(list(targets), [*DEFAULT_EXCLUDE, "tux_like.ftp"], cache_size)


def tracer_for(variant: str, layout: Layout | None, machine: Machine = PENTIUM_III) -> Tracer:
    """The variant's tracer: Stingy's stack at the bottom of the cache slab, the original's apart."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r} (known: {', '.join(VARIANTS)})")
    if variant == "stingy":
        return Tracer(machine, stack_base=layout.memory.cache_slab + layout.memory.regions[0].size,
                      frames=layout.frames)
    return Tracer(machine, frames=layout.frames if layout else None)


# ---------------------------------------------------------------- a server in simulated memory


def document_root(base: Path, files: int = 32, low: int = 256, high: int = 4096, seed: int = 5) -> list[str]:
    """Small files (thesis 5.3.3: in-core, small), their targets."""
    rng = random.Random(seed)
    root = base / "www"
    root.mkdir(exist_ok=True)
    targets = []
    for index in range(files):
        name = f"f{index}.html"
        (root / name).write_bytes(bytes(rng.randrange(97, 123) for _ in range(rng.randrange(low, high))))
        targets.append("/" + name)
    return targets


@dataclass
class Simulated:
    server: Server
    net: SimNet
    tracer: Tracer


def build(variant: str, root: Path, answered: Callable[[Any], None], layout: Layout | None = None,
          machine: Machine = PENTIUM_III) -> Simulated:
    """The tux_like HTTP server, one thread, in simulated memory: ``original`` or ``stingy``.

    Both run the same configuration: no access log (its formatting is Python work a C
    server's log would not weigh), no connection limit (ab's thousands of clients are
    all let in, as TUX with a large max_connect) and timeouts long enough that a slow
    answer is measured, not cut off."""
    config = make_config({"document_root": str(root), "listen": "198.18.0.2:80", "logging": False,
                          "max_connect": 1 << 20, "keepalive_timeout": 600.0, "request_timeout": 600.0})
    if variant == "stingy":
        layout = layout or tux_layout(machine.l2.size)
    tracer = tracer_for(variant, layout, machine)
    net = SimNet(tracer, answered)
    server = Server(config, net)
    for ti in server.threads:
        if variant == "stingy":
            ti.allocator = TracedStingy(tracer, layout.memory, layout.labels, layout.needs)
            ti.scheduler = TracedStingyScheduler(ti.allocator, layout.order)
        else:
            ti.allocator = TracedMalloc(tracer)
            ti.scheduler = TracedScheduler()
        ti.scheduler.tracer = tracer
        ti.scheduler.on_error = server.stage_failed
    server.action("start")
    return Simulated(server, net, tracer)


def temp_root() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="stingy-www-", dir=os.environ.get("TMPDIR"))
