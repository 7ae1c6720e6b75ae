"""pystack TCP against the Linux kernel's TCP over TUN: both directions, 10 MB, byte-exact."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket

import pytest
import trio

from pystack.services import serve_services

from .kernel_world import KERNEL, PYSTACK, kernel_world

pytestmark = pytest.mark.tun
TEN_MB = 10 * 1024 * 1024


async def send_everything(sock: trio.socket.SocketType, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        sent = await sock.send(view[:65536])
        view = view[sent:]


async def test_kernel_client_sends_10mb_to_pystack_server():
    payload = os.urandom(TEN_MB)
    async with kernel_world() as world:
        received = hashlib.sha256()
        count = 0
        done = trio.Event()

        async def handler(stream):
            nonlocal count
            while data := await stream.receive_some():
                received.update(data)
                count += len(data)
            await stream.aclose()
            done.set()

        async with trio.open_nursery() as nursery:
            await nursery.start(world.network.serve_tcp, handler, 5001)
            client = world.kernel_socket(socket.AF_INET, socket.SOCK_STREAM)
            with trio.fail_after(120):
                await client.connect((PYSTACK, 5001))
                await send_everything(client, payload)
                client.shutdown(socket.SHUT_WR)
                await done.wait()
            client.close()
            nursery.cancel_scope.cancel()
        assert count == TEN_MB
        assert received.digest() == hashlib.sha256(payload).digest()


async def test_pystack_client_sends_10mb_to_kernel_server():
    payload = os.urandom(TEN_MB)
    async with kernel_world() as world:
        server = world.kernel_socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await server.bind((KERNEL, 5002))
        server.listen(1)
        received = hashlib.sha256()
        count = 0

        async def kernel_side():
            nonlocal count
            conn, _ = await server.accept()
            while data := await conn.recv(1 << 20):
                received.update(data)
                count += len(data)
            conn.close()

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(kernel_side)
                stream = await world.network.open_tcp_stream(KERNEL, 5002)
                await stream.send_all(payload)
                await stream.send_eof()
        await stream.aclose()
        server.close()
        assert count == TEN_MB
        assert received.digest() == hashlib.sha256(payload).digest()


async def test_echo_both_ways_with_kernel_client():
    async with kernel_world() as world, trio.open_nursery() as nursery:
        await nursery.start(serve_services, world.network)
        client = world.kernel_socket(socket.AF_INET, socket.SOCK_STREAM)
        payload = os.urandom(1 << 20)
        echoed = bytearray()
        with trio.fail_after(60):
            await client.connect((PYSTACK, 7))

            async def reader():
                while data := await client.recv(1 << 16):
                    echoed.extend(data)

            async with trio.open_nursery() as inner:
                inner.start_soon(reader)
                await send_everything(client, payload)
                client.shutdown(socket.SHUT_WR)
        client.close()
        assert bytes(echoed) == payload
        nursery.cancel_scope.cancel()


@pytest.mark.skipif(shutil.which("nc") is None, reason="needs nc (Debian package netcat-openbsd)")
async def test_kernel_nc_session_with_pystack_echo():
    async with kernel_world() as world, trio.open_nursery() as nursery:
        await nursery.start(serve_services, world.network)
        with trio.fail_after(30):
            done = await trio.run_process(
                ["ip", "netns", "exec", world.ns.name, "nc", "-N", "-w", "5", PYSTACK, "7"],
                stdin=b"hello from nc\n", capture_stdout=True, capture_stderr=True, check=False,
            )
        assert done.returncode == 0, done.stderr
        assert done.stdout == b"hello from nc\n"
        nursery.cancel_scope.cancel()


async def test_connect_to_closed_kernel_port_is_refused():
    async with kernel_world() as world:
        with trio.fail_after(10), pytest.raises(ConnectionRefusedError):
            await world.network.open_tcp_stream(KERNEL, 5999)
