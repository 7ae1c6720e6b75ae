"""The thesis's interface marks (6.1) and code annotations (6.2.4), for Python servers.

``stingy_interface`` marks the functions that play the interface's roles
(``QueueStage``, ``Malloc``, ``Free``, ``Scheduler``), as the thesis's C
attributes did; memwalk finds them by reading the decorator in the source.

``stingy_size`` gives an optimistic estimate of a dynamically sized object's
size, ``stingy_count`` the number of instances a task may hold of an object
allocated in a stage cycle. They annotate the variable the allocation is
stored in, as the C attributes annotated the declaration::

    listing: stingy_size(16384) = Malloc(ti, LISTING)
    buffer: stingy_count(1) = Malloc(ti, RECV_BUFFER)

Python never evaluates a local variable's annotation, so they cost nothing
at run time; ``memwalk`` reads them from the source, and ``stingify`` turns a
``stingy_size`` into the size guard of figure 6.5.

``stingy_user_wrapper`` marks the programmer's wrapper of 7.4.4 (figure 7.5)
for a ``Malloc`` or ``Free`` function whose callers expect more than the
allocator's memory (a count kept, a structure set up around it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def stingy_interface(kind: str, **roles: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a function as one of the interface constructs of figure 6.2.

    ``kind`` is ``QueueStage``, ``Malloc``, ``Free`` or ``Scheduler``; ``roles`` maps a
    parameter name to its role (``T`` task, ``S`` stage, ``O`` object, ``size`` size or
    site). The mark is also kept on the function for tools that look at live objects.
    """

    def mark(function: Callable[..., Any]) -> Callable[..., Any]:
        function.__stingy_interface__ = (kind, dict(roles))  # type: ignore[attr-defined]
        return function

    return mark


def stingy_size(estimate: int) -> int:
    """An estimate of a dynamically sized object's size in bytes (read from the source)."""
    return estimate


def stingy_count(instances: int) -> int:
    """How many instances of an object one task may hold (read from the source)."""
    return instances


def stingy_user_wrapper(of: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark the user wrapper of the ``Malloc``/``Free`` function named ``of``.

    The wrapper takes what the Stingy call returned (the object, or ``None`` for a
    free) followed by the original call's arguments, and returns what the server
    expects from the original call; ``stingify`` rewrites ``of(args)`` to
    ``wrapper(StingyAlloc(context, SITE), args)`` (figure 7.5's ``stingy_usr_wrapper``).
    """

    def mark(function: Callable[..., Any]) -> Callable[..., Any]:
        function.__stingy_user_wrapper__ = of  # type: ignore[attr-defined]
        return function

    return mark
