"""stingygen's integer program against brute force, and the memory map's layout."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stingy.memwalk import memwalk
from stingy.stingygen import (
    Infeasible,
    Problem,
    feasible,
    memory_map,
    objective,
    problem_from,
    solve,
)

PROGRAMS = Path(__file__).parent / "programs"


def brute_force(problem: Problem) -> float | None:
    objects = sorted(problem.sizes)
    best = None
    for combo in itertools.product(range(1, problem.upper() + 1), repeat=len(objects)):
        counts = dict(zip(objects, combo, strict=True))
        if feasible(problem, counts):
            value = objective(problem, counts)
            best = value if best is None else min(best, value)
    return best


@st.composite
def problems(draw):
    objects = [f"o{i}" for i in range(draw(st.integers(1, 3)))]
    sizes = {o: draw(st.sampled_from((32, 64, 100, 256))) for o in objects}
    stages = [f"s{i}" for i in range(draw(st.integers(1, 4)))]
    live = {s: frozenset(draw(st.sets(st.sampled_from(objects), max_size=len(objects)))) for s in stages}
    allocated = {s: frozenset(draw(st.sets(st.sampled_from(objects), max_size=1))) for s in stages}
    dominance = tuple((a, b) for a, b in itertools.permutations(objects, 2) if draw(st.booleans()) and a < b)
    weights = {s: float(draw(st.integers(1, 9))) for s in stages}
    regions = {o: draw(st.integers(0, 1)) for o in objects}
    return Problem(sizes, live, allocated, dominance, weights, tau=draw(st.integers(256, 2400)), limit=6,
                   regions=regions)


@settings(max_examples=60, deadline=None)
@given(problems())
def test_the_milp_finds_the_brute_force_optimum(problem: Problem) -> None:
    best = brute_force(problem)
    if best is None:
        with pytest.raises(Infeasible):
            solve(problem)
        return
    solution = solve(problem)
    assert feasible(problem, solution.counts)
    assert solution.objective == pytest.approx(best)


def test_a_hand_example_of_figure_5_2() -> None:
    """O2 (live in stages 2 and 3 with O1) must be at least O1; the cache holds 7 objects."""
    problem = Problem({"O1": 100, "O2": 100},
                      {"s2": frozenset({"O2"}), "s3": frozenset({"O1", "O2"})},
                      {"s2": frozenset({"O1"}), "s1": frozenset({"O2"})},
                      (("O2", "O1"),), {"s2": 1.0, "s3": 1.0}, tau=700, limit=8)
    solution = solve(problem)
    assert solution.counts["O2"] >= solution.counts["O1"]
    assert 100 * (solution.counts["O1"] + solution.counts["O2"]) <= 700
    assert solution.objective == pytest.approx(brute_force(problem))


def test_the_map_of_a_memwalked_program() -> None:
    report = memwalk([str(PROGRAMS / "fig52.py")])
    problem = problem_from(report, tau=64 * 1024)
    solution = solve(problem)
    assert set(solution.counts) == {"REQUEST", "SCRATCH", "PARSE_BUF", "HEADERS"}
    assert solution.counts["REQUEST"] >= solution.counts["SCRATCH"]  # accept dominates read and read process
    memory = memory_map(report, solution.counts, cache_size=1 << 20)
    names = [r.name for r in memory.regions]
    assert names[:2] == ["stack", "globals"] and all(n.startswith("region") for n in names[2:])
    spans = [(r.start, r.start + r.size) for r in memory.regions]
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False))
    assert memory.low_slab[1] == memory.cache_slab and memory.high_slab[0] == memory.cache_slab + (1 << 20)
    assert "STATS" in memory.region_of("STATS").objects and memory.region_of("STATS").name == "globals"
    assert "high slab" in memory.format()
    with pytest.raises(Infeasible):
        solve(problem_from(report, tau=1000))
