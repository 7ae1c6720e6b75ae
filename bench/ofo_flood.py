"""Out-of-order flood: what one peer's 1-byte segments at rcv_nxt+1+2k cost the receiver.

Two stacks on a virtual clock, connected in memory; after the handshake the
peer's side is played by raw segments (pystack's own codecs build them) into
the receiver's ``Stack.input``, each answered by an ACK with SACK blocks, as a
flood from a namespace would be (the attack of CVE-2018-5390's class). For N
holes queued (1k .. 64k, on a receive buffer large enough to hold them all),
the time per segment over the whole flood and over its last thousand: flat
when a segment costs O(log n). One row with the default 1 MiB buffer shows
the bound: the queue stops at what the buffer can hold (skb truesize), the
rest is dropped (TCPOFODrop).
"""

from __future__ import annotations

import gc
import time

from pystack.addr import aton
from pystack.clock import VirtualClock
from pystack.socket import SKB_OVERHEAD, SOCK_STREAM
from pystack.stack import Stack
from pystack.wire.ipv4 import PROTO_TCP, build_ipv4_header
from pystack.wire.tcp import ACK, build_tcp

from .common import Settings, Table, median_runs, note, ratio

NAME = "ofo_flood"
NEEDS_ROOT = False
SENDER, RECEIVER = "198.18.0.1", "198.18.0.2"
TAIL = 1000  # the last segments of a flood, timed on their own
ISSUE = "before the fix (issue figures, the same flood through the stack): 1,000 segments 1.1 s, " \
        "2,000 5.2 s, 4,000 19.6 s: the cost per segment grew with the queue"


class Link:
    """The two stacks back to back; the flood's ACKs are counted, not delivered."""

    def __init__(self) -> None:
        self.clock = VirtualClock()
        self.a = Stack(clock=self.clock, seed=1)
        self.b = Stack(clock=self.clock, seed=2)
        self.pending: list[tuple[Stack, bytes]] = []
        self.deliver = True
        self.acks = 0
        self.a.add_interface("a0", SENDER, 24, sink=lambda p: self.pending.append((self.b, p)))
        self.b.add_interface("b0", RECEIVER, 24, sink=self.from_b)

    def from_b(self, packet: bytes) -> None:
        if self.deliver:
            self.pending.append((self.a, packet))
        else:
            self.acks += 1

    def pump(self) -> None:
        while self.pending:
            stack, packet = self.pending.pop(0)
            stack.input(packet, "a0" if stack is self.a else "b0")


def connected(rcvbuf: int) -> tuple[Link, object, object]:
    """A connection from a to b; b's end with a receive buffer of ``rcvbuf`` bytes."""
    link = Link()
    lfd = link.b.socket(type=SOCK_STREAM)
    link.b.bind(lfd, (RECEIVER, 80))
    link.b.listen(lfd, 8)
    cfd = link.a.socket(type=SOCK_STREAM)
    try:
        link.a.connect(cfd, (RECEIVER, 80))
    except BlockingIOError:
        pass
    link.pump()
    fd, _ = link.b.accept(lfd)
    receiver = link.b.sockets[fd].tcb
    receiver.sock.rcvbuf = rcvbuf
    link.deliver = False
    return link, link.a.sockets[cfd].tcb, receiver


def flood(holes: int, rcvbuf: int) -> dict[str, float]:
    link, sender, receiver = connected(rcvbuf)
    src, dst = aton(SENDER), aton(RECEIVER)
    base = sender.snd_nxt
    packets = []
    for k in range(holes):
        segment = build_tcp(sender.local_port, 80, (base + 1 + 2 * k) & 0xFFFFFFFF, sender.rcv_nxt, ACK,
                            0xFFFF, b"", b"x", src, dst)
        packets.append(build_ipv4_header(src, dst, PROTO_TCP, len(segment), 64, 0, k & 0xFFFF, 0) + segment)
    gc.collect()
    start = time.perf_counter()
    for packet in packets[:-TAIL]:
        link.b.input(packet, "b0")
    middle = time.perf_counter()
    for packet in packets[-TAIL:]:
        link.b.input(packet, "b0")
    end = time.perf_counter()
    assert link.acks == holes, "every segment is answered"
    return {
        "queued": len(receiver.out_of_order),
        "dropped": link.b.counters.tcp["OFODrop"],
        "us_per_segment": (end - start) / holes * 1e6,
        "us_tail": (end - middle) / TAIL * 1e6,
        "seconds": end - start,
    }


def run(settings: Settings) -> Table:
    table = Table(NAME, "Out-of-order flood: 1-byte holes at rcv_nxt+1+2k into one connection "
                  "(lower and flat is better)",
                  ["holes", "receive buffer", "queued", "dropped", "flood s", "us/segment",
                   "us/segment, last 1k", "last 1k vs 1k holes"])
    sizes = settings.pick((1000, 4000, 16000, 64000), (1000, 4000, 16000))
    big = (SKB_OVERHEAD + 2) * max(sizes) * 2  # holds every hole: the queue's own cost is measured
    rows = []
    for holes in sizes:
        runs = [flood(holes, big) for _ in range(settings.repeats)]
        figures = median_runs(runs)
        note(f"{NAME}: {holes} holes, {figures['us_per_segment']:.1f} us/segment")
        rows.append((holes, figures))
    first_tail = rows[0][1]["us_tail"]
    for holes, figures in rows:
        table.add(holes, f"{big >> 20} MiB", int(figures["queued"]), int(figures["dropped"]), figures["seconds"],
                  figures["us_per_segment"], figures["us_tail"], ratio(figures["us_tail"], first_tail))
    default = Stack(clock=VirtualClock()).tcp.config.rmem_default
    bounded = flood(max(sizes), default)
    table.add(max(sizes), f"{default >> 20} MiB (default)", bounded["queued"], bounded["dropped"], bounded["seconds"],
              bounded["us_per_segment"], bounded["us_tail"], ratio(bounded["us_tail"], first_tail))
    table.notes.append(ISSUE)
    table.notes.append(f"each queued segment is charged its bytes + {SKB_OVERHEAD} (skb truesize); the queue "
                       "is bounded by the receive buffer and pruned from the highest sequence down")
    table.data = {"rows": [{"holes": h, **f} for h, f in rows], "default_buffer": bounded}
    return table
