"""The simulated cache and heap: what pycachesim counts, and how the general malloc scatters."""

from __future__ import annotations

import random

import pytest

from stingy.cache import PENTIUM_III, CacheHierarchy, CostModel, Level, Machine
from stingy.heap import PAGE, AddressSpace, GeneralMalloc, OutOfMemory, size_class

SMALL = Machine(l1=Level("L1d", 1024, 2, 32), l2=Level("L2", 8192, 4, 32), cost=CostModel())


def test_a_working_set_that_fits_hits_and_one_that_does_not_misses() -> None:
    cache = CacheHierarchy(SMALL)
    for _ in range(3):
        for address in range(0, 4096, 32):  # 4 KB: fits the 8 KB L2, not the 1 KB L1
            cache.load(address, 8)
    l1_misses, l2_misses = cache.misses()
    assert l2_misses == 4096 // 32  # only the first pass misses in L2
    assert l1_misses == 3 * 4096 // 32  # LRU over a set larger than L1: every load misses
    cache.reset_stats()
    for _ in range(2):
        for address in range(1 << 20, (1 << 20) + 16384, 32):  # 16 KB, not cached yet: twice the L2
            cache.load(address, 8)
    assert cache.misses()[1] == 2 * 16384 // 32


def test_conflicts_miss_even_when_the_total_fits() -> None:
    """Five lines that map to one 4-way set thrash it, though 160 bytes fit the cache."""
    cache = CacheHierarchy(SMALL)
    stride = SMALL.l2.sets * SMALL.l2.line  # same set every time
    for _ in range(4):
        for i in range(5):
            cache.load(i * stride, 4)
    assert cache.misses()[1] == 20


def test_the_thesis_preset_and_the_cost_model() -> None:
    assert PENTIUM_III.l2.size == 1 << 20 and PENTIUM_III.cost.hz == 1.4e9
    cost = CostModel(cycles_per_instruction=1.0, l1_miss_cycles=7, l2_miss_cycles=150)
    assert cost.cycles(1000, 10, 2) == 1000 + 70 + 300
    assert cost.seconds(1.4e9) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="whole number"):
        Level("odd", 1000, 4, 32)


def test_size_classes_round_up_as_kmalloc() -> None:
    assert [size_class(n) for n in (1, 32, 33, 1024, 4096, 4097, 9000)] == [32, 32, 64, 1024, 4096, 8192, 12288]
    with pytest.raises(ValueError):
        size_class(0)


def test_general_malloc_reuses_lifo_and_never_overlaps() -> None:
    heap = GeneralMalloc()
    rng = random.Random(7)
    live: dict[int, int] = {}
    for _ in range(3000):
        if live and rng.random() < 0.45:
            address = rng.choice(list(live))
            heap.free(address)
            del live[address]
        else:
            size = rng.choice((40, 100, 600, 1024, 4096, 5000))
            address = heap.malloc(size)
            assert address not in live
            live[address] = size_class(size)
    spans = sorted((a, a + k) for a, k in live.items())
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:], strict=False))
    assert heap.live_bytes() == sum(live.values())
    a = heap.malloc(100)
    heap.free(a)
    assert heap.malloc(90) == a  # the last freed object of a class comes back first
    with pytest.raises(ValueError, match="not allocated"):
        heap.free(a + 1)


def test_objects_of_one_request_scatter_across_pages_under_load() -> None:
    """Interleaved requests put one request's 1 KB and 4 KB objects on different pages."""
    heap = GeneralMalloc()
    requests = [(heap.malloc(1024), heap.malloc(4096)) for _ in range(50)]
    assert len({small // PAGE for small, _ in requests} | {big // PAGE for _, big in requests}) > 50


def test_the_address_space_has_an_end() -> None:
    space = AddressSpace(base=0, limit=2 * PAGE)
    space.take(PAGE)
    space.take(1)
    with pytest.raises(OutOfMemory):
        space.take(1)
