"""The simulated cache hierarchy and the cost model that turns its counts into cycles.

The hierarchy is pycachesim's (``cachesim``: set-associative levels with LRU,
write-back and write-allocate, in C), parameterized by :class:`Level`; the
thesis's server is the :data:`PENTIUM_III` preset (1.4 GHz, 16 KB L1d, 1 MB
L2, thesis 5.3.3). :class:`CostModel` charges instructions and the misses at
each level in simulated cycles; a load driven in that simulated time sees
the server slow down when its working set stops fitting (thesis 5.1.3).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cachesim import Cache, CacheSimulator, MainMemory


@dataclass(frozen=True)
class Level:
    """One cache level: ``size`` bytes in ``ways``-way sets of ``line``-byte lines."""

    name: str
    size: int
    ways: int
    line: int

    @property
    def sets(self) -> int:
        return self.size // (self.ways * self.line)

    def __post_init__(self) -> None:
        if self.size <= 0 or self.ways <= 0 or self.line <= 0 or self.line & (self.line - 1):
            raise ValueError(f"{self.name}: size, ways and a power-of-two line size must be positive")
        if self.size % (self.ways * self.line):
            raise ValueError(f"{self.name}: {self.size} bytes is not a whole number of "
                             f"{self.ways}-way sets of {self.line}-byte lines")


@dataclass(frozen=True)
class CostModel:
    """Cycles per instruction and per miss at each level (the next level's latency).

    The defaults are a Pentium III's (Tualatin, 1.4 GHz): about 1 cycle per
    instruction on average for server code, an L1 miss served by the L2 in
    about 7 cycles, an L2 miss by SDRAM in about 150 cycles (roughly 110 ns).
    """

    hz: float = 1.4e9
    cycles_per_instruction: float = 1.0
    l1_miss_cycles: float = 7.0
    l2_miss_cycles: float = 150.0

    def cycles(self, instructions: int, l1_misses: int, l2_misses: int) -> float:
        return (instructions * self.cycles_per_instruction + l1_misses * self.l1_miss_cycles
                + l2_misses * self.l2_miss_cycles)

    def seconds(self, cycles: float) -> float:
        return cycles / self.hz


@dataclass(frozen=True)
class Machine:
    l1: Level
    l2: Level
    cost: CostModel


# The thesis's server (5.3.3): a Pentium III at 1.4 GHz with 1 MB of L2.
PENTIUM_III = Machine(
    l1=Level("L1d", 16 * 1024, 4, 32),
    l2=Level("L2", 1024 * 1024, 8, 32),
    cost=CostModel(),
)


class CacheHierarchy:
    """L1d over L2 over memory, counting loads, stores, hits and misses per level."""

    def __init__(self, machine: Machine = PENTIUM_III):
        self.machine = machine
        memory = MainMemory()
        l2 = Cache(machine.l2.name, machine.l2.sets, machine.l2.ways, machine.l2.line, "LRU")
        memory.load_to(l2)
        memory.store_from(l2)
        l1 = Cache(machine.l1.name, machine.l1.sets, machine.l1.ways, machine.l1.line, "LRU",
                   store_to=l2, load_from=l2)
        self._l1, self._l2 = l1, l2
        self._sim = CacheSimulator(l1, memory)
        # The C backend's own calls: pycachesim's Python-level dispatch around them was half
        # of a simulated sweep's time (measured with cProfile).
        self.load: Callable[[int, int], None] = l1.backend.load
        self.store: Callable[[int, int], None] = l1.backend.store

    def misses(self) -> tuple[int, int]:
        """(L1 misses, L2 misses) since the last reset."""
        return self._l1.MISS_count, self._l2.MISS_count

    def stats(self) -> dict[str, dict[str, int]]:
        return {level.name: {key: value for key, value in level.stats().items() if key != "name"}
                for level in (self._l1, self._l2)}

    def reset_stats(self) -> None:
        self._sim.reset_stats()
