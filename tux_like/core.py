"""The protocol-independent core of the server: requests, stages, the scheduler, memory.

TUX's shape (thesis 7.1.3-7.1.4, figure 6.1), in Python:

- a request is a continuation: a :class:`Request` object holding its state
  and, while it waits in a queue, the next stage to run on it;
- a stage ("atom") is a plain function ``stage(req) -> None`` that ends by
  queueing zero or more successors with :func:`QueueStage`, or by waiting
  for its socket (:meth:`ThreadInfo.wait`), a worker (:meth:`ThreadInfo.submit`)
  or a timer (:meth:`ThreadInfo.arm`);
- one :class:`Scheduler` per server thread runs queued stages with TUX's
  three priorities, in O(1) per election;
- per-request data come from :func:`Malloc` / :func:`Free` and nowhere
  else, by allocation site, so that ``memwalk`` reads lifetimes off the
  source and the Stingy allocator can take the allocator's place.

The interface functions carry :func:`stingy.annotations.stingy_interface`:
the decorator is what an AST tool looks for (the thesis used C attributes),
and its arguments name the roles of the parameters, as ``QueueStage("T", "S")``.
``ThreadInfo.wait``, ``arm`` and ``submit`` queue a stage on an event (the
socket, a timer, a worker): they are marked QueueStage too.

Sans-IO: nothing here blocks, reads a clock or touches a socket; the
socket layer is a :class:`Net` given by a backend, time comes in as ``now``.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from stingy.annotations import stingy_interface

# TUX's three request priorities (7.1.3): new connections first, then ordinary requests,
# then requests throttled for bandwidth.
PRIO_HIGH = 0
PRIO_NORMAL = 1
PRIO_LOW = 2
PRIORITIES = (PRIO_HIGH, PRIO_NORMAL, PRIO_LOW)

Stage = Callable[["Request"], None]


# ---------------------------------------------------------------- memory


@dataclass(frozen=True)
class Site:
    """An allocation site: what is allocated there and how big it is (TUX's sizes).

    ``make`` builds the object; ``size`` is what the allocator charges (and what a
    simulated-memory allocator lays out), the size TUX's structure or buffer has.
    """

    name: str
    size: int
    make: Callable[[Site], Any]


def buffer_of(site: Site) -> bytearray:
    """A zeroed buffer of the site's size: a receive, header or listing buffer."""
    return bytearray(site.size)


class Allocator:
    """The general-purpose allocator: makes objects, counts what is live per site.

    The counts are what the leak checks read: after a connection ends, every
    object it allocated must have been freed. Stingy replaces this class.
    """

    def __init__(self) -> None:
        self.live: dict[str, int] = {}
        self.allocated: dict[str, int] = {}
        self.live_bytes = 0
        self._site_of: dict[int, Site] = {}

    def allocate(self, site: Site) -> Any:
        obj = site.make(site)
        self._site_of[id(obj)] = site
        self.live[site.name] = self.live.get(site.name, 0) + 1
        self.allocated[site.name] = self.allocated.get(site.name, 0) + 1
        self.live_bytes += site.size
        return obj

    def free(self, obj: Any) -> None:
        site = self._site_of.pop(id(obj), None)
        if site is None:
            raise ValueError(f"Free of an object this allocator did not allocate: {type(obj).__name__}")
        self.live[site.name] -= 1
        self.live_bytes -= site.size

    def live_objects(self) -> int:
        return sum(self.live.values())


@stingy_interface("Malloc", site="size")
def Malloc(ti: ThreadInfo, site: Site) -> Any:
    """Allocate a per-request object at ``site`` from the thread's allocator."""
    return ti.allocator.allocate(site)


@stingy_interface("Free", obj="O")
def Free(ti: ThreadInfo, obj: Any) -> None:
    """Give a per-request object back to the thread's allocator."""
    ti.allocator.free(obj)


# ---------------------------------------------------------------- sockets


class Net(Protocol):
    """The non-blocking socket calls the stages make; a backend implements them.

    ``recv`` returns bytes, ``b""`` at end of stream, or ``None`` when it would
    block; ``send`` returns the bytes taken (possibly 0 when it would block).
    A reset connection raises ``ConnectionError``. ``watch`` asks to be told
    (through :meth:`Server.ready`) when ``sock`` may have become readable or
    writable; it is edge-triggered, re-armed by each call.
    """

    def listen(self, address: str, port: int, backlog: int) -> Any: ...
    def accept(self, listener: Any) -> tuple[Any, tuple[str, int]] | None: ...
    def recv(self, sock: Any, size: int) -> bytes | None: ...
    def send(self, sock: Any, data: bytes | bytearray | memoryview) -> int: ...
    def shutdown_write(self, sock: Any) -> None: ...
    def close(self, sock: Any) -> None: ...
    def watch(self, sock: Any, writable: bool) -> None: ...
    def local_address(self, sock: Any) -> tuple[str, int]: ...


# ---------------------------------------------------------------- requests


@dataclass(eq=False)
class Request:
    """A task: one connection's state, and its continuation while it is queued.

    Protocol handlers keep their per-request fields in ``proto`` (an object of
    their own, allocated with Malloc). ``wait_gen`` invalidates a socket wait or
    a worker's completion that something later superseded (a timeout, the end
    of the request); ``timer_gen`` does the same for the request's one timer.
    """

    ti: ThreadInfo
    sock: Any = None
    peer: tuple[str, int] = ("", 0)
    listener: Any = None
    waiting: str = ""  # "", "read", "write", "work": what it is parked on
    wait_gen: int = 0
    timer_gen: int = 0
    queued: int = 0  # entries of this request in the scheduler's queues
    proto: Any = None
    closed: bool = False


def request_of(site: Site) -> Request:
    """The request structure's maker: its fields are set by the accepting stage."""
    return Request(ti=None)  # type: ignore[arg-type]


REQUEST = Site("request", 1024, request_of)  # TUX's tux_req_t is about a kilobyte


@stingy_interface("QueueStage", req="T", stage="S")
def QueueStage(req: Request, stage: Stage, priority: int = PRIO_NORMAL) -> None:
    """Queue ``stage`` to run on ``req`` (TUX's add_tux_atom): an internal event."""
    req.waiting = ""
    req.ti.scheduler.queue(req, stage, priority)


# ---------------------------------------------------------------- scheduling


def _reraise(req: Request, stage: Stage, error: Exception) -> None:
    raise error


class Scheduler:
    """TUX's O(1) priority scheduler: one FIFO per priority, a bitmask of the non-empty ones.

    ``elect`` takes the oldest entry of the most urgent non-empty queue;
    ``run`` is the event loop's inner loop (TUX's event_loop), bounded by a
    budget so that the driver gets the loop back to poll sockets and timers.
    """

    def __init__(self) -> None:
        self.queues: tuple[deque[tuple[Request, Stage]], ...] = tuple(deque() for _ in PRIORITIES)
        self.nonempty = 0  # bit p set when queues[p] holds something
        self.stage_runs: dict[str, int] = {}
        self.on_error: Callable[[Request, Stage, Exception], None] = _reraise



    def queue(self, req: Request, stage: Stage, priority: int = PRIO_NORMAL) -> None:
        self.queues[priority].append((req, stage))
        self.nonempty |= 1 << priority
        req.queued += 1

    def __len__(self) -> int:
        return sum(len(q) for q in self.queues)

    def elect(self) -> tuple[Request, Stage] | None:
        mask = self.nonempty
        if not mask:
            return None
        priority = (mask & -mask).bit_length() - 1  # the lowest set bit: the most urgent queue
        chosen = self.queues[priority]
        entry = chosen.popleft()
        if not chosen:
            self.nonempty &= ~(1 << priority)
        entry[0].queued -= 1
        return entry

    @stingy_interface("Scheduler")
    def run(self, budget: int) -> int:
        """Run up to ``budget`` queued stages; returns how many ran."""
        ran = 0
        while ran < budget:
            entry = self.elect()
            if entry is None:
                break
            req, stage = entry
            ran += 1
            if req.closed:
                continue  # the request ended while this stage was queued
            name = stage.__name__
            self.stage_runs[name] = self.stage_runs.get(name, 0) + 1
            try:
                stage(req)
            except Exception as error:  # noqa: BLE001 - one request's failure never stops the loop
                self.on_error(req, stage, error)
        return ran


# ---------------------------------------------------------------- threads


@dataclass
class Work:
    """A job for a worker (file reads, CGI): run off the loop, its result re-queues the request."""

    req: Request
    job: Callable[[], Any]
    then: Stage
    generation: int
    result: Any = None
    error: BaseException | None = None


@dataclass(eq=False)
class ThreadInfo:
    """One server thread (TUX's threadinfo_t): its scheduler, allocator, timers and waits.

    TUX runs one per CPU, each with its own request lists; here they are run
    in turn by one OS thread, so ``threads = 1`` is the case specialization
    unrolls the per-thread loops for.
    """

    server: Any
    index: int
    net: Net
    scheduler: Scheduler = field(default_factory=Scheduler)
    allocator: Allocator = field(default_factory=Allocator)
    listeners: list[Any] = field(default_factory=list)
    timers: list[tuple[float, int, Request, int, Stage]] = field(default_factory=list)
    waits: dict[Any, tuple[Request, int, Stage]] = field(default_factory=dict)
    work: deque[Work] = field(default_factory=deque)
    now: float = 0.0
    requests: int = 0  # live request structures of this thread
    _order: itertools.count = field(default_factory=itertools.count)

    @stingy_interface("QueueStage", req="T", stage="S")
    def wait(self, req: Request, stage: Stage, writable: bool = False) -> None:
        """Park ``req`` until its socket is ready, then queue ``stage`` (an external event)."""
        req.wait_gen += 1
        req.waiting = "write" if writable else "read"
        self.waits[req.sock] = (req, req.wait_gen, stage)
        self.net.watch(req.sock, writable)

    def ready(self, sock: Any) -> None:
        """The backend says ``sock`` may be ready: queue the stage that waits on it."""
        parked = self.waits.pop(sock, None)
        if parked is None:
            return
        req, generation, stage = parked
        if generation == req.wait_gen and not req.closed:
            QueueStage(req, stage)

    @stingy_interface("QueueStage", req="T", stage="S")
    def arm(self, req: Request, delay: float, stage: Stage) -> None:
        """Queue ``stage`` on ``req`` after ``delay`` seconds, replacing its timer, unless
        the request disarms it first; a wait the timer interrupts is cancelled."""
        req.timer_gen += 1
        heapq.heappush(self.timers, (self.now + delay, next(self._order), req, req.timer_gen, stage))

    def disarm(self, req: Request) -> None:
        req.timer_gen += 1

    @stingy_interface("QueueStage", req="T", then="S")
    def submit(self, req: Request, job: Callable[[], Any], then: Stage) -> None:
        """Run ``job`` on a worker (it may block); ``then`` runs with ``req.proto.work`` done."""
        req.wait_gen += 1
        req.waiting = "work"
        self.work.append(Work(req, job, then, req.wait_gen))

    def complete(self, done: Work) -> None:
        """A worker finished: hand the result to the request and queue its next stage."""
        req = done.req
        if req.closed or done.generation != req.wait_gen:
            return
        req.proto.work = done
        QueueStage(req, done.then)

    def expire(self, now: float) -> None:
        """Queue the stages of every timer due at ``now`` whose request has not moved on."""
        self.now = now
        timers = self.timers
        deferred = []
        while timers and timers[0][0] <= now:
            entry = heapq.heappop(timers)
            _, _, req, generation, stage = entry
            if generation != req.timer_gen or req.closed:
                continue
            if req.queued:
                # A stage of this request is already queued (its data came in the same step):
                # one continuation at a time. The timer waits for that stage, which may re-arm
                # or disarm it; if it does neither, the timer fires at the next expiry.
                deferred.append(entry)
                continue
            self._cancel_wait(req)
            req.timer_gen += 1
            QueueStage(req, stage)
        for entry in deferred:
            heapq.heappush(timers, entry)

    def next_deadline(self) -> float | None:
        while self.timers:
            when, _, req, generation, _ = self.timers[0]
            if generation == req.timer_gen and not req.closed:
                return when
            heapq.heappop(self.timers)  # superseded: drop it now rather than wake for it
        return None

    def forget(self, req: Request) -> None:
        """The request is over: no wait of its own may queue it again."""
        req.closed = True
        req.timer_gen += 1
        self._cancel_wait(req)

    def _cancel_wait(self, req: Request) -> None:
        req.wait_gen += 1
        req.waiting = ""
        parked = self.waits.get(req.sock)
        if parked is not None and parked[0] is req:
            del self.waits[req.sock]


def finish(req: Request) -> None:
    """End a connection: forget its waits and timer, close its socket, free the request
    structure. Its protocol handler frees its own objects first."""
    if req.closed:
        return
    ti = req.ti
    ti.forget(req)
    ti.net.close(req.sock)
    ti.requests -= 1
    Free(ti, req)
