"""The Stingy scheduler (thesis 5.2.4, 7.4.5, bottom of figure 7.6): by stage, in batches.

TUX's scheduler runs requests one by one in priority order; this one keeps a
queue per stage and runs a whole stage's batch before moving on (the stage's
code and data stay in the cache for the batch). Before each election it
asks the allocator (``StingyDynCheck``) whether the stage's allocations fit
the cache slab now. The next batch's stage is chosen by three priorities:

1. **maximal flow**: the requests waiting at a stage use up all the slab
   memory the stage may allocate (no more can join the batch): run them;
2. the rest, **weighted toward earlier stages** (a stage's waiting requests
   divided by one plus its distance from the start of a request), so that
   early requests catch up with advanced ones and batches grow;
3. **insufficient memory** last: a stage whose DynCheck fails runs only when
   nothing else can, and its allocations spill out of the slab.

It is a drop-in :class:`tux_like.core.Scheduler` (``queue``/``elect``/``run``),
so the server runs on it unchanged.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from tux_like.core import PRIO_NORMAL, Request, Scheduler, Stage


class StingyScheduler(Scheduler):
    def __init__(self, allocator: Any, order: Mapping[str, int] | None = None):
        """``allocator``: a :class:`~stingy.allocator.StingyAllocator` (``dyn_check``, ``headroom``);
        ``order``: a stage's name -> its distance from the start of a request (0 first)."""
        super().__init__()
        self.allocator = allocator
        self.order = dict(order or {})
        self.stages: dict[str, deque[tuple[Request, Stage]]] = {}
        self.batch_stage: str | None = None
        self.batch_left = 0
        self.elections = {"maximal flow": 0, "weighted": 0, "insufficient memory": 0}
        self.nonempty = 0

    def queue(self, req: Request, stage: Stage, priority: int = PRIO_NORMAL) -> None:
        self.stages.setdefault(stage.__name__, deque()).append((req, stage))
        self.nonempty += 1
        req.queued += 1

    def __len__(self) -> int:
        return self.nonempty

    def elect(self) -> tuple[Request, Stage] | None:
        """The next request of the current batch, or the first of a new batch; a batch
        ends early when its stage's DynCheck fails while another stage could run."""
        if not self.nonempty:
            return None
        name = self.batch_stage
        if (name is None or self.batch_left <= 0 or not self.stages[name]
                or (not self.allocator.dyn_check(name) and self._eligible_other(name))):
            name = self._choose()
        chosen = self.stages[name]
        entry = chosen.popleft()
        self.batch_left -= 1
        self.nonempty -= 1
        entry[0].queued -= 1
        return entry

    def _eligible_other(self, name: str) -> bool:
        return any(queue and other != name and self.allocator.dyn_check(other)
                   for other, queue in self.stages.items())

    def _choose(self) -> str:
        """The three priorities of 7.4.5: the new batch's stage, and its size."""
        best: tuple[int, float, str] | None = None
        for name, queue in self.stages.items():
            if not queue:
                continue
            room = self.allocator.headroom(name)
            if room <= 0:
                key = (2, 0.0, name)  # insufficient memory: last
            elif len(queue) >= room:
                key = (0, -len(queue), name)  # maximal flow: first
            else:
                key = (1, -len(queue) / (1 + self.order.get(name, 0)), name)
            if best is None or key < best:
                best = key
        assert best is not None
        klass, _, name = best
        self.elections[("maximal flow", "weighted", "insufficient memory")[klass]] += 1
        room = self.allocator.headroom(name)
        queued = len(self.stages[name])
        self.batch_stage = name
        self.batch_left = queued if room <= 0 else min(queued, room)
        return name


def stage_order(report: Any) -> dict[str, int]:
    """Each stage's distance (in stage edges) from the stages nothing queues (a request's start)."""
    import networkx as nx

    graph = report.stage_graph()
    roots = [n for n in graph if graph.in_degree(n) == 0] or list(graph)[:1]
    distance: dict[str, int] = {}
    for root in roots:
        for node, hops in nx.single_source_shortest_path_length(graph, root).items():
            distance[node] = min(hops, distance.get(node, hops))
    return {name.rsplit(".", 1)[-1]: hops for name, hops in distance.items()}


def install(server: Any, layout: Any) -> None:
    """Put ``server`` (before it starts) on the Stingy allocator and scheduler of ``layout``
    (:func:`stingy.simulate.tux_layout`): how the Stingy server runs for real."""
    from .allocator import StingyAllocator

    for ti in server.threads:
        ti.allocator = StingyAllocator(layout.memory, layout.labels, layout.needs)
        ti.scheduler = StingyScheduler(ti.allocator, layout.order)
        ti.scheduler.on_error = server.stage_failed
