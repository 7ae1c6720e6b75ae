"""Two in-memory links wired back to back, with optional impairments.

This is the wire for tests and demos without root: packets travel through a
heap ordered by delivery time and are released on trio's clock, so under
`trio.testing.MockClock(autojump_threshold=0)` a 200 ms delay costs no real
time and every run with the same seed sees the same packets at the same
virtual instants.
"""

from __future__ import annotations

import heapq

import trio

from pystack.links.base import Link, LinkStats
from pystack.links.impair import ImpairmentModel, Impairments


class _Wire:
    """One direction: packets in flight, and the receivers waiting for them."""

    def __init__(self, model: ImpairmentModel, capacity: int) -> None:
        self.model = model
        self.capacity = capacity
        self.in_flight: list[tuple[float, int, bytes]] = []
        self.sequence = 0  # breaks delivery-time ties in send order
        self.waiters = trio.lowlevel.ParkingLot()
        self.sender_closed = False
        self.receiver_closed = False


class MemoryLink(Link):
    """One end of a `memory_link_pair`."""

    def __init__(self, name: str, mtu: int, tx: _Wire, rx: _Wire, stats: LinkStats) -> None:
        self.name = name
        self.mtu = mtu
        self.stats = stats
        self._tx = tx
        self._rx = rx
        self._closed = False

    def send_nowait(self, packet: bytes) -> None:
        if self._closed:
            raise trio.ClosedResourceError(f"link {self.name} is closed")
        wire = self._tx
        if len(packet) > self.mtu or len(wire.in_flight) >= wire.capacity or wire.receiver_closed:
            self.stats.tx_dropped += 1
            return
        self.stats.tx_packets += 1
        self.stats.tx_bytes += len(packet)
        for when, data in wire.model.process(bytes(packet), trio.current_time()):
            heapq.heappush(wire.in_flight, (when, wire.sequence, data))
            wire.sequence += 1
        wire.waiters.unpark_all()  # the new packet may be due before the one they wait for

    async def receive(self) -> bytes:
        await trio.lowlevel.checkpoint()
        wire = self._rx
        while True:
            if self._closed:
                raise trio.ClosedResourceError(f"link {self.name} is closed")
            if wire.in_flight:
                when = wire.in_flight[0][0]
                if when <= trio.current_time():
                    packet = heapq.heappop(wire.in_flight)[2]
                    self.stats.rx_packets += 1
                    self.stats.rx_bytes += len(packet)
                    return packet
                with trio.move_on_at(when):
                    await wire.waiters.park()
            elif wire.sender_closed:
                raise trio.EndOfChannel(f"the far end of {self.name} was closed")
            else:
                await wire.waiters.park()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._rx.receiver_closed = True
        self._rx.in_flight.clear()
        self._rx.waiters.unpark_all()
        self._tx.sender_closed = True
        self._tx.waiters.unpark_all()


def memory_link_pair(
    a_to_b: Impairments | None = None,
    b_to_a: Impairments | None = None,
    seed: int = 0,
    mtu: int = 1500,
    capacity: int = 1024,
) -> tuple[MemoryLink, MemoryLink]:
    """Return links ("mem-a", "mem-b"): what one sends, the other receives.

    Each direction has its own impairments and its own random stream (seeded
    from `seed`), so traffic one way does not change what happens the other
    way. At most `capacity` packets are in flight per direction; beyond that,
    and beyond `mtu` bytes, packets are dropped and counted in tx_dropped.
    """
    if mtu < 1:
        raise ValueError(f"mtu must be a positive number of bytes, got {mtu!r}")
    if capacity < 1:
        raise ValueError(f"capacity must be at least 1 packet, got {capacity!r}")
    stats_a, stats_b = LinkStats(), LinkStats()
    ab = _Wire(ImpairmentModel(a_to_b or Impairments(), 2 * seed, stats_a), capacity)
    ba = _Wire(ImpairmentModel(b_to_a or Impairments(), 2 * seed + 1, stats_b), capacity)
    return (
        MemoryLink("mem-a", mtu, ab, ba, stats_a),
        MemoryLink("mem-b", mtu, ba, ab, stats_b),
    )
