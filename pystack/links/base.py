"""The Link interface: what the stack driver needs from a wire.

A link moves whole IPv4 packets (no link-layer header). Sending never blocks,
because the sans-IO core produces packets from synchronous code and a real
wire drops rather than waits when it is full; receiving is the one place the
driver awaits.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import Self


@dataclass
class LinkStats:
    """Counters of one link, as seen from its own end.

    The impairment counters (lost ... delayed) are only moved by impaired
    links; they count what the wire did to packets this end sent.
    """

    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0
    tx_dropped: int = 0
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    corrupted: int = 0
    delayed: int = 0


class Link(ABC):
    """One end of a wire carrying IPv4 packets.

    After `close()`, `receive()` raises `trio.ClosedResourceError`; a link
    whose far end went away raises `trio.EndOfChannel` once drained.
    """

    name: str
    mtu: int
    stats: LinkStats

    @abstractmethod
    def send_nowait(self, packet: bytes) -> None:
        """Hand one packet to the wire; if it cannot be queued, drop and count it."""

    @abstractmethod
    async def receive(self) -> bytes:
        """Wait for the next packet from the wire."""

    @abstractmethod
    def close(self) -> None:
        """Release the wire; idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
