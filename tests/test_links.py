"""Links without root: the impairment model, in-memory pairs in virtual time, pcap."""

from __future__ import annotations

import io
import math
import time

import pytest
import trio
from scapy.layers.inet import IP, UDP
from scapy.utils import rdpcap

from pystack.links import (
    ImpairmentModel,
    Impairments,
    LinkStats,
    PcapTap,
    PcapWriter,
    memory_link_pair,
)

N = 20_000


def _numbered(i: int, size: int = 64) -> bytes:
    return i.to_bytes(4, "big") + bytes(size - 4)


# --- Impairments validation ---------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("loss", 1.5),
        ("loss", -0.1),
        ("duplicate", math.nan),
        ("reorder", 2),
        ("corrupt", -1e-9),
        ("delay", -0.001),
        ("jitter", math.inf),
        ("reorder_hold", math.nan),
    ],
)
def test_invalid_impairments_raise(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        Impairments(**{field: value})


def test_boundary_impairments_are_valid() -> None:
    Impairments(loss=0.0, duplicate=1.0, reorder=1, corrupt=0, delay=0, jitter=0.5)


# --- ImpairmentModel ----------------------------------------------------------

BUSY = Impairments(loss=0.1, duplicate=0.1, reorder=0.1, corrupt=0.1, delay=0.01, jitter=0.005)


def _run(model: ImpairmentModel, count: int) -> list[list[tuple[float, bytes]]]:
    return [model.process(_numbered(i), now=i * 0.001) for i in range(count)]


def test_model_is_deterministic_per_seed() -> None:
    assert _run(ImpairmentModel(BUSY, seed=7), 2000) == _run(ImpairmentModel(BUSY, seed=7), 2000)
    assert _run(ImpairmentModel(BUSY, seed=7), 2000) != _run(ImpairmentModel(BUSY, seed=8), 2000)


def test_no_impairments_is_a_perfect_wire() -> None:
    model = ImpairmentModel(Impairments())
    assert _run(model, 100) == [[(i * 0.001, _numbered(i))] for i in range(100)]
    assert model.stats == LinkStats()


@pytest.mark.parametrize("rate", [0.1, 0.5])
@pytest.mark.parametrize(
    ("field", "counter"),
    [
        ("loss", "lost"),
        ("duplicate", "duplicated"),
        ("reorder", "reordered"),
        ("corrupt", "corrupted"),
    ],
)
def test_each_impairment_happens_at_its_rate(field: str, counter: str, rate: float) -> None:
    imp = Impairments(**{field: rate}, delay=0.05)
    model = ImpairmentModel(imp, seed=1)
    seen = 0
    for i, packet in enumerate(_numbered(i) for i in range(N)):
        now = i * 0.001
        out = model.process(packet, now)
        if field == "loss":
            seen += out == []
        elif field == "duplicate":
            seen += len(out) == 2 and out[0][1] == out[1][1] == packet
        elif field == "reorder":
            ((when, data),) = out
            seen += when == pytest.approx(now + 0.05 + imp.reorder_hold)
        else:
            ((when, data),) = out
            seen += data != packet
    assert getattr(model.stats, counter) == seen
    assert (rate - 0.02) * N <= seen <= (rate + 0.02) * N


def test_corruption_flips_exactly_one_bit() -> None:
    model = ImpairmentModel(Impairments(corrupt=1.0), seed=3)
    for i in range(2000):
        packet = _numbered(i, size=4 + i % 100)
        ((_, data),) = model.process(packet, 0.0)
        diff = int.from_bytes(packet, "big") ^ int.from_bytes(data, "big")
        assert len(data) == len(packet)
        assert diff.bit_count() == 1
    assert model.process(b"", 0.0) == [(0.0, b"")]  # nothing to flip
    assert model.stats.corrupted == 2000


def test_delay_and_jitter_bound_the_latency() -> None:
    model = ImpairmentModel(Impairments(delay=0.1, jitter=0.03), seed=5)
    latencies = [when - 1.0 for ((when, _),) in (model.process(b"x", 1.0) for _ in range(5000))]
    assert all(0.07 - 1e-9 <= lat <= 0.13 + 1e-9 for lat in latencies)
    assert min(latencies) < 0.075 and max(latencies) > 0.125
    assert model.stats.delayed == 5000


# --- memory links, in virtual time -------------------------------------------


async def test_pair_carries_packets_both_ways(autojump_clock: trio.abc.Clock) -> None:
    a, b = memory_link_pair()
    a.send_nowait(b"to b")
    b.send_nowait(b"to a")
    assert await b.receive() == b"to b"
    assert await a.receive() == b"to a"
    assert a.stats == LinkStats(tx_packets=1, tx_bytes=4, rx_packets=1, rx_bytes=4)


async def test_delay_is_respected_in_virtual_time(autojump_clock: trio.abc.Clock) -> None:
    a, b = memory_link_pair(a_to_b=Impairments(delay=0.2))
    wall = time.monotonic()
    start = trio.current_time()
    a.send_nowait(b"late")
    with trio.move_on_after(0.199):
        await b.receive()
        pytest.fail("delivered before its delay")
    assert await b.receive() == b"late"
    assert trio.current_time() - start == pytest.approx(0.2)
    b.send_nowait(b"fast")  # the other direction has no delay
    assert await a.receive() == b"fast"
    assert trio.current_time() - start == pytest.approx(0.2)
    assert time.monotonic() - wall < 0.15  # virtual time: no real sleeping


async def test_receive_wakes_for_an_earlier_packet(autojump_clock: trio.abc.Clock) -> None:
    """A receiver parked until a held packet is due still gets later, undelayed ones at once."""
    a, b = memory_link_pair(a_to_b=Impairments(reorder=0.3, reorder_hold=1.0), seed=11)
    sent: dict[int, float] = {}
    arrivals: list[tuple[int, float]] = []

    async def sender() -> None:
        for i in range(50):
            sent[i] = trio.current_time()
            a.send_nowait(_numbered(i))
            await trio.sleep(0.1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        while len(arrivals) < 50:
            packet = await b.receive()
            arrivals.append((int.from_bytes(packet[:4], "big"), trio.current_time()))

    order = [i for i, _ in arrivals]
    assert sorted(order) == list(range(50)) and order != sorted(order)  # later ones overtook
    latencies = [when - sent[i] for i, when in arrivals]
    assert all(
        lat == pytest.approx(0.0, abs=1e-9) or lat == pytest.approx(1.0) for lat in latencies
    )
    assert sum(lat > 0.5 for lat in latencies) == a.stats.reordered > 0


async def test_oversize_packet_is_dropped_and_counted(autojump_clock: trio.abc.Clock) -> None:
    a, b = memory_link_pair(mtu=100)
    a.send_nowait(bytes(101))
    a.send_nowait(bytes(100))
    assert await b.receive() == bytes(100)
    assert (a.stats.tx_dropped, a.stats.tx_packets) == (1, 1)
    with trio.move_on_after(10):
        await b.receive()
        pytest.fail("the oversize packet was delivered")


async def test_full_queue_drops_and_counts(autojump_clock: trio.abc.Clock) -> None:
    a, b = memory_link_pair(a_to_b=Impairments(delay=1.0), capacity=4)
    for i in range(6):
        a.send_nowait(_numbered(i))
    assert (a.stats.tx_dropped, a.stats.tx_packets) == (2, 4)
    assert [await b.receive() for _ in range(4)] == [_numbered(i) for i in range(4)]
    a.send_nowait(b"room again")
    assert await b.receive() == b"room again"


async def test_close_semantics(autojump_clock: trio.abc.Clock) -> None:
    a, b = memory_link_pair(a_to_b=Impairments(delay=0.5))
    a.send_nowait(b"in flight")
    a.close()
    assert await b.receive() == b"in flight"  # what was on the wire still arrives
    with pytest.raises(trio.EndOfChannel):
        await b.receive()
    with pytest.raises(trio.ClosedResourceError):
        a.send_nowait(b"x")
    b.send_nowait(b"nobody listens")
    assert b.stats.tx_dropped == 1

    c, d = memory_link_pair()
    async with trio.open_nursery() as nursery:

        async def waiter() -> None:
            with pytest.raises(trio.ClosedResourceError):
                await d.receive()

        nursery.start_soon(waiter)
        await trio.sleep(1)
        d.close()


def test_bad_pair_parameters() -> None:
    with pytest.raises(ValueError, match="mtu"):
        memory_link_pair(mtu=0)
    with pytest.raises(ValueError, match="capacity"):
        memory_link_pair(capacity=0)


# --- pcap ---------------------------------------------------------------------


def _udp(src: str, dst: str, payload: bytes) -> bytes:
    return bytes(IP(src=src, dst=dst) / UDP(sport=1234, dport=9) / payload)


async def test_pcap_tap_records_both_directions(tmp_path, autojump_clock: trio.abc.Clock) -> None:
    path = tmp_path / "tap.pcap"
    a, b = memory_link_pair()
    out = [_udp("198.18.0.1", "198.18.0.2", b"x" * n) for n in (0, 10, 1000)]
    back = [_udp("198.18.0.2", "198.18.0.1", b"y" * n) for n in (1, 2)]
    with PcapWriter(path) as writer:
        tap = PcapTap(a, writer)
        assert (tap.name, tap.mtu, tap.stats) == (a.name, a.mtu, a.stats)
        for packet in out:
            tap.send_nowait(packet)
        for packet in back:
            b.send_nowait(packet)
        assert [await tap.receive() for _ in back] == back
        assert [await b.receive() for _ in out] == out
        tap.close()
        assert path.stat().st_size == 24 + sum(16 + len(p) for p in out + back)  # flushed
    captured = rdpcap(str(path))
    assert [bytes(p) for p in captured] == out + back
    assert all(p[IP].version == 4 for p in captured)
    assert sum(len(p) for p in captured) == sum(len(p) for p in out + back)


def test_pcap_writer_timestamps_and_borrowed_file() -> None:
    buffer = io.BytesIO()
    writer = PcapWriter(buffer)
    packet = _udp("198.18.0.1", "198.18.0.2", b"t")
    writer.write(packet, timestamp=1_700_000_000.25)
    before = time.time()
    writer.write(packet)
    writer.close()
    assert not buffer.closed  # not ours to close
    buffer.seek(0)
    first, second = rdpcap(buffer)
    assert float(first.time) == pytest.approx(1_700_000_000.25, abs=1e-6)
    assert before - 1 <= float(second.time) <= time.time() + 1
