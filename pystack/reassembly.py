"""IPv4 fragment reassembly with timeouts and limits on memory and queues.

Policy, as Linux since 4.19 (and RFC 5722 for IPv6): an exact duplicate
fragment is ignored, any other overlap discards the whole datagram.
Queues are bounded in number and in bytes; when full, the oldest queue
is evicted to make room.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .counters import Counters
from .errors import Malformed
from .wire.ipv4 import FLAG_MF, MAX_PACKET, IPv4Packet

Key = tuple[int, int, int, int]  # src, dst, proto, ident


@dataclass(slots=True)
class FragmentQueue:
    key: Key
    deadline: float
    first: IPv4Packet | None = None  # the offset-0 fragment
    pieces: dict[int, bytes] = field(default_factory=dict)  # offset -> data
    total: int | None = None  # known once the last fragment (MF clear) arrived
    size: int = 0

    def overlaps(self, start: int, end: int) -> bool:
        return any(start < o + len(d) and o < end for o, d in self.pieces.items())

    def complete(self) -> bool:
        if self.total is None:
            return False
        covered = 0
        for offset in sorted(self.pieces):
            if offset != covered:
                return False
            covered += len(self.pieces[offset])
        return covered == self.total


class Reassembler:
    """Collects fragments; :meth:`add` returns the whole payload once complete.

    Rejected fragments raise :class:`Malformed` with the drop reason; the
    caller counts the fragment. The reassembler counts whole datagrams
    (ReasmReqds, ReasmOKs, ReasmFails, ReasmTimeout) itself. Expired queues
    are returned by :meth:`expire` so the caller can send ICMP time exceeded
    for those whose first fragment came.
    """

    def __init__(
        self,
        counters: Counters,
        timeout: float = 30.0,
        max_queues: int = 64,
        max_bytes: int = 4 * 1024 * 1024,
    ):
        self.ip = counters.ip
        self.timeout = timeout
        self.max_queues = max_queues
        self.max_bytes = max_bytes
        self.queues: dict[Key, FragmentQueue] = {}
        self.bytes = 0

    def add(self, header: IPv4Packet, now: float) -> IPv4Packet | None:
        """Queue a fragment (the reassembler keeps it); the whole datagram once complete."""
        self.ip["ReasmReqds"] += 1
        start = header.frag_offset
        more = bool(header.flags & FLAG_MF)
        payload = header.payload
        if more:
            # Non-last fragments carry 8-byte multiples: trimmed in place, as Linux trims the skb.
            payload = header.payload = payload[: len(payload) & ~7]
        end = start + len(payload)
        if not payload:
            raise Malformed("frag_empty")
        if end + header.header_length > MAX_PACKET:
            self._discard((header.src, header.dst, header.proto, header.ident))
            raise Malformed("frag_too_large")
        key = (header.src, header.dst, header.proto, header.ident)
        queue = self.queues.get(key)
        if queue is None:
            self._make_room(len(payload))
            queue = self.queues[key] = FragmentQueue(key, now + self.timeout)
        if queue.pieces.get(start) == payload:
            raise Malformed("frag_duplicate")
        if queue.overlaps(start, end):
            self._discard(key)
            raise Malformed("frag_overlap")
        if not more:
            if queue.total is not None and queue.total != end:
                self._discard(key)
                raise Malformed("frag_inconsistent_end")
            if any(o + len(d) > end for o, d in queue.pieces.items()):
                self._discard(key)
                raise Malformed("frag_inconsistent_end")
            queue.total = end
        elif queue.total is not None and end > queue.total:
            self._discard(key)
            raise Malformed("frag_inconsistent_end")
        if self.bytes + len(payload) > self.max_bytes:
            self._discard(key)
            raise Malformed("frag_memory")
        queue.pieces[start] = payload
        queue.size += len(payload)
        self.bytes += len(payload)
        if start == 0:
            queue.first = header
        done = queue.complete()
        first = queue.first
        if done and first is not None and first.header_length + (queue.total or 0) > MAX_PACKET:
            self._discard(key)  # the first fragment's header makes it oversize (Linux: ip_frag_reasm)
            raise Malformed("frag_too_large")
        self.ip["ReasmQueued"] += 1
        if not done:
            return None
        self._discard(key, failed=False)
        self.ip["ReasmOKs"] += 1
        data = b"".join(queue.pieces[o] for o in sorted(queue.pieces))
        first = queue.first
        assert first is not None
        return IPv4Packet(
            src=first.src,
            dst=first.dst,
            proto=first.proto,
            ttl=first.ttl,
            tos=first.tos,
            ident=first.ident,
            flags=first.flags & ~FLAG_MF,
            frag_offset=0,
            total_length=first.header_length + len(data),
            header_length=first.header_length,
            options=first.options,
            payload=data,
        )

    def expire(self, now: float) -> list[FragmentQueue]:
        """Remove and return the queues whose timeout has passed."""
        expired = [q for q in self.queues.values() if q.deadline <= now]
        for queue in expired:
            self._discard(queue.key)
            self.ip["ReasmTimeout"] += 1
        return expired

    def next_deadline(self) -> float | None:
        return min((q.deadline for q in self.queues.values()), default=None)

    def _make_room(self, incoming: int) -> None:
        while self.queues and (
            len(self.queues) >= self.max_queues or self.bytes + incoming > self.max_bytes
        ):
            oldest = min(self.queues.values(), key=lambda q: q.deadline)
            self._discard(oldest.key)

    def _discard(self, key: Key, failed: bool = True) -> None:
        queue = self.queues.pop(key, None)
        if queue is not None:
            self.bytes -= queue.size
            if failed:
                self.ip["ReasmFails"] += 1
