"""Calls per second of the generic UDP send path, against just building the same bytes.

The stack has one interface whose sink is a no-op, so a call is pure
Python work: the fd lookup, flag and option interpretation, route
validation, the UDP and IPv4 headers with their checksums. This is the
baseline the specializer's residual code will be measured against.

Paths (1 KB payload, 198.18.0.2:port -> 198.18.0.1:9):

- ``sendto`` on an unconnected socket (a route lookup per call);
- ``sendto`` on a connected socket, same address as the peer (cached route);
- ``send`` on the connected socket (sendmsg with one buffer);
- floor: ``build_udp`` + ``build_ipv4_header`` + the same no-op sink, i.e.
  only the bytes that go on the wire. Before timing, the floor's packet is
  checked to be byte-identical to what each path emits;
- for scale, ``await sock.sendto`` through pystack.trio_api (unconnected),
  i.e. what a trio application pays per datagram.

Each path runs a bounded loop (a count or a time, whichever first), timed
with perf_counter; the figure is the median over the repeats.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from pystack.addr import aton
from pystack.clock import Clock, MonotonicClock, TrioClock
from pystack.socket import IP_PMTUDISC_WANT
from pystack.stack import Stack
from pystack.trio_api import running
from pystack.wire.ipv4 import FLAG_DF, PROTO_UDP, build_ipv4_header
from pystack.wire.udp import build_udp

from .common import (
    CHUNK,
    KERNEL_ADDR,
    PREFIXLEN,
    STACK_ADDR,
    Bounded,
    Settings,
    Table,
    median,
    note,
    ratio,
    time_loop,
)

NAME = "udp_send_path"
NEEDS_ROOT = False
PAYLOAD = bytes(range(256)) * 4  # 1 KB
PEER = (KERNEL_ADDR, 9)
FLOOR = "floor: build_udp + build_ipv4_header"
TRIO = "trio: await sock.sendto, unconnected"


def no_op(packet: bytes) -> None:
    pass


class Paths:
    """A stack on a no-op interface with the sockets of each path, and the floor."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.captured: list[bytes] = []
        self.stack = stack = Stack(clock=clock or MonotonicClock(), seed=1)
        self.iface = stack.add_interface("bench0", STACK_ADDR, PREFIXLEN, sink=self.captured.append)
        stack.add_route("0.0.0.0", 0, "bench0", gateway=KERNEL_ADDR)
        self.unconnected = stack.socket()
        stack.bind(self.unconnected, (STACK_ADDR, 40000))
        self.connected = stack.socket()
        stack.bind(self.connected, (STACK_ADDR, 40001))
        stack.connect(self.connected, PEER)
        self.src, self.dst = aton(STACK_ADDR), aton(KERNEL_ADDR)

    def floor_packet(self, sport: int, ident: int) -> bytes:
        datagram = build_udp(sport, PEER[1], PAYLOAD, self.src, self.dst, True)
        header = build_ipv4_header(self.src, self.dst, PROTO_UDP, len(datagram), 64, 0, ident, FLAG_DF)
        return header + datagram

    def check(self) -> None:
        """The floor must build exactly what the stack sends, or the comparison means nothing."""
        stack = self.stack
        assert stack.sockfd_lookup(self.connected).pmtudisc == IP_PMTUDISC_WANT
        cases = [
            (lambda: stack.sendto(self.unconnected, PAYLOAD, 0, PEER), 40000, 0),
            (lambda: stack.sendto(self.connected, PAYLOAD, 0, PEER), 40001, 0),
            (lambda: stack.send(self.connected, PAYLOAD), 40001, 1),
        ]
        for call, sport, ident in cases:
            self.captured.clear()
            call()
            if self.captured != [self.floor_packet(sport, ident)]:
                raise AssertionError(f"floor and stack differ for source port {sport}")
        self.iface.sink = no_op

    def loops(self) -> dict[str, Callable[[int], None]]:
        stack, unconnected, connected = self.stack, self.unconnected, self.connected
        sendto, send = stack.sendto, stack.send
        src, dst = self.src, self.dst

        def sendto_unconnected(n: int) -> None:
            for _ in range(n):
                sendto(unconnected, PAYLOAD, 0, PEER)

        def sendto_connected(n: int) -> None:
            for _ in range(n):
                sendto(connected, PAYLOAD, 0, PEER)

        def send_connected(n: int) -> None:
            for _ in range(n):
                send(connected, PAYLOAD)

        ident = [0]

        def floor(n: int) -> None:
            i = ident[0]
            for _ in range(n):
                datagram = build_udp(40001, 9, PAYLOAD, src, dst, True)
                no_op(build_ipv4_header(src, dst, PROTO_UDP, len(datagram), 64, 0, i, FLAG_DF)
                      + datagram)
                i = (i + 1) & 0xFFFF
            ident[0] = i

        return {
            "sendto, unconnected": sendto_unconnected,
            "sendto, connected": sendto_connected,
            "send, connected": send_connected,
            FLOOR: floor,
        }


def trio_sendto(max_calls: int, max_seconds: float) -> Bounded:
    """``await sock.sendto`` through pystack.trio_api on an unconnected socket, same no-op sink:
    what an application pays per datagram on top of the generic path (not the specializer's
    target, shown for scale)."""
    async def main() -> Bounded:
        paths = Paths(TrioClock())  # the driver runs a stack on trio's clock only
        paths.check()
        async with running(paths.stack, {}) as network:
            with network.socket() as sock:
                await sock.bind((STACK_ADDR, 40002))
                bounded = Bounded(max_calls, max_seconds)
                for n in bounded:
                    for _ in range(n):
                        await sock.sendto(PAYLOAD, PEER)
                return bounded

    return trio.run(main)


def run(settings: Settings) -> Table:
    max_calls = settings.pick(200_000, 30_000)
    max_seconds = settings.pick(2.0, 0.5)
    paths = Paths()
    paths.check()
    loops = paths.loops()
    loops[FLOOR](CHUNK)  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in loops}
    counts: dict[str, int] = {}
    samples[TRIO] = []
    for repeat in range(settings.repeats):
        for name, loop in loops.items():
            bounded = time_loop(loop, max_calls, max_seconds)
            samples[name].append(bounded.ns_per_call)
            counts[name] = bounded.calls
        bounded = trio_sendto(max_calls, max_seconds)
        samples[TRIO].append(bounded.ns_per_call)
        counts[TRIO] = bounded.calls
        note(f"{NAME} #{repeat + 1}: " + ", ".join(
            f"{name.split(':')[0]} {samples[name][-1] / 1000:.1f} us" for name in samples))

    floor = samples[FLOOR]
    table = Table(NAME, "UDP send path, 1 KB payload, no-op sink (higher calls/s is better)",
                  ["path", "calls", "calls/s", "ns/call", "x floor time", "overhead ns/call"])
    for name in [*loops, TRIO]:
        ns_call = median(samples[name])
        # Paired per repeat (the floor ran right after the paths), then the median.
        times_floor = median([ratio(a, b) for a, b in zip(samples[name], floor, strict=True)])
        overhead = median([a - b for a, b in zip(samples[name], floor, strict=True)])
        table.add(name, counts[name], 1e9 / ns_call, ns_call, times_floor, overhead)
    table.notes += [
        f"median of {settings.repeats} runs of up to {max_calls:,} calls or {max_seconds:g} s each; "
        "'x floor time' and overhead: median of the per-repeat differences to the floor; "
        "the floor builds byte-identical packets (checked before timing)",
        "range of ns/call over runs: " + ", ".join(
            f"{name.split(':')[0]} {min(v):,.0f}..{max(v):,.0f}" for name, v in samples.items()),
        "'x floor time' is the path's time per call over the floor's, i.e. what the generic path "
        "costs as a multiple of only building the bytes; the specializer's target is 1.0",
        "the trio row is the same unconnected sendto through pystack.trio_api (one trio schedule "
        "point per call), for scale: the specializer does not remove that part",
    ]
    table.data = {"ns_per_call": samples, "calls": counts, "payload": len(PAYLOAD)}
    return table
