"""The server over TUN with real clients: curl, ab and ftplib against tux_like on pystack and on
kernel sockets, inside a namespace the test creates and removes (198.18.4.0/24).

Without root the tests are skipped with the reason. The backends and the
driver are tested with the tiny handler (tests/tux/tiny_handler.py); the
tests of the real HTTP and FTP handlers are skipped, saying so, while
``tux_like.http`` / ``tux_like.ftp`` are the core's placeholders.
"""

from __future__ import annotations

import email.utils
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from pystack.cli import DEFAULT_ADDRESS, DEFAULT_KERNEL_ADDRESS
from pystack.host.netns import why_not
from pystack.host.tun_host import TunHost, tun_host
from tux_like import ftp, http
from tux_like.backends.kernel_net import KernelNet
from tux_like.backends.pystack_net import PystackNet
from tux_like.config import make_config
from tux_like.driver import ServerDriver, serving

from . import tiny_handler

pytestmark = [pytest.mark.tun, pytest.mark.skipif(why_not() is not None, reason=f"TUN test skipped: {why_not()}")]
KERNEL, PYSTACK = "198.18.4.1", "198.18.4.2"
BACKENDS = ("pystack", "kernel")
BIG = 3_000_000
_serial = itertools.count()


def needs(tool: str):
    """Skip (a mark, so that the reason shows) without a client tool."""
    return pytest.mark.skipif(shutil.which(tool) is None, reason=f"needs {tool} (scripts/system-tools.sh installs it)")


def needs_handler(module):
    """Skip (a mark, so that the reason shows) while ``module`` is the core's placeholder."""
    return pytest.mark.skipif(tiny_handler.is_placeholder(module),
                              reason=f"{module.__name__} is still the core's placeholder (its branch is not merged)")


@pytest.fixture
def root(tmp_path):
    (tmp_path / "index.html").write_bytes(b"<h1>tux_like</h1>\n")
    (tmp_path / "small.txt").write_bytes(b"hello\n")
    (tmp_path / "big.bin").write_bytes(os.urandom(BIG))
    return tmp_path


def names() -> str:
    return f"pstx{os.getpid() % 100000}x{next(_serial)}"[:15]


@asynccontextmanager
async def tux_world(root, backend: str, protocol: str = "http",
                    **settings) -> AsyncIterator[tuple[TunHost, ServerDriver, str]]:
    """The server on ``backend`` in a fresh namespace; yields (host, driver, base URL)."""
    name = names()
    address = PYSTACK if backend == "pystack" else KERNEL
    port = 80 if protocol == "http" else 21
    config = make_config({"document_root": str(root), "protocol": protocol, "listen": f"{address}:{port}",
                          "logging": False, **settings})
    async with tun_host(name, name, f"{KERNEL}/24", PYSTACK, seed=11) as host:
        net = PystackNet(host.network.driver) if backend == "pystack" else KernelNet(host.ns.socket)
        async with serving(config, net) as driver:
            yield host, driver, f"{protocol}://{address}:{port}"


async def settled(driver: ServerDriver) -> None:
    with trio.fail_after(10):
        while driver.server.live_connections():
            await trio.sleep(0.02)
    assert driver.server.live_objects() == 0


async def run(host: TunHost, *argv: str, timeout: float = 60) -> str:
    done = await host.run(list(argv), timeout=timeout)
    assert done.returncode == 0, f"{argv[0]} failed ({done.returncode}): {done.stderr.decode()[-2000:]}"
    return done.stdout.decode()


def ab_figures(output: str) -> dict[str, int]:
    figures = {}
    for key in ("Complete requests", "Failed requests", "Keep-Alive requests", "Non-2xx responses"):
        found = re.search(rf"^{key}:\s+(\d+)", output, re.MULTILINE)
        figures[key] = int(found.group(1)) if found else 0
    return figures


async def wrk_and_httperf_see_no_errors(host: TunHost, base: str, path: str) -> int:
    """wrk (one second, 10 connections) and httperf (50 connections of 4 calls): no errors,
    only 2xx answers; returns how many requests they made."""
    out = await run(host, "wrk", "-t1", "-c10", "-d1s", "--timeout", "5s", f"{base}{path}")
    assert "Socket errors" not in out and "Non-2xx" not in out, out
    made = int(re.search(r"(\d+) requests in", out).group(1))
    address, port = base.split("//")[1].split(":")
    out = await run(host, "httperf", "--server", address, "--port", port, "--uri", path,
                    "--num-conns", "50", "--num-calls", "4", "--timeout", "5")
    assert re.search(r"Errors: total 0 ", out) and "Reply status: 1xx=0 2xx=200 3xx=0 4xx=0 5xx=0" in out, out
    return made + 200


# ---------------------------------------------------------------- the backends and the driver (tiny handler)


@needs("ab")
@pytest.mark.parametrize("backend", BACKENDS)
async def test_ab_with_and_without_keep_alive_has_no_failed_request(root, backend, monkeypatch):
    tiny_handler.install(monkeypatch.setattr)
    async with tux_world(root, backend) as (host, driver, base):
        keep = ab_figures(await run(host, "ab", "-q", "-n", "200", "-c", "10", "-k", f"{base}/index.html"))
        assert keep == {"Complete requests": 200, "Failed requests": 0, "Keep-Alive requests": 200,
                        "Non-2xx responses": 0}
        fresh = ab_figures(await run(host, "ab", "-q", "-n", "100", "-c", "10", f"{base}/small.txt"))
        assert fresh["Complete requests"] == 100 and fresh["Failed requests"] == 0
        await settled(driver)
        assert driver.server.stats.requests == {200: 300}
        assert driver.server.stats.connections >= 100 + 10


@needs("wrk")
@needs("httperf")
@pytest.mark.parametrize("backend", BACKENDS)
async def test_wrk_and_httperf_see_no_errors(root, backend, monkeypatch):
    tiny_handler.install(monkeypatch.setattr)
    async with tux_world(root, backend) as (host, driver, base):
        made = await wrk_and_httperf_see_no_errors(host, base, "/small.txt")
        await settled(driver)
        assert driver.server.stats.requests[200] >= made > 200


@needs("curl")
@pytest.mark.parametrize("backend", BACKENDS)
async def test_curl_fetches_a_big_file_byte_exact_and_two_urls_on_one_connection(root, backend, monkeypatch, tmp_path):
    tiny_handler.install(monkeypatch.setattr)
    async with tux_world(root, backend) as (host, driver, base):
        fetched = tmp_path / "fetched.bin"
        out = await run(host, "curl", "-sS", "--max-time", "30", "-o", str(fetched), "-w", "%{http_code}",
                        f"{base}/big.bin")
        assert out == "200" and fetched.read_bytes() == (root / "big.bin").read_bytes()
        out = await run(host, "curl", "-sS", "--max-time", "30", "-w", "%{http_code} %{num_connects}\\n",
                        f"{base}/small.txt", f"{base}/index.html")
        assert out.splitlines() == ["hello", "200 1", "<h1>tux_like</h1>", "200 0"]  # the second reused it
        await settled(driver)


async def test_kernel_net_watches_are_one_shot_and_report_a_ready_socket_at_once():
    name = names()
    async with tun_host(name, name, f"{KERNEL}/24", PYSTACK) as host, trio.open_nursery() as nursery:
        net = KernelNet(host.ns.socket)
        woken = trio.Event()
        net.on_ready = lambda: woken.set()
        nursery.start_soon(net.run)

        async def next_ready() -> list:
            nonlocal woken
            with trio.fail_after(5):
                await woken.wait()
            woken = trio.Event()
            return list(net.take_ready())

        listener = net.listen(KERNEL, 8080, 8)
        net.watch(listener, writable=False)
        client = host.ns.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.connect((KERNEL, 8080))
        assert await next_ready() == [listener]
        sock, peer = net.accept(listener)
        assert peer[0] == KERNEL and net.accept(listener) is None
        client.sendall(b"early")
        net.watch(sock, writable=False)  # the data came before the watch: reported at once
        assert await next_ready() == [sock]
        assert net.recv(sock, 100) == b"early" and net.recv(sock, 100) is None
        net.watch(sock, writable=False)
        client.sendall(b"1")
        assert await next_ready() == [sock]
        client.sendall(b"2")
        await trio.sleep(0.1)
        assert not woken.is_set()  # one-shot: nothing more until the next watch
        net.watch(sock, writable=True)
        assert await next_ready() == [sock]
        assert net.send(sock, b"reply") == 5 and client.recv(100) == b"reply"
        assert net.local_address(sock) == (KERNEL, 8080)
        assert net.recv(sock, 100) == b"12"
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        client.close()  # linger 0: a reset
        await trio.sleep(0.1)
        with pytest.raises(ConnectionError):
            net.recv(sock, 100)
        net.shutdown_write(sock)
        net.close(sock)
        net.close(listener)
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- the command


SERVE_WITH_TINY_HANDLER = (
    "import sys; from tests.tux import tiny_handler; tiny_handler.install(); "
    "from pystack.cli import main; sys.exit(main(sys.argv[1:]))"
)


@needs("curl")
@pytest.mark.parametrize("backend, stop", [("pystack", "sigterm"), ("kernel", "duration")])
def test_pystack_serve_answers_curl_and_stops_cleanly(root, backend, stop):
    name = names()
    duration = "60" if stop == "sigterm" else "6"
    argv = [sys.executable, "-c", SERVE_WITH_TINY_HANDLER, "serve", "--root", str(root), "--netns", name,
            "--tun", name, "--port", "8080", "--duration", duration, *(["--kernel"] if backend == "kernel" else [])]
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=Path(__file__).parents[2])
    try:
        ready = server.stdout.readline().strip()
        address = DEFAULT_ADDRESS if backend == "pystack" else DEFAULT_KERNEL_ADDRESS.split("/")[0]
        assert ready == f"ready http://{address}:8080/", server.stderr.read()
        got = subprocess.run(["ip", "netns", "exec", name, "curl", "-sS", "--max-time", "10", f"http://{address}:8080/small.txt"],
                             capture_output=True, text=True, timeout=30)
        assert got.stdout == "hello\n", got.stderr
        if stop == "sigterm":
            server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0, err
    backend_name = "pystack" if backend == "pystack" else "kernel sockets"
    assert f"tux_like on {backend_name} (http):" in out
    assert "connections: 2 " in out and "requests by status: 200: 1" in out  # the probe and curl
    assert "stage runs: accept_connections" in out
    assert name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


# ---------------------------------------------------------------- the real handlers (once merged)


@needs("curl")
@needs_handler(http)
@pytest.mark.parametrize("backend", BACKENDS)
async def test_curl_keep_alive_head_range_and_if_modified_since(root, backend):
    async with tux_world(root, backend) as (host, driver, base):
        curl = ("curl", "-sS", "--max-time", "20")
        out = await run(host, *curl, "-w", "%{http_code} %{num_connects}\\n", f"{base}/small.txt", f"{base}/index.html")
        assert out.splitlines() == ["hello", "200 1", "<h1>tux_like</h1>", "200 0"]
        head = await run(host, *curl, "-I", f"{base}/small.txt")
        assert head.startswith("HTTP/1.1 200") and re.search(r"(?im)^content-length: 6\r?$", head)
        modified = re.search(r"(?im)^last-modified: (.+?)\r?$", head).group(1)
        assert email.utils.parsedate_to_datetime(modified)
        ranged = await run(host, *curl, "-r", "0-3", "-w", " %{http_code}", f"{base}/small.txt")
        assert ranged == "hell 206"
        unchanged = await run(host, *curl, "-H", f"If-Modified-Since: {modified}", "-w", "%{http_code}",
                              f"{base}/small.txt")
        assert unchanged == "304"
        await settled(driver)


@needs("ab")
@needs_handler(http)
@pytest.mark.parametrize("backend", BACKENDS)
async def test_ab_keep_alive_200_requests_on_the_http_handler(root, backend):
    async with tux_world(root, backend) as (host, driver, base):
        figures = ab_figures(await run(host, "ab", "-q", "-n", "200", "-c", "10", "-k", f"{base}/index.html"))
        assert figures["Complete requests"] == 200 and figures["Failed requests"] == 0
        assert figures["Non-2xx responses"] == 0 and figures["Keep-Alive requests"] == 200
        await settled(driver)


@needs("wrk")
@needs("httperf")
@needs_handler(http)
@pytest.mark.parametrize("backend", BACKENDS)
async def test_wrk_and_httperf_on_the_http_handler(root, backend):
    async with tux_world(root, backend) as (host, driver, base):
        await wrk_and_httperf_see_no_errors(host, base, "/small.txt")
        await settled(driver)


FTPLIB_CLIENT = """
import ftplib, io, json, sys
with ftplib.FTP(sys.argv[1], timeout=20) as client:
    client.login()
    names = sorted(client.nlst())
    listing = []
    client.retrlines("LIST", listing.append)
    data = io.BytesIO()
    client.retrbinary("RETR big.bin", data.write)
    print(json.dumps({"names": names, "listing": listing, "size": len(data.getvalue()),
                      "same": data.getvalue() == open(sys.argv[2], "rb").read()}))
"""


@needs_handler(ftp)
@pytest.mark.parametrize("backend", BACKENDS)
async def test_ftplib_lists_and_fetches_a_file(root, backend):
    async with tux_world(root, backend, protocol="ftp") as (host, driver, base):
        address = base.split("//")[1].split(":")[0]
        out = json.loads(await run(host, sys.executable, "-c", FTPLIB_CLIENT, address, str(root / "big.bin")))
        assert out["names"] == ["big.bin", "index.html", "small.txt"]
        assert len(out["listing"]) == 3 and any(line.endswith("big.bin") for line in out["listing"])
        assert out["size"] == BIG and out["same"]
        await settled(driver)
