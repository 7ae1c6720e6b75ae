"""A pystack on TUN facing the real Linux kernel, for the tests that need one.

Each world gets its own namespace and TUN name (from the pid and a
counter), addresses from 198.18.0.0/15, and is torn down on exit. Without
root or CAP_NET_ADMIN the test is skipped with the reason.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from pystack.host.netns import why_not
from pystack.host.tun_host import TunHost, tun_host

KERNEL = "198.18.1.1"
PYSTACK = "198.18.1.2"
_serial = itertools.count()


def skip_without_net_admin() -> None:
    reason = why_not()
    if reason is not None:
        pytest.skip(f"TUN test skipped: {reason}")


@asynccontextmanager
async def kernel_world(mtu: int = 1500) -> AsyncIterator[TunHost]:
    skip_without_net_admin()
    name = f"pstk{os.getpid() % 100000}x{next(_serial)}"[:15]
    async with tun_host(name, name, f"{KERNEL}/24", PYSTACK, mtu, seed=7) as host:
        yield host
