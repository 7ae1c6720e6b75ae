"""The in-memory mode: pystack on an in-memory link, no root needed.

The far end of the link is a scripted peer that plays the kernel's part
with scapy-crafted packets: pings (one of them fragmented), UDP echo,
and a datagram to a closed port, over a link that loses, duplicates and
reorders packets (seeded, so every run is the same). Runs in trio's
virtual time, so it takes well under a second.

    python -m demos.memory_demo
"""

from __future__ import annotations

import trio
import trio.testing
from scapy.layers.inet import ICMP, IP, UDP, fragment
from scapy.packet import Raw

from pystack.clock import TrioClock
from pystack.links import Impairments, memory_link_pair
from pystack.links.base import Link
from pystack.services import serve_services
from pystack.stack import Stack
from pystack.trio_api import running

PEER = "198.18.0.1"
PYSTACK = "198.18.0.2"


async def ask(link: Link, packets: list[bytes], wanted: int, timeout: float = 2.0) -> list[IP]:
    """Send ``packets``, collect up to ``wanted`` answers (retrying once if the link lost some)."""
    answers: list[IP] = []
    for _attempt in range(3):
        for packet in packets:
            link.send_nowait(packet)
        with trio.move_on_after(timeout):
            while len(answers) < wanted:
                answers.append(IP(await link.receive()))
        if len(answers) >= wanted:
            break
    return answers


async def scripted_peer(link: Link) -> None:
    print(f"peer {PEER} -> ping {PYSTACK}")
    request = IP(src=PEER, dst=PYSTACK) / ICMP(id=1, seq=1) / Raw(b"x" * 56)
    for reply in await ask(link, [bytes(request)], 1):
        print(f"   {reply.summary()}")

    print(f"peer {PEER} -> ping {PYSTACK} with 4000 bytes, sent in 3 fragments")
    big = IP(src=PEER, dst=PYSTACK, id=99) / ICMP(id=1, seq=2) / Raw(b"y" * 4000)
    pieces = await ask(link, [bytes(f) for f in fragment(big, 1480)], 3)
    print(f"   {len(pieces)} reply fragments, offsets {[p.frag * 8 for p in pieces]}")

    print(f"peer {PEER} -> UDP echo {PYSTACK}:7")
    echo = IP(src=PEER, dst=PYSTACK) / UDP(sport=40000, dport=7) / Raw(b"hello, pystack")
    for reply in await ask(link, [bytes(echo)], 1):
        print(f"   {reply.summary()}: {bytes(reply[UDP].payload)!r}")

    print(f"peer {PEER} -> UDP to closed port {PYSTACK}:9999")
    closed = IP(src=PEER, dst=PYSTACK) / UDP(sport=40001, dport=9999) / Raw(b"?")
    for reply in await ask(link, [bytes(closed)], 1):
        print(f"   {reply.summary()}")


async def main() -> None:
    impairments = Impairments(loss=0.05, duplicate=0.02, reorder=0.05, delay=0.001)
    ours, theirs = memory_link_pair(impairments, impairments, seed=2026)
    stack = Stack(clock=TrioClock(), seed=1)
    stack.add_interface("mem0", PYSTACK, 24)
    print(f"pystack {PYSTACK} on an in-memory link (5% loss, 2% duplication, 5% reordering)")
    async with running(stack, {"mem0": ours}) as network, trio.open_nursery() as nursery:
        await nursery.start(serve_services, network)
        await scripted_peer(theirs)
        nursery.cancel_scope.cancel()
    print("\npystack counters:")
    print(stack.counters.format())


if __name__ == "__main__":
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
