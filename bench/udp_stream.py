"""A stream of 1 KB UDP datagrams over TUN, both ways, against kernel-to-kernel over veth.

Cases (each bounded by a count and a time, whichever comes first):

- kernel -> pystack, flat out: a kernel UDP socket in the TUN's namespace
  sends as fast as a Python loop can; pystack counts what a trio-native
  socket receives. A Python sender outpaces the stack, so this shows the
  stack's receive ceiling and how much it loses above it: loss is charged
  to where it happened (the TUN device's queue in the kernel, pystack's
  receive buffer).
- kernel -> pystack, paced at 75% of the flat-out receive rate of the same
  repeat: what the stack sustains when it is not overrun.
- pystack -> kernel: a pystack socket sends with ``await sendto`` as fast
  as it can; a kernel socket with an 8 MB receive buffer counts.
- kernel -> kernel over a veth pair between two namespaces, flat out and
  paced at the same rate: the reference. Sender and receiver are the same
  Python programs (bench.kernel_side) as on the kernel side of the TUN
  cases, so the comparison is stack against stack, Python loops on both
  sides.

Rates are measured where the packets are: the sender's rate over its send
loop, the receiver's from its first to its last datagram.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from pystack.host.netns import Namespace
from pystack.host.tun_host import TunHost
from pystack.socket import RMEM_MAX, SO_RCVBUF, SOL_SOCKET

from .common import (
    KERNEL_ADDR,
    STACK_ADDR,
    Settings,
    Table,
    interface_stats,
    kernel_side,
    median_runs,
    note,
    paired_ratio,
    pystack_host,
    spread,
    udp_mib,
    veth_namespaces,
)

if TYPE_CHECKING:
    from pystack.trio_api import PyStackSocket

NAME = "udp_stream"
NEEDS_ROOT = True
SIZE = 1024
PORT = 5001
PACED_FRACTION = 0.75
KERNEL_RCVBUF = 8 << 20
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


@dataclass
class Limits:
    count: int
    seconds: float

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(settings.pick(20_000, 5_000), settings.pick(5.0, 2.0))


@dataclass
class Tally:
    count: int = 0
    first: float = 0.0
    last: float = 0.0

    @property
    def pps(self) -> float:
        window = self.last - self.first
        return self.count / window if self.count > 1 and window > 0 else 0.0


def figures(sent: int, sender_pps: float, received: int, receiver_pps: float,
            **where: int) -> dict[str, Any]:
    return {
        "sent": sent,
        "sender_pps": sender_pps,
        "received": received,
        "receiver_pps": receiver_pps,
        "loss_pct": 100.0 * (sent - received) / sent if sent else float("nan"),
        **where,
    }


def big_rcvbuf(sock: socket.socket) -> None:
    try:
        sock.setsockopt(SOL_SOCKET, SO_RCVBUFFORCE, KERNEL_RCVBUF)
    except PermissionError:
        sock.setsockopt(SOL_SOCKET, socket.SO_RCVBUF, KERNEL_RCVBUF)


async def count_into(sock: PyStackSocket, tally: Tally, expected: int) -> None:
    now = time.perf_counter
    while tally.count < expected:
        await sock.recvfrom(2048)
        if not tally.count:
            tally.first = now()
        tally.count += 1
        tally.last = now()


async def settle(tally: Tally, expected: int) -> None:
    """After the sender is done: wait until nothing more arrives for 0.2 s (at most 5 s)."""
    for _ in range(25):
        before = tally.count
        if before >= expected:
            return
        await trio.sleep(0.2)
        if tally.count == before:
            return


async def kernel_to_pystack(host: TunHost, limits: Limits, rate: float) -> dict[str, Any]:
    ns, tun, udp = host.ns, host.tun, host.stack.counters.udp
    with host.network.socket() as sock, ns.socket(socket.AF_INET, socket.SOCK_DGRAM) as ksock:
        await sock.bind(("0.0.0.0", PORT))
        sock.setsockopt(SOL_SOCKET, SO_RCVBUF, RMEM_MAX)
        ksock.bind((KERNEL_ADDR, 0))
        ksock.connect((STACK_ADDR, PORT))
        before = interface_stats(ns, tun.name)
        rcvbuf_errors = udp["RcvbufErrors"]
        tally = Tally()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(count_into, sock, tally, limits.count)
            async with kernel_side("udp-send", [ksock], "--count", limits.count,
                                   "--seconds", limits.seconds, "--size", SIZE,
                                   "--rate", rate) as sender:
                sent = await sender.result()
            await settle(tally, limits.count)
            nursery.cancel_scope.cancel()
        after = interface_stats(ns, tun.name)
    return figures(
        sent["sent"], sent["pps"], tally.count, tally.pps,
        lost_tun_queue=after["tx_dropped"] - before["tx_dropped"],
        lost_pystack_rcvbuf=udp["RcvbufErrors"] - rcvbuf_errors,
        lost_at_sender=sent["send_errors"],
    )


async def pystack_to_kernel(host: TunHost, limits: Limits) -> dict[str, Any]:
    ns, tun = host.ns, host.tun
    with host.network.socket() as sock, ns.socket(socket.AF_INET, socket.SOCK_DGRAM) as ksock:
        big_rcvbuf(ksock)
        ksock.bind((KERNEL_ADDR, 0))
        peer = (KERNEL_ADDR, ksock.getsockname()[1])
        mib_before = udp_mib(ns)
        dropped_before = tun.stats.tx_dropped
        async with kernel_side("udp-recv", [ksock], "--count", limits.count,
                               "--seconds", limits.seconds + 10) as receiver:
            payload = bytearray(SIZE)
            pack = struct.Struct("!Q").pack_into
            sent = 0
            now = time.perf_counter
            start = now()
            deadline = start + limits.seconds
            for seq in range(limits.count):
                if not seq & 255 and now() > deadline:
                    break
                pack(payload, 0, seq)
                await sock.sendto(payload, peer)
                sent += 1
            elapsed = now() - start
            await trio.sleep(0.3)
            await receiver.stop()
            got = await receiver.result()
        mib_after = udp_mib(ns)
    return figures(
        sent, sent / elapsed if elapsed else 0.0, got["received"], got["pps"],
        lost_kernel_rcvbuf=mib_after["RcvbufErrors"] - mib_before["RcvbufErrors"],
        lost_tun_write=tun.stats.tx_dropped - dropped_before,
    )


async def kernel_to_kernel(veth: tuple[Namespace, Namespace, str, str], limits: Limits,
                           rate: float) -> dict[str, Any]:
    ns_a, ns_b, addr_a, addr_b = veth
    with ns_a.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx, \
            ns_b.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        big_rcvbuf(rx)
        rx.bind((addr_b, 0))
        tx.bind((addr_a, 0))
        tx.connect(rx.getsockname())
        mib_before = udp_mib(ns_b)
        async with kernel_side("udp-recv", [rx], "--count", limits.count,
                               "--seconds", limits.seconds + 10) as receiver:
            async with kernel_side("udp-send", [tx], "--count", limits.count,
                                   "--seconds", limits.seconds, "--size", SIZE,
                                   "--rate", rate) as sender:
                sent = await sender.result()
            await trio.sleep(0.3)
            await receiver.stop()
            got = await receiver.result()
    mib_after = udp_mib(ns_b)
    return figures(
        sent["sent"], sent["pps"], got["received"], got["pps"],
        lost_kernel_rcvbuf=mib_after["RcvbufErrors"] - mib_before["RcvbufErrors"],
        lost_at_sender=sent["send_errors"],
    )


CASES = [
    ("k2p", "kernel -> pystack, flat out"),
    ("k2p_paced", "kernel -> pystack, paced"),
    ("p2k", "pystack -> kernel, flat out"),
    ("k2k", "kernel -> kernel (veth), flat out"),
    ("k2k_paced", "kernel -> kernel (veth), paced"),
]


async def measure_all(veth: tuple[Namespace, Namespace, str, str],
                      settings: Settings) -> dict[str, list[dict[str, Any]]]:
    limits = Limits.of(settings)
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key, _ in CASES}
    bound = limits.seconds + 30  # every case stops by itself well before; this is a backstop
    async with pystack_host("s") as host:
        for repeat in range(settings.repeats):
            with trio.fail_after(bound):
                flat = await kernel_to_pystack(host, limits, 0.0)
            # (a floor of 100/s, so that a failed flat-out run cannot turn "paced" into flat out)
            rate = max(PACED_FRACTION * flat["receiver_pps"], 100.0)
            results = {"k2p": flat}
            with trio.fail_after(bound):
                results["k2p_paced"] = await kernel_to_pystack(host, limits, rate)
            with trio.fail_after(bound):
                results["p2k"] = await pystack_to_kernel(host, limits)
            with trio.fail_after(bound):
                results["k2k"] = await kernel_to_kernel(veth, limits, 0.0)
            with trio.fail_after(bound):
                results["k2k_paced"] = await kernel_to_kernel(veth, limits, rate)
            for key, result in results.items():
                result["offered_pps"] = rate if key.endswith("paced") else float("nan")
                runs[key].append(result)
            note(f"{NAME} #{repeat + 1}: " + ", ".join(
                f"{key} {r['receiver_pps']:,.0f} pps rx ({r['loss_pct']:.1f}% lost)"
                for key, r in results.items()))
    return runs


def where_lost(result: dict[str, Any]) -> str:
    names = {
        "lost_tun_queue": "TUN queue",
        "lost_pystack_rcvbuf": "pystack rcvbuf",
        "lost_kernel_rcvbuf": "kernel rcvbuf",
        "lost_tun_write": "TUN write",
        "lost_at_sender": "send errors",
    }
    parts = [f"{names[key]} {int(result[key]):,}" for key in names if result.get(key)]
    return ", ".join(parts) if parts else "-"


def run(settings: Settings) -> Table:
    with veth_namespaces("v") as veth:
        runs = trio.run(measure_all, veth, settings)
    med = {key: median_runs(results) for key, results in runs.items()}
    limits = Limits.of(settings)

    table = Table(NAME, f"UDP stream, {SIZE}-byte datagrams (packets per second, higher is better)",
                  ["case", "offered pps", "sent", "sender pps", "received", "receiver pps", "loss %",
                   "lost where (medians)"])
    for key, label in CASES:
        r = med[key]
        table.add(label, r["offered_pps"], int(r["sent"]), r["sender_pps"], int(r["received"]),
                  r["receiver_pps"], r["loss_pct"], where_lost(r))
    rx_ratio = paired_ratio(runs["k2p"], runs["k2k"], "receiver_pps")
    tx_ratio = paired_ratio(runs["p2k"], runs["k2k"], "sender_pps")
    table.add("ratio pystack rx / kernel rx (flat out)", None, None, None, None, rx_ratio, None, "")
    table.add("ratio pystack tx / kernel tx (flat out)", None, None, tx_ratio, None, None, None, "")
    table.notes += [
        f"each figure is the median of {settings.repeats} runs of up to {limits.count:,} datagrams "
        f"or {limits.seconds:g} s of sending; receiver pps range over runs: " + ", ".join(
            f"{key} {spread(runs[key], 'receiver_pps')}" for key, _ in CASES),
        "loss % range over runs: " + ", ".join(
            f"{key} {spread(runs[key], 'loss_pct')}" for key, _ in CASES),
        f"paced = {PACED_FRACTION:.0%} of the same repeat's flat-out pystack receive rate; "
        "the pacer sleeps when more than 0.5 ms ahead and catches up in bursts",
        "pystack runs in this process under trio (a TUN reader task and a trio-native socket); "
        "every kernel-side sender or receiver is a separate Python process; "
        f"kernel receivers have an {KERNEL_RCVBUF >> 20} MB SO_RCVBUF, pystack's socket its maximum "
        f"({2 * RMEM_MAX:,} bytes)",
    ]
    table.data = {"runs": runs, "median": med, "rx_ratio": rx_ratio, "tx_ratio": tx_ratio,
                  "size": SIZE, "count": limits.count, "seconds": limits.seconds}
    return table
