"""Bulk TCP, pystack -> kernel over TUN, the application calling ``stack.send`` or ``specialized_send``.

The same stack and kernel receiver process (bench.tcp_stream's) serve
both variants, one connection each, alternating within every repeat. The
application loop is the same for both: send 64 KB at a time; when the
send buffer is full, wait on the socket as the trio layer would. Bounded
in bytes and in time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

from pystack.host.tun_host import TunHost
from pystack.socket import SOCK_STREAM
from specializer import do_specialize_send, done_specialize_send, specialized_send

from .common import KERNEL_ADDR, Settings, Table, median, note, pystack_host
from .tcp_stream import _finish, start_receiver

NAME = "spec_tcp_stream"
PORT = 5301
GOAL = 1.20
VARIANTS = ("generic", "specialized")
BLOCK = bytes(range(256)) * 256  # 64 KiB, not zeros: the checksum of zeros is nearly free


async def one_stream(host: TunHost, specialized: bool, port: int, total: int, timeout: float) -> tuple[float, float]:
    """Mbit/s of one connection's transfer, as the kernel receiver measured it, and the CPU
    time this process spent per MB sent (the stack's own cost, driver included)."""
    receiver = await start_receiver(host.ns, KERNEL_ADDR, port)
    network, stack = host.network, host.stack
    sock = network.socket(type=SOCK_STREAM)
    with trio.fail_after(timeout):
        await sock.connect((KERNEL_ADDR, port))
        cpu = time.process_time()
        fd = sock.fileno()
        token = do_specialize_send(stack, fd) if specialized else None
        send: Callable[[bytes], int] = (
            (lambda data: specialized_send(stack, token, data)) if specialized else (lambda data: stack.send(fd, data))
        )
        driver = network.driver
        sent = 0
        while sent < total:
            try:
                sent += send(BLOCK[: min(len(BLOCK), total - sent)])
            except BlockingIOError:
                driver.timers_changed()
                await driver.wait_socket(fd)
                continue
            driver.timers_changed()
            await trio.lowlevel.checkpoint()
        if token is not None:
            done_specialize_send(stack, token)
        sock.shutdown(1)
    got, seconds = await _finish(receiver, timeout)
    cpu = time.process_time() - cpu
    sock.close()
    if got != total:
        raise RuntimeError(f"the kernel received {got} bytes of {total}")
    return got * 8 / seconds / 1e6, cpu * 1000 / (got / 1e6)


async def measure_all(settings: Settings) -> dict[str, dict[str, list[float]]]:
    total = settings.pick(8 << 20, 2 << 20)
    pairs = settings.pick(2 * settings.repeats, 2)
    timeout = settings.pick(120, 60)
    runs: dict[str, dict[str, list[float]]] = {name: {"mbit": [], "cpu": []} for name in VARIANTS}
    async with pystack_host("stcp") as host:
        port = PORT
        for pair in range(pairs):
            order = VARIANTS if pair % 2 == 0 else VARIANTS[::-1]
            for name in order:
                mbit, cpu = await one_stream(host, name == "specialized", port, total, timeout)
                runs[name]["mbit"].append(mbit)
                runs[name]["cpu"].append(cpu)
                port += 1
            note(f"spec_tcp_stream pair {pair + 1}: generic {runs['generic']['mbit'][-1]:.1f} Mbit/s "
                 f"({runs['generic']['cpu'][-1]:.0f} ms CPU/MB), specialized {runs['specialized']['mbit'][-1]:.1f} "
                 f"Mbit/s ({runs['specialized']['cpu'][-1]:.0f} ms CPU/MB)")
    return runs


def run(settings: Settings) -> Table:
    started = time.perf_counter()
    runs = trio.run(measure_all, settings)
    table = Table(NAME, "Bulk TCP, pystack -> kernel over TUN, generic against specialized send",
                  ["variant", "Mbit/s (median)", "CPU ms/MB (median)", "Mbit/s per transfer"])
    for name in VARIANTS:
        table.add(name, median(runs[name]["mbit"]), median(runs[name]["cpu"]),
                  ", ".join(f"{v:.0f}" for v in runs[name]["mbit"]))
    generic, special = runs["generic"], runs["specialized"]
    ratios = [s / g for g, s in zip(generic["mbit"], special["mbit"], strict=True)]
    cpu_ratios = [g / s for g, s in zip(generic["cpu"], special["cpu"], strict=True)]
    ratio, cpu_ratio = median(ratios), median(cpu_ratios)
    table.add("ratio specialized / generic", f"{ratio:.2f}x", f"{cpu_ratio:.2f}x less CPU",
              ", ".join(f"{r:.2f}" for r in ratios))
    verdict = "met" if ratio >= GOAL else "NOT MET"
    table.notes += [
        f"goal: specialized >= +{(GOAL - 1) * 100:.0f}% throughput: {verdict} ({(ratio - 1) * 100:+.0f}%; "
        f"CPU per MB {(1 - 1 / cpu_ratio) * 100:.0f}% lower)",
        "thesis 3.3.2 (netperf TCP stream, MSS 1448): +10% (PIII), +13% (iPAQ), +23% (486)",
        f"{len(ratios)} transfers of {settings.pick(8, 2)} MB per variant, alternating (the first variant "
        "flips each pair); one stack, one kernel receiver process per transfer; the application sends 64 KB "
        "at a time and waits on the socket when the send buffer is full; the specialized variant's token "
        "also gives the connection its specialized output routine (scenario tcp_output), which sends the "
        "segments that arriving ACKs let out; ratios are medians of per-pair ratios; "
        f"{time.perf_counter() - started:.0f} s",
    ]
    table.data = {"runs": runs}
    return table
