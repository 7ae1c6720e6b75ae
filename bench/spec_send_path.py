"""The UDP send path, generic against specialized, calls per second side by side.

One Stack with a no-op sink (bench.spec_common.SendWorld): a connected UDP
socket with a ``send`` token, an unconnected one with a ``sendto`` token
for the fixed destination 198.18.0.1:9. For payloads of 64 B and 1 KB:

- ``stack.send(fd, data)`` against ``specialized_send(stack, token, data)``;
- ``stack.sendto(fd, data, 0, addr)`` against ``specialized_sendto(stack, token, data)``;
- on the socket that committed a 1 KB ADU (SO_ADU, scenario
  udp_send_adu: every size computed once), ``stack.send`` against
  ``specialized_send``, 1 KB only;
- the residual function called directly
  (``specializer.system.system_of(stack).functions[token]``), so that the
  cost of the token call itself (a weak-dictionary lookup for the stack's
  system, a dictionary lookup for the token, one more call) shows;
- the floor of bench.udp_send_path: ``build_udp`` + ``build_ipv4_header``
  + the same no-op sink, only the bytes that go on the wire.

Generic and specialized are first checked to emit byte-identical packets
and return the same values (two worlds with the same seed). All the loops
of one payload size run interleaved, round-robin in chunks of 50 calls,
each bounded in calls and time; the order flips between repeats. A
repeat's figure for a loop is its median chunk (ns per call), robust to
the preemptions of a shared machine; the mean (total time over calls) is
kept too. Ratios are per repeat (same seconds), then the median over the
repeats.
"""

from __future__ import annotations

from collections.abc import Callable

from pystack.addr import aton
from pystack.wire.ipv4 import FLAG_DF, PROTO_UDP, build_ipv4_header
from pystack.wire.udp import build_udp
from specializer import specialized_send, specialized_sendto

from .common import KERNEL_ADDR, STACK_ADDR, Settings, Table, median, note, ratio
from .spec_common import ADU, CONNECTED_PORT, PEER, SendWorld, check_equivalence, interleaved, no_op

NAME = "spec_send_path"
NEEDS_ROOT = False
SIZES = (64, 1024)
GOAL = 3.0
THESIS = "thesis 3.3.2: ~25% fewer CPU cycles in socket+UDP+IP (execution time -26% on a PIII), ~1.3x"
VARIANTS = ("generic", "specialized", "residual, direct")
FLOOR = "floor: build_udp + build_ipv4_header"
ADU_OP = "send, ADU committed"


def payload_of(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def loops_for(world: SendWorld, data: bytes) -> dict[tuple[str, str], Callable[[int], None]]:
    stack, connected, unconnected = world.stack, world.connected, world.unconnected
    send_token, sendto_token = world.send_token, world.sendto_token
    send, sendto = stack.send, stack.sendto
    send_residual = world.residual(send_token)
    sendto_residual = world.residual(sendto_token)
    peer = PEER
    src, dst = aton(STACK_ADDR), aton(KERNEL_ADDR)

    def generic_send(n: int) -> None:
        for _ in range(n):
            send(connected, data)

    def special_send(n: int) -> None:
        for _ in range(n):
            specialized_send(stack, send_token, data)

    def direct_send(n: int) -> None:
        for _ in range(n):
            send_residual(data)

    adu_socket, adu_token = world.adu_socket, world.adu_token
    adu_residual = world.residual(adu_token)

    def generic_adu(n: int) -> None:
        for _ in range(n):
            send(adu_socket, data)

    def special_adu(n: int) -> None:
        for _ in range(n):
            specialized_send(stack, adu_token, data)

    def direct_adu(n: int) -> None:
        for _ in range(n):
            adu_residual(data)

    def generic_sendto(n: int) -> None:
        for _ in range(n):
            sendto(unconnected, data, 0, peer)

    def special_sendto(n: int) -> None:
        for _ in range(n):
            specialized_sendto(stack, sendto_token, data)

    def direct_sendto(n: int) -> None:
        for _ in range(n):
            sendto_residual(data)

    ident = [0]

    def floor(n: int) -> None:
        i = ident[0]
        for _ in range(n):
            datagram = build_udp(CONNECTED_PORT, 9, data, src, dst, True)
            no_op(build_ipv4_header(src, dst, PROTO_UDP, len(datagram), 64, 0, i, FLAG_DF) + datagram)
            i = (i + 1) & 0xFFFF
        ident[0] = i

    loops = {
        ("send", "generic"): generic_send,
        ("send", "specialized"): special_send,
        ("send", "residual, direct"): direct_send,
        ("sendto", "generic"): generic_sendto,
        ("sendto", "specialized"): special_sendto,
        ("sendto", "residual, direct"): direct_sendto,
        ("floor", FLOOR): floor,
    }
    if len(data) == ADU:
        loops.update({(ADU_OP, "generic"): generic_adu, (ADU_OP, "specialized"): special_adu,
                      (ADU_OP, "residual, direct"): direct_adu})
    return loops


def ops_for(size: int) -> tuple[str, ...]:
    return ("send", "sendto", ADU_OP) if size == ADU else ("send", "sendto")


def check_floor(world_sizes: tuple[int, ...]) -> None:
    """The floor builds exactly what the connected socket's send emits (as in udp_send_path)."""
    captured: list[bytes] = []
    world = SendWorld.make(captured.append)
    src, dst = aton(STACK_ADDR), aton(KERNEL_ADDR)
    for size in world_sizes:
        data = payload_of(size)
        captured.clear()
        ident = world.stack.sockfd_lookup(world.connected).ip_id
        world.stack.send(world.connected, data)
        datagram = build_udp(CONNECTED_PORT, 9, data, src, dst, True)
        floor = build_ipv4_header(src, dst, PROTO_UDP, len(datagram), 64, 0, ident, FLAG_DF) + datagram
        if captured != [floor]:
            raise AssertionError(f"floor and stack differ for {size} bytes")


def run(settings: Settings) -> Table:
    max_calls = settings.pick(60_000, 6_000)
    max_seconds = settings.pick(0.8, 0.12)
    check_equivalence(list(SIZES) + [0, 1, 1472, 1473, 4000])
    check_floor(SIZES)
    world = SendWorld.make()
    loops = {size: loops_for(world, payload_of(size)) for size in SIZES}
    for size_loops in loops.values():  # warm-up
        for loop in size_loops.values():
            loop(100)
    samples: dict[tuple[int, str, str], list[float]] = {}  # median chunk, per repeat
    means: dict[tuple[int, str, str], list[float]] = {}  # total time / calls, per repeat
    counts: dict[tuple[int, str, str], int] = {}
    for repeat in range(settings.repeats):
        for size in SIZES:
            timings = interleaved(loops[size], max_calls, max_seconds, reverse=bool(repeat & 1))
            for (op, variant), timing in timings.items():
                samples.setdefault((size, op, variant), []).append(timing.ns_median)
                means.setdefault((size, op, variant), []).append(timing.ns_per_call)
                counts[(size, op, variant)] = timing.calls
        world.check_specialized()
        note(f"{NAME} #{repeat + 1}: " + "; ".join(
            f"{size} B {op} {ratio(samples[(size, op, 'generic')][-1], samples[(size, op, 'specialized')][-1]):.2f}x"
            for size in SIZES for op in ops_for(size)))

    def per_repeat(key_a: tuple[int, str, str], key_b: tuple[int, str, str]) -> list[float]:
        return [ratio(a, b) for a, b in zip(samples[key_a], samples[key_b], strict=True)]

    table = Table(NAME, "UDP send path, generic vs specialized, no-op sink (higher calls/s is better)",
                  ["payload", "path", "code", "calls", "calls/s", "ns/call", "x generic calls/s",
                   "x floor time"])
    speedups: dict[tuple[int, str], list[float]] = {}
    token_cost: dict[tuple[int, str], list[float]] = {}
    for size in SIZES:
        floor_key = (size, "floor", FLOOR)
        for op in ops_for(size):
            generic_key = (size, op, "generic")
            for variant in VARIANTS:
                key = (size, op, variant)
                ns = median(samples[key])
                speedup = median(per_repeat(generic_key, key))
                table.add(f"{size} B", op, variant, counts[key], 1e9 / ns, ns, speedup,
                          median(per_repeat(key, floor_key)))
            speedups[(size, op)] = per_repeat(generic_key, (size, op, "specialized"))
            token_cost[(size, op)] = [a - b for a, b in zip(samples[(size, op, "specialized")],
                                                           samples[(size, op, "residual, direct")], strict=True)]
        ns = median(samples[floor_key])
        table.add(f"{size} B", "floor", "bytes only", counts[floor_key], 1e9 / ns, ns,
                  median(per_repeat((size, "send", "generic"), floor_key)), 1.0)

    mean_speedups = {
        (size, op): median([ratio(a, b) for a, b in zip(means[(size, op, "generic")],
                                                        means[(size, op, "specialized")], strict=True)])
        for size, op in speedups
    }
    verdicts = []
    for (size, op), values in speedups.items():
        value = median(values)
        verdicts.append(f"{size} B {op} {value:.2f}x ({'met' if value >= GOAL else 'NOT MET'}; per repeat "
                        + ", ".join(f"{v:.2f}" for v in values) + ")")
    table.notes += [
        f"goal: specialized >= {GOAL:g}x the generic calls/s: " + "; ".join(verdicts),
        f"{THESIS}",
        "token call (specialized_* minus the residual called directly), median of per-repeat differences: "
        + ", ".join(f"{size} B {op} {median(v):,.0f} ns ({100 * median(v) / median(samples[(size, op, 'specialized')]):.0f}%"
                    " of a specialized call)" for (size, op), v in token_cost.items()),
        f"medians of {settings.repeats} repeat(s); each loop up to {max_calls:,} calls or {max_seconds:g} s, "
        "all loops of one payload interleaved in chunks of 50 calls; a repeat's ns/call is its median chunk; "
        "'x generic calls/s' and 'x floor time' are medians of per-repeat ratios",
        "the same speedups from plain means (total time / calls, preemptions included): " + ", ".join(
            f"{size} B {op} {value:.2f}x" for (size, op), value in mean_speedups.items()),
        "range of ns/call over repeats: " + ", ".join(
            f"{size} B {op} {variant.split(',')[0]} {min(v):,.0f}..{max(v):,.0f}"
            for (size, op, variant), v in samples.items() if variant in ("generic", "specialized")),
        "checked before timing: generic and specialized emit byte-identical packets and return the same "
        "values (payloads 0, 1, 64, 1024, 1472, 1473 and 4000 bytes, 3 calls each; the ADU socket with "
        "1 KB); every token still ran residual code after every repeat",
    ]
    table.data = {
        "ns_per_call_median_chunk": {f"{s} {o} {v}": values for (s, o, v), values in samples.items()},
        "ns_per_call_mean": {f"{s} {o} {v}": values for (s, o, v), values in means.items()},
        "calls": {f"{s} {o} {v}": c for (s, o, v), c in counts.items()},
        "speedup_per_repeat": {f"{s} {o}": v for (s, o), v in speedups.items()},
        "token_call_ns_per_repeat": {f"{s} {o}": v for (s, o), v in token_cost.items()},
        "goal": GOAL,
    }
    return table
