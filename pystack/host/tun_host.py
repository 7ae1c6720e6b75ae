"""A pystack host on a TUN device whose other end is the Linux kernel in a namespace.

The one place that wires namespace, TUN, stack, routes, pcap and driver
together: ``pystack up``, ``make demo``, the benchmarks and the real-kernel
tests all come through here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from ..clock import TrioClock
from ..links import PcapTap, PcapWriter
from ..stack import Stack
from ..trio_api import Network, running
from .netns import Namespace
from .tun import TunLink


@dataclass
class TunHost:
    stack: Stack
    network: Network
    ns: Namespace
    tun: TunLink
    kernel_address: str
    address: str

    def kernel_socket(self, family: int, type: int) -> trio.socket.SocketType:
        """A trio socket wrapping a kernel socket inside the namespace."""
        return trio.socket.from_stdlib_socket(self.ns.socket(family, type))

    async def run(self, argv: Sequence[str], stdin: bytes = b"", timeout: float = 30) -> trio.CompletedProcess:
        """Run a command in the namespace; output captured, never raises on failure."""
        with trio.fail_after(timeout):
            return await trio.run_process(
                ["ip", "netns", "exec", self.ns.name, *argv],
                stdin=stdin,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )


@asynccontextmanager
async def tun_host(
    netns: str,
    tun: str,
    kernel_address: str,
    address: str,
    mtu: int = 1500,
    pcap: str | None = None,
    seed: int | None = None,
) -> AsyncIterator[TunHost]:
    """Bring a stack up at ``address`` with the kernel at ``kernel_address`` (ADDR/LEN).

    The namespace is created (and removed afterwards) unless it exists;
    the stack's default route points at the kernel, so all its traffic
    stays in the namespace.
    """
    kernel = ipaddress.IPv4Interface(kernel_address)
    prefixlen = kernel.network.prefixlen
    stack = Stack(clock=TrioClock(), seed=seed)
    with Namespace(netns) as ns, TunLink(tun, mtu) as link:
        ns.move_link(tun)
        ns.configure_link(tun, str(kernel.ip), prefixlen, mtu)
        stack.add_interface(tun, address, prefixlen, mtu)
        stack.add_route("0.0.0.0", 0, tun, gateway=str(kernel.ip))
        writer = PcapWriter(pcap) if pcap else None
        try:
            async with running(stack, {tun: PcapTap(link, writer) if writer else link}) as network:
                yield TunHost(stack, network, ns, link, str(kernel.ip), address)
        finally:
            if writer is not None:
                writer.close()
