"""Remote specialization (thesis chapter 4): latency, bytes, and the thin device's footprint.

For ``send`` on a connected UDP socket (udp_send_connected), each request a new socket
(a new context):

- **local miss**: the specializer in the process (as spec_latency's miss);
- **remote miss, loopback**: the device sends its context to ``pystack spec serve``
  (another process, kernel TCP on 127.0.0.1) and waits for the residual code; each
  request is a new context, so the server specializes every time; timed around
  ``do_specialize_send``, which returns with the code loaded, rebound, checked and
  guarded;
- **remote miss, server hit**: the same, with the server's cache warm (a second device
  with the same context asks);
- **remote miss, pystack/TUN**: the request travels over pystack's own TCP on a TUN
  device to the server on a kernel socket in the namespace (one trio loop runs both);
  timed from the request to the installed code (the token sends generically
  meanwhile); needs root, else skipped;
- **remote hit**: a second token for the same socket and context while the first holds
  the code: the device's code manager answers (its lightweight key, then the facts), no
  request, no snapshot.

Bytes per request and reply are the frames' (4-byte length included); over TUN also
the IP bytes the TUN carried each way for one request on a kept connection. The thin
device (``python -m remote.thin_device``: pystack and the run-time layer, no
specializer) is compared with a device carrying the specializer: import time of what
each needs, peak RSS, modules loaded.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import trio

from pystack.tokens.api import do_specialize_send, done_specialize_send
from remote.device import TrioClient, make_remote_system
from remote.protocol import Signer
from remote.server import Service, serve_listeners

from .common import Settings, Table, median, note, root_reason
from .spec_latency import World

NAME = "spec_remote"
NEEDS_ROOT = False
MISS_GOAL_MS = 100.0
KEY = b"spec_remote benchmark shared key"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def remote_world(port: int) -> tuple[World, Any]:
    world = World()
    system = make_remote_system(world.stack, server=("127.0.0.1", port), key=KEY, timeout=5.0)
    return world, system


def timed_misses(world: World, count: int, before: Any = None) -> tuple[list[float], list[int]]:
    """``count`` requests, each for a new connected UDP socket; seconds each, and the token
    of the last (held, for the hits)."""
    times, tokens = [], []
    for _ in range(count):
        fd = world.new_socket("send")
        if before is not None:
            before()
        started = time.perf_counter()
        token = do_specialize_send(world.stack, fd)
        times.append(time.perf_counter() - started)
        tokens.append(token)
    return times, tokens


def check_specialized(world: World, tokens: list[int]) -> None:
    from pystack.tokens.api import token_info

    for token in tokens:
        info = token_info(world.stack, token)
        if info["mode"] != "specialized":
            raise RuntimeError(f"token {token} is {info['mode']}: {info['events']}")


class ServerProcess:
    """``pystack spec serve`` in a process of its own (in a thread of this one, the device
    and the server would take turns at the GIL, and the latency would show it)."""

    def __init__(self, key_file: str):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pystack.cli", "spec", "serve", "--listen", f"127.0.0.1:{self.port}",
             "--key", key_file], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.process.stdout is not None
        if "specialization server on" not in self.process.stdout.readline():
            self.process.kill()
            raise RuntimeError("pystack spec serve did not start")

    def __enter__(self) -> int:
        return self.port

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(10)


def loopback(key_file: str, count: int) -> dict[str, Any]:
    """New sockets have new contexts (their fds differ): the server specializes for each.
    A second device with the same history asks for the same contexts: the server's cache."""
    results: dict[str, Any] = {}
    with ServerProcess(key_file) as port:
        world, system = remote_world(port)
        twin, _ = remote_world(port)
        timed_misses(world, 1)  # warm: the server's ASTs, the connections
        timed_misses(twin, 1)
        times, tokens = timed_misses(world, count)
        check_specialized(world, tokens)
        results["miss"] = times
        results["bytes"] = (system.client.sent, system.client.received)
        results["server_hit"] = timed_misses(twin, count)[0]
        hits = []
        fd = world.stack.sockets[max(world.stack.sockets)].fd
        for _ in range(count * 10):
            started = time.perf_counter()
            token = do_specialize_send(world.stack, fd)
            hits.append(time.perf_counter() - started)
            done_specialize_send(world.stack, token)
        results["hit"] = hits
        results["requests"] = system.requests
    return results


def local(count: int) -> list[float]:
    world = World()
    timed_misses(world, 1)
    return timed_misses(world, count)[0]


async def over_tun(count: int) -> dict[str, Any]:
    from pystack.host.tun_host import tun_host

    from .common import KERNEL_ADDR, PREFIXLEN, STACK_ADDR, unique

    service = Service(Signer(secret=KEY))
    name = unique("psrem")
    async with tun_host(name, name, f"{KERNEL_ADDR}/{PREFIXLEN}", STACK_ADDR, seed=1) as host, \
            trio.open_nursery() as nursery:
        listener = host.kernel_socket(2, 1)
        await listener.bind((KERNEL_ADDR, 7070))
        listener.listen()
        nursery.start_soon(serve_listeners, service, [trio.SocketListener(listener)])
        stack = host.stack
        client = TrioClient(lambda: host.network.open_tcp_stream(KERNEL_ADDR, 7070), nursery, timeout=5.0)
        system = make_remote_system(stack, server=client, key=KEY)
        latencies, wire = [], (0, 0)
        for i in range(count + 1):
            fd = stack.socket()
            stack.connect(fd, (KERNEL_ADDR, 9999))
            service.cache.clear()
            sent, received = host.tun.stats.tx_bytes, host.tun.stats.rx_bytes
            token = do_specialize_send(stack, fd)
            with trio.fail_after(10):
                while system.pending:
                    await trio.sleep(0)
            if token not in system.tokens or system.token(token).mode != "specialized":
                raise RuntimeError(f"over TUN: {system.token(token).events}")
            if i:  # the first opened the connection
                latencies.append(system.latency)
                wire = (host.tun.stats.tx_bytes - sent, host.tun.stats.rx_bytes - received)
        nursery.cancel_scope.cancel()
    return {"miss": latencies, "bytes": (client.sent, client.received), "wire": wire}


def footprint(server: tuple[str, int] | None, key_file: str) -> dict[str, Any]:
    argv = [f"{server[0]}:{server[1]}", key_file] if server else ["--local"]
    done = subprocess.run([sys.executable, "-m", "remote.thin_device", *argv], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, check=True)
    return json.loads(done.stdout)


def run(settings: Settings) -> Table:
    count = settings.pick(20, 5)
    runs: dict[str, list[list[float]]] = {}
    bytes_seen: dict[str, tuple[int, int]] = {}
    wire = None
    tun_reason = root_reason()
    key_file = tempfile.NamedTemporaryFile("wb", suffix=".key")
    key_file.write(KEY)
    key_file.flush()
    for repeat in range(settings.repeats):
        runs.setdefault("local miss", []).append(local(count))
        result = loopback(key_file.name, count)
        runs.setdefault("remote miss, loopback", []).append(result["miss"])
        runs.setdefault("remote miss, loopback, server cache hit", []).append(result["server_hit"])
        runs.setdefault("remote hit (code manager)", []).append(result["hit"])
        bytes_seen["loopback"] = result["bytes"]
        if tun_reason is None:
            tun = trio.run(over_tun, count)
            runs.setdefault("remote miss, pystack TCP on TUN", []).append(tun["miss"])
            bytes_seen["TUN"], wire = tun["bytes"], tun["wire"]
        note(f"{NAME} #{repeat + 1}: " + ", ".join(f"{k} {median(v[-1]) * 1e3:.2f} ms" for k, v in runs.items()))

    table = Table(NAME, "Remote specialization, udp_send_connected (lower is better)",
                  ["request", "requests", "median ms", "median us", "max ms", "goal", "met"])
    verdicts = []
    for label, samples in runs.items():
        value = median([median(r) for r in samples])
        flat = [s for r in samples for s in r]
        goal = f"< {MISS_GOAL_MS:g} ms" if label.startswith("remote miss") else ""
        met = ("yes" if value * 1e3 < MISS_GOAL_MS else "NO") if goal else ""
        if goal:
            verdicts.append(f"{label}: {value * 1e3:.1f} ms ({met})")
        table.add(label, len(flat), value * 1e3, round(value * 1e6), max(flat) * 1e3, goal, met)
    if tun_reason is not None:
        table.add("remote miss, pystack TCP on TUN", 0, None, None, None, f"< {MISS_GOAL_MS:g} ms", "skipped")
        table.notes.append(f"pystack/TUN skipped: {tun_reason}")
    for where, (request, reply) in bytes_seen.items():
        table.notes.append(f"{where}: bytes per request {request}, per reply {reply} (the last request's frames, "
                           "deflated JSON, 4-byte length included)")
    if wire is not None:
        table.notes.append(f"over TUN, IP bytes for one request on a kept connection: {wire[0]} from the device, "
                           f"{wire[1]} to it (TCP/IP headers and ACKs included)")
    with key_file, ServerProcess(key_file.name) as port:
        thin = [footprint(("127.0.0.1", port), key_file.name) for _ in range(settings.repeats)]
        fat = [footprint(None, key_file.name) for _ in range(settings.repeats)]
    for label, reports in (("thin device (no specializer)", thin), ("device with the specializer", fat)):
        if any(r["mode"] != "specialized" or not r["same_packets"] for r in reports):
            raise RuntimeError(f"{label}: {reports}")
        table.notes.append(
            f"{label}: import {median([r['import_seconds'] for r in reports]) * 1e3:.0f} ms, "
            f"peak RSS {median([r['max_rss_kb'] for r in reports]) / 1024:.1f} MiB, "
            f"{median([r['modules'] for r in reports]):.0f} modules, specializer loaded: "
            f"{thin[0]['specializer_loaded'] if reports is thin else fat[0]['specializer_loaded']}, "
            f"first specialization {median([r['specialize_seconds'] for r in reports]) * 1e3:.0f} ms")
    table.notes.append("goal: " + "; ".join(verdicts))
    table.data = {"runs": runs, "bytes": bytes_seen, "wire": wire, "thin": thin, "fat": fat}
    return table
