"""The trio driver and the pystack backend without root: server and clients on two stacks.

The tiny handler (tests/tux/tiny_handler.py) stands in for HTTP, so that
what is tested here is the carrying: readiness from the stack's wake-ups,
worker jobs, writes that wait for room, timers on trio's clock, the stop
action, and nothing left behind.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from pystack.clock import TrioClock, VirtualClock
from pystack.driver import Driver
from pystack.links import memory_link_pair
from pystack.socket import AF_INET, POLLERR, POLLHUP, POLLIN, POLLOUT, SOCK_DGRAM, SOCK_STREAM
from pystack.stack import Stack
from pystack.tcp.api import SHUT_WR
from pystack.trio_api import Network, running
from tux_like.backends import connection_error
from tux_like.backends.pystack_net import PystackNet
from tux_like.config import make_config
from tux_like.driver import ServerDriver, serving

from . import tiny_handler

PORT = 8080
SERVER, CLIENT = "198.18.3.2", "198.18.3.1"
BIG = 3_000_000  # more than a socket's send buffer and the window: the server's writes must wait for room


@pytest.fixture
def root(tmp_path, monkeypatch):
    tiny_handler.install(monkeypatch.setattr)
    (tmp_path / "small.txt").write_bytes(b"hello\n")
    (tmp_path / "big.bin").write_bytes(bytes(range(256)) * (BIG // 256))
    return tmp_path


@asynccontextmanager
async def world(root, workers: int = 8, **settings) -> AsyncIterator[tuple[Network, ServerDriver]]:
    """The server on one stack, the clients on another, a memory link between them."""
    server_link, client_link = memory_link_pair()
    server_stack, client_stack = Stack(clock=TrioClock(), seed=1), Stack(clock=TrioClock(), seed=2)
    server_stack.add_interface("mem0", SERVER, 24)
    client_stack.add_interface("mem0", CLIENT, 24)
    config = make_config({"document_root": str(root), "listen": f"{SERVER}:{PORT}", **settings})
    async with running(server_stack, {"mem0": server_link}) as network, \
            running(client_stack, {"mem0": client_link}) as clients, \
            serving(config, PystackNet(network.driver), workers=workers) as driver:
        yield clients, driver


async def read_response(stream, buffered: bytearray) -> tuple[bytes, bytes]:
    """One response (head, body) off ``stream``; bytes past it stay in ``buffered``."""
    while b"\r\n\r\n" not in buffered:
        data = await stream.receive_some(65536)
        assert data, f"the server closed before a whole head: {bytes(buffered)!r}"
        buffered += data
    head, _, _ = bytes(buffered).partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    end = len(head) + 4 + length
    while len(buffered) < end:
        data = await stream.receive_some(65536)
        assert data, "the server closed in the middle of a body"
        buffered += data
    body = bytes(buffered[len(head) + 4:end])
    del buffered[:end]
    return head, body


async def settled(driver: ServerDriver) -> None:
    """Wait (a bounded while) for every connection to end on the server's side."""
    with trio.fail_after(5):
        while driver.server.live_connections():
            await trio.sleep(0.01)
    assert driver.server.live_objects() == 0


async def test_keep_alive_pipelining_big_bodies_and_a_missing_file(root):
    async with world(root) as (network, driver):
        stream = await network.open_tcp_stream(SERVER, PORT)
        buffered = bytearray()
        with trio.fail_after(10):
            await stream.send_all(b"GET /small.txt HTTP/1.1\r\n\r\n")
            head, body = await read_response(stream, buffered)
            assert head.startswith(b"HTTP/1.1 200") and body == b"hello\n"
            await stream.send_all(b"GET /big.bin HTTP/1.1\r\n\r\nGET /nothing HTTP/1.1\r\n\r\n"
                                  b"GET /small.txt HTTP/1.1\r\nConnection: close\r\n\r\n")
            _, body = await read_response(stream, buffered)
            assert body == (root / "big.bin").read_bytes()
            head, _ = await read_response(stream, buffered)
            assert head.startswith(b"HTTP/1.1 404")
            _, body = await read_response(stream, buffered)
            assert body == b"hello\n"
            assert await stream.receive_some() == b""  # Connection: close
        await stream.aclose()
        await settled(driver)
        stats, runs = driver.server.stats, driver.server.threads[0].scheduler.stage_runs
        assert stats.connections == 1 and stats.requests == {200: 3, 404: 1}
        assert runs["respond"] == 4 and runs["write"] > 4  # the big body waited for room
        assert runs["accept_connections"] >= 1


@pytest.mark.parametrize("threads", [1, 2])
async def test_fifty_concurrent_clients(root, threads):
    async with world(root, threads=threads) as (network, driver):
        bodies = []

        async def client():
            stream = await network.open_tcp_stream(SERVER, PORT)
            buffered = bytearray()
            for _ in range(3):
                await stream.send_all(b"GET /small.txt HTTP/1.1\r\n\r\n")
                bodies.append((await read_response(stream, buffered))[1])
            await stream.aclose()

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for _ in range(50):
                    nursery.start_soon(client)
        assert bodies == [b"hello\n"] * 150
        await settled(driver)
        assert driver.server.stats.connections == 50


async def test_an_idle_connection_is_closed_by_its_timer_on_trios_clock(root):
    async with world(root, keepalive_timeout=0.2) as (network, driver):
        stream = await network.open_tcp_stream(SERVER, PORT)
        await stream.send_all(b"GET /small.txt HTTP/1.1\r\n\r\n")
        await read_response(stream, bytearray())
        started = trio.current_time()
        with trio.fail_after(5):
            assert await stream.receive_some() == b""
        assert 0.15 < trio.current_time() - started < 2
        assert abs(driver.server.threads[0].now - time.time()) < 5  # wall-clock seconds, for Date headers
        await settled(driver)
        await stream.aclose()


async def test_stop_closes_every_connection_and_frees_everything(root):
    async with world(root) as (network, driver):
        streams = [await network.open_tcp_stream(SERVER, PORT) for _ in range(3)]
        with trio.fail_after(5):
            while driver.server.live_connections() < 3:
                await trio.sleep(0.01)
        driver.action("stop")
        assert driver.server.live_connections() == 0 and driver.server.live_objects() == 0
        for stream in streams:
            with trio.fail_after(5):
                assert await stream.receive_some() == b""
            await stream.aclose()
        assert not driver.server.running
        with pytest.raises(OSError):
            await network.open_tcp_stream(SERVER, PORT)  # the listener is gone


async def test_the_action_call_stops_starts_again_and_registers_a_mime_type(root):
    async with world(root) as (network, driver):
        driver.action("register_mime", extension="tux", type="text/x-tux")
        assert driver.server.mime_type("tux") == "text/x-tux"
        driver.action("stop")
        with pytest.raises(OSError):
            await network.open_tcp_stream(SERVER, PORT)
        driver.action("start")
        stream = await network.open_tcp_stream(SERVER, PORT)
        await stream.send_all(b"GET /small.txt HTTP/1.1\r\nConnection: close\r\n\r\n")
        with trio.fail_after(5):
            _, body = await read_response(stream, bytearray())
        assert body == b"hello\n"
        await stream.aclose()
        await settled(driver)


async def test_past_max_connect_a_client_gets_503(root):
    async with world(root, max_connect=2) as (network, driver):
        held = [await network.open_tcp_stream(SERVER, PORT) for _ in range(2)]
        extra = await network.open_tcp_stream(SERVER, PORT)
        with trio.fail_after(5):
            head, _ = await read_response(extra, bytearray())
        assert head.startswith(b"HTTP/1.1 503")
        assert driver.server.stats.refused == 1
        for stream in [*held, extra]:
            await stream.aclose()
        await settled(driver)


async def test_a_worker_failure_is_the_requests_answer_and_workers_are_bounded(root, monkeypatch):
    running_now, most, lock = 0, 0, threading.Lock()

    def slow_read(self):
        nonlocal running_now, most
        with lock:
            running_now += 1
            most = max(most, running_now)
        time.sleep(0.05)
        with lock:
            running_now -= 1
        raise FileNotFoundError(self)

    monkeypatch.setattr("pathlib.Path.read_bytes", slow_read)
    async with world(root, workers=2) as (network, driver):

        async def client():
            stream = await network.open_tcp_stream(SERVER, PORT)
            await stream.send_all(b"GET /small.txt HTTP/1.1\r\n\r\n")
            head, _ = await read_response(stream, bytearray())
            assert head.startswith(b"HTTP/1.1 404")
            await stream.aclose()

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for _ in range(6):
                    nursery.start_soon(client)
        await settled(driver)
    assert most == 2


# ---------------------------------------------------------------- Stack.poll and Driver.watch


def test_poll_reports_what_a_call_would_not_block_on():
    stack = Stack(clock=VirtualClock())
    listener = stack.socket(AF_INET, SOCK_STREAM)
    stack.bind(listener, ("127.0.0.1", PORT))
    stack.listen(listener)
    assert stack.poll(listener) == 0
    client = stack.socket(AF_INET, SOCK_STREAM)
    with pytest.raises(BlockingIOError):
        stack.connect(client, ("127.0.0.1", PORT))  # the handshake runs through loopback at once
    assert stack.poll(listener) == POLLIN
    server, _ = stack.accept(listener)
    assert stack.poll(listener) == 0
    assert stack.poll(server) == POLLOUT
    stack.send(client, b"x")
    assert stack.poll(server) == POLLIN | POLLOUT
    stack.recv(server, 10)
    assert stack.poll(server) == POLLOUT
    stack.shutdown(client, SHUT_WR)
    assert stack.poll(server) == POLLIN | POLLOUT  # end of stream: recv returns b""
    stack.connect(server, None)  # abort: a reset to the client
    assert stack.poll(client) == POLLIN | POLLOUT | POLLERR | POLLHUP
    with pytest.raises(ConnectionResetError):
        stack.recv(client, 10)
    udp = stack.socket(AF_INET, SOCK_DGRAM)
    stack.bind(udp, ("127.0.0.1", 7))
    assert stack.poll(udp) == POLLOUT
    stack.sendto(udp, b"ping", 0, ("127.0.0.1", 7))
    assert stack.poll(udp) == POLLIN | POLLOUT
    with pytest.raises(OSError) as bad:
        stack.poll(999)
    assert bad.value.errno == errno.EBADF


async def test_driver_watch_calls_back_on_each_wake_until_unwatched():
    async with running(Stack(clock=TrioClock()), {}) as network:
        stack, woken = network.stack, []
        listener = stack.socket(AF_INET, SOCK_STREAM)
        stack.bind(listener, ("127.0.0.1", PORT))
        stack.listen(listener)
        network.driver.watch(listener, woken.append)
        first = await network.open_tcp_stream("127.0.0.1", PORT)
        assert woken and set(woken) == {listener}
        network.driver.watch(listener, None)
        count = len(woken)
        second = await network.open_tcp_stream("127.0.0.1", PORT)
        assert len(woken) == count
        await first.aclose()
        await second.aclose()


async def test_pystack_net_watches_are_one_shot_and_report_a_ready_socket_at_once():
    stack = Stack(clock=TrioClock())
    net = PystackNet(Driver(stack, {}))
    listener = net.listen("127.0.0.1", PORT, 8)
    net.watch(listener, writable=False)
    assert not net.ready
    client = stack.socket(AF_INET, SOCK_STREAM)
    with pytest.raises(BlockingIOError):
        stack.connect(client, ("127.0.0.1", PORT))  # loopback: established at once
    assert list(net.take_ready()) == [listener]
    sock, peer = net.accept(listener)
    assert peer[0] == "127.0.0.1" and net.accept(listener) is None
    stack.send(client, b"early")
    net.watch(sock, writable=False)  # the data came before the watch: reported at once
    assert list(net.take_ready()) == [sock]
    assert net.recv(sock, 100) == b"early" and net.recv(sock, 100) is None
    net.watch(sock, writable=False)
    assert not net.ready
    stack.send(client, b"1")
    stack.send(client, b"2")
    assert list(net.take_ready()) == [sock]  # one-shot: one report for the two
    net.watch(sock, writable=True)
    assert list(net.take_ready()) == [sock]  # room to send
    assert net.send(sock, b"reply") == 5 and stack.recv(client, 100) == b"reply"
    assert net.recv(sock, 100) == b"12"
    assert net.local_address(sock) == ("127.0.0.1", PORT)
    stack.connect(client, None)  # the client resets
    with pytest.raises(ConnectionError):
        net.recv(sock, 100)
    net.shutdown_write(sock)  # on a dead connection: nothing to say
    net.close(sock)
    net.close(listener)
    assert sock not in stack.sockets and listener not in stack.sockets


def test_every_socket_error_reaches_the_stages_as_a_connection_error():
    timed_out = TimeoutError(errno.ETIMEDOUT, "Connection timed out")
    gone = connection_error(timed_out)
    assert isinstance(gone, ConnectionError) and gone.errno == errno.ETIMEDOUT and gone.__cause__ is timed_out
    reset = ConnectionResetError(errno.ECONNRESET, "reset")
    assert connection_error(reset) is reset
