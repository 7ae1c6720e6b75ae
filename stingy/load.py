"""Load generators in simulated time, driving the real tux_like server in simulated memory.

- :func:`closed_loop` has ab's semantics (thesis 7.5, the modified ab): ``c``
  clients each keep one HTTP/1.0 request in flight; when its answer is in,
  the client closes and, after a tiny random delay, sends the next one.
- :func:`open_loop` has httperf's: a new connection at a fixed rate, whatever
  the server is doing; past the server's capacity the backlog grows until
  connections time out (the failure zone).

Both run the same loop: clients' events due at the simulated clock, the
server's readiness and workers (inline, as memnet's pump), then a step of
the scheduler; the step's stage runs and cache misses, through the cost
model, advance the clock. One network transit (``LATENCY``) separates the
server's answer from the client's next move.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tux_like.memnet import deliver_events

from .simulate import INSTRUCTIONS_PER_STAGE, Layout, Simulated, build

LATENCY = 50e-6  # one way, a switched LAN
DELAY = 20e-6  # ab's tiny random pause between a client's requests (at most)
STEP_BUDGET = 16  # stages per scheduler step: the clock advances after each step
EPOCH = 1_700_000_000.0  # the server's wall clock at simulated time 0 (Date, file cache)


@dataclass
class Result:
    variant: str
    concurrency: int  # closed loop: clients; open loop: 0
    rate: float  # open loop: offered requests per second; closed loop: 0
    requests: int  # answers measured
    seconds: float  # simulated seconds they took
    l2_misses: int
    l1_misses: int
    errors: int  # answers that were not 200
    timed_out: int  # open loop: requests not answered within the timeout
    stage_runs: int  # stages run while they were measured
    instruction_cycles: float  # the server's busy cycles then: its stages' instructions...
    miss_cycles: float  # ...and its cache misses

    @property
    def miss_share(self) -> float:
        """The fraction of the server's busy time spent in cache misses."""
        busy = self.instruction_cycles + self.miss_cycles
        return self.miss_cycles / busy if busy else 0.0

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def l2_misses_per_request(self) -> float:
        return self.l2_misses / self.requests if self.requests else 0.0


@dataclass
class _Run:
    """The shared loop: the simulated server, the clock, the clients' timed events."""

    sim: Simulated
    targets: list[str]
    rng: random.Random
    clock: float = 0.0
    events: list[tuple[float, int, Callable[[], None]]] = field(default_factory=list)
    answered: list[Any] = field(default_factory=list)
    started: dict[Any, float] = field(default_factory=dict)
    _order: itertools.count = field(default_factory=itertools.count)

    def at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self.events, (when, next(self._order), action))

    def request(self) -> None:
        client = self.sim.net.connect(80)
        target = self.targets[self.rng.randrange(len(self.targets))]
        client.send(f"GET {target} HTTP/1.0\r\nHost: bench\r\nUser-Agent: ab\r\n\r\n".encode())
        self.started[client.sock] = self.clock

    def step(self) -> None:
        """Clients' due events, then one step of the server; the clock moves by its cost."""
        while self.events and self.events[0][0] <= self.clock:
            heapq.heappop(self.events)[2]()
        server, net, tracer = self.sim.server, self.sim.net, self.sim.tracer
        before = tracer.cycles()  # the readiness and workers' accesses are the server's time too
        runs = tracer.stage_runs
        deliver_events(server, net)
        server.step(EPOCH + self.clock, STEP_BUDGET)
        self.clock += tracer.machine.cost.seconds(tracer.cycles() - before)
        if tracer.stage_runs != runs or net.ready:
            return
        upcoming = [when for when in (self.events[0][0] if self.events else None,
                                      _deadline(server)) if when is not None]
        if not upcoming and not self.answered:
            raise RuntimeError("the simulation has nothing left to do")
        if upcoming:
            self.clock = max(self.clock, min(upcoming))

    def collect(self) -> list[tuple[Any, bytes]]:
        """The connections the server answered since the last call, and what each got; each
        client closes when the answer reaches it (one transit), its FIN reaching the server
        one transit after that."""
        done = []
        for sock in self.answered:
            data = sock.client.recv()
            done.append((sock, data))
            if not sock.closed and not sock.client_closed_write:
                self.at(self.clock + 2 * LATENCY, sock.client.shutdown_write)
        self.answered.clear()
        return done


def _deadline(server: Any) -> float | None:
    deadline = server.next_deadline()
    return None if deadline is None else deadline - EPOCH


def _start(variant: str, root: Path, targets: list[str], layout: Layout | None, seed: int) -> _Run:
    answered: list[Any] = []
    run = _Run(build(variant, root, answered.append, layout), targets, random.Random(seed))
    run.answered = answered
    return run


def _measure(run: _Run, variant: str, concurrency: int, rate: float, warmup: int, requests: int,
             on_answer: Callable[[Any], None], timeout: float = float("inf")) -> Result:
    """Run until ``warmup + requests`` answers; measure the last ``requests`` of them."""
    answers = errors = timed_out = 0
    mark: tuple[float, int, int, int] | None = None
    tracer = run.sim.tracer
    cache = tracer.cache
    while True:
        run.step()
        for sock, data in run.collect():
            started = run.started.pop(sock, run.clock)
            answers += 1
            if answers <= warmup:
                pass  # not measured: late or failed answers count among the measured ones only
            elif run.clock - started + 2 * LATENCY > timeout:  # as the client sees it: both transits
                timed_out += 1
            elif not data.startswith(b"HTTP/1.1 200 "):
                errors += 1
            if answers == warmup:
                mark = (run.clock, *cache.misses(), tracer.stage_runs)
            on_answer(sock)
        if answers >= warmup + requests:
            break
    if mark is None:
        mark = (0.0, 0, 0, 0)
    l1, l2 = cache.misses()
    l1, l2, runs = l1 - mark[1], l2 - mark[2], tracer.stage_runs - mark[3]
    cost = tracer.machine.cost
    return Result(variant, concurrency, rate, answers - warmup, run.clock - mark[0], l2, l1, errors, timed_out,
                  runs, cost.cycles(runs * INSTRUCTIONS_PER_STAGE, 0, 0), cost.cycles(0, l1, l2))


def closed_loop(variant: str, concurrency: int, requests: int, root: Path, targets: list[str],
                layout: Layout | None = None, warmup: int | None = None, seed: int = 1) -> Result:
    """ab -c ``concurrency``: measure ``requests`` answers after ``warmup`` (default: one per client)."""
    if concurrency < 1 or requests < 1:
        raise ValueError("concurrency and requests must be positive")
    run = _start(variant, root, targets, layout, seed)
    warmup = concurrency if warmup is None else warmup
    for _ in range(concurrency):
        run.at(run.rng.uniform(0, DELAY), run.request)

    def again(sock: Any) -> None:  # the answer reaches the client, its next request the server
        run.at(run.clock + 2 * LATENCY + run.rng.uniform(0, DELAY), run.request)

    return _measure(run, variant, concurrency, 0.0, warmup, requests, again)


def open_loop(variant: str, rate: float, requests: int, root: Path, targets: list[str],
              layout: Layout | None = None, timeout: float = 1e-3, seed: int = 1) -> Result:
    """httperf --rate ``rate``: ``requests`` connections at fixed intervals (the first tenth
    not measured); an answer the client gets later than ``timeout`` after sending its request
    (a millisecond: the runs are short, a backlog that grows for their length shows in it)
    counts as failed, as httperf's."""
    if rate <= 0 or requests < 1:
        raise ValueError("rate and requests must be positive")
    run = _start(variant, root, targets, layout, seed)
    warmup = requests // 10
    for index in range(warmup + requests):
        run.at(index / rate, run.request)
    return _measure(run, variant, 0, rate, warmup, requests, lambda sock: None, timeout)
