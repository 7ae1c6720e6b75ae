"""The real kernel through a TUN device, inside a namespace we create and remove.

Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and /dev/net/tun; without them
these tests skip and say why. Addresses are from 198.18.0.0/15 only.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys

import pytest
import trio
import trio.testing
from scapy.layers.inet import IP, UDP

from pystack.host.netns import Namespace, NeedsNetAdmin, have_net_admin, why_not
from pystack.host.tun import BATCH, TunLink

needs_tun = pytest.mark.skipif(not have_net_admin(), reason=why_not() or "")


def _names() -> tuple[str, str]:
    tag = secrets.token_hex(3)
    return f"pst-t-{tag}", f"pstt{tag}"


def _listed() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def _thread_netns() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


@pytest.mark.parametrize("name", ["", "a" * 16, "has space", "x/y", "dot.ted", "é"])
def test_bad_namespace_names(name: str) -> None:
    with pytest.raises(ValueError, match="namespace name"):
        Namespace(name)


def test_why_not_is_consistent() -> None:
    reason = why_not()
    assert have_net_admin() == (reason is None)
    assert reason is None or "root or CAP_NET_ADMIN" in reason


@pytest.mark.tun
@needs_tun
async def test_kernel_round_trip_through_tun() -> None:
    ns_name, tun_name = _names()
    with Namespace(ns_name) as ns, TunLink(tun_name) as tun:
        assert ns.created and ns_name in _listed()
        ns.move_link(tun.name)
        tun.send_nowait(bytes(20))  # the device is still down: dropped and counted
        assert tun.stats.tx_dropped == 1
        ns.configure_link(tun.name, "198.18.99.1", 24, mtu=1400)
        assert (
            "mtu 1400"
            in ns.run(
                ["ip", "link", "show", tun.name], capture_output=True, text=True, check=True
            ).stdout
        )
        with ns.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw_sock:
            raw_sock.bind(("198.18.99.1", 0))  # only possible inside the namespace
            port = raw_sock.getsockname()[1]
            sock = trio.socket.from_stdlib_socket(raw_sock)
            with trio.fail_after(5):
                # kernel -> TUN: the first packet out is our IPv4 datagram, no IPv6 noise
                await sock.sendto(b"ping", ("198.18.99.2", 9))
                packet = await tun.receive()
                assert packet[0] >> 4 == 4, f"expected IPv4 first, got {packet.hex()}"
                ip = IP(packet)
                assert (ip.src, ip.dst, ip[UDP].sport, ip[UDP].dport) == (
                    "198.18.99.1",
                    "198.18.99.2",
                    port,
                    9,
                )
                assert bytes(ip[UDP].payload) == b"ping"

                # TUN -> kernel: a datagram we craft reaches the socket
                tun.send_nowait(
                    bytes(
                        IP(src="198.18.99.2", dst="198.18.99.1")
                        / UDP(sport=9, dport=port)
                        / b"pong"
                    )
                )
                data, peer = await sock.recvfrom(100)
                assert (data, peer) == (b"pong", ("198.18.99.2", 9))
        assert (tun.stats.rx_packets, tun.stats.tx_packets, tun.stats.tx_dropped) == (1, 1, 1)

        async def receive_until_closed() -> None:
            with pytest.raises(trio.ClosedResourceError):
                await tun.receive()

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive_until_closed)
                await trio.testing.wait_all_tasks_blocked()
                tun.close()
    assert ns_name not in _listed()


@pytest.mark.tun
@needs_tun
async def test_tun_receive_takes_queued_packets_a_batch_at_a_time() -> None:
    """Other tasks run once per BATCH queued packets, not once per packet (nor never)."""
    ns_name, tun_name = _names()
    with Namespace(ns_name) as ns, TunLink(tun_name) as tun:
        ns.move_link(tun.name)
        ns.configure_link(tun.name, "198.18.98.1", 24, mtu=1500)
        count = 3 * BATCH
        with ns.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _ in range(count):  # queued on the TUN before anyone reads
                sock.sendto(b"x", ("198.18.98.2", 9))
        others_ran = 0
        seen = []  # how often the other task had run, after each packet read

        async def other() -> None:
            nonlocal others_ran
            while True:
                others_ran += 1
                await trio.lowlevel.checkpoint()

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(other)
                await trio.lowlevel.checkpoint()  # the other task starts
                for _ in range(count):
                    await tun.receive()
                    seen.append(others_ran)
                nursery.cancel_scope.cancel()
        turns = sum(1 for before, after in zip(seen, seen[1:], strict=False) if after != before)
        assert count // BATCH - 1 <= turns <= count // BATCH


@pytest.mark.tun
@needs_tun
def test_socket_switches_back_even_on_error() -> None:
    home = _thread_netns()
    with Namespace(_names()[0]) as ns:
        with ns.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))  # lo is up in there
        assert _thread_netns() == home
        with pytest.raises(OSError):
            ns.socket(12345, socket.SOCK_DGRAM)  # no such address family
        assert _thread_netns() == home


@pytest.mark.tun
@needs_tun
def test_existing_namespace_is_left_in_place() -> None:
    name = _names()[0]
    with Namespace(name) as outer:
        with Namespace(name) as inner:
            assert not inner.created
        assert outer.exists()
    assert not outer.exists()


@pytest.mark.tun
@needs_tun
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv to drop privileges")
def test_tun_without_net_admin_says_why() -> None:
    code = (
        "from pystack.host.tun import BATCH, TunLink\n"
        "from pystack.host.netns import NeedsNetAdmin\n"
        "try:\n    TunLink('pstnoperm0')\n"
        "except NeedsNetAdmin as exc:\n    print(exc)\n"
    )
    result = subprocess.run(
        ["setpriv", "--bounding-set=-net_admin", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert "root or CAP_NET_ADMIN" in result.stdout and "sudo" in result.stdout
    assert issubclass(NeedsNetAdmin, PermissionError)


def test_sigterm_unwinds_as_ctrl_c(tmp_path):
    """sigterm_as_interrupt: SIGTERM runs the cleanup (finally blocks: where namespaces are
    removed) and the extra callback, instead of killing the process on the spot."""
    marker = tmp_path / "cleaned"
    code = (
        "import os, signal, sys\n"
        "from pystack.host.netns import sigterm_as_interrupt\n"
        "sigterm_as_interrupt(lambda: print('asked to stop', flush=True))\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    signal.pause()\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(3)\n"
        f"finally:\n    open({str(marker)!r}, 'w').close()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 3 and marker.exists() and "asked to stop" in done.stdout
