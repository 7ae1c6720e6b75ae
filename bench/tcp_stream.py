"""Bulk TCP over TUN, kernel -> pystack and pystack -> kernel, beside kernel -> kernel over veth.

pystack runs in this process under trio (serve_tcp / open_tcp_stream on
pystack.host.tun_host); every kernel-side sender or receiver is a separate
Python process on a kernel socket in the namespace, so it has a CPU of
its own. Each transfer is bounded in bytes and in time. Besides Mbit/s,
the CPU time this process spends per megabyte is reported for the
pystack cases (the stack's own cost, driver included).
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import trio

from pystack.host.netns import Namespace

from .common import (
    KERNEL_ADDR,
    STACK_ADDR,
    Settings,
    Table,
    median,
    note,
    pystack_host,
    spread,
    veth_namespaces,
)

NAME = "tcp_stream"
PORT = 5201
GOAL_MBIT = 200

# The kernel side: a sender or a receiver, standard library only; prints its figures.
KERNEL_SENDER = """
import socket, sys, time
host, port, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((host, port), timeout=30)
block = bytes(65536)
start = time.perf_counter(); sent = 0
while sent < total:
    sent += s.send(block[: min(len(block), total - sent)])
s.shutdown(socket.SHUT_WR)
s.recv(1)
print(sent, time.perf_counter() - start)
"""
KERNEL_RECEIVER = """
import socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((host, port)); l.listen(1); l.settimeout(30)
print("ready", flush=True)
c, _ = l.accept(); c.settimeout(30)
got = 0; start = None
while True:
    data = c.recv(1 << 20)
    if start is None: start = time.perf_counter()
    if not data: break
    got += len(data)
print(got, time.perf_counter() - (start or time.perf_counter()))
"""


def _python(ns: Namespace, code: str, *args: Any) -> subprocess.Popen[str]:
    return ns.popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, text=True)


async def start_receiver(ns: Namespace, address: str, port: int) -> subprocess.Popen[str]:
    """A kernel receiver process listening in ``ns``, once it says it is ready."""
    receiver = _python(ns, KERNEL_RECEIVER, address, port)
    assert receiver.stdout is not None
    with trio.fail_after(10):
        line = await trio.to_thread.run_sync(receiver.stdout.readline)
    if line.strip() != "ready":
        raise RuntimeError("the kernel receiver did not start")
    return receiver


async def _finish(proc: subprocess.Popen[str], timeout: float) -> tuple[int, float]:
    with trio.fail_after(timeout):
        while proc.poll() is None:
            await trio.sleep(0.05)
    out = proc.stdout.read().split() if proc.stdout else []
    if proc.returncode != 0 or len(out) < 2:
        raise RuntimeError(f"kernel side failed: {proc.stderr.read() if proc.stderr else ''}")
    return int(out[-2]), float(out[-1])


async def kernel_to_pystack(total: int, timeout: float) -> dict[str, float]:
    async with pystack_host("tcpk2p") as host, trio.open_nursery() as nursery:
        received = 0
        done = trio.Event()

        async def sink(stream: Any) -> None:
            nonlocal received
            while data := await stream.receive_some(1 << 20):
                received += len(data)
            await stream.aclose()
            done.set()

        await nursery.start(host.network.serve_tcp, sink, PORT)
        cpu = time.process_time()
        sender = _python(host.ns, KERNEL_SENDER, STACK_ADDR, PORT, total)
        sent, seconds = await _finish(sender, timeout)
        with trio.fail_after(timeout):
            await done.wait()
        cpu = time.process_time() - cpu
        nursery.cancel_scope.cancel()
    return {"bytes": received, "seconds": seconds, "mbit": received * 8 / seconds / 1e6,
            "cpu_ms_per_mb": cpu * 1000 / (received / 1e6)}


async def pystack_to_kernel(total: int, timeout: float) -> dict[str, float]:
    async with pystack_host("tcpp2k") as host:
        receiver = await start_receiver(host.ns, KERNEL_ADDR, PORT)
        block = bytes(65536)
        cpu = time.process_time()
        start = time.perf_counter()
        with trio.fail_after(timeout):
            stream = await host.network.open_tcp_stream(KERNEL_ADDR, PORT)
            sent = 0
            while sent < total:
                chunk = block[: min(len(block), total - sent)]
                await stream.send_all(chunk)
                sent += len(chunk)
            await stream.send_eof()
        got, _ = await _finish(receiver, timeout)
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu
        await stream.aclose()
    return {"bytes": got, "seconds": seconds, "mbit": got * 8 / seconds / 1e6,
            "cpu_ms_per_mb": cpu * 1000 / (got / 1e6)}


async def kernel_to_kernel(veth: tuple[Namespace, Namespace, str, str], total: int,
                           timeout: float) -> dict[str, float]:
    ns_a, ns_b, addr_a, addr_b = veth
    receiver = await start_receiver(ns_b, addr_b, PORT)
    sender = _python(ns_a, KERNEL_SENDER, addr_b, PORT, total)
    await _finish(sender, timeout)
    got, seconds = await _finish(receiver, timeout)
    return {"bytes": got, "seconds": seconds, "mbit": got * 8 / seconds / 1e6, "cpu_ms_per_mb": float("nan")}


CASES = (("k2p", "kernel -> pystack (TUN)"), ("p2k", "pystack -> kernel (TUN)"),
         ("k2k", "kernel -> kernel (veth, reference)"))


async def measure_all(veth: tuple[Namespace, Namespace, str, str], settings: Settings) -> dict[str, list]:
    total = settings.pick(32 << 20, 4 << 20)
    timeout = settings.pick(120, 60)
    runs: dict[str, list] = {key: [] for key, _ in CASES}
    for repeat in range(settings.repeats):
        runs["k2p"].append(await kernel_to_pystack(total, timeout))
        runs["p2k"].append(await pystack_to_kernel(total, timeout))
        runs["k2k"].append(await kernel_to_kernel(veth, total, timeout))
        note(f"tcp_stream #{repeat + 1}: " + ", ".join(f"{key} {runs[key][-1]['mbit']:.0f} Mbit/s"
                                                     for key, _ in CASES))
    return runs


def run(settings: Settings) -> Table:
    with veth_namespaces("t") as veth:
        runs = trio.run(measure_all, veth, settings)
    table = Table(NAME, "Bulk TCP throughput (Mbit/s, higher is better; CPU ms per MB, lower is better)",
                  ["case", "MB", "Mbit/s", "CPU ms/MB (this process)", "vs kernel->kernel"])
    reference = median([r["mbit"] for r in runs["k2k"]])
    for key, label in CASES:
        mbit = median([r["mbit"] for r in runs[key]])
        cpu = median([r["cpu_ms_per_mb"] for r in runs[key]])
        table.add(label, runs[key][0]["bytes"] / 1e6, mbit, None if cpu != cpu else cpu,
                  f"{mbit / reference:.3f}x" if reference else None)
    for key in ("k2p", "p2k"):
        mbit = median([r["mbit"] for r in runs[key]])
        verdict = "met" if mbit >= GOAL_MBIT else "NOT MET"
        table.notes.append(f"goal >= {GOAL_MBIT} Mbit/s for {key}: {verdict} ({mbit:.0f} Mbit/s; "
                           f"range {spread(runs[key], 'mbit')})")
    table.notes.append("no offloads: the TUN device is plain IFF_TUN|IFF_NO_PI, MTU 1500, MSS 1448 with "
                       "timestamps; the kernel sides are separate processes")
    table.data = {"runs": runs}
    return table
