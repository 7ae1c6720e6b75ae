"""IPv4 reassembly under a flood of tiny fragments (FragmentSmack, CVE-2018-5391's class):
each fragment costs O(log n) to place, and memory is charged as Linux charges it (skb truesize),
so the work and the memory a peer can make the stack spend are bounded."""

from __future__ import annotations

import random
import time

import pytest

from pystack.counters import Counters
from pystack.errors import Malformed
from pystack.reassembly import Reassembler
from pystack.socket import SKB_OVERHEAD
from pystack.wire.ipv4 import FLAG_MF, IPv4Packet

SRC, DST = 0xC6120001, 0xC6120002  # 198.18.0.1 -> 198.18.0.2
PIECE = 8
COUNT = 8000  # 64,000 bytes: one legal datagram in 8-byte fragments


def fragments(ident: int, count: int = COUNT) -> list[IPv4Packet]:
    """One UDP-sized datagram cut into 8-byte fragments; byte i of it is i % 251."""
    data = bytes(i % 251 for i in range(count * PIECE))
    out = []
    for k in range(count):
        more = FLAG_MF if k < count - 1 else 0
        out.append(IPv4Packet(SRC, DST, 17, ident=ident, flags=more, frag_offset=k * PIECE,
                              total_length=20 + PIECE, payload=data[k * PIECE:(k + 1) * PIECE]))
    return out


def feed(reassembler: Reassembler, frags: list[IPv4Packet]) -> list[object]:
    """Every fragment in turn; what each add returned (a datagram, None, or the drop reason)."""
    results: list[object] = []
    for fragment in frags:
        try:
            results.append(reassembler.add(fragment, 0.0))
        except Malformed as bad:
            results.append(bad.reason)
    return results


def test_eight_thousand_tiny_fragments_in_any_order_reassemble_quickly():
    """8,000 8-byte fragments, shuffled: the datagram comes out whole, and the CPU spent is a
    small fraction of a second (it was 2.9 s when every fragment walked and sorted the queue)."""
    frags = fragments(1)
    random.Random(7).shuffle(frags)
    reassembler = Reassembler(Counters(), max_bytes=COUNT * (PIECE + SKB_OVERHEAD))
    start = time.process_time()
    results = feed(reassembler, frags)
    spent = time.process_time() - start
    done = [r for r in results if r is not None]
    assert len(done) == 1 and results[-1] is done[0]
    whole = done[0]
    assert whole.payload == bytes(i % 251 for i in range(COUNT * PIECE))
    assert whole.total_length == 20 + COUNT * PIECE
    assert reassembler.queues == {} and reassembler.bytes == 0
    assert spent < 0.5, f"{spent:.2f} s of CPU for {COUNT} fragments"


def test_tiny_fragments_are_charged_their_truesize_and_the_memory_limit_holds():
    """With the default 4 MiB, 8,000 8-byte fragments cost more than the limit (each is charged
    as a buffer, not as 8 bytes), so the datagram is dropped when memory runs out, as Linux
    drops it, instead of holding 8,000 entries."""
    reassembler = Reassembler(Counters())
    results = feed(reassembler, fragments(2))
    held = reassembler.max_bytes // (PIECE + SKB_OVERHEAD)
    assert results[:held] == [None] * held
    assert results[held] == "frag_memory"
    assert reassembler.ip["ReasmFails"] >= 1 and reassembler.ip["ReasmOKs"] == 0
    assert reassembler.bytes <= reassembler.max_bytes


@pytest.mark.parametrize("queues", [3, 40])
def test_the_memory_limit_is_shared_by_every_queue(queues):
    """Floods of several datagrams at once: the charged memory never exceeds the limit, and
    older queues are evicted to make room for new ones."""
    reassembler = Reassembler(Counters(), max_bytes=256 * 1024)
    floods = [fragments(10 + q, count=400) for q in range(queues)]
    for k in range(400):
        for frags in floods:
            feed(reassembler, [frags[k]])
            assert reassembler.bytes == sum(q.truesize for q in reassembler.queues.values())
            assert reassembler.bytes <= reassembler.max_bytes
    assert len(reassembler.queues) <= reassembler.max_queues


@pytest.mark.parametrize(("between", "whole"), [(63, True), (64, False)])
def test_a_queue_overtaken_by_max_dist_fragments_starts_again(between, whole):
    """Linux ipfrag_max_dist (64): when a queue's next fragment is more than 64 fragments from the
    same source after its last one (64 others came between), its fragments are dropped
    (ReasmFails) and the queue starts again, so the datagram cannot complete from what it held."""
    reassembler = Reassembler(Counters())
    first, *rest = fragments(1, count=4)
    other = fragments(2, count=between + 1)[:between]  # another datagram, never completed
    results = feed(reassembler, [first, *other, *rest])
    assert (results[-1] is not None) == whole
    assert reassembler.ip["ReasmFails"] == (0 if whole else 1)
    assert reassembler.bytes == sum(q.truesize for q in reassembler.queues.values())
