"""pystack against the real Linux kernel over TUN: ping, UDP both ways, errors, fragments."""

from __future__ import annotations

import errno
import socket

import pytest
import trio

from pystack.services import serve_services

from .kernel_world import KERNEL, PYSTACK, kernel_world

pytestmark = pytest.mark.tun


@pytest.mark.parametrize("size", [56, 4000])
async def test_kernel_ping_gets_echo_replies(size):
    async with kernel_world() as world:
        done = await world.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", str(size), PYSTACK])
        assert done.returncode == 0, done.stdout + done.stderr
        assert b"3 received" in done.stdout
        assert world.stack.counters.icmp["OutEchoReps"] == 3
        if size > 1500:
            assert world.stack.counters.ip["ReasmOKs"] == 3
            assert world.stack.counters.ip["FragOKs"] == 3


@pytest.mark.parametrize("size", [5, 1472, 8000])
async def test_kernel_to_pystack_udp(size):
    async with kernel_world() as world:
        server = world.network.socket()
        await server.bind(("0.0.0.0", 5000))
        client = world.kernel_socket(socket.AF_INET, socket.SOCK_DGRAM)
        await client.bind((KERNEL, 40000))
        payload = bytes(i % 251 for i in range(size))
        await client.sendto(payload, (PYSTACK, 5000))
        with trio.fail_after(5):
            data, source = await server.recvfrom(65535)
        assert data == payload
        assert source == (KERNEL, 40000)


@pytest.mark.parametrize("size", [5, 1472, 8000])
async def test_pystack_to_kernel_udp(size):
    async with kernel_world() as world:
        server = world.kernel_socket(socket.AF_INET, socket.SOCK_DGRAM)
        await server.bind((KERNEL, 6000))
        client = world.network.socket()
        payload = bytes((i * 7) % 256 for i in range(size))
        await client.sendto(payload, (KERNEL, 6000))
        with trio.fail_after(5):
            data, source = await server.recvfrom(65535)
        assert data == payload
        assert source[0] == PYSTACK
        assert source[1] == client.getsockname()[1]


async def test_udp_echo_service_answers_kernel():
    async with kernel_world() as world, trio.open_nursery() as nursery:
        await nursery.start(serve_services, world.network)
        client = world.kernel_socket(socket.AF_INET, socket.SOCK_DGRAM)
        await client.connect((PYSTACK, 7))
        await client.send(b"hello, pystack")
        with trio.fail_after(5):
            assert await client.recv(100) == b"hello, pystack"
        nursery.cancel_scope.cancel()


async def test_port_unreachable_refuses_connected_kernel_socket():
    async with kernel_world() as world:
        client = world.kernel_socket(socket.AF_INET, socket.SOCK_DGRAM)
        await client.connect((PYSTACK, 9999))
        await client.send(b"anyone?")
        with trio.fail_after(5), pytest.raises(ConnectionRefusedError):
            await client.recv(100)
        assert world.stack.counters.icmp["OutDestUnreachs"] == 1
        assert world.stack.counters.udp["NoPorts"] == 1


async def test_kernel_port_unreachable_refuses_connected_pystack_socket():
    async with kernel_world() as world:
        client = world.network.socket()
        await client.connect((KERNEL, 9999))
        await client.send(b"anyone?")
        with trio.fail_after(5), pytest.raises(ConnectionRefusedError) as refused:
            await client.recv(100)
        assert refused.value.errno == errno.ECONNREFUSED
        assert world.stack.counters.icmp["InDestUnreachs"] == 1


async def test_pystack_sees_kernel_through_route_mtu_change():
    """A smaller MTU on the pystack side makes it fragment what the kernel reassembles."""
    async with kernel_world(mtu=576) as world:
        server = world.kernel_socket(socket.AF_INET, socket.SOCK_DGRAM)
        await server.bind((KERNEL, 6001))
        client = world.network.socket()
        payload = b"z" * 3000
        await client.sendto(payload, (KERNEL, 6001))
        with trio.fail_after(5):
            data, _ = await server.recvfrom(65535)
        assert data == payload
        assert world.stack.counters.ip["FragCreates"] == 6
