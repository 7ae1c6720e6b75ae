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

from pystack.socket import SOCK_STREAM
from pystack.tun_host import TunHost
from specializer import do_specialize_send, done_specialize_send, specialized_send

from .common import KERNEL_ADDR, Settings, Table, median, note, pystack_host
from .tcp_stream import _finish, start_receiver

NAME = "spec_tcp_stream"
PORT = 5301
GOAL = 1.20
BLOCK = bytes(range(256)) * 256  # 64 KiB, not zeros: the checksum of zeros is nearly free


async def one_stream(host: TunHost, specialized: bool, port: int, total: int, timeout: float) -> float:
    """Mbit/s of one connection's transfer, as the kernel receiver measured it."""
    receiver = await start_receiver(host.ns, KERNEL_ADDR, port)
    network, stack = host.network, host.stack
    sock = network.socket(type=SOCK_STREAM)
    with trio.fail_after(timeout):
        await sock.connect((KERNEL_ADDR, port))
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
    sock.close()
    if got != total:
        raise RuntimeError(f"the kernel received {got} bytes of {total}")
    return got * 8 / seconds / 1e6


async def measure_all(settings: Settings) -> dict[str, list[float]]:
    total = settings.pick(16 << 20, 4 << 20)
    timeout = settings.pick(120, 60)
    runs: dict[str, list[float]] = {"generic": [], "specialized": []}
    async with pystack_host("stcp") as host:
        port = PORT
        for repeat in range(settings.repeats):
            order = ("generic", "specialized") if repeat % 2 == 0 else ("specialized", "generic")
            for name in order:
                runs[name].append(await one_stream(host, name == "specialized", port, total, timeout))
                port += 1
            note(f"spec_tcp_stream #{repeat + 1}: generic {runs['generic'][-1]:.1f} Mbit/s, "
                 f"specialized {runs['specialized'][-1]:.1f} Mbit/s")
    return runs


def run(settings: Settings) -> Table:
    started = time.perf_counter()
    runs = trio.run(measure_all, settings)
    table = Table(NAME, "Bulk TCP, pystack -> kernel over TUN, generic against specialized send (Mbit/s)",
                  ["variant", "Mbit/s (median)", "runs"])
    for name in ("generic", "specialized"):
        table.add(name, median(runs[name]), ", ".join(f"{v:.1f}" for v in runs[name]))
    ratios = [s / g for g, s in zip(runs["generic"], runs["specialized"], strict=True)]
    ratio = median(ratios)
    table.add("ratio specialized / generic", f"{ratio:.2f}x", ", ".join(f"{r:.2f}" for r in ratios))
    verdict = "met" if ratio >= GOAL else "NOT MET"
    table.notes += [
        f"goal: specialized >= +{(GOAL - 1) * 100:.0f}% throughput: {verdict} ({(ratio - 1) * 100:+.0f}%)",
        "one stack, one kernel receiver process per connection, the variants alternate within each repeat; "
        "the application sends 64 KB at a time and waits on the socket when the send buffer is full; "
        f"{time.perf_counter() - started:.0f} s",
    ]
    table.data = {"runs": runs}
    return table
