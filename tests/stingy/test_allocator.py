"""The Stingy allocator: slab slots within limits, spills to the high slab, the fallback, DynCheck."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from stingy.allocator import StingyAllocator
from stingy.memwalk import memwalk
from stingy.stingygen import memory_map

PROGRAMS = Path(__file__).parent / "programs"


@dataclass(frozen=True)
class Site:
    name: str
    size: int

    def make(self, site):
        return bytearray(site.size)


REQUEST, SCRATCH, STATS = Site("request", 1024), Site("scratch", 2048), Site("stats", 64)


@pytest.fixture
def allocator() -> StingyAllocator:
    report = memwalk([str(PROGRAMS / "fig52.py")])
    counts = {"REQUEST": 3, "SCRATCH": 2, "PARSE_BUF": 2, "HEADERS": 2}
    memory = memory_map(report, counts, cache_size=1 << 20)
    labels = {"request": "REQUEST", "scratch": "SCRATCH", "parse_buf": "PARSE_BUF", "headers": "HEADERS"}
    return StingyAllocator(memory, labels, {"accept": {"REQUEST": 1}, "read": {"SCRATCH": 1}})


def test_instances_come_from_their_region_until_the_limit(allocator: StingyAllocator) -> None:
    region = allocator.memory.region_of("REQUEST")
    objects = [allocator.allocate(REQUEST) for _ in range(3)]
    addresses = [allocator.address_of(o) for o in objects]
    assert all(region.start <= a < region.start + region.size for a in addresses)
    assert len(set(addresses)) == 3 and addresses == sorted(addresses)
    fourth = allocator.allocate(REQUEST)  # past the limit: the high slab
    high = allocator.memory.high_slab
    assert high[0] <= allocator.address_of(fourth) < high[1] and allocator.spills == 1
    allocator.free(objects[1])
    again = allocator.allocate(REQUEST)
    assert allocator.address_of(again) == addresses[1]  # the freed slot is reused
    assert allocator.live == {"request": 4}


def test_unmanaged_and_oversized_objects_use_the_original_allocator(allocator: StingyAllocator) -> None:
    stats = allocator.allocate(STATS)  # global: not in the per-task map
    big = allocator.allocate(SCRATCH, size=10_000)  # over the size the map was made for
    for obj in (stats, big):
        address = allocator.address_of(obj)
        assert not allocator.memory.cache_slab <= address < allocator.memory.high_slab[1]
    assert allocator.fallbacks == 2
    allocator.free(stats)
    allocator.free(big)
    assert allocator.live_objects() == 0
    with pytest.raises(ValueError, match="did not allocate"):
        allocator.free(big)


def test_dyn_check_and_headroom(allocator: StingyAllocator) -> None:
    assert allocator.dyn_check("accept", batch=3) and not allocator.dyn_check("accept", batch=4)
    held = [allocator.allocate(SCRATCH) for _ in range(2)]
    assert not allocator.dyn_check("read") and allocator.headroom("read") == 0
    allocator.free(held[0])
    assert allocator.dyn_check("read") and allocator.headroom("read") == 1
    assert allocator.dyn_check("log", batch=1000)  # allocates nothing managed
