"""ICMP echo round trip from the kernel: pystack against a minimal raw TUN echo responder.

Two responders, each on its own TUN device in its own namespace, both run
in this process under the same trio loop (the way ``pystack up`` runs the
stack), both read the TUN fd after ``trio.lowlevel.wait_readable`` and
answer with one ``os.write``:

- floor: the least Python that answers a ping -- swap the addresses, set
  ICMP type 0 and fix the checksum incrementally (RFC 1624; swapping the
  addresses leaves the IP header checksum unchanged);
- pystack: the whole stack (IPv4 validation, ICMP parse and checksum,
  route lookup, new ICMP and IPv4 headers), brought up by
  ``pystack.host.tun_host`` exactly as ``pystack up`` does.

The load comes from one separate process (bench.kernel_side ping) holding
a raw ICMP socket in each namespace and alternating request by request
between the two responders: closed loop, one request in flight, each RTT
taken from just before sendto() to the kernel's arrival stamp of the reply
(SO_TIMESTAMPNS), so median and p99 are exact, and both responders are
measured in the same seconds of a shared, noisy machine. ``ping -f -q``
(closed loop too) then runs against each as a cross-check; it reports
only min/avg/max. Ratios are the median of the per-repeat ratios.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from functools import partial
from typing import Any

import trio

from pystack.checksum import internet_checksum
from pystack.clock import MonotonicClock
from pystack.host.netns import Namespace
from pystack.host.tun import TunLink
from pystack.stack import Stack

from .common import (
    KERNEL_ADDR,
    PREFIXLEN,
    STACK_ADDR,
    Settings,
    Table,
    kernel_side,
    median_runs,
    note,
    paired_ratio,
    percentile,
    pystack_host,
    ratio,
    spread,
    time_loop,
    tun_namespace,
)

NAME = "icmp_rtt"
NEEDS_ROOT = True
GOAL = 1.5  # the issue: pystack's round trip <= 1.5x the floor
PAYLOAD = 56  # ping's default
WHO = ("floor", "pystack")

_PING_LINE = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")
_PING_COUNTS = re.compile(r"(\d+) packets transmitted, (\d+) received")


def echo_in_place(packet: bytearray) -> bool:
    """Turn an ICMP echo request into its reply in place; False for anything else."""
    if len(packet) < 28 or packet[9] != 1:
        return False
    ihl = (packet[0] & 0x0F) << 2
    if len(packet) < ihl + 8 or packet[ihl] != 8:
        return False
    packet[12:16], packet[16:20] = packet[16:20], packet[12:16]
    packet[ihl] = 0
    csum = (packet[ihl + 2] << 8 | packet[ihl + 3]) + 0x0800
    csum = (csum & 0xFFFF) + (csum >> 16)
    packet[ihl + 2] = csum >> 8
    packet[ihl + 3] = csum & 0xFF
    return True


async def floor_responder(fd: int) -> None:
    """Answer every ICMP echo request on a TUN fd, with as little Python as possible."""
    wait_readable = trio.lowlevel.wait_readable
    read, write = os.read, os.write
    while True:
        await wait_readable(fd)
        try:
            packet = bytearray(read(fd, 65535))
        except BlockingIOError:
            continue
        if echo_in_place(packet):
            write(fd, packet)


def service_times(settings: Settings) -> dict[str, float]:
    """Microseconds of Python per echo, no I/O: the floor's rewrite against Stack.input."""
    request = bytearray(20 + 8 + PAYLOAD)
    request[0], request[8], request[9] = 0x45, 64, 1
    request[2:4] = len(request).to_bytes(2, "big")
    request[12:16] = socket.inet_aton(KERNEL_ADDR)
    request[16:20] = socket.inet_aton(STACK_ADDR)
    request[10:12] = internet_checksum(bytes(request[:20])).to_bytes(2, "big")
    request[20] = 8
    request[28:] = bytes(range(PAYLOAD))
    request[22:24] = internet_checksum(bytes(request[20:])).to_bytes(2, "big")
    packet = bytes(request)

    replies: list[bytes] = []
    stack = Stack(clock=MonotonicClock())
    iface = stack.add_interface("bench0", STACK_ADDR, PREFIXLEN, sink=replies.append)
    stack.add_route("0.0.0.0", 0, "bench0", gateway=KERNEL_ADDR)
    stack.input(packet, iface)
    floor_reply = bytearray(packet)
    echo_in_place(floor_reply)
    if replies[-1][20:] != bytes(floor_reply[20:]) or internet_checksum(replies[-1][20:]) != 0:
        raise AssertionError("the floor and pystack do not send the same ICMP reply")

    def floor_loop(n: int) -> None:
        for _ in range(n):
            echo_in_place(bytearray(packet))

    def stack_loop(n: int) -> None:
        for _ in range(n):
            stack.input(packet, iface)
        replies.clear()

    times = {}
    for who, loop in (("floor", floor_loop), ("pystack", stack_loop)):
        times[who] = time_loop(loop, settings.pick(50_000, 10_000), settings.pick(3.0, 1.0)).ns_per_call / 1000
    return times


def summarize(target: dict[str, Any]) -> dict[str, Any]:
    """RTT figures in microseconds from one responder's raw pinger result."""
    rtts = [ns_ / 1000 for ns_ in target["rtt_ns"]]
    apps = [ns_ / 1000 for ns_ in target["app_ns"]]
    return {
        "pings": target["sent"],
        "lost": target["lost"],
        "median_us": percentile(rtts, 50),
        "p99_us": percentile(rtts, 99),
        "mean_us": sum(rtts) / len(rtts) if rtts else float("nan"),
        "min_us": min(rtts) if rtts else float("nan"),
        "app_median_us": percentile(apps, 50),
        "app_p99_us": percentile(apps, 99),
    }


async def pings(places: dict[str, tuple[Namespace, TunLink]], settings: Settings) -> dict[str, Any]:
    """One pinger alternating request by request between the responders; figures per responder."""
    socks = [places[who][0].socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
             for who in WHO]
    try:
        async with kernel_side("ping", socks, "--dst", STACK_ADDR,
                               "--count", settings.pick(10_000, 2_000),
                               "--warmup", settings.pick(500, 200),
                               "--seconds", settings.pick(20.0, 6.0),
                               "--size", PAYLOAD) as pinger:
            result = await pinger.result()
    finally:
        for sock in socks:
            sock.close()
    return {who: summarize(target) for who, target in zip(WHO, result["targets"], strict=True)}


async def ping_flood(ns: Namespace, settings: Settings) -> dict[str, Any]:
    """``ping -f -q -c N`` from inside the namespace: avg RTT (us) and loss, or NaN without ping."""
    nan = float("nan")
    if shutil.which("ping") is None:
        return {"pingf_avg_us": nan, "pingf_loss": nan}
    count = settings.pick(10_000, 2_000)
    deadline = settings.pick(10, 4)
    argv = ["ping", "-f", "-q", "-n", "-c", str(count), "-s", str(PAYLOAD), "-w", str(deadline),
            STACK_ADDR]
    done = await trio.to_thread.run_sync(
        partial(ns.run, argv, capture_output=True, text=True, timeout=deadline + 5)
    )
    rtt = _PING_LINE.search(done.stdout)
    counts = _PING_COUNTS.search(done.stdout)
    if rtt is None or counts is None:
        return {"pingf_avg_us": nan, "pingf_loss": nan}
    sent, received = int(counts.group(1)), int(counts.group(2))
    return {
        "pingf_avg_us": float(rtt.group(2)) * 1000,
        "pingf_loss": 100.0 * (sent - received) / sent if sent else nan,
    }


async def measure_all(floor_place: tuple[Namespace, TunLink], settings: Settings) -> dict[str, Any]:
    """Both responders run for the whole benchmark; each repeat pings them alternately."""
    runs: dict[str, list[dict[str, Any]]] = {who: [] for who in WHO}
    async with trio.open_nursery() as nursery, pystack_host("p") as host:
        nursery.start_soon(floor_responder, floor_place[1].fileno())
        places = {"floor": floor_place, "pystack": (host.ns, host.tun)}
        for repeat in range(settings.repeats):
            with trio.fail_after(90):  # backstop: the loads stop by themselves well before
                figures = await pings(places, settings)
                for who in WHO if repeat % 2 == 0 else WHO[::-1]:
                    figures[who].update(await ping_flood(places[who][0], settings))
            for who in WHO:
                runs[who].append(figures[who])
            note(f"{NAME} #{repeat + 1}: median RTT floor {figures['floor']['median_us']:.1f} us, "
                 f"pystack {figures['pystack']['median_us']:.1f} us "
                 f"({ratio(figures['pystack']['median_us'], figures['floor']['median_us']):.2f}x); "
                 f"ping -f avg {figures['floor']['pingf_avg_us']:.0f} / "
                 f"{figures['pystack']['pingf_avg_us']:.0f} us")
        counters = host.stack.counters
        nursery.cancel_scope.cancel()
    return {"runs": runs, "echo_replies": counters.icmp["OutEchoReps"],
            "drops": counters.snapshot().get("Drops", {})}


COLUMNS = ["median_us", "p99_us", "mean_us", "min_us", "app_median_us", "app_p99_us", "pingf_avg_us"]


def run(settings: Settings) -> Table:
    with tun_namespace("f") as floor_place:
        measured = trio.run(measure_all, floor_place, settings)
    runs = measured["runs"]
    floor, pystack = median_runs(runs["floor"]), median_runs(runs["pystack"])
    service = median_runs([service_times(settings) for _ in range(settings.repeats)])

    table = Table(
        NAME,
        "ICMP echo RTT, kernel -> TUN -> responder -> kernel (microseconds, lower is better)",
        ["responder", "pings", "lost", "median us", "p99 us", "mean us", "min us",
         "app median us", "app p99 us", "ping -f avg us"],
    )
    for who, figures in (("floor (raw TUN echo)", floor), ("pystack", pystack)):
        table.add(who, int(figures["pings"]), int(figures["lost"]),
                  *(figures[key] for key in COLUMNS))
    ratios = {key: paired_ratio(runs["pystack"], runs["floor"], key) for key in COLUMNS}
    table.add("ratio pystack/floor", None, None, *(ratios[key] for key in COLUMNS))
    goal_ratio = ratios["median_us"]
    per_repeat = [ratio(p["median_us"], f["median_us"]) for p, f in zip(runs["pystack"], runs["floor"], strict=True)]
    table.notes += [
        f"goal: pystack median RTT <= {GOAL}x floor: {'MET' if goal_ratio <= GOAL else 'NOT MET'} "
        f"({goal_ratio:.2f}x; per repeat: {', '.join(f'{r:.2f}' for r in per_repeat)})",
        f"figures: median over {settings.repeats} repeat(s); ratios: median of the per-repeat ratios. "
        f"Median RTT range over repeats: floor {spread(runs['floor'], 'median_us')} us, "
        f"pystack {spread(runs['pystack'], 'median_us')} us",
        f"per repeat: {int(floor['pings']):,} timed pings per responder after a warm-up, one pinger "
        f"alternating between the two request by request, one in flight, {PAYLOAD}-byte payload; "
        "RTT = send to kernel arrival stamp of the reply (SO_TIMESTAMPNS); 'app' = to the pinger's "
        "wake-up; then ping -f -q per responder as a cross-check (avg only)",
        f"Python per echo in-process, no I/O: floor {service['floor']:.2f} us, pystack Stack.input "
        f"{service['pystack']:.1f} us; the median RTTs differ by "
        f"{pystack['median_us'] - floor['median_us']:.1f} us",
        f"pystack answered {measured['echo_replies']:,} echo requests; stack drops: "
        f"{measured['drops'] or 'none'}",
    ]
    table.data = {"runs": runs, "median": {"floor": floor, "pystack": pystack}, "ratios": ratios,
                  "ratio_per_repeat": per_repeat, "service_us": service, "goal": GOAL,
                  "goal_met": goal_ratio <= GOAL}
    return table
