"""The one clock abstraction: something with ``now()`` returning seconds.

The sans-IO core never reads time itself; the stack asks its clock. Tests
use :class:`VirtualClock` and advance it by hand; the trio driver uses
:class:`TrioClock`, which follows trio's clock (and so trio's MockClock in
virtual-time tests).
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    def wall(self) -> float:
        """Seconds since the Unix epoch, for the few values a peer reads as a date (ICMP
        timestamps); never for timers, which follow ``now``."""
        ...


class VirtualClock:
    """A clock that only moves when told to: deterministic tests."""

    def __init__(self, start: float = 0.0):
        self._now = start

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        """Virtual time reads as seconds after the epoch's midnight: deterministic."""
        return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a clock does not run backwards")
        self._now += seconds
        return self._now


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


class TrioClock:
    """trio's notion of now; trio is imported only when one is made, so the core stays trio-free."""

    def __init__(self) -> None:
        import trio

        self._current_time = trio.current_time

    def now(self) -> float:
        return self._current_time()

    def wall(self) -> float:
        return time.time()
