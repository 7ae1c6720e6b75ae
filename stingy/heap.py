"""Simulated memory: an address space, and the general-purpose allocator of the original server.

Per-request objects of the real server get addresses here; the accesses
its stages make are charged to the cache model at those addresses. CPython's
own heap is not simulated: an object's simulated address says where a C
server would have put it, not where CPython did.

:class:`GeneralMalloc` is the baseline (thesis 7.1.4): size classes with a
LIFO free list each, carved from 4 KB pages taken from a growing heap, as the
kernel's kmalloc slabs or glibc's bins do. Freed objects are reused
last-in-first-out, and a class's pages are interleaved with other classes'
as demand comes: under load, one request's objects scatter across the
heap, which is what makes its working set collide in the cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PAGE = 4096
# kmalloc's general caches (powers of two from 32 bytes), and larger objects by whole pages.
SIZE_CLASSES = (32, 64, 128, 256, 512, 1024, 2048, 4096)


class OutOfMemory(MemoryError):
    """The simulated address space is exhausted."""


@dataclass
class AddressSpace:
    """A contiguous range of simulated addresses, handed out upwards in page multiples."""

    base: int = 0x1000_0000
    limit: int = 1 << 32
    top: int = field(init=False)

    def __post_init__(self) -> None:
        self.top = self.base

    def take(self, size: int) -> int:
        size = -(-size // PAGE) * PAGE
        if self.top + size > self.limit:
            raise OutOfMemory(f"simulated address space exhausted at {self.top:#x}")
        address = self.top
        self.top += size
        return address


def size_class(size: int) -> int:
    """The class an object of ``size`` bytes is served from (a whole number of pages past 4 KB)."""
    if size <= 0:
        raise ValueError(f"an allocation of {size} bytes")
    for klass in SIZE_CLASSES:
        if size <= klass:
            return klass
    return -(-size // PAGE) * PAGE


class GeneralMalloc:
    """kmalloc-style: one free list per size class, refilled a page at a time."""

    def __init__(self, space: AddressSpace | None = None):
        self.space = space or AddressSpace()
        self.free_lists: dict[int, list[int]] = {}
        self.live: dict[int, int] = {}  # address -> size class
        self.pages = 0

    def malloc(self, size: int) -> int:
        klass = size_class(size)
        free = self.free_lists.setdefault(klass, [])
        if not free:
            if klass >= PAGE:
                free.append(self.space.take(klass))
                self.pages += klass // PAGE
            else:
                page = self.space.take(PAGE)
                self.pages += 1
                # Pushed in reverse so the page is handed out from its start.
                free.extend(range(page + PAGE - klass, page - 1, -klass))
        address = free.pop()
        self.live[address] = klass
        return address

    def free(self, address: int) -> None:
        klass = self.live.pop(address, None)
        if klass is None:
            raise ValueError(f"free of {address:#x}, which is not allocated")
        self.free_lists[klass].append(address)

    def live_bytes(self) -> int:
        return sum(self.live.values())
