"""A sans-IO model of a bad wire: loss, duplication, reordering, corruption, delay.

It decides, for each packet sent at time `now`, which copies arrive and when;
the caller (an in-memory link, a test) does the waiting. Keeping it free of
I/O and of trio makes every impairment reproducible from a seed and testable
without a clock.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, fields

from pystack.links.base import LinkStats

_PROBABILITIES = ("loss", "duplicate", "reorder", "corrupt")


@dataclass(frozen=True)
class Impairments:
    """What the wire does to packets, like Linux netem.

    loss, duplicate, reorder, corrupt: probabilities in [0, 1], drawn per packet.
    delay: one-way latency in seconds; jitter: uniform +/- spread around it
    (so jitter alone may reorder, as in netem). A reordered packet is held for
    reorder_hold extra seconds, so packets sent within that window overtake it.
    """

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    corrupt: float = 0.0
    delay: float = 0.0
    jitter: float = 0.0
    reorder_hold: float = 0.01

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name in _PROBABILITIES:
                if not 0.0 <= value <= 1.0:
                    raise ValueError(
                        f"{field.name} is a probability and must be between 0 and 1, got {value!r}"
                    )
            elif not 0.0 <= value < math.inf:
                raise ValueError(
                    f"{field.name} is a duration in seconds and must be finite and >= 0, "
                    f"got {value!r}"
                )


class ImpairmentModel:
    """Applies `Impairments` to a stream of packets, deterministically per seed."""

    def __init__(
        self, impairments: Impairments, seed: int = 0, stats: LinkStats | None = None
    ) -> None:
        self.impairments = impairments
        self.stats = LinkStats() if stats is None else stats
        self._rng = random.Random(seed)

    def process(self, packet: bytes, now: float) -> list[tuple[float, bytes]]:
        """Return the (delivery_time, packet) pairs that one sent packet becomes."""
        imp, rng, stats = self.impairments, self._rng, self.stats
        if rng.random() < imp.loss:
            stats.lost += 1
            return []
        copies = 1
        if rng.random() < imp.duplicate:
            stats.duplicated += 1
            copies = 2
        deliveries = []
        for _ in range(copies):
            data = packet
            if packet and rng.random() < imp.corrupt:
                stats.corrupted += 1
                data = _flip_one_bit(packet, rng)
            latency = max(0.0, imp.delay + rng.uniform(-imp.jitter, imp.jitter))
            if rng.random() < imp.reorder:
                stats.reordered += 1
                latency += imp.reorder_hold
            if latency > 0.0:
                stats.delayed += 1
            deliveries.append((now + latency, data))
        return deliveries


def _flip_one_bit(packet: bytes, rng: random.Random) -> bytes:
    """A copy of `packet` with exactly one bit inverted (the original is shared)."""
    bit = rng.randrange(len(packet) * 8)
    data = bytearray(packet)
    data[bit >> 3] ^= 1 << (bit & 7)
    return bytes(data)
