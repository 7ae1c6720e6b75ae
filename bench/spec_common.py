"""What the specializer benchmarks share: a send world and interleaved timing.

The send world is the one of :mod:`bench.udp_send_path`: a Stack on a
monotonic clock with one interface 198.18.0.2/24 (``bench0``), a default
route through 198.18.0.1, a connected UDP socket and an unconnected one,
and tokens for ``send`` on the first and ``sendto`` a fixed destination on
the second; and a third socket, connected too, that committed an ADU of
``ADU`` bytes (SO_ADU), with its ``send`` token (scenario udp_send_adu). The sink is given when the world is built, before anything is
specialized: the residual code freezes the interface's sink as a closure
constant, so swapping the sink afterwards would leave the residual code
calling the old one.

Timing interleaves the variants in short chunks, round-robin, so that every
variant is measured in the same seconds as the others: on a shared, noisy
machine a slow second hits them all alike, and per-repeat ratios are
much steadier than with one variant after the other. Each chunk is timed
on its own; the figure reported is the median chunk's time per call, so a
chunk during which the process lost the CPU (a scheduler tick, several
ms, is many chunks long here) does not count; the plain mean (total time
over total calls) is kept beside it.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pystack.clock import MonotonicClock
from pystack.socket import SO_ADU, SOL_SOCKET
from pystack.stack import Stack
from pystack.tokens.system import system_of
from specializer import (
    do_specialize_send,
    do_specialize_sendto,
    specialized_send,
    specialized_sendto,
)

from .common import KERNEL_ADDR, PREFIXLEN, STACK_ADDR

PEER = (KERNEL_ADDR, 9)
CONNECTED_PORT = 40001
UNCONNECTED_PORT = 40000
ADU_PORT = 40002
ADU = 1024


def no_op(packet: bytes) -> None:
    pass


@dataclass
class SendWorld:
    """A stack with a connected and an unconnected UDP socket, each with its token."""

    stack: Stack
    connected: int
    unconnected: int
    send_token: int
    sendto_token: int
    adu_socket: int
    adu_token: int

    @classmethod
    def make(cls, sink: Callable[[bytes], None] = no_op) -> SendWorld:
        stack = Stack(clock=MonotonicClock(), seed=1)
        stack.add_interface("bench0", STACK_ADDR, PREFIXLEN, sink=sink)
        stack.add_route("0.0.0.0", 0, "bench0", gateway=KERNEL_ADDR)
        unconnected = stack.socket()
        stack.bind(unconnected, (STACK_ADDR, UNCONNECTED_PORT))
        connected = stack.socket()
        stack.bind(connected, (STACK_ADDR, CONNECTED_PORT))
        stack.connect(connected, PEER)
        send_token = do_specialize_send(stack, connected)
        sendto_token = do_specialize_sendto(stack, unconnected, PEER)
        adu_socket = stack.socket()
        stack.bind(adu_socket, (STACK_ADDR, ADU_PORT))
        stack.setsockopt(adu_socket, SOL_SOCKET, SO_ADU, ADU)
        stack.connect(adu_socket, PEER)
        adu_token = do_specialize_send(stack, adu_socket)
        return cls(stack, connected, unconnected, send_token, sendto_token, adu_socket, adu_token)

    def residual(self, token: int) -> Callable[[bytes], int]:
        """The residual function the token runs now (what specialized_* calls)."""
        return system_of(self.stack).functions[token]

    def check_specialized(self) -> None:
        """Both tokens run their residual code (not the generic fallback, not a stale stub)."""
        system = system_of(self.stack)
        for number in (self.send_token, self.sendto_token, self.adu_token):
            token = system.token(number)
            if token.mode != "specialized" or token.entry is None or system.functions[number] is not token.entry.function:
                raise AssertionError(f"token {number} is not running residual code: mode {token.mode}, "
                                     f"events {token.events}")


def check_equivalence(sizes: list[int], rounds: int = 3) -> None:
    """Generic and specialized emit byte-identical packets and return the same values.

    Two worlds identical down to their seed: one driven through the fd API,
    the other through the tokens; each call's packets and results compared.
    """
    out_g: list[bytes] = []
    out_s: list[bytes] = []
    g = SendWorld.make(out_g.append)
    s = SendWorld.make(out_s.append)
    for size in sizes:
        payload = bytes(range(256)) * (size // 256 + 1)
        payload = payload[:size]
        cases: list[tuple[str, Callable[[bytes], int], Callable[[bytes], int]]] = [
            ("send", lambda d: g.stack.send(g.connected, d),
             lambda d: specialized_send(s.stack, s.send_token, d)),
            ("sendto", lambda d: g.stack.sendto(g.unconnected, d, 0, PEER),
             lambda d: specialized_sendto(s.stack, s.sendto_token, d)),
        ]
        if size == ADU:
            cases.append(("send, ADU committed", lambda d: g.stack.send(g.adu_socket, d),
                          lambda d: specialized_send(s.stack, s.adu_token, d)))
        for _ in range(rounds):
            for op, generic_call, special_call in cases:
                generic, special = generic_call(payload), special_call(payload)
                if generic != special or out_g != out_s or not out_g:
                    raise AssertionError(f"{op} of {size} bytes: generic and specialized differ "
                                         f"(returned {generic} vs {special}, {len(out_g)} vs {len(out_s)} packets)")
                out_g.clear()
                out_s.clear()
    s.check_specialized()


@dataclass
class Timing:
    calls: int = 0
    seconds: float = 0.0
    chunks: list[float] = field(default_factory=list)  # ns per call of each chunk

    @property
    def ns_per_call(self) -> float:
        """Total time over total calls: everything included (preemptions, GC)."""
        return self.seconds / self.calls * 1e9 if self.calls else float("nan")

    @property
    def ns_median(self) -> float:
        """The median chunk's ns per call: a chunk during which the process was preempted
        (a few ms on this shared machine) does not move it."""
        return statistics.median(self.chunks) if self.chunks else float("nan")


def interleaved(loops: dict[str, Callable[[int], None]], max_calls: int, max_seconds: float,
                chunk: int = 50, reverse: bool = False) -> dict[str, Timing]:
    """Run every ``loop(chunk)`` in turn, round-robin, each timed on its own.

    Stops when every loop has made ``max_calls`` calls, or when the loops
    together have run ``max_seconds`` per loop (so at most about
    ``len(loops) * max_seconds`` of wall time). ``reverse`` flips the
    order within a round (alternate it between repeats).
    """
    names = list(loops)[::-1] if reverse else list(loops)
    timings = {name: Timing() for name in loops}
    budget = max_seconds * len(names)
    clock = time.perf_counter
    gc.collect()
    started = clock()
    while clock() - started < budget and any(timings[n].calls < max_calls for n in names):
        for name in names:
            timing = timings[name]
            if timing.calls >= max_calls:
                continue
            loop = loops[name]
            t0 = clock()
            loop(chunk)
            seconds = clock() - t0
            timing.seconds += seconds
            timing.calls += chunk
            timing.chunks.append(seconds / chunk * 1e9)
    return timings
