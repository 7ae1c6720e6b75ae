"""The out-of-order queue: data received beyond rcv_nxt, sorted, coalesced and bounded.

Linux keeps it in an rbtree ordered by sequence number, and since CVE-2018-5390
("SegmentSmack", where work linear in the queue on every segment let one peer
stall the host) bounds every per-segment cost. Here it is three parallel sorted lists (start, end, bytes) searched with bisect, so
that a segment costs O(log n) comparisons wherever it lands. Blocks that touch
or overlap are coalesced, so each block is one SACK block. Sequence numbers
are kept as offsets from ``base``, a sequence number at or below rcv_nxt, so
the order survives wraparound.

Memory is charged as Linux charges skb truesize: the bytes plus a fixed
per-buffer overhead, so a flood of 1-byte holes fills the default 1 MiB
receive buffer after some 1,400 segments, not after the quarter million the
window would admit; beyond it the queue is pruned from the highest sequence
down (tcp_prune_ofo_queue).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from ..socket import SKB_OVERHEAD
from .seq import seq_add, seq_diff

REBASE_AFTER = 1 << 30  # keep every offset far from the 2**31 sequence-space horizon


class OutOfOrderQueue:
    """Disjoint, non-touching blocks of received data, by sequence number."""

    __slots__ = ("base", "starts", "ends", "blocks", "bytes")

    def __init__(self) -> None:
        self.base = 0
        self.starts: list[int] = []  # offsets from base, ascending
        self.ends: list[int] = []  # ascending too: the blocks are disjoint
        self.blocks: list[bytearray] = []
        self.bytes = 0  # data bytes held

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def truesize(self) -> int:
        """What the queue costs the receive buffer (Linux: the sum of its skbs' truesize)."""
        return self.bytes + SKB_OVERHEAD * len(self.starts)

    def ranges(self) -> list[tuple[int, int]]:
        """Every block as (seq, end), in sequence order."""
        return [(seq_add(self.base, s), seq_add(self.base, e)) for s, e in zip(self.starts, self.ends, strict=True)]

    def block_at(self, seq: int) -> tuple[int, int] | None:
        """The block holding sequence number ``seq``, as (seq, end)."""
        offset = seq_diff(seq, self.base)
        i = bisect_right(self.starts, offset) - 1
        if i >= 0 and offset < self.ends[i]:
            return seq_add(self.base, self.starts[i]), seq_add(self.base, self.ends[i])
        return None

    def first_overlap(self, seq: int, end: int) -> tuple[int, int] | None:
        """The part of [seq, end) that the lowest block it overlaps holds already, or None."""
        start = seq_diff(seq, self.base)
        stop = start + seq_diff(end, seq)
        i = bisect_right(self.ends, start)  # the first block ending after the new data's start
        if i == len(self.starts) or self.starts[i] >= stop:
            return None
        return seq_add(self.base, max(start, self.starts[i])), seq_add(self.base, min(stop, self.ends[i]))

    def covers(self, seq: int, end: int) -> bool:
        """All of [seq, end) is held already."""
        start = seq_diff(seq, self.base)
        i = bisect_right(self.starts, start) - 1
        return i >= 0 and self.ends[i] >= start + seq_diff(end, seq)

    def first_blocks(self, count: int, skip: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Up to ``count`` blocks from the lowest sequence up, leaving out those in ``skip``."""
        found: list[tuple[int, int]] = []
        for s, e in zip(self.starts, self.ends, strict=False):
            if len(found) >= count:
                break
            block = (seq_add(self.base, s), seq_add(self.base, e))
            if block not in skip:
                found.append(block)
        return found

    def insert(self, seq: int, data: bytes, rcv_nxt: int) -> tuple[int, int]:
        """Add data at ``seq`` (beyond ``rcv_nxt``), coalescing with what it touches; returns the block."""
        if not self.starts:
            self.base = rcv_nxt
        elif seq_diff(rcv_nxt, self.base) > REBASE_AFTER:
            self.rebase(rcv_nxt)
        start = seq_diff(seq, self.base)
        end = start + len(data)
        i = bisect_left(self.ends, start)  # the first block ending at or after the new data's start
        j = bisect_right(self.starts, end, lo=i)  # past the last block starting at or before its end
        if i == j:
            self.starts.insert(i, start)
            self.ends.insert(i, end)
            self.blocks.insert(i, bytearray(data))
            self.bytes += len(data)
            return seq, seq_add(seq, len(data))
        last_start, last_end = self.starts[j - 1], self.ends[j - 1]
        tail = self.blocks[j - 1][end - last_start :] if last_end > end else b""
        first_start = self.starts[i]
        held = sum(len(block) for block in self.blocks[i:j])
        if first_start < start:
            merged = self.blocks[i]  # extended in place: data arriving in order costs no copy
            del merged[start - first_start :]
        else:
            merged = bytearray()
            first_start = start
        merged += data
        merged += tail
        new_end = first_start + len(merged)
        self.starts[i:j] = [first_start]
        self.ends[i:j] = [new_end]
        self.blocks[i:j] = [merged]
        self.bytes += len(merged) - held
        return seq_add(self.base, first_start), seq_add(self.base, new_end)

    def take_up_to(self, rcv_nxt: int) -> list[tuple[int, bytearray]]:
        """Remove and return, in order, the blocks that start at or below ``rcv_nxt``."""
        n = bisect_right(self.starts, seq_diff(rcv_nxt, self.base))
        taken = [(seq_add(self.base, s), block) for s, block in zip(self.starts[:n], self.blocks[:n], strict=True)]
        del self.starts[:n], self.ends[:n], self.blocks[:n]
        self.bytes -= sum(len(block) for _, block in taken)
        return taken

    def prune(self, seq: int, goal: int, limit: int) -> bool:
        """Drop blocks from the highest sequence down (Linux tcp_prune_ofo_queue) until at least
        ``goal`` bytes of truesize are freed and the queue's truesize is within ``limit``; stop at
        a block below ``seq`` (the arriving data would land last). True if any was dropped."""
        freed = 0
        while self.starts and seq_diff(seq, seq_add(self.base, self.starts[-1])) <= 0:
            self.starts.pop()
            self.ends.pop()
            size = len(self.blocks.pop())
            self.bytes -= size
            freed += size + SKB_OVERHEAD
            if freed >= goal and self.truesize <= limit:
                break
        return freed > 0

    def clear(self) -> None:
        self.starts.clear()
        self.ends.clear()
        self.blocks.clear()
        self.bytes = 0

    def rebase(self, rcv_nxt: int) -> None:
        """Move ``base`` up to rcv_nxt (every block lies beyond it)."""
        shift = seq_diff(rcv_nxt, self.base)
        self.starts = [s - shift for s in self.starts]
        self.ends = [e - shift for e in self.ends]
        self.base = rcv_nxt
