"""tux_like beside the servers a user would pick instead, under wrk and ab, in one namespace.

Five servers serve the same two files (1 KB, 100 KB) in turn, each a process
of its own inside one namespace this benchmark creates: tux_like on pystack
over TUN and tux_like on the namespace's kernel sockets (both ``pystack
serve``), ``python -m http.server`` (ThreadingHTTPServer), and hypercorn and
uvicorn (pure Python: h11, asyncio) running :mod:`bench.tux_asgi`. The load
runs in the same namespace: ``wrk`` for keep-alive, ``ab`` without ``-k``
for one connection per request, at each concurrency. Every load is bounded
in time (and ab's also in count); every address is in 198.18.0.0/15.

Per load: requests/s, p50 and p99 latency (from the tool), and the server's
CPU per request: utime + stime of the server's processes from /proc, before
and after.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pystack.host.netns import Namespace

from .common import KERNEL_ADDR, STACK_ADDR, Settings, Table, namespace, note, ratio, unique

NAME = "tux"
NEEDS_ROOT = True
OTHERS_ADDR = "198.18.1.1"  # on the namespace's loopback, for the servers that are not pystack serve
PORT = 8080
FILES = (("1 KB", "1k.html", 1024), ("100 KB", "100k.html", 100 * 1024))
CONCURRENCY = (1, 10, 100, 1000)
GOAL_CONCURRENCY = 100
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
NAN = float("nan")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUX_CONFIG = """\
logging = false
max_connect = 4000
"""


@dataclass(frozen=True)
class Server:
    key: str
    label: str
    address: str


SERVERS = (
    Server("tux_pystack", "tux_like on pystack (TUN)", STACK_ADDR),
    Server("tux_kernel", "tux_like on kernel sockets", KERNEL_ADDR),
    Server("http_server", "python -m http.server", OTHERS_ADDR),
    Server("hypercorn", "hypercorn (asyncio, h11)", OTHERS_ADDR),
    Server("uvicorn", "uvicorn (--http h11 --loop asyncio)", OTHERS_ADDR),
)


def server_argv(server: Server, root: str, config: str, tun: str, ns: Namespace) -> list[str]:
    python = sys.executable
    if server.key in ("tux_pystack", "tux_kernel"):
        argv = [python, "-m", "pystack.cli", "serve", "--root", root, "--config", config, "--netns", ns.name,
                "--tun", tun, "--port", str(PORT)]
        return argv + (["--kernel"] if server.key == "tux_kernel" else [])
    if server.key == "http_server":
        return [python, "-m", "http.server", "--bind", server.address, "--directory", root, str(PORT)]
    if server.key == "hypercorn":
        # --workers 0: the app in this process, no supervisor and worker child.
        return [python, "-m", "hypercorn", "--workers", "0", "--bind", f"{server.address}:{PORT}",
                "--backlog", "4096", "bench.tux_asgi:app"]
    return [python, "-m", "uvicorn", "--http", "h11", "--loop", "asyncio", "--host", server.address,
            "--port", str(PORT), "--backlog", "4096", "--no-access-log", "--log-level", "warning",
            "bench.tux_asgi:app"]


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its descendants (threads included), from /proc."""
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        children.setdefault(int(fields[1]), []).append(int(entry))
        ticks[int(entry)] = int(fields[11]) + int(fields[12])
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += ticks.get(current, 0)
        todo.extend(children.get(current, ()))
    return total / CLOCK_TICKS


@contextmanager
def running(server: Server, ns: Namespace, root: str, config: str) -> Iterator[subprocess.Popen[bytes]]:
    """The server started in ``ns`` and answering on its port; stopped (SIGINT) on exit.

    Its output goes to a file, not a pipe: nobody reads a pipe during the loads, and
    http.server's access log would fill one and block the server after ~1,000 requests."""
    env = {**os.environ, "TUX_BENCH_ROOT": root, "PYTHONPATH": REPO}
    argv = server_argv(server, root, config, unique("pstbx"), ns)
    with tempfile.TemporaryFile() as output:
        proc = ns.popen(argv, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        try:
            wait_until_answering(ns, proc, server.address, 20, output)
            yield proc
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_until_answering(ns: Namespace, proc: subprocess.Popen[bytes], address: str, timeout: float,
                         output: Any) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output.seek(0)
            raise RuntimeError(f"the server exited ({proc.returncode}): {output.read()[-2000:].decode(errors='replace')}")
        with ns.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(1)
            try:
                probe.connect((address, PORT))
                return
            except OSError:
                pass
        time.sleep(0.2)
    raise RuntimeError(f"the server did not answer on {address}:{PORT} within {timeout} s")


# ---------------------------------------------------------------- the load tools


def milliseconds(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}[unit]


def wrk(ns: Namespace, url: str, connections: int, seconds: float) -> dict[str, Any]:
    """Keep-alive load: wrk, one thread, ``connections`` connections for ``seconds``."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "--latency", url]
    out = ns.run(argv, capture_output=True, text=True, timeout=seconds + 30).stdout
    done = re.search(r"(\d+) requests in ([\d.]+)(\w+),", out)
    if done is None:
        raise RuntimeError(f"wrk said: {out[-1000:]}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    p50, p99, bad = (re.search(pattern, out, re.MULTILINE)
                     for pattern in (r"^\s+50%\s+(\S+)", r"^\s+99%\s+(\S+)", r"Non-2xx or 3xx responses: (\d+)"))
    return {"requests": int(done.group(1)), "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": milliseconds(p50.group(1)) if p50 else NAN, "p99": milliseconds(p99.group(1)) if p99 else NAN,
            "errors": errors + (int(bad.group(1)) if bad else 0)}


def ab(ns: Namespace, url: str, concurrency: int, seconds: float, count: int) -> dict[str, Any]:
    """One connection per request: ab without -k, at most ``count`` requests in ``seconds``
    (-t before -n: -t alone would imply 50,000)."""
    argv = ["ab", "-q", "-r", "-s", "5", "-t", str(seconds), "-n", str(max(count, concurrency)),
            "-c", str(concurrency), url]
    done = ns.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    out = done.stdout

    def figure(pattern: str) -> float:
        found = re.search(pattern, out, re.MULTILINE)
        return float(found.group(1)) if found else NAN  # ab prints no rate or percentiles for 0 requests

    complete = figure(r"^Complete requests:\s+(\d+)")
    if complete != complete:
        raise RuntimeError(f"ab said: {(out + done.stderr).strip()[-1000:]}")
    bad = figure(r"^Non-2xx responses:\s+(\d+)")
    return {"requests": int(complete), "rps": figure(r"^Requests per second:\s+([\d.]+)") if complete else 0.0,
            "p50": figure(r"^\s+50%\s+(\d+)"), "p99": figure(r"^\s+99%\s+(\d+)"),
            "errors": int(figure(r"^Failed requests:\s+(\d+)")) + (0 if bad != bad else int(bad))}


def load(ns: Namespace, proc: subprocess.Popen[bytes], url: str, keep_alive: bool, concurrency: int,
         settings: Settings) -> dict[str, Any]:
    """One load against a running server, with the server's CPU seconds per request."""
    seconds = settings.pick(5, 1)
    before = cpu_seconds(proc.pid)
    try:
        if keep_alive:
            result = wrk(ns, url, concurrency, seconds)
        else:
            result = ab(ns, url, concurrency, seconds, settings.pick(20_000, 3_000))
    except (RuntimeError, subprocess.TimeoutExpired) as failed:  # the table says so; the other loads go on
        last = str(failed).strip().splitlines()[-1][:80]
        return {"requests": 0, "rps": NAN, "p50": NAN, "p99": NAN, "errors": f"failed: {last}", "cpu_us": NAN}
    used = cpu_seconds(proc.pid) - before
    result["cpu_us"] = used / result["requests"] * 1e6 if result["requests"] else NAN
    return result


# ---------------------------------------------------------------- the run


def prepare(ns: Namespace, folder: str) -> tuple[str, str]:
    """The document root with the two files, and tux_like's config file; the namespace's
    loopback gets OTHERS_ADDR, and connections may reuse ports in TIME-WAIT."""
    root = os.path.join(folder, "root")
    os.mkdir(root)
    for _, name, size in FILES:
        with open(os.path.join(root, name), "wb") as f:
            f.write((b"tux_like benchmark file " * (size // 24 + 1))[:size])
    config = os.path.join(folder, "tux.toml")
    with open(config, "w") as f:
        f.write(TUX_CONFIG)
    ns.run(["ip", "addr", "add", f"{OTHERS_ADDR}/32", "dev", "lo"], check=True, capture_output=True)
    for setting in ("net.ipv4.tcp_tw_reuse=1", "net.ipv4.ip_local_port_range=1024 65000"):
        ns.run(["sysctl", "-q", "-w", setting], check=True, capture_output=True)
    return root, config


def raise_fd_limit() -> None:
    """1,000 connections need more descriptors than the usual soft limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def measure(settings: Settings) -> dict[tuple[str, str, bool, int], dict[str, Any]]:
    raise_fd_limit()
    results = {}
    with namespace("tux-") as ns, tempfile.TemporaryDirectory(prefix="pstb-tux-") as folder:
        root, config = prepare(ns, folder)
        for server in SERVERS:
            with running(server, ns, root, config) as proc:
                for _, name, size in FILES:  # one fetch each: the file caches are warm, the bytes right
                    got = ns.run(["curl", "-sS", "--max-time", "10", f"http://{server.address}:{PORT}/{name}"],
                                 capture_output=True, timeout=30).stdout
                    if len(got) != size:
                        raise RuntimeError(f"{server.label} served {len(got)} bytes of {name}, not {size}")
                for label, name, _ in FILES:
                    for keep_alive in (True, False):
                        for concurrency in CONCURRENCY:
                            url = f"http://{server.address}:{PORT}/{name}"
                            result = load(ns, proc, url, keep_alive, concurrency, settings)
                            results[server.key, label, keep_alive, concurrency] = result
                            note(f"tux: {server.key} {label} {'keep-alive' if keep_alive else 'close'} "
                                 f"c{concurrency}: {result['rps']:.0f} req/s")
    return results


def goal(table: Table, text: str, value: float, target: float) -> None:
    table.notes.append(f"goal {text}: {'met' if value >= target else 'NOT MET'} "
                       f"({value:.2f} vs >= {target:g})")


def run(settings: Settings) -> Table:
    results = measure(settings)
    table = Table(NAME, "tux_like and the alternatives serving static files (requests/s higher is better; "
                        "latency and CPU per request lower is better)",
                  ["server", "file", "keep-alive", "conc.", "req/s", "p50 ms", "p99 ms",
                   "server CPU us/req", "errors"])
    for label, _, _ in FILES:
        for keep_alive in (True, False):
            for concurrency in CONCURRENCY:
                for server in SERVERS:
                    r = results[server.key, label, keep_alive, concurrency]
                    table.add(server.label, label, "wrk (yes)" if keep_alive else "ab (no)", concurrency,
                              r["rps"], r["p50"], r["p99"], r["cpu_us"], r["errors"])

    def rps(key: str, keep_alive: bool = True) -> float:
        return results[key, FILES[0][0], keep_alive, GOAL_CONCURRENCY]["rps"]

    kernel = rps("tux_kernel")
    at = f"1 KB, c{GOAL_CONCURRENCY}"
    goal(table, f"tux_like on kernel sockets / http.server, keep-alive, {at}", ratio(kernel, rps("http_server")), 3)
    goal(table, f"tux_like on kernel sockets / hypercorn, keep-alive, {at}", ratio(kernel, rps("hypercorn")), 1.5)
    goal(table, f"tux_like on kernel sockets / uvicorn, keep-alive, {at}", ratio(kernel, rps("uvicorn")), 1)
    goal(table, f"tux_like on pystack, keep-alive, {at} (req/s)", rps("tux_pystack"), 5000)
    goal(table, f"tux_like on pystack, no keep-alive, {at} (req/s)", rps("tux_pystack", False), 1200)
    table.notes.append(f"tux_like on pystack / on kernel sockets, keep-alive, {at}: "
                       f"{ratio(rps('tux_pystack'), kernel):.2f}x")
    table.notes.append("one process per server, in turn, in one namespace; the load tools are in it too "
                       "(wrk -t1 --latency; ab -r -s 5 without -k) and share the machine's CPUs with it; "
                       "http.server answers HTTP/1.0, so it closes every connection even under wrk; "
                       f"{settings.pick(5, 1)} s per load, one run each")
    table.data = {"results": [{"server": k[0], "file": k[1], "keep_alive": k[2], "concurrency": k[3], **v}
                              for k, v in results.items()]}
    return table
