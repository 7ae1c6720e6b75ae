"""A pystack on a TUN device whose other end is the Linux kernel in a fresh namespace.

Shared by the tests that talk to the real kernel. Each world gets its own
namespace and TUN name (from the pid and a counter), addresses from
198.18.0.0/15, and is torn down on exit.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
import trio

from pystack.clock import TrioClock
from pystack.links import TunLink
from pystack.netns import Namespace, why_not
from pystack.stack import Stack
from pystack.trio_api import Network, running

KERNEL = "198.18.1.1"
PYSTACK = "198.18.1.2"
_serial = itertools.count()


@dataclass
class KernelWorld:
    ns: Namespace
    network: Network
    stack: Stack
    tun: TunLink

    def kernel_socket(self, family: int, type: int) -> trio.socket.SocketType:
        """A trio socket wrapping a kernel socket inside the namespace."""
        return trio.socket.from_stdlib_socket(self.ns.socket(family, type))

    async def run(self, *argv: str) -> trio.CompletedProcess:
        """Run a command in the namespace; output captured, never raises on failure."""
        with trio.fail_after(30):
            return await trio.run_process(
                ["ip", "netns", "exec", self.ns.name, *argv],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )


def skip_without_net_admin() -> None:
    reason = why_not()
    if reason is not None:
        pytest.skip(f"TUN test skipped: {reason}")


@asynccontextmanager
async def kernel_world(mtu: int = 1500) -> AsyncIterator[KernelWorld]:
    skip_without_net_admin()
    name = f"pstk{os.getpid() % 100000}x{next(_serial)}"[:15]
    with Namespace(name) as ns, TunLink(name, mtu) as tun:
        ns.move_link(name)
        ns.configure_link(name, KERNEL, 24, mtu)
        stack = Stack(clock=TrioClock(), seed=7)
        stack.add_interface(name, PYSTACK, 24, mtu)
        stack.add_route("0.0.0.0", 0, name, gateway=KERNEL)
        async with running(stack, {name: tun}) as network:
            yield KernelWorld(ns, network, stack, tun)
