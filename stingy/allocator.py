"""The Stingy allocator (thesis 5.2.1, 7.4.3): instances from the cache slab, within their limits.

Each per-request object has a region of the cache slab (stingygen's map) and
a limit on its live instances. ``StingyAlloc(site)`` hands out a slot of the
object's region while the object is under its limit and the region has room;
past that, the instance spills to the high slab (it works, it may miss in the
cache). Objects memwalk left unmanaged (a dynamic size, a cycle without an
annotation) and anything over its ``stingy_size`` estimate come from the
original allocator. ``StingyDynCheck`` tells the scheduler whether a stage's
allocations would all fit now.

The interface is the server's allocator's (``allocate(site)``, ``free(obj)``,
``live`` counts), so the server runs unchanged on it: what moves is where
the objects live in simulated memory (``address_of``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .annotations import stingy_interface
from .heap import AddressSpace, GeneralMalloc
from .stingygen import MemoryMap, Region


class StingyAllocator:
    def __init__(self, memory: MemoryMap, labels: Mapping[str, str],
                 stage_needs: Mapping[str, Mapping[str, int]] | None = None,
                 fallback: GeneralMalloc | None = None):
        """``labels``: a runtime site name (``recv_buffer``) -> its object in the map
        (``RECV_BUFFER``); ``stage_needs``: a stage's name -> the objects it allocates."""
        self.memory = memory
        self.labels = dict(labels)
        self.stage_needs = {stage: dict(needs) for stage, needs in (stage_needs or {}).items()}
        self.fallback = fallback or GeneralMalloc(AddressSpace(base=memory.high_slab[1] + (1 << 24)))
        self._free_slots: dict[str, list[int]] = {}
        self._slot_size: dict[str, int] = {}
        for region in memory.regions:
            if region.name.startswith("region"):
                self._lay_out(region)
        self.instances: dict[str, int] = dict.fromkeys(memory.counts, 0)  # in the slab, per object
        self._high_top = memory.high_slab[0]
        self._high_free: dict[int, list[int]] = {}
        self._where: dict[int, tuple[str, int, str]] = {}  # id(obj) -> (object, address, "slab"|"high"|"heap")
        self._site_of: dict[int, str] = {}
        self.live: dict[str, int] = {}
        self.spills = 0
        self.fallbacks = 0

    def _lay_out(self, region: Region) -> None:
        slot = max(_line(self.memory.sizes[o]) for o in region.objects)
        count = region.size // slot
        slots = [region.start + i * slot for i in range(count)]
        slots.reverse()  # handed out from the region's start
        self._free_slots[region.name] = slots
        self._slot_size[region.name] = slot
        for obj in region.objects:
            self._slot_size[obj] = slot

    # ------------------------------------------------------------ the allocator interface

    def allocate(self, site: Any, size: int | None = None) -> Any:
        """StingyAlloc: the site's object, at a slab slot while it is within its limit."""
        obj = site.make(site)
        wanted = site.size if size is None else size
        name = self.labels.get(site.name)
        address, where = None, "heap"
        if name is not None and name in self.instances and wanted <= self.memory.sizes.get(name, 0):
            region = self.memory.region_of(name)
            slots = self._free_slots.get(region.name)
            if self.instances[name] < self.memory.counts[name] and slots:
                address, where = slots.pop(), "slab"
                self.instances[name] += 1
            else:
                address, where = self._high(self._slot_size[name]), "high"
                self.spills += 1
        if address is None:
            address = self.fallback.malloc(wanted)
            self.fallbacks += 1
        self._where[id(obj)] = (name or site.name, address, where)
        self.live[site.name] = self.live.get(site.name, 0) + 1
        self._site_of[id(obj)] = site.name
        return obj

    def free(self, obj: Any) -> None:
        """StingyFree: the slot goes back to its region (no guard needed: the address says where)."""
        entry = self._where.pop(id(obj), None)
        if entry is None:
            raise ValueError(f"Free of an object this allocator did not allocate: {type(obj).__name__}")
        name, address, where = entry
        self.live[self._site_of.pop(id(obj))] -= 1
        if where == "heap":
            self.fallback.free(address)
            return
        if where == "slab":
            self.instances[name] -= 1
            self._free_slots[self.memory.region_of(name).name].append(address)
        else:
            self._high_free.setdefault(self._slot_size[name], []).append(address)

    def address_of(self, obj: Any) -> int | None:
        entry = self._where.get(id(obj))
        return None if entry is None else entry[1]

    def live_objects(self) -> int:
        return sum(self.live.values())

    # ------------------------------------------------------------ the scheduler's query

    def dyn_check(self, stage: str, batch: int = 1) -> bool:
        """StingyDynCheck: can ``batch`` runs of ``stage`` allocate all they need from the slab now?"""
        for name, each in self.stage_needs.get(stage, {}).items():
            if name not in self.instances:
                continue
            room = self.memory.counts[name] - self.instances[name]
            slots = len(self._free_slots.get(self.memory.region_of(name).name, ()))
            if min(room, slots) < each * batch:
                return False
        return True

    def headroom(self, stage: str) -> int:
        """How many more runs of ``stage`` the slab can serve (large when it allocates nothing)."""
        best = 1 << 30
        for name, each in self.stage_needs.get(stage, {}).items():
            if name in self.instances and each:
                room = self.memory.counts[name] - self.instances[name]
                slots = len(self._free_slots.get(self.memory.region_of(name).name, ()))
                best = min(best, min(room, slots) // each)
        return best

    def _high(self, size: int) -> int:
        free = self._high_free.get(size)
        if free:
            return free.pop()
        address = self._high_top
        self._high_top += size
        return address


def _line(size: int, line: int = 64) -> int:
    return -(-size // line) * line


# ---------------------------------------------------------------- what stingify's rewrite calls


@stingy_interface("Malloc", site="size")
def StingyAlloc(ti: Any, site: Any) -> Any:
    """StingyAlloc(site): the thread's allocator (a :class:`StingyAllocator`) places the instance."""
    return ti.allocator.allocate(site)


@stingy_interface("Free", obj="O")
def StingyFree(ti: Any, obj: Any) -> None:
    """StingyFree: the slot goes back to its region, or the spill to where it came from."""
    ti.allocator.free(obj)
