"""TCP send path calls per second, generic ``stack.send`` against ``specialized_send``.

Two connections on one stack (a virtual network, in memory), each to its
own peer stack (tests/tcp_world.py), one driven generically and one through
a token (scenario ``tcp_send``: TCP_NODELAY, MSS, SACK and timestamps as
negotiated). Only the send calls are timed: between chunks 50 ms of virtual
time pass, in which the segments reach the peers, whose applications read
them, and their ACKs come back, outside the timing, so that the window and
the send buffer are in the same steady state for both. The chunks of the
two variants alternate, as in the other specializer benchmarks. At the end,
both connections must have put the same segments on the wire (flags,
payloads, relative sequence and ack numbers, windows, SACK blocks): the
comparison means nothing otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pystack.links.virtual import Transmission, VirtualNetwork
from pystack.wire.ipv4 import parse_ipv4
from pystack.wire.tcp import parse_tcp
from specializer import do_specialize_send, specialized_send
from tests.tcp_world import Connection

from .common import Settings, Table, median

NAME = "spec_tcp_send"
GOAL = 2.0
CHUNK = 10  # sends per timed chunk, then the segments and ACKs are moved along (untimed)


def measure(settings: Settings, size: int) -> dict[str, float]:
    """Median ns per send call of each variant; only the send calls are timed."""
    net = VirtualNetwork(record=Transmission, log=True)  # the log: both wires are compared
    stack = net.add_stack(seed=5)
    generic = Connection(net, stack, "g0", "198.18.2.2", "198.18.2.1", nodelay=True)
    special = Connection(net, stack, "s0", "198.18.3.2", "198.18.3.1", nodelay=True)

    def peers_read() -> None:
        generic.read()
        special.read()

    token = do_specialize_send(stack, special.fd)
    data = (bytes(range(256)) * (size // 256 + 1))[:size]  # not zeros: their checksum is nearly free
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
        net.run(0.05, poll=peers_read)  # past the peers' delayed-ACK timers
    net.run(5.0, poll=peers_read)  # let whatever is still queued or in flight arrive
    result = {name: median(values) for name, values in chunks.items()}
    calls = len(chunks["generic"]) * CHUNK
    for name, connection in (("generic", generic), ("specialized", special)):
        # Same work on both sides, or the comparison means nothing.
        if len(connection.received) != calls * size:
            raise RuntimeError(f"{name}: the peer received {len(connection.received)} bytes, not {calls * size}")
        result[f"{name}_segments_per_send"] = connection.segments / calls
    check_same_segments(generic.wire, special.wire)
    return result


def shape(wire: list[bytes]) -> list[tuple]:
    """Each segment as the connection sees it: flags, payload, sequence and ack numbers relative
    to the first segment's, window, SACK blocks relative to the first ack, the options present.
    The two connections differ only in their addresses, ports, initial numbers and checksums."""
    out = []
    seq0 = ack0 = None
    for raw in wire:
        packet = parse_ipv4(bytes(raw))
        segment = parse_tcp(packet.payload, packet.src, packet.dst)
        if seq0 is None:
            seq0, ack0 = segment.seq, segment.ack
        options = segment.options
        out.append((segment.flags, segment.payload, (segment.seq - seq0) & 0xFFFFFFFF,
                    (segment.ack - ack0) & 0xFFFFFFFF, segment.window, options.ts_val is not None,
                    tuple(((a - ack0) & 0xFFFFFFFF, (b - ack0) & 0xFFFFFFFF) for a, b in options.sack_blocks)))
    return out


def check_same_segments(generic: list[bytes], special: list[bytes]) -> None:
    """The specialized sends must put the very segments on the wire that the generic ones do."""
    a, b = shape(generic), shape(special)
    if a != b:
        at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        raise RuntimeError(f"the specialized connection's segment #{at} differs from the generic one's "
                           f"({len(a)} generic segments, {len(b)} specialized)")


def run(settings: Settings) -> Table:
    table = Table(NAME, "TCP send path, established connection, TCP_NODELAY (send calls, ns per call)",
                  ["payload", "generic ns/call", "specialized ns/call", "speedup"])
    verdicts = []
    for size in (64, 1024):
        runs = [measure(settings, size) for _ in range(settings.repeats)]
        generic = median([r["generic"] for r in runs])
        special = median([r["specialized"] for r in runs])
        per_repeat = [r["generic"] / r["specialized"] for r in runs]
        ratio = median(per_repeat)
        verdicts.append(f"{size} B {ratio:.3f}x ({'met' if ratio >= GOAL else 'NOT MET'}; per repeat "
                      + ", ".join(f"{x:.2f}" for x in per_repeat) + ")")
        table.add(f"{size} B", generic, special, f"{ratio:.2f}x")
        table.notes.append(f"{size} B: segments per send (from the sender to the peer, "
                           f"ACKs and window updates included): generic {median([r['generic_segments_per_send'] for r in runs]):.2f}, "
                           f"specialized {median([r['specialized_segments_per_send'] for r in runs]):.2f}; "
                           "every byte reached the peer in both, and both wires carried the same segments")
    table.notes += [
        f"goal: specialized TCP send path >= {GOAL:.0f}x the generic one: " + "; ".join(verdicts),
        f"each send is 1 segment (TCP_NODELAY); only the send calls are timed, in chunks of {CHUNK}; "
        "between chunks the segments go to the peer stacks and the ACKs come back (untimed), so "
        "both connections stay in the same steady state",
        f"median over {settings.repeats} repeat(s) of the median chunk",
    ]
    return table
