"""The thesis's code annotations (6.2.4), as Python variable annotations.

``stingy_size`` gives an optimistic estimate of a dynamically sized object's
size, ``stingy_count`` the number of instances a task may hold of an object
allocated in a stage cycle. They annotate the variable the allocation is
stored in, as the C attributes annotated the declaration::

    listing: stingy_size(16384) = Malloc(ti, LISTING)
    buffer: stingy_count(1) = Malloc(ti, RECV_BUFFER)

Python never evaluates a local variable's annotation, so they cost nothing
at run time; ``memwalk`` reads them from the source, and ``stingify`` turns a
``stingy_size`` into the size guard of figure 6.5.
"""

from __future__ import annotations


def stingy_size(estimate: int) -> int:
    """An estimate of a dynamically sized object's size in bytes (read from the source)."""
    return estimate


def stingy_count(instances: int) -> int:
    """How many instances of an object one task may hold (read from the source)."""
    return instances
