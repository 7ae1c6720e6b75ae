"""IPv4 fragment reassembly with timeouts and limits on memory and queues.

Policy, as Linux since 4.19 (and RFC 5722 for IPv6): a fragment that lies
wholly inside a run of fragments already held is a duplicate and ignored
(whatever its bytes: the first copy wins), any other overlap discards the
whole datagram. A run is what Linux's inet_frag_queue_insert calls one:
fragments that arrived in order, each starting where the tail ended; a
fragment placed anywhere but at the tail starts a run of its own.
Queues are bounded in number and in memory; when full, the oldest queue
is evicted to make room; a queue that more than ``max_dist`` other
fragments from its source have overtaken starts again (ipfrag_max_dist).
Memory is charged as Linux charges it (skb
truesize: the data plus a fixed overhead per fragment), so tiny fragments
cannot pile up by the hundred thousand.

A queue keeps its fragments sorted by offset (Linux: an rbtree since
FragmentSmack, CVE-2018-5391): a fragment costs O(log n) comparisons to
place and check for overlap, and completion is a byte count, as Linux's
``meat == len``: with overlaps refused, the bytes held equal the datagram's
length only when every byte is there.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field

from .counters import Counters
from .errors import Malformed
from .socket import SKB_OVERHEAD
from .wire.ipv4 import FLAG_MF, MAX_PACKET, IPv4Packet

Key = tuple[int, int, int, int]  # src, dst, proto, ident


@dataclass(slots=True)
class FragmentQueue:
    """One datagram's fragments so far."""

    key: Key
    deadline: float
    first: IPv4Packet | None = None  # the offset-0 fragment
    starts: list[int] = field(default_factory=list)  # fragment offsets, ascending
    ends: list[int] = field(default_factory=list)  # ascending too: fragments never overlap
    run_starts: list[int] = field(default_factory=list)  # where each run begins, ascending
    run_ends: list[int] = field(default_factory=list)  # where each run ends
    pieces: list[bytes] = field(default_factory=list)  # the fragments' data, in offset order
    total: int | None = None  # known once the last fragment (MF clear) arrived
    size: int = 0  # data bytes held
    rid: int = 0  # its source's fragment count when its last fragment came (ipfrag_max_dist)

    @property
    def truesize(self) -> int:
        """What the queue costs the stack's fragment memory (Linux: its skbs' truesize)."""
        return self.size + SKB_OVERHEAD * len(self.pieces)

    def place(self, start: int, end: int) -> int | None:
        """Where [start, end) goes in the queue; None if it overlaps a fragment held.
        Raises frag_duplicate if it lies wholly inside a run (Linux's IPFRAG_DUP)."""
        r = bisect_right(self.run_starts, start) - 1
        if r >= 0 and end <= self.run_ends[r]:
            raise Malformed("frag_duplicate")
        i = bisect_right(self.starts, start)
        if i and self.ends[i - 1] > start:
            return None
        if i < len(self.starts) and self.starts[i] < end:
            return None
        return i

    def insert(self, index: int, start: int, end: int, payload: bytes) -> None:
        """Hold a fragment :meth:`place` found room for: it extends the tail's run if it
        starts where the tail ends, else it begins a run (fragrun_append_to_last / _create)."""
        if index == len(self.starts) and self.ends and self.ends[-1] == start:
            self.run_ends[-1] = end
        else:
            r = bisect_right(self.run_starts, start)
            self.run_starts.insert(r, start)
            self.run_ends.insert(r, end)
        self.starts.insert(index, start)
        self.ends.insert(index, end)
        self.pieces.insert(index, payload)
        self.size += len(payload)

    def complete(self) -> bool:
        return self.total is not None and self.size == self.total


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
        max_dist: int = 64,
    ):
        self.ip = counters.ip
        self.timeout = timeout
        self.max_queues = max_queues
        self.max_bytes = max_bytes
        self.max_dist = max_dist  # Linux ipfrag_max_dist; 0: no check
        self.queues: dict[Key, FragmentQueue] = {}
        self.bytes = 0
        self.rids: dict[int, int] = {}  # per source with queues: fragments seen from it

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
        cost = len(payload) + SKB_OVERHEAD
        if queue is None:
            self._make_room(cost)
            queue = self.queues[key] = FragmentQueue(key, now + self.timeout)
        if self._too_far(queue, header.src):
            self._reinit(queue, now)
        index = queue.place(start, end)
        if index is None:
            self._discard(key)
            raise Malformed("frag_overlap")
        if not more:
            if queue.total is not None and queue.total != end:
                self._discard(key)
                raise Malformed("frag_inconsistent_end")
            if queue.ends and queue.ends[-1] > end:
                self._discard(key)
                raise Malformed("frag_inconsistent_end")
            queue.total = end
        elif queue.total is not None and end > queue.total:
            self._discard(key)
            raise Malformed("frag_inconsistent_end")
        if self.bytes + cost > self.max_bytes:
            self._discard(key)
            raise Malformed("frag_memory")
        queue.insert(index, start, end, payload)
        self.bytes += cost
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
        data = b"".join(queue.pieces)
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

    def _too_far(self, queue: FragmentQueue, src: int) -> bool:
        """More than max_dist fragments came from this source since the queue's last one (Linux
        ip_frag_too_far): its missing fragments are most likely lost, and what it holds would
        only wait for the timeout, or be completed by a later datagram reusing the ident."""
        if not self.max_dist:
            return False
        rid = self.rids[src] = self.rids.get(src, 0) + 1
        start, queue.rid = queue.rid, rid
        return bool(queue.pieces) and rid - start > self.max_dist

    def _reinit(self, queue: FragmentQueue, now: float) -> None:
        """Empty a queue and start it again (Linux ip_frag_reinit): the datagram so far failed."""
        self.bytes -= queue.truesize
        for held in (queue.starts, queue.ends, queue.run_starts, queue.run_ends, queue.pieces):
            held.clear()
        queue.size = 0
        queue.total = None
        queue.first = None
        queue.deadline = now + self.timeout
        self.ip["ReasmFails"] += 1

    def _make_room(self, incoming: int) -> None:
        while self.queues and (
            len(self.queues) >= self.max_queues or self.bytes + incoming > self.max_bytes
        ):
            oldest = min(self.queues.values(), key=lambda q: q.deadline)
            self._discard(oldest.key)

    def _discard(self, key: Key, failed: bool = True) -> None:
        queue = self.queues.pop(key, None)
        if queue is not None:
            self.bytes -= queue.truesize
            if not any(other[0] == key[0] for other in self.queues):
                self.rids.pop(key[0], None)  # no queue compares with its count any more
            if failed:
                self.ip["ReasmFails"] += 1
