"""Fragment flood: what one datagram cut into 8-byte IPv4 fragments costs the receiver.

Raw fragments (pystack's own codecs build them), shuffled, into ``Stack.input``
of a stack on a virtual clock: 1k .. 8k fragments of one datagram (8,000 is a
legal 64,000-byte datagram), with the fragment memory raised so that it
completes, then the same 8,000 with the default 4 MiB, where the charged
truesize makes the datagram give up before the end. Time per fragment flat
means O(log n) per fragment.
"""

from __future__ import annotations

import gc
import random
import time

from pystack.addr import aton
from pystack.clock import VirtualClock
from pystack.socket import SKB_OVERHEAD
from pystack.stack import Stack
from pystack.wire.ipv4 import FLAG_MF, PROTO_UDP, build_ipv4_header

from .common import Settings, Table, median_runs, note, ratio

NAME = "frag_flood"
NEEDS_ROOT = False
SENDER, RECEIVER = "198.18.0.1", "198.18.0.2"
PIECE = 8
ISSUE = "before the fix (issue figure): 8,000 8-byte fragments of one datagram cost 2.9 s of CPU"


def packets(count: int, ident: int) -> list[bytes]:
    src, dst = aton(SENDER), aton(RECEIVER)
    out = []
    for k in range(count):
        flags = (FLAG_MF if k < count - 1 else 0) | k  # k units of 8 bytes: the offset field
        out.append(build_ipv4_header(src, dst, PROTO_UDP, PIECE, 64, 0, ident, flags) + bytes(PIECE))
    random.Random(ident).shuffle(out)
    return out


def flood(count: int, max_bytes: int | None) -> dict[str, float]:
    stack = Stack(clock=VirtualClock(), seed=1)
    stack.add_interface("b0", RECEIVER, 24, sink=lambda packet: None)
    if max_bytes is not None:
        stack.reassembler.max_bytes = max_bytes
    frags = packets(count, 1)
    gc.collect()
    start = time.perf_counter()
    for packet in frags:
        stack.input(packet, "b0")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "us_per_fragment": seconds / count * 1e6,
            "reassembled": stack.counters.ip["ReasmOKs"], "dropped": stack.counters.drops["ip.frag_memory"]}


def run(settings: Settings) -> Table:
    table = Table(NAME, "Fragment flood: one datagram in shuffled 8-byte IPv4 fragments (lower and flat is better)",
                  ["fragments", "fragment memory", "reassembled", "dropped (memory)", "flood s",
                   "us/fragment", "vs 1k fragments"])
    sizes = (1000, 2000, 4000, 8000)
    big = 8000 * (PIECE + SKB_OVERHEAD)
    rows = []
    for count in sizes:
        runs = [flood(count, big) for _ in range(settings.repeats)]
        figures = median_runs(runs)
        note(f"{NAME}: {count} fragments, {figures['us_per_fragment']:.1f} us/fragment")
        rows.append((count, figures))
    first = rows[0][1]["us_per_fragment"]
    for count, figures in rows:
        table.add(count, f"{big / (1 << 20):.1f} MiB", int(figures["reassembled"]), int(figures["dropped"]),
                  figures["seconds"], figures["us_per_fragment"], ratio(figures["us_per_fragment"], first))
    default = flood(8000, None)
    table.add(8000, "4 MiB (default)", default["reassembled"], default["dropped"], default["seconds"],
              default["us_per_fragment"], ratio(default["us_per_fragment"], first))
    table.notes.append(ISSUE)
    table.notes.append(f"each fragment is charged its bytes + {SKB_OVERHEAD} (skb truesize) against the fragment memory")
    table.data = {"rows": [{"fragments": c, **f} for c, f in rows], "default_memory": default}
    return table
