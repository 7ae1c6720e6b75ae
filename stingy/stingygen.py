"""stingygen (thesis 5.2, 6.2.3, 7.4.3): how many instances of each object, and where they live.

**The integer program.** For the per-task objects memwalk found, choose the
instance limits ``n_O`` (integers >= 1) so that:

- in every stage *s*, the objects live at its start (``L_s``), at their
  limits, plus one instance of each object it allocates (``A_s``), fit the
  cache space left for per-task state: ``sum_{L_s} size*n + sum_{A_s} size <= tau``;
- allocation order is respected: when O_i's allocation dominates O_j's and
  O_j's dominates O_i's release, every task holding an O_j holds an O_i:
  ``n_i >= n_j``;
- the memory map fits: each region (objects never live together in a task
  share one) is as large as its largest object's instances, and the regions
  together fit ``tau``, so that no two live instances collide in the cache;

minimizing the instruction-fetch work ``M_w = sum_s w_s / min_{O in L_s} n_O``
(per task). The minimum becomes a variable ``m_s <= n_O`` for each O of
``L_s``, and the convex ``w_s / m_s`` is represented exactly at integers by the
chords between consecutive integers (for a convex function, the largest
chord at an integer point is the function there), so the problem is a mixed
integer *linear* program, solved by scipy's ``milp`` (HiGHS).

**The memory map** (figure 7.4): the cache slab, one L2 in size and aligned
to it so that distinct addresses map to distinct cache locations, holds the
stack at its bottom, the final globals above, and the per-request regions on
top (objects that are never live together share a region); the low slab
below takes a stack overflow, the high slab above takes instances past
their limits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from .memwalk import Report


class Infeasible(ValueError):
    """No choice of limits fits the cache (the message names the tightest stage)."""


@dataclass(frozen=True)
class Problem:
    """The integer program's data, independent of how it was obtained."""

    sizes: Mapping[str, int]  # object -> bytes
    live: Mapping[str, frozenset[str]]  # stage -> objects live at its start (L_s)
    allocated: Mapping[str, frozenset[str]]  # stage -> objects it allocates (A_s)
    dominance: tuple[tuple[str, str], ...]  # (i, j): n_i >= n_j
    weights: Mapping[str, float]  # stage -> w_s (cost of a stage's first iteration)
    tau: int  # cache bytes for per-task state
    limit: int = 0  # the largest n considered (0: what tau allows)
    regions: Mapping[str, int] = field(default_factory=dict)  # object -> region (default: its own)

    def region_of(self, obj: str) -> object:
        return self.regions.get(obj, obj)

    def upper(self) -> int:
        return self.limit or max(1, self.tau // max(1, min(self.sizes.values(), default=1)))


@dataclass
class Solution:
    counts: dict[str, int]
    objective: float
    status: str


class _Rows:
    """The constraint matrix, a row at a time."""

    def __init__(self, width: int):
        self.width = width
        self.rows: list[np.ndarray] = []
        self.lower: list[float] = []
        self.upper: list[float] = []

    def add(self, coefficients: dict[int, float], low: float, high: float) -> None:
        vector = np.zeros(self.width)
        for column, value in coefficients.items():
            vector[column] += value
        self.rows.append(vector)
        self.lower.append(low)
        self.upper.append(high)


def solve(problem: Problem) -> Solution:
    """The limits minimizing M_w under the cache and order constraints (exact, by MILP)."""
    objects = sorted(problem.sizes)
    stages = sorted(s for s in problem.live if problem.live[s])
    if not objects:
        return Solution({}, 0.0, "nothing to place")
    _check_single_instances(problem)
    top = problem.upper()
    regions = sorted({problem.region_of(o) for o in objects}, key=str)
    n = {o: i for i, o in enumerate(objects)}  # columns: n_O, then m_s, then t_s, then r_R
    m = {s: len(objects) + i for i, s in enumerate(stages)}
    t = {s: len(objects) + len(stages) + i for i, s in enumerate(stages)}
    r = {g: len(objects) + 2 * len(stages) + i for i, g in enumerate(regions)}
    rows = _Rows(len(objects) + 2 * len(stages) + len(regions))
    for o in objects:  # r_R >= size * n_O for each object of the region; the regions fit tau
        rows.add({r[problem.region_of(o)]: 1, n[o]: -problem.sizes[o]}, 0, np.inf)
    rows.add(dict.fromkeys(r.values(), 1.0), -np.inf, problem.tau)
    for stage, live in problem.live.items():
        fixed = sum(problem.sizes[o] for o in problem.allocated.get(stage, ()) if o in n)
        rows.add({n[o]: problem.sizes[o] for o in live if o in n}, -np.inf, problem.tau - fixed)
    for i, j in problem.dominance:
        if i in n and j in n:
            rows.add({n[i]: 1, n[j]: -1}, 0, np.inf)
    for stage in stages:
        for o in problem.live[stage]:
            if o in n:
                rows.add({m[stage]: 1, n[o]: -1}, -np.inf, 0)  # m_s <= n_O
        weight = problem.weights.get(stage, 1.0)
        for k in range(1, top):  # t_s >= the chord of w/m between k and k+1
            slope = weight / (k + 1) - weight / k
            rows.add({t[stage]: 1, m[stage]: -slope}, weight / k - slope * k, np.inf)
    cost = np.zeros(rows.width)
    cost[[t[s] for s in stages]] = 1.0
    integers, reals = len(objects) + len(stages), len(stages) + len(regions)
    bounds = Bounds(np.array([1.0] * integers + [0.0] * reals),
                    np.array([float(top)] * integers + [np.inf] * reals))
    result = milp(cost, constraints=LinearConstraint(np.array(rows.rows), rows.lower, rows.upper),
                  integrality=np.array([1] * integers + [0] * reals), bounds=bounds)
    if not result.success:
        tightest = max(problem.live, key=lambda s: sum(problem.sizes.get(o, 0) for o in problem.live[s]))
        raise Infeasible(f"no limits fit tau = {problem.tau} bytes ({result.message}); the tightest stage "
                         f"is {tightest}")
    counts = {o: int(round(result.x[n[o]])) for o in objects}
    return Solution(counts, objective(problem, counts), result.message)


def _check_single_instances(problem: Problem) -> None:
    """A stage entered with nothing live must still fit one instance of what it allocates."""
    for stage, allocated in problem.allocated.items():
        if stage not in problem.live:
            fixed = sum(problem.sizes[o] for o in allocated if o in problem.sizes)
            if fixed > problem.tau:
                raise Infeasible(f"stage {stage} allocates {fixed} bytes, more than tau = {problem.tau}")


def objective(problem: Problem, counts: Mapping[str, int]) -> float:
    """M_w per task for given limits: sum over stages of w_s / min of the live objects' limits."""
    return sum(problem.weights.get(s, 1.0) / min(counts[o] for o in live)
               for s, live in problem.live.items() if live)


def feasible(problem: Problem, counts: Mapping[str, int]) -> bool:
    regions: dict[object, int] = {}
    for o, size in problem.sizes.items():
        key = problem.region_of(o)
        regions[key] = max(regions.get(key, 0), size * counts[o])
    if sum(regions.values()) > problem.tau:
        return False
    for stage, live in problem.live.items():
        used = sum(problem.sizes[o] * counts[o] for o in live)
        used += sum(problem.sizes[o] for o in problem.allocated.get(stage, ()))
        if used > problem.tau:
            return False
    return all(counts[i] >= counts[j] for i, j in problem.dominance)


def problem_from(report: Report, tau: int, weights: Mapping[str, float] | None = None) -> Problem:
    """The integer program of memwalk's report: per-task objects with known sizes and counts."""
    managed = {name: o for name, o in report.objects.items() if o.kind == "per-task"}
    sizes = {name: _align(int(o.size)) for name, o in managed.items() if o.size is not None}
    live = {s: frozenset(o for o in st.live_in if o in sizes) for s, st in report.stages.items()}
    allocated = {s: frozenset(o for o in st.allocates if o in sizes) for s, st in report.stages.items()}
    return Problem(sizes, live, allocated, tuple(_dominance(report, sizes)),
                   weights or {s: float(len(st.functions)) for s, st in report.stages.items()}, tau,
                   regions={name: managed[name].region for name in sizes})


def _dominance(report: Report, sizes: Mapping[str, int]) -> list[tuple[str, str]]:
    """(i, j) where i's allocating stage dominates j's and j's dominates i's release."""
    graph = report.stage_graph()
    roots = [n for n in graph if graph.in_degree(n) == 0] or sorted(graph)[:1]
    if not roots:
        return []
    for root in roots:
        graph.add_edge("<start>", root)
    idom = nx.immediate_dominators(graph, "<start>")

    def dominates(a: str, b: str) -> bool:
        node = b
        while True:
            if node == a:
                return True
            parent = idom.get(node)
            if parent is None or parent == node:
                return False
            node = parent

    pairs = []
    for i in sizes:
        for j in sizes:
            if i == j:
                continue
            oi, oj = report.objects[i], report.objects[j]
            if all(dominates(a, b) for a in oi.allocated_in for b in oj.allocated_in) and oi.freed_in and \
                    all(dominates(b, f) for b in oj.allocated_in for f in oi.freed_in):
                pairs.append((i, j))
    return pairs


# ---------------------------------------------------------------- the memory map


@dataclass
class Region:
    name: str
    start: int
    size: int
    objects: list[str] = field(default_factory=list)


@dataclass
class MemoryMap:
    cache_slab: int  # address of the cache slab (aligned to the cache size)
    cache_size: int
    low_slab: tuple[int, int]
    high_slab: tuple[int, int]
    regions: list[Region]
    counts: dict[str, int]
    sizes: dict[str, int]

    def region_of(self, obj: str) -> Region:
        for region in self.regions:
            if obj in region.objects:
                return region
        raise KeyError(obj)

    def format(self) -> str:
        lines = [f"high slab   {self.high_slab[0]:#012x} - {self.high_slab[1]:#012x}  (instances past their limits)"]
        for region in reversed(self.regions):
            what = ", ".join(f"{o} x{self.counts.get(o, 1)}" for o in region.objects) or ""
            lines.append(f"{region.name:<11} {region.start:#012x} - {region.start + region.size:#012x}  "
                         f"{region.size:>8} bytes  {what}")
        lines.append(f"low slab    {self.low_slab[0]:#012x} - {self.low_slab[1]:#012x}  (stack overflow)")
        return "\n".join(lines) + "\n"


def fixed_regions(report: Report) -> tuple[int, int]:
    """(stack, final globals) in bytes as the map lays them: the scheduler's stack over the
    deepest stage's, and every final global object, each rounded up to whole lines."""
    stack = _align(report.scheduler_stack + max((s.stack for s in report.stages.values()), default=0))
    finals = sum(_align(o.size or 0) for o in report.objects.values() if o.kind == "global-final")
    return stack, finals


def memory_map(report: Report, counts: Mapping[str, int], cache_size: int, base: int = 0x4000_0000,
               spill: int = 1 << 20) -> MemoryMap:
    """Lay out the cache slab as figure 7.4: stack lowest, final globals, per-request regions on top."""
    if base % cache_size:
        raise ValueError("the cache slab must be aligned to the cache size")
    stack, global_size = fixed_regions(report)
    regions = [Region("stack", base, stack)]
    finals = [n for n, o in report.objects.items() if o.kind == "global-final"]
    regions.append(Region("globals", base + regions[0].size, global_size, finals))
    cursor = regions[-1].start + global_size
    by_colour: dict[int, list[str]] = {}
    for name, info in report.objects.items():
        if info.kind == "per-task" and name in counts:
            by_colour.setdefault(info.region, []).append(name)
    sizes = {n: int(o.size or 0) for n, o in report.objects.items()}
    for colour, members in sorted(by_colour.items()):
        size = max(_align(sizes[o]) * counts[o] for o in members)
        regions.append(Region(f"region {colour}", cursor, size, sorted(members)))
        cursor += size
    if cursor - base > cache_size:
        raise Infeasible(f"the map needs {cursor - base} bytes, the cache has {cache_size}")
    return MemoryMap(base, cache_size, (base - spill, base), (base + cache_size, base + cache_size + spill),
                     regions, dict(counts), sizes)


def _align(size: int, line: int = 64) -> int:
    return -(-size // line) * line


def to_dot(memory: MemoryMap) -> str:
    """Figure 7.4 as a graphviz record: the slabs and regions, highest address first."""
    cells = [f"high slab\\n{memory.high_slab[1] - memory.high_slab[0]} B"]
    cells += [f"{r.name}\\n{r.size} B\\n{', '.join(r.objects)}" for r in reversed(memory.regions)]
    cells.append(f"low slab\\n{memory.low_slab[1] - memory.low_slab[0]} B")
    label = "|".join(cells)
    return f'digraph map {{\n  node [shape=record, fontname="Helvetica"];\n  slab [label="{{{label}}}"];\n}}\n'
