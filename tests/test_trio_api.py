"""The trio layer: blocking semantics, wake-ups, cancellation, timers, in virtual time."""

from __future__ import annotations

import subprocess
import sys

import pytest
import trio
from scapy.layers.inet import IP, UDP, fragment
from scapy.packet import Raw

from pystack.clock import MonotonicClock, TrioClock, VirtualClock
from pystack.links import memory_link_pair
from pystack.socket import AF_INET, MSG_DONTWAIT, SOCK_DGRAM, SOCK_NONBLOCK
from pystack.stack import Stack
from pystack.trio_api import running

PEER, ME = "198.18.0.1", "198.18.0.2"


def make_stack() -> Stack:
    stack = Stack(clock=TrioClock(), seed=3)
    stack.add_interface("mem0", ME, 24)
    return stack


def udp_from_peer(dport: int, payload: bytes, sport: int = 40000) -> bytes:
    return bytes(IP(src=PEER, dst=ME) / UDP(sport=sport, dport=dport) / Raw(payload))


async def test_recvfrom_blocks_until_a_datagram_arrives(autojump_clock):
    ours, theirs = memory_link_pair()
    async with running(make_stack(), {"mem0": ours}) as net:
        sock = net.socket()
        await sock.bind(("0.0.0.0", 5000))

        async def send_later():
            await trio.sleep(2.5)
            theirs.send_nowait(udp_from_peer(5000, b"late"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_later)
            data, peer = await sock.recvfrom(100)
        assert (data, peer) == (b"late", (PEER, 40000))
        assert trio.current_time() == pytest.approx(2.5)


async def test_nonblocking_calls_raise_instead_of_waiting(autojump_clock):
    ours, _theirs = memory_link_pair()
    async with running(make_stack(), {"mem0": ours}) as net:
        sock = net.socket()
        await sock.bind(("0.0.0.0", 5001))
        with pytest.raises(BlockingIOError):
            await sock.recvfrom(100, MSG_DONTWAIT)
        nonblocking = net.socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK)
        await nonblocking.bind(("0.0.0.0", 5002))
        with pytest.raises(BlockingIOError):
            await nonblocking.recv(100)
        assert trio.current_time() == 0


async def test_waiting_recv_can_be_cancelled_and_socket_still_works(autojump_clock):
    ours, theirs = memory_link_pair()
    async with running(make_stack(), {"mem0": ours}) as net:
        sock = net.socket()
        await sock.bind(("0.0.0.0", 5003))
        with trio.move_on_after(1) as scope:
            await sock.recv(100)
        assert scope.cancelled_caught
        theirs.send_nowait(udp_from_peer(5003, b"after"))
        assert await sock.recv(100) == b"after"


async def test_close_wakes_a_waiting_reader_with_ebadf(autojump_clock):
    ours, _theirs = memory_link_pair()
    async with running(make_stack(), {"mem0": ours}) as net:
        sock = net.socket()
        await sock.bind(("0.0.0.0", 5004))

        async def close_later():
            await trio.sleep(1)
            sock.close()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(close_later)
            with pytest.raises(OSError) as closed:
                await sock.recv(100)
        assert closed.value.errno == 9  # EBADF


async def test_reassembly_timer_fires_in_virtual_time(autojump_clock):
    ours, theirs = memory_link_pair()
    stack = make_stack()
    async with running(stack, {"mem0": ours}):
        first = fragment(IP(src=PEER, dst=ME, id=5) / UDP(sport=1, dport=2) / Raw(b"q" * 3000), 1480)[0]
        theirs.send_nowait(bytes(first))
        await trio.sleep(29)
        assert stack.counters.ip["ReasmTimeout"] == 0
        with trio.fail_after(5):
            reply = IP(await theirs.receive())
        assert stack.counters.ip["ReasmTimeout"] == 1
        assert reply.proto == 1 and bytes(reply.payload)[:2] == b"\x0b\x01"  # time exceeded, reassembly
        assert trio.current_time() == pytest.approx(30, abs=0.01)


async def test_udp_over_lossy_reordering_link_delivers_only_intact_datagrams(autojump_clock):
    from pystack.links import Impairments

    bad = Impairments(loss=0.05, duplicate=0.05, reorder=0.1, corrupt=0.05, delay=0.002)
    ours, theirs = memory_link_pair(bad, bad, seed=11)
    stack = make_stack()
    async with running(stack, {"mem0": ours}) as net:
        sock = net.socket()
        await sock.bind(("0.0.0.0", 5005))
        sent = {i: bytes([i % 256]) * (100 + i) for i in range(500)}
        for i, payload in sent.items():
            theirs.send_nowait(udp_from_peer(5005, payload, sport=10000 + i))
        got = []
        with trio.move_on_after(1):
            while True:
                got.append(await sock.recvfrom(2048))
    assert 400 < len(got) < 560
    for data, (_host, port) in got:
        assert data == sent[port - 10000]  # corrupted datagrams were dropped by the checksum
    assert stack.counters.udp["InCsumErrors"] + stack.counters.total_drops("ip") > 0


def test_core_modules_do_not_import_trio():
    core = ["pystack.stack", "pystack.ip", "pystack.udp", "pystack.icmp", "pystack.reassembly",
            "pystack.route", "pystack.wire.ipv4", "pystack.wire.udp", "pystack.wire.icmp", "pystack.clock"]
    code = f"import sys; [__import__(m) for m in {core!r}]; print('trio' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"



@pytest.mark.parametrize("clock", [VirtualClock, MonotonicClock])
async def test_the_driver_refuses_a_stack_on_another_clock(clock):
    """A deadline on another clock is never reached on trio's: the timer task would spin."""
    stack = Stack(clock=clock(), seed=3)
    stack.add_interface("mem0", ME, 24)
    ours, _theirs = memory_link_pair()
    with trio.move_on_after(1), pytest.raises(TypeError, match="TrioClock"):
        async with running(stack, {"mem0": ours}):
            pass


async def test_a_megabyte_over_loopback_arrives_without_challenge_acks(autojump_clock):
    stack = Stack(clock=TrioClock(), seed=3)
    total = 1_000_000
    async with running(stack, {}) as net, trio.open_nursery() as nursery:
        async def handler(stream) -> None:
            await stream.send_all(bytes(total))
            await stream.aclose()

        await nursery.start(lambda task_status: net.serve_tcp(handler, 5000, host="127.0.0.1",
                                                               task_status=task_status))
        client = await net.open_tcp_stream("127.0.0.1", 5000)
        got = 0
        with trio.move_on_after(60):
            while data := await client.receive_some(65536):
                got += len(data)
        nursery.cancel_scope.cancel()
    assert (got, stack.counters.tcp["ChallengeACK"]) == (total, 0)
