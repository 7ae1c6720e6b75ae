"""TCP send path calls per second, generic ``stack.send`` against ``specialized_send``.

Two connections on one stack (virtual clock, in memory), each to its own
peer stack, one driven generically and one through a token (scenario
``tcp_send``: TCP_NODELAY, MSS, SACK and timestamps as negotiated). Only
the send calls are timed: between chunks the segments are delivered to
the peers and their ACKs back (``pump``), outside the timing, so that the
window and the send buffer are in the same steady state for both. The
chunks of the two variants alternate, as in the other specializer
benchmarks.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pystack.clock import VirtualClock
from pystack.socket import IPPROTO_TCP, SOCK_STREAM
from pystack.stack import Stack
from pystack.tcp.api import TCP_NODELAY
from specializer import do_specialize_send, specialized_send
from specializer.tcp_world import establish

from .common import Settings, Table, median

NAME = "spec_tcp_send"
GOAL = 2.0
CHUNK = 10  # sends per timed chunk, then the segments and ACKs are moved along (untimed)


class Connection:
    """A sending stack's connection to a peer; ``pump`` moves segments and ACKs along."""

    def __init__(self, stack: Stack, clock: VirtualClock, interface: str, address: str, peer_address: str):
        self.stack = stack
        self.to_peer: list[bytes] = []
        stack.add_interface(interface, address, 24, sink=self.to_peer.append)
        self.fd = stack.socket(type=SOCK_STREAM)
        stack.setsockopt(self.fd, IPPROTO_TCP, TCP_NODELAY, 1)
        self.peer = establish(stack, self.fd, interface, peer_address)
        self.interface = interface
        self.to_us: list[bytes] = []
        self.peer.interfaces["eth0"].sink = self.to_us.append
        self.peer_fd = max(self.peer.sockets)  # the accepted connection
        self.segments = 0
        self.received = 0

    def pump(self) -> None:
        for _ in range(8):
            while self.to_peer:
                self.segments += 1
                self.peer.input(self.to_peer.pop(0), "eth0")
            while True:
                try:
                    data = self.peer.recv(self.peer_fd, 1 << 22)
                except BlockingIOError:
                    break
                if not data:
                    break
                self.received += len(data)
            self.peer.run_timers()
            self.stack.run_timers()
            while self.to_us:
                self.stack.input(self.to_us.pop(0), self.interface)
            if not self.to_peer:
                return


def measure(settings: Settings, size: int) -> dict[str, float]:
    """Median ns per send call of each variant; only the send calls are timed."""
    clock = VirtualClock()
    stack = Stack(clock=clock, seed=5)
    generic = Connection(stack, clock, "g0", "198.18.2.2", "198.18.2.1")
    special = Connection(stack, clock, "s0", "198.18.3.2", "198.18.3.1")
    token = do_specialize_send(stack, special.fd)
    data = bytes(size)
    sends: dict[str, Callable[[], int]] = {
        "generic": lambda: stack.send(generic.fd, data),
        "specialized": lambda: specialized_send(stack, token, data),
    }
    chunks: dict[str, list[float]] = {name: [] for name in sends}
    rounds = settings.pick(2_000, 400)
    started = time.perf_counter()
    for index in range(rounds):
        if time.perf_counter() - started > settings.pick(20.0, 5.0):
            break
        order = list(sends) if index % 2 == 0 else list(sends)[::-1]
        for name in order:
            send = sends[name]
            t0 = time.perf_counter()
            for _ in range(CHUNK):
                send()
            chunks[name].append((time.perf_counter() - t0) / CHUNK * 1e9)
        clock.advance(0.05)  # past the peers' delayed-ACK timers
        generic.pump()
        special.pump()
    for _ in range(20):  # let whatever is still queued or in flight arrive
        clock.advance(0.25)
        stack.run_timers()
        generic.pump()
        special.pump()
    result = {name: median(values) for name, values in chunks.items()}
    calls = len(chunks["generic"]) * CHUNK
    for name, connection in (("generic", generic), ("specialized", special)):
        # Same work on both sides, or the comparison means nothing.
        if connection.received != calls * size:
            raise RuntimeError(f"{name}: the peer received {connection.received} bytes, not {calls * size}")
        result[f"{name}_segments_per_send"] = connection.segments / calls
    return result


def run(settings: Settings) -> Table:
    table = Table(NAME, "TCP send path, established connection, TCP_NODELAY (send calls, ns per call)",
                  ["payload", "generic ns/call", "specialized ns/call", "speedup"])
    ratios = []
    for size in (64, 1024):
        runs = [measure(settings, size) for _ in range(settings.repeats)]
        generic = median([r["generic"] for r in runs])
        special = median([r["specialized"] for r in runs])
        ratio = median([r["generic"] / r["specialized"] for r in runs])
        ratios.append(ratio)
        table.add(f"{size} B", generic, special, f"{ratio:.2f}x")
        table.notes.append(f"{size} B: segments per send (ACKs included in the count of peer input: no, "
                           f"segments only): generic {median([r['generic_segments_per_send'] for r in runs]):.2f}, "
                           f"specialized {median([r['specialized_segments_per_send'] for r in runs]):.2f}; "
                           "every byte reached the peer in both")
    verdict = "met" if min(ratios) >= GOAL else "NOT MET"
    table.notes += [
        f"goal: specialized TCP send path >= {GOAL:.0f}x the generic one: {verdict}",
        f"each send is 1 segment (TCP_NODELAY); only the send calls are timed, in chunks of {CHUNK}; "
        "between chunks the segments go to the peer stacks and the ACKs come back (untimed), so "
        "both connections stay in the same steady state",
        f"median over {settings.repeats} repeat(s) of the median chunk",
    ]
    return table
