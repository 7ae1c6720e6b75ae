"""The device under test (DUT): one interface, two implementations.

In the style of gVisor's packetimpact, the test bench owns one end of a
point-to-point IPv4 link and the DUT sits at the other end:

- :class:`LinuxDut`: the Linux kernel inside a network namespace this
  module creates (and removes), reached through a TUN device whose file
  descriptor the *test bench* holds. Packets the bench writes into the
  TUN arrive at the kernel; what the kernel sends comes out of it.
  Socket calls run on real kernel sockets created inside the namespace.
- :class:`PystackDut`: pystack in this process, on an in-memory link,
  driven by the ordinary trio driver. Run it under
  ``trio.testing.MockClock(autojump_threshold=0)`` (:func:`run_on` does)
  and time is virtual: a script's 60-second timer costs nothing and every
  run sees the same instants.

Both stamp every packet the DUT sends with ``trio.current_time()`` when it
leaves (a reader task for the TUN, the interface sink for pystack), and
take injected packets synchronously: the kernel processes a TUN write
before ``write`` returns, and :meth:`PystackDut.inject` calls
``stack.input`` directly, so "inject, then call accept()" means the same
on both.

Socket calls go through :class:`DutSocket`, whose methods have blocking
socket semantics unless the socket was made non-blocking (O_NONBLOCK) or
the call passes MSG_DONTWAIT, as the kernel's do.

Kernel settings (sysctls) are set per namespace; pystack gets the
corresponding :class:`~pystack.tcp.tcb.TcpConfig` values where it has
them (:func:`pystack_tcp_config`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import itertools
import math
import os
import re
import select
import shutil
import socket as _socket
import struct
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytun
import trio
import trio.testing

from pystack.clock import TrioClock
from pystack.host.netns import Namespace, NeedsNetAdmin, why_not
from pystack.host.tun import TunLink
from pystack.links.base import Link, LinkStats
from pystack.procfs import proc_net_tcp, proc_net_tcp6
from pystack.socket import F_SETFL, O_NONBLOCK, POLLERR, POLLHUP, BadUserBuffer
from pystack.stack import Stack
from pystack.tcp.congestion import ALGORITHMS
from pystack.tcp.fastopen import parse_key
from pystack.tcp.mtu import TIMESTAMP_OPTION_LEN
from pystack.tcp.output import unsent_bytes
from pystack.tcp.tcb import LINUX_STATES, TcpConfig
from pystack.trio_api import Network, PyStackSocket, running

T = TypeVar("T")

# The link between bench and DUT: a /24 from the benchmarking range.
DUT_ADDRESS = "198.18.20.1"
BENCH_ADDRESS = "198.18.20.2"
PREFIXLEN = 24
MTU = 1500
IFNAME = "tun0"  # pystack's interface name (the kernel's TUN gets a unique name)

SPIN = 0.001  # real-time waits sleep until this long before their deadline, then spin
SPIN_LIMIT = 1_000_000  # bound on spin iterations
MSG_DONTWAIT = int(_socket.MSG_DONTWAIT)
TCP_INFO = 11
MSG_ERRQUEUE = 0x2000
MSG_FASTOPEN = 0x20000000
TCP_SYN_SENT = 2  # tcp_info's state number
TCPI_OPT_TIMESTAMPS, TCPI_OPT_SACK, TCPI_OPT_WSCALE, TCPI_OPT_ECN, TCPI_OPT_SYN_DATA = 1, 2, 4, 8, 32
EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD = 1, 2, 3
EPOLLONESHOT, EPOLLET = 1 << 30, 1 << 31

DUT_KINDS = ("linux", "pystack")
SIOCETHTOOL = 0x8946
# Legacy ethtool commands that set one offload (struct ethtool_value {u32 cmd, data}).
ETHTOOL_SET = {"tso": 0x1F, "gso": 0x24, "gro": 0x2C}
UPSTREAM_REMOTE = "192.0.2.1"  # packetdrill's default remote address, as scripts' commands name it


class Unsupported(Exception):
    """Something the pystack DUT does not have ("pystack has no epoll"): a mismatch, not a skip."""


class Absent(Exception):
    """A kernel feature this host lacks (a qdisc not built in): the script cannot run here, a skip."""


# ---------------------------------------------------------------- settings

# packetdrill's gtests/net/common/defaults.sh, as sysctl values. The few
# that need no emulation here are left out: `ip tcp_metrics flush` (a new
# namespace has no metrics), net.ipv4.tcp_fack (obsolete since Linux 4.15,
# RACK replaced FACK), net.mptcp.enabled (no MPTCP); the `tc qdisc ... pfifo`
# line becomes LinuxDut's qdisc setting.
PACKETDRILL_DEFAULTS: dict[str, str] = {
    "net.ipv4.tcp_rmem": "4096 540000 15728640",
    "net.ipv4.tcp_wmem": "4096 262144 4194304",
    "net.ipv4.tcp_timestamps": "1",
    "net.ipv4.tcp_syn_retries": "5",
    "net.ipv4.tcp_synack_retries": "5",
    "net.ipv4.tcp_frto": "2",
    "net.ipv4.tcp_sack": "1",
    "net.ipv4.tcp_dsack": "1",
    "net.ipv4.tcp_reordering": "3",
    "net.ipv4.tcp_congestion_control": "cubic",
    "net.ipv4.tcp_slow_start_after_idle": "0",
    "net.ipv4.tcp_early_retrans": "4",
    "net.ipv4.tcp_recovery": "1",
    "net.ipv4.tcp_tso_win_divisor": "3",
    "net.ipv4.tcp_ecn": "0",
    "net.ipv4.tcp_ecn_option": "2",
    "net.ipv4.tcp_pacing_ss_ratio": "200",
    "net.ipv4.tcp_pacing_ca_ratio": "120",
    "net.ipv4.tcp_notsent_lowat": "4294967295",
    "net.ipv4.tcp_fastopen": str(0x70403),
    "net.ipv4.tcp_fastopen_key": "a1a1a1a1-b2b2b2b2-c3c3c3c3-d4d4d4d4",
    "net.ipv4.tcp_syncookies": "1",
}

# Linux's own rmem_max default (net.core.rmem_max is not per namespace);
# pystack's window scale comes from max(tcp_rmem[2], this), as Linux's does.
_RMEM_MAX = 212992
_TCP_MAX_WSCALE = 14


@dataclass
class DutConfig:
    """What a DUT is set up with: sysctls (Linux names and values) and the link MTU."""

    sysctls: dict[str, str] = field(default_factory=dict)
    mtu: int = MTU
    seed: int = 1
    realtime_priority: bool = True  # Linux: run SCHED_RR while the DUT is open (timing-exact scripts)
    gso_injection: bool = False  # Linux: frame the tun with virtio-net headers, to inject GSO packets


# Sysctls that are one number, and the TcpConfig attribute each sets (and how the number reads).
_SYSCTL_NUMBERS: dict[str, tuple[str, Callable[[int], object]]] = {
    "tcp_invalid_ratelimit": ("invalid_ratelimit", lambda ms: ms / 1000),
    "tcp_slow_start_after_idle": ("slow_start_after_idle", bool),
    "tcp_syn_retries": ("syn_retries", int),
    "tcp_synack_retries": ("synack_retries", int),
    "tcp_early_retrans": ("early_retrans", int),
    "tcp_frto": ("frto", int),
    "tcp_recovery": ("recovery", int),
    "tcp_reordering": ("reordering", int),
    "tcp_fin_timeout": ("fin_timeout", float),
    "tcp_keepalive_time": ("keepalive_time", float),
    "tcp_keepalive_intvl": ("keepalive_intvl", float),
    "tcp_keepalive_probes": ("keepalive_probes", int),
    "tcp_mtu_probing": ("mtu_probing", int),
    "tcp_base_mss": ("base_mss", int),
    "tcp_probe_threshold": ("probe_threshold", int),
    "tcp_probe_interval": ("probe_interval", float),
    "tcp_min_tso_segs": ("min_tso_segs", int),
}


def pystack_tcp_config(sysctls: dict[str, str], cfg: TcpConfig | None = None) -> tuple[TcpConfig, list[str]]:
    """The TcpConfig that plays the part of ``sysctls`` on pystack (``cfg`` changed, or a new one),
    and what has no counterpart."""
    cfg = TcpConfig() if cfg is None else cfg
    unmodelled: list[str] = []
    for name, value in sysctls.items():
        key = name.removeprefix("net.ipv4.")
        numbers = [int(v, 0) for v in value.split()] if _is_numeric(value) else []
        if key == "tcp_rmem" and len(numbers) == 3:
            cfg.rmem_default = numbers[1]
            space = max(numbers[2], _RMEM_MAX)
            cfg.window_scale = max(0, min(space.bit_length() - 1 - 15, _TCP_MAX_WSCALE))
        elif key == "tcp_wmem" and len(numbers) == 3:
            cfg.wmem_default, cfg.wmem_max = numbers[1], numbers[2]
        elif key == "tcp_timestamps" and numbers:
            cfg.timestamps = numbers[0] != 0
        elif key == "tcp_sack" and numbers:
            cfg.sack = numbers[0] != 0
        elif key in _SYSCTL_NUMBERS and numbers:
            attr, kind = _SYSCTL_NUMBERS[key]
            setattr(cfg, attr, kind(numbers[0]))
        elif key == "tcp_congestion_control" and value in ALGORITHMS:
            cfg.congestion_control = value
        elif key == "tcp_ecn" and numbers and numbers[0] in (0, 1, 2):
            cfg.ecn = numbers[0]
        elif key == "tcp_notsent_lowat" and numbers:
            cfg.notsent_lowat = numbers[0] & 0xFFFFFFFF
        elif key == "tcp_syncookies" and numbers:
            cfg.syncookies = numbers[0]
        elif key == "tcp_fastopen" and numbers:
            cfg.fastopen = numbers[0]
        elif key == "tcp_fastopen_key":
            cfg.fastopen_key = parse_key(value)
        else:
            unmodelled.append(name)
    return cfg, unmodelled


# Settings of pystack's IP layer that play the part of these sysctls (seconds, for the IP layer).
_STACK_SYSCTLS = {
    "net.ipv4.ipfrag_time": lambda stack, seconds: setattr(stack.reassembler, "timeout", float(seconds)),
}


def apply_stack_sysctl(stack: Stack, name: str, value: str) -> bool:
    """Set what plays the part of an IP-layer sysctl on a pystack stack; False if none does."""
    setter = _STACK_SYSCTLS.get(name)
    if setter is None or not _is_numeric(value):
        return False
    setter(stack, int(value.split()[0], 0))
    return True


def _is_numeric(value: str) -> bool:
    try:
        [int(v, 0) for v in value.split()]
    except ValueError:
        return False
    return bool(value.split())


# ---------------------------------------------------------------- the interface


class DutSocket(ABC):
    """A socket on the DUT, with the kernel's blocking semantics.

    Calls raise OSError with Linux errno values. ``send``/``sendmsg`` (and
    ``sendto`` on a stream) on a blocking socket return only when everything
    was queued (as a blocking ``write`` does); the others return as soon as the
    kernel would. ``sendto``/``sendmsg`` with an address and MSG_FASTOPEN
    connect, with the data in the SYN.
    """

    nonblocking: bool = False

    @abstractmethod
    async def bind(self, address: tuple[str, int]) -> None: ...

    @abstractmethod
    def listen(self, backlog: int) -> None: ...

    @abstractmethod
    async def accept(self) -> tuple[DutSocket, tuple[str, int]]: ...

    @abstractmethod
    async def connect(self, address: tuple[str, int]) -> None: ...

    @abstractmethod
    async def send(self, data: bytes, flags: int = 0) -> int: ...

    @abstractmethod
    async def sendmsg(self, buffers: list[bytes], flags: int = 0, address: tuple[str, int] | None = None) -> int:
        ...

    @abstractmethod
    async def recv(self, size: int, flags: int = 0) -> bytes: ...

    @abstractmethod
    async def sendto(self, data: bytes, address: tuple[str, int], flags: int = 0) -> int: ...

    @abstractmethod
    async def recvfrom(self, size: int, flags: int = 0) -> tuple[bytes, tuple[str, int]]: ...

    @abstractmethod
    def shutdown(self, how: int) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def setsockopt(self, level: int, option: int, value: int | bytes) -> None: ...

    @abstractmethod
    def getsockopt(self, level: int, option: int, buflen: int = 0) -> int | bytes: ...

    @abstractmethod
    def set_nonblocking(self, flag: bool) -> None: ...

    @abstractmethod
    def getsockname(self) -> tuple[str, int]: ...

    @abstractmethod
    def tcp_info(self) -> dict[str, int]:
        """``tcpi_*`` values of a TCP socket, as far as this DUT knows them."""

    @abstractmethod
    def ioctl(self, request: int) -> int:
        """An integer-valued ioctl (SIOCINQ, SIOCOUTQ, SIOCOUTQNSD)."""

    @abstractmethod
    async def recvmsg(self, size: int, ancbufsize: int, flags: int = 0) -> tuple[bytes, list, int]:
        """``recvmsg``: the data, the control messages as (level, type, bytes), and msg_flags."""

    @abstractmethod
    async def sendfile(self, fd: int, offset: int, count: int) -> int:
        """``sendfile`` from a file the runner opened on the host."""

    @abstractmethod
    async def splice_to(self, pipe: int, count: int, flags: int) -> int:
        """``splice`` from this socket into the write end of a host pipe."""

    @abstractmethod
    async def null_buffer(self, call: str, count: int, flags: int) -> int:
        """``call`` (send or recv) with a NULL buffer, which the kernel refuses with EFAULT."""


class DutEpoll(ABC):
    """An epoll instance on the DUT: sockets registered with their script-side data."""

    @abstractmethod
    def control(self, op: int, sock: DutSocket, events: int, data: int) -> None: ...

    @abstractmethod
    async def wait(self, maxevents: int, timeout_ms: int) -> list[tuple[int, int]]:
        """Ready (events, data) pairs, at most ``maxevents``, waiting up to ``timeout_ms`` (-1: forever)."""

    @abstractmethod
    def close(self) -> None: ...


class Dut(ABC):
    """The far end of the bench's link."""

    kind: str
    realtime: bool = False  # True: real clock (spin before timed events); False: virtual time
    timing_slack: float = 0.0  # added to every timing tolerance (see LinuxDut)
    address: str = DUT_ADDRESS  # the DUT's own address
    peer: str = BENCH_ADDRESS  # the bench's address, as the DUT sees it
    mtu: int = MTU

    def __init__(self) -> None:
        self._sent: deque[tuple[float, bytes]] = deque()
        self._arrivals = trio.lowlevel.ParkingLot()
        self.injected = 0

    def now(self) -> float:
        return trio.current_time()

    def timestamp_clock(self) -> float:
        """The time on the clock the DUT's SO_TIMESTAMPING reports are stamped with: the kernel's
        CLOCK_REALTIME (pystack's is its own clock)."""
        return time.time()

    async def sleep_until(self, deadline: float) -> None:
        """Sleep until ``deadline``; in real time, spin through the last millisecond (as packetdrill)."""
        if not self.realtime:
            await trio.sleep_until(deadline)
            return
        await trio.sleep_until(deadline - SPIN)
        for _ in range(SPIN_LIMIT):
            if trio.current_time() >= deadline:
                break
            await trio.sleep(0)

    @abstractmethod
    def inject(self, packet: bytes, gso_size: int = 0) -> None:
        """Deliver one IPv4 packet to the DUT (processed before this returns); with ``gso_size``, a TCP
        segment longer than that arrives as one GSO packet of segments of that size (as after GRO)."""

    @abstractmethod
    def socket(self, type: int, proto: int = 0) -> DutSocket:
        """A new AF_INET socket on the DUT."""

    @abstractmethod
    def set_sysctl(self, name: str, value: str) -> bool:
        """Apply one setting now; False if this DUT has no such setting."""

    @abstractmethod
    def epoll(self) -> DutEpoll: ...

    @abstractmethod
    async def poll(self, entries: list[tuple[DutSocket, int]], timeout_ms: int) -> list[int]:
        """``poll``: the revents of each (socket, events), waiting up to ``timeout_ms`` for one."""

    @abstractmethod
    def set_qdisc(self, words: list[str]) -> bool:
        """``tc qdisc ...`` on the DUT's interface (``tun0`` in scripts); False if it has no qdiscs."""

    @abstractmethod
    def set_route(self, options: list[str]) -> bool:
        """Route attributes (``advmss 600 mtu lock 640 ...``) towards the bench; False if unsupported."""

    @abstractmethod
    def set_offloads(self, features: dict[str, bool]) -> bool:
        """``ethtool -K``: segmentation offloads (tso, gso, gro) on or off; False if this DUT cannot."""

    @abstractmethod
    def flush_metrics(self) -> None:
        """Forget what the stack learnt of its peers (``ip tcp_metrics flush``: Fast Open cookies)."""

    @abstractmethod
    def inspect(self, command: str) -> None:
        """A read-only inspection command (``grep ... /proc/net/tcp``); CalledProcessError if it fails."""

    def _emitted(self, packet: bytes) -> None:
        self._sent.append((trio.current_time(), packet))
        self._arrivals.unpark_all()

    async def receive(self, deadline: float) -> tuple[float, bytes] | None:
        """The next packet the DUT sent (with the time it left), or None at ``deadline``."""
        with trio.move_on_at(deadline):
            while not self._sent:
                await self._arrivals.park()
        if self._sent:
            return self._sent.popleft()
        return None

    def pending(self) -> int:
        return len(self._sent)


# ---------------------------------------------------------------- Linux


class KernelSocket(DutSocket):
    """A kernel socket (made inside the DUT's namespace), driven without blocking the trio thread."""

    def __init__(self, raw: _socket.socket):
        raw.setblocking(False)
        self.raw = raw

    async def _retry(self, op: Callable[[], T], wait: Callable[[Any], Awaitable[None]], flags: int = 0) -> T:
        while True:
            try:
                return op()
            except BlockingIOError:
                if self.nonblocking or flags & MSG_DONTWAIT:
                    raise
            await wait(self.raw)

    async def bind(self, address: tuple[str, int]) -> None:
        await trio.lowlevel.checkpoint()
        self.raw.bind(address)

    def listen(self, backlog: int) -> None:
        self.raw.listen(backlog)

    async def accept(self) -> tuple[DutSocket, tuple[str, int]]:
        child, peer = await self._retry(self.raw.accept, trio.lowlevel.wait_readable)
        return KernelSocket(child), peer

    async def connect(self, address: tuple[str, int]) -> None:
        try:
            self.raw.connect(address)
        except BlockingIOError as exc:
            if self.nonblocking or exc.errno != errno.EINPROGRESS:
                raise
            await trio.lowlevel.wait_writable(self.raw)
            error = self.raw.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
            if error:
                raise OSError(error, os.strerror(error)) from None
        await trio.lowlevel.checkpoint()

    async def send(self, data: bytes, flags: int = 0) -> int:
        return await self._send_all(len(data), lambda view: self.raw.send(view, flags), data, flags)

    async def sendmsg(self, buffers: list[bytes], flags: int = 0, address: tuple[str, int] | None = None) -> int:
        """One real sendmsg() with the script's iovecs (their number matters: MSG_ZEROCOPY pins each);
        a blocking socket then sends the rest as a blocking write would."""
        where = () if address is None else (address,)
        sent = await self._retry(lambda: self.raw.sendmsg(buffers, [], flags, *where),
                                 trio.lowlevel.wait_writable, flags)
        total = sum(len(b) for b in buffers)
        if not (self.nonblocking or flags & MSG_DONTWAIT):
            if sent < total:
                sent += await self.send(b"".join(buffers)[sent:], flags & ~MSG_FASTOPEN)
            else:
                await self._await_fastopen_connect()
        return sent

    async def _send_all(self, total: int, op: Callable[[memoryview], int], data: bytes, flags: int) -> int:
        view = memoryview(data)
        sent = 0
        while True:
            rest = view[sent:]
            sent += await self._retry(lambda rest=rest: op(rest), trio.lowlevel.wait_writable, flags)
            if self.nonblocking or flags & MSG_DONTWAIT:
                return sent
            if sent >= total:
                await self._await_fastopen_connect()
                return sent

    async def _await_fastopen_connect(self) -> None:
        """A blocking send that opened the connection (Fast Open: the data went in the SYN) returns
        once the handshake is over, as the kernel's blocking call does; the raw socket never blocks."""
        if self.raw.type != _socket.SOCK_STREAM or self.tcp_info()["tcpi_state"] != TCP_SYN_SENT:
            return
        await trio.lowlevel.wait_writable(self.raw)
        error = self.raw.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
        if error:
            raise OSError(error, os.strerror(error))

    async def recv(self, size: int, flags: int = 0) -> bytes:
        return await self._retry(lambda: self.raw.recv(size, flags), trio.lowlevel.wait_readable, flags)

    async def sendto(self, data: bytes, address: tuple[str, int], flags: int = 0) -> int:
        sent = await self._retry(lambda: self.raw.sendto(data, flags, address), trio.lowlevel.wait_writable, flags)
        if self.raw.type == _socket.SOCK_STREAM and not (self.nonblocking or flags & MSG_DONTWAIT):
            if sent < len(data):
                sent += await self.send(data[sent:], flags & ~MSG_FASTOPEN)
            else:
                await self._await_fastopen_connect()
        return sent

    async def recvfrom(self, size: int, flags: int = 0) -> tuple[bytes, tuple[str, int]]:
        return await self._retry(lambda: self.raw.recvfrom(size, flags),
                                 trio.lowlevel.wait_readable, flags)

    def shutdown(self, how: int) -> None:
        self.raw.shutdown(how)

    def close(self) -> None:
        if self.raw.fileno() >= 0:
            with contextlib.suppress(RuntimeError):
                trio.lowlevel.notify_closing(self.raw)
            self.raw.close()

    def setsockopt(self, level: int, option: int, value: int | bytes) -> None:
        self.raw.setsockopt(level, option, value)

    def getsockopt(self, level: int, option: int, buflen: int = 0) -> int | bytes:
        if buflen:
            return self.raw.getsockopt(level, option, buflen)
        return self.raw.getsockopt(level, option)

    def set_nonblocking(self, flag: bool) -> None:
        self.nonblocking = flag

    def getsockname(self) -> tuple[str, int]:
        return self.raw.getsockname()

    def tcp_info(self) -> dict[str, int]:
        return parse_tcp_info(self.raw.getsockopt(_socket.IPPROTO_TCP, TCP_INFO, 256))

    def ioctl(self, request: int) -> int:
        return struct.unpack("i", fcntl.ioctl(self.raw.fileno(), request, bytes(4)))[0]

    async def recvmsg(self, size: int, ancbufsize: int, flags: int = 0) -> tuple[bytes, list, int]:
        # The error queue never blocks: MSG_ERRQUEUE with nothing queued is EAGAIN at once.
        wait_flags = flags | (MSG_DONTWAIT if flags & MSG_ERRQUEUE else 0)
        data, ancdata, msg_flags, _ = await self._retry(lambda: self.raw.recvmsg(size, ancbufsize, flags),
                                                        trio.lowlevel.wait_readable, wait_flags)
        return data, [(level, kind, bytes(raw)) for level, kind, raw in ancdata], msg_flags

    async def sendfile(self, fd: int, offset: int, count: int) -> int:
        return await self._retry(lambda: os.sendfile(self.raw.fileno(), fd, offset, count),
                                 trio.lowlevel.wait_writable)

    async def splice_to(self, pipe: int, count: int, flags: int) -> int:
        """On a blocking socket, splice() is made blocking, in a thread: its answers differ from the
        non-blocking call's (at an urgent mark it returns 0, where the non-blocking one fails EAGAIN)."""
        if self.nonblocking:
            return os.splice(self.raw.fileno(), pipe, count, flags=flags)
        self.raw.setblocking(True)
        try:
            return await trio.to_thread.run_sync(lambda: os.splice(self.raw.fileno(), pipe, count, flags=flags),
                                                 abandon_on_cancel=True)
        finally:
            self.raw.setblocking(False)

    async def null_buffer(self, call: str, count: int, flags: int) -> int:
        await trio.lowlevel.checkpoint()
        function = getattr(_libc(), call)
        function.restype = ctypes.c_ssize_t
        function.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        result = function(self.raw.fileno(), None, count, flags)
        if result < 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error))
        return result


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


class KernelEpoll(DutEpoll):
    """A kernel epoll instance; the data of each registration is the script's (its fd or ptr)."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.data: dict[int, int] = {}

    def control(self, op: int, sock: DutSocket, events: int, data: int) -> None:
        assert isinstance(sock, KernelSocket)
        fd = sock.raw.fileno()
        if op == EPOLL_CTL_ADD:
            self.epoll.register(fd, events)
        elif op == EPOLL_CTL_MOD:
            self.epoll.modify(fd, events)
        elif op == EPOLL_CTL_DEL:
            self.epoll.unregister(fd)
        else:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        self.data[fd] = data

    async def wait(self, maxevents: int, timeout_ms: int) -> list[tuple[int, int]]:
        ready = self.epoll.poll(0, maxevents)
        if ready or timeout_ms == 0:
            await trio.lowlevel.checkpoint()
        else:
            ready = await trio.to_thread.run_sync(self.epoll.poll, timeout_ms / 1000 if timeout_ms > 0 else -1,
                                                  maxevents, abandon_on_cancel=True)
        return [(events, self.data.get(fd, fd)) for fd, events in ready]

    def close(self) -> None:
        self.epoll.close()


_TCP_INFO_HEAD = struct.Struct("<8B")
# struct tcp_info after its 8 leading bytes (include/uapi/linux/tcp.h), in order: (name, struct code).
_TCP_INFO_FIELDS = [(name, "I") for name in (
    "rto ato snd_mss rcv_mss unacked sacked lost retrans fackets last_data_sent last_ack_sent "
    "last_data_recv last_ack_recv pmtu rcv_ssthresh rtt rttvar snd_ssthresh snd_cwnd advmss "
    "reordering rcv_rtt rcv_space total_retrans").split()] + [
    ("pacing_rate", "Q"), ("max_pacing_rate", "Q"), ("bytes_acked", "Q"), ("bytes_received", "Q"),
    ("segs_out", "I"), ("segs_in", "I"), ("notsent_bytes", "I"), ("min_rtt", "I"), ("data_segs_in", "I"),
    ("data_segs_out", "I"), ("delivery_rate", "Q"), ("busy_time", "Q"), ("rwnd_limited", "Q"),
    ("sndbuf_limited", "Q"), ("delivered", "I"), ("delivered_ce", "I"), ("bytes_sent", "Q"),
    ("bytes_retrans", "Q"), ("dsack_dups", "I"), ("reord_seen", "I"), ("rcv_ooopack", "I"), ("snd_wnd", "I"),
    ("rcv_wnd", "I"), ("rehash", "I"), ("total_rto", "H"), ("total_rto_recoveries", "H"),
    ("total_rto_time", "I")]


def parse_tcp_info(raw: bytes) -> dict[str, int]:
    """Linux's ``struct tcp_info`` as ``tcpi_*`` names: as many fields as this kernel filled in."""
    state, ca_state, retransmits, probes, backoff, options, wscale, flags = _TCP_INFO_HEAD.unpack_from(raw)
    info = {
        "tcpi_state": state, "tcpi_ca_state": ca_state, "tcpi_retransmits": retransmits,
        "tcpi_probes": probes, "tcpi_backoff": backoff, "tcpi_options": options,
        "tcpi_snd_wscale": wscale & 0xF, "tcpi_rcv_wscale": wscale >> 4,
        "tcpi_delivery_rate_app_limited": flags & 1, "tcpi_fastopen_client_fail": (flags >> 1) & 3,
    }
    offset = _TCP_INFO_HEAD.size
    for name, code in _TCP_INFO_FIELDS:
        size = struct.calcsize(code)
        if offset + size > len(raw):
            break
        info[f"tcpi_{name}"] = struct.unpack_from(f"<{code}", raw, offset)[0]
        offset += size
    return info


_serial = itertools.count()


def _sysctl_path(name: str) -> str:
    return "/proc/sys/" + name.replace(".", "/")


_realtime_users = 0


@contextlib.contextmanager
def realtime_priority() -> Iterator[bool]:
    """Run this thread SCHED_RR at the lowest priority for the block, as packetdrill does.

    On a busy machine an ordinary thread wakes up milliseconds late, as
    much as packetdrill's whole 4 ms tolerance; a real-time thread wakes
    on time. packetdrill only does this with more than one CPU, so as not
    to starve the machine; so do we. Nested uses share one switch (the
    outermost restores the old policy). Yields whether it took effect.
    """
    global _realtime_users
    if (os.cpu_count() or 1) < 2 or not hasattr(os, "sched_setscheduler"):
        yield False
        return
    if _realtime_users:
        _realtime_users += 1
        try:
            yield True
        finally:
            _realtime_users -= 1
        return
    try:
        previous = os.sched_getscheduler(0), os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(os.sched_get_priority_min(os.SCHED_RR)))
    except OSError:
        yield False
        return
    _realtime_users = 1
    try:
        yield True
    finally:
        _realtime_users = 0
        os.sched_setscheduler(0, previous[0], previous[1])


def kernel_hz() -> int | None:
    """CONFIG_HZ of the running kernel, from /proc/config.gz or /boot/config-*; None if unknown."""
    import gzip

    sources = [("/proc/config.gz", gzip.open), (f"/boot/config-{os.uname().release}", open)]
    for path, opener in sources:
        try:
            with opener(path, "rt") as config:  # type: ignore[operator]
                for line in config:
                    if line.startswith("CONFIG_HZ="):
                        return int(line.split("=", 1)[1])
        except (OSError, ValueError):
            continue
    return None


_VNET_HDR = struct.Struct("=BBHHHH")  # struct virtio_net_hdr: flags, gso_type, hdr_len, gso_size, csum_*
VIRTIO_NET_HDR_GSO_TCPV4 = 1


class VnetTun(TunLink):
    """The same tun, framed with virtio-net headers (IFF_VNET_HDR), as packetdrill's own is.

    The header is what lets the bench inject one GSO packet (what GRO would
    have made of several segments); offloads stay as on the plain tun, so the
    kernel still hands over MSS-sized packets, its header dropped here.
    """

    read_size = TunLink.read_size + _VNET_HDR.size

    def __init__(self, name: str, mtu: int) -> None:
        super().__init__(name, mtu, extra_flags=pytun.IFF_VNET_HDR)

    def send_nowait(self, packet: bytes, gso_size: int = 0) -> None:
        header = _VNET_HDR.pack(0, VIRTIO_NET_HDR_GSO_TCPV4 if gso_size else 0, 0, gso_size, 0, 0)
        super().send_nowait(header + packet)

    async def receive(self) -> bytes:
        return (await super().receive())[_VNET_HDR.size:]


class LinuxDut(Dut):
    """The kernel behind a TUN.

    ``timing_slack``: the kernel's TCP timers (delayed ACK, RTO, ...) fire
    on jiffy boundaries. packetdrill's default tolerance (4 ms) assumes
    HZ=1000; on a kernel with a coarser tick a timer-driven packet can
    leave up to one jiffy late, so every tolerance is widened by one jiffy
    less the millisecond HZ=1000 already has (HZ=250: 3 ms; unknown HZ:
    as for 250, the common distribution setting).
    """

    kind = "linux"
    realtime = True

    def __init__(self, ns: Namespace, tun: TunLink):
        super().__init__()
        self.timing_slack = max(0.0, 1.0 / (kernel_hz() or 250) - 0.001)
        self.ns = ns
        self.tun = tun
        self.mtu = tun.mtu
        self.unapplied: list[str] = []  # settings the kernel refused or does not have
        self.congestion_control: bytes | None = None  # set per socket when the sysctl is refused

    def inject(self, packet: bytes, gso_size: int = 0) -> None:
        self.injected += 1
        if gso_size:
            if not isinstance(self.tun, VnetTun):
                raise ValueError("a GSO packet needs a tun with virtio-net headers (DutConfig.gso_injection)")
            self.tun.send_nowait(packet, gso_size)
        else:
            self.tun.send_nowait(packet)

    async def read_tun(self) -> None:
        while True:
            try:
                packet = await self.tun.receive()
            except (trio.ClosedResourceError, OSError):
                return
            self._emitted(packet)

    def socket(self, type: int, proto: int = 0) -> DutSocket:
        raw = self.ns.socket(_socket.AF_INET, type, proto)
        if self.congestion_control and type == _socket.SOCK_STREAM:
            raw.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_CONGESTION, self.congestion_control)
        return KernelSocket(raw)

    def set_sysctl(self, name: str, value: str) -> bool:
        """Write /proc/sys/<name> inside the namespace (most net.ipv4.tcp_* are per namespace).

        A namespace may only choose congestion controls the host lists in
        tcp_allowed_congestion_control (global); when it refuses one, each
        TCP socket gets it with TCP_CONGESTION instead (allowed with
        CAP_NET_ADMIN), and accepted sockets inherit it from their listener.
        """
        with self.ns._entered():
            try:
                with open(_sysctl_path(name), "w") as f:
                    f.write(value)
            except OSError:
                if name != "net.ipv4.tcp_congestion_control":
                    return False
                with self.ns.socket(_socket.AF_INET, _socket.SOCK_STREAM) as probe:
                    try:
                        probe.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_CONGESTION, value.encode())
                    except OSError:
                        return False
                self.congestion_control = value.encode()
        return True

    def epoll(self) -> DutEpoll:
        return KernelEpoll()

    async def poll(self, entries: list[tuple[DutSocket, int]], timeout_ms: int) -> list[int]:
        poller = select.poll()
        fds = []
        for sock, events in entries:
            assert isinstance(sock, KernelSocket)
            fds.append(sock.raw.fileno())
            poller.register(fds[-1], events)
        ready = poller.poll(0)
        if ready or timeout_ms == 0:
            await trio.lowlevel.checkpoint()
        else:
            ready = await trio.to_thread.run_sync(poller.poll, timeout_ms if timeout_ms > 0 else None,
                                                  abandon_on_cancel=True)
        revents = dict(ready)
        return [revents.get(fd, 0) for fd in fds]

    def set_qdisc(self, words: list[str]) -> bool:
        """Raises Absent when the kernel refuses it (``fq`` is not built into every kernel)."""
        # The namespace's tun already has the pfifo of defaults.sh: "add" replaces it.
        argv = ["tc", *("replace" if w == "add" else self.tun.name if w == "tun0" else w for w in words)]
        done = self.ns.run(argv, capture_output=True, text=True, check=False)
        if done.returncode:
            raise Absent(f"`tc {' '.join(words)}`: {done.stderr.strip()} (this kernel lacks the qdisc)")
        return True

    def set_route(self, options: list[str]) -> bool:
        argv = ["ip", "route", "replace", f"{BENCH_ADDRESS}/32", "dev", self.tun.name, *options]
        return self.ns.run(argv, capture_output=True, check=False).returncode == 0

    def set_offloads(self, features: dict[str, bool]) -> bool:
        """ethtool's legacy per-feature SIOCETHTOOL commands, on the tun inside the namespace."""
        if not set(features) <= set(ETHTOOL_SET):
            return False
        with self.ns.socket(_socket.AF_INET, _socket.SOCK_DGRAM) as sock:
            for name, on in features.items():
                value = ctypes.create_string_buffer(struct.pack("II", ETHTOOL_SET[name], int(on)))
                ifreq = struct.pack("16sP", self.tun.name.encode(), ctypes.addressof(value)).ljust(40, b"\0")
                try:
                    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
                except OSError:
                    return False
        return True

    def flush_metrics(self) -> None:
        self.ns.run(["ip", "tcp_metrics", "flush", "all"], capture_output=True, check=True)

    def inspect(self, command: str) -> None:
        self.ns.run(["sh", "-c", command], capture_output=True, check=True)


@asynccontextmanager
async def linux_dut(config: DutConfig | None = None) -> AsyncIterator[LinuxDut]:
    """The kernel in a fresh namespace behind a TUN the bench holds; all removed on exit."""
    config = config or DutConfig()
    reason = why_not()
    if reason is not None:
        raise NeedsNetAdmin(reason)
    name = f"pstc{os.getpid() % 100000}x{next(_serial)}"[:15]
    with Namespace(name) as ns, (VnetTun if config.gso_injection else TunLink)(name, config.mtu) as tun:
        ns.move_link(tun.name)
        dut = LinuxDut(ns, tun)
        dut.unapplied = [n for n, v in config.sysctls.items() if not dut.set_sysctl(n, v)]
        ns.configure_link(tun.name, DUT_ADDRESS, PREFIXLEN, config.mtu)
        if shutil.which("tc"):
            # defaults.sh: no pacing qdisc (fq) on the tun, whatever the host's default is.
            ns.run(["tc", "qdisc", "replace", "dev", tun.name, "root", "pfifo"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        with realtime_priority() if config.realtime_priority else contextlib.nullcontext():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(dut.read_tun)
                try:
                    yield dut
                finally:
                    nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- pystack


class _BenchLink(Link):
    """pystack's side of the bench's wire: what the stack sends is handed to the DUT's queue."""

    def __init__(self, dut: PystackDut, mtu: int):
        self.name = IFNAME
        self.mtu = mtu
        self.stats = LinkStats()
        self._dut = dut

    def send_nowait(self, packet: bytes) -> None:
        self.stats.tx_packets += 1
        self.stats.tx_bytes += len(packet)
        self._dut._emitted(bytes(packet))

    async def receive(self) -> bytes:
        await trio.sleep_forever()  # packets come in through PystackDut.inject
        raise AssertionError("unreachable")

    def close(self) -> None:
        pass


class PystackSocket(DutSocket):
    def __init__(self, dut: PystackDut, sock: PyStackSocket):
        self.dut = dut
        self.sock = sock
        self.fd = sock.fileno()

    @property
    def stack(self) -> Stack:
        return self.dut.stack

    async def bind(self, address: tuple[str, int]) -> None:
        await self.sock.bind(address)

    def listen(self, backlog: int) -> None:
        self.sock.listen(backlog)

    async def accept(self) -> tuple[DutSocket, tuple[str, int]]:
        child, peer = await self.sock.accept()
        return PystackSocket(self.dut, child), peer

    async def connect(self, address: tuple[str, int]) -> None:
        await self.sock.connect(address)

    async def send(self, data: bytes, flags: int = 0) -> int:
        sent = 0
        while True:
            sent += await self.sock.send(data[sent:], flags)
            if sent >= len(data) or self.stack.is_nonblocking(self.fd, flags):
                return sent

    async def sendmsg(self, buffers: list[bytes], flags: int = 0, address: tuple[str, int] | None = None) -> int:
        sent = await self.sock.sendmsg(buffers, (), flags, address)
        data = b"".join(buffers)
        if sent < len(data) and not self.stack.is_nonblocking(self.fd, flags):
            sent += await self.send(data[sent:], flags & ~MSG_FASTOPEN)
        return sent

    async def recv(self, size: int, flags: int = 0) -> bytes:
        return await self.sock.recv(size, flags)

    async def sendto(self, data: bytes, address: tuple[str, int], flags: int = 0) -> int:
        sent = await self.sock.sendto(data, flags, address)
        if sent < len(data) and self.sock.type == _socket.SOCK_STREAM and not self.stack.is_nonblocking(self.fd, flags):
            sent += await self.send(data[sent:], flags & ~MSG_FASTOPEN)
        return sent

    async def recvfrom(self, size: int, flags: int = 0) -> tuple[bytes, tuple[str, int]]:
        return await self.sock.recvfrom(size, flags)

    def shutdown(self, how: int) -> None:
        self.sock.shutdown(how)

    def close(self) -> None:
        self.sock.close()

    def setsockopt(self, level: int, option: int, value: int | bytes) -> None:
        self.sock.setsockopt(level, option, value)
        self.dut.network.driver.timers_changed()

    def getsockopt(self, level: int, option: int, buflen: int = 0) -> int | bytes:
        return self.sock.getsockopt(level, option, buflen)

    def set_nonblocking(self, flag: bool) -> None:
        self.nonblocking = flag
        self.stack.fcntl(self.fd, F_SETFL, O_NONBLOCK if flag else 0)

    def getsockname(self) -> tuple[str, int]:
        return self.sock.getsockname()

    def tcp_info(self) -> dict[str, int]:
        """What pystack's TCB says, under the names of Linux's tcp_info fields that mean the same."""
        tcb = self.stack.sockfd_lookup(self.fd).tcb
        if tcb is None:
            raise OSError(errno.EOPNOTSUPP, "not a TCP socket")
        return {
            "tcpi_state": LINUX_STATES[tcb.state],
            "tcpi_ca_state": tcb.ca_state,
            "tcpi_retransmits": tcb.retransmits,
            "tcpi_backoff": tcb.backoff,
            "tcpi_snd_wscale": tcb.snd_wscale,
            "tcpi_rcv_wscale": tcb.rcv_wscale,
            "tcpi_snd_mss": tcb.mss,
            "tcpi_advmss": tcb.advmss - (TIMESTAMP_OPTION_LEN if tcb.ts_ok else 0),  # Linux: less the agreed TS option
            "tcpi_unacked": tcb.packets_out(),
            "tcpi_snd_ssthresh": tcb.ssthresh,
            "tcpi_snd_cwnd": tcb.cwnd,
            "tcpi_reordering": tcb.reordering,
            "tcpi_sacked": tcb.sacked_out,
            "tcpi_lost": tcb.lost_out,
            "tcpi_retrans": tcb.retrans_out,
            "tcpi_rto": round(tcb.rtt.backed_off(tcb.backoff) * 1e6),  # microseconds, as Linux
            "tcpi_rtt": round(tcb.rtt.srtt * 1e6),
            "tcpi_rttvar": round(tcb.rtt.rttvar * 1e6),
            "tcpi_notsent_bytes": max(unsent_bytes(tcb), 0),
            "tcpi_bytes_acked": tcb.bytes_acked,
            "tcpi_snd_wnd": tcb.snd_wnd,
            "tcpi_options": (TCPI_OPT_TIMESTAMPS if tcb.ts_ok else 0) | (TCPI_OPT_SACK if tcb.sack_ok else 0)
            | (TCPI_OPT_WSCALE if tcb.want_wscale else 0) | (TCPI_OPT_ECN if tcb.ecn_ok else 0)
            | (TCPI_OPT_SYN_DATA if tcb.syn_data_acked else 0),
        }

    def ioctl(self, request: int) -> int:
        return self.stack.ioctl(self.fd, request)

    async def recvmsg(self, size: int, ancbufsize: int, flags: int = 0) -> tuple[bytes, list, int]:
        data, ancdata, msg_flags, _ = await self.sock.recvmsg(size, ancbufsize, flags)
        return data, ancdata, msg_flags

    async def sendfile(self, fd: int, offset: int, count: int) -> int:
        """The file's bytes, sent as send() sends them (the host's file, pystack's socket)."""
        return await self.send(os.pread(fd, count, offset))

    async def splice_to(self, pipe: int, count: int, flags: int) -> int:
        """What pystack's splice takes from the socket, written into the host pipe."""
        data = await self.sock.splice_read(count)
        return os.write(pipe, data) if data else 0

    async def null_buffer(self, call: str, count: int, flags: int) -> int:
        if call == "send":
            return await self.sock.send(BadUserBuffer(count), flags)
        return await self.sock.recv_into(BadUserBuffer(count), count, flags)


class PystackEpoll(DutEpoll):
    """epoll over ``Stack.poll`` (Linux ep_poll semantics, as far as scripts see them).

    Level-triggered registrations report while ready. EPOLLET ones report
    once after each wake-up of their socket (and once when added, if
    ready), as the kernel's ready list does; EPOLLONESHOT ones are disabled
    after one report until EPOLL_CTL_MOD. EPOLLERR and EPOLLHUP always count.
    """

    def __init__(self, dut: PystackDut):
        self.dut = dut
        self.interest: dict[int, list[int]] = {}  # fd: [events, data, pending]

    def control(self, op: int, sock: DutSocket, events: int, data: int) -> None:
        assert isinstance(sock, PystackSocket)
        fd = sock.fd
        if op == EPOLL_CTL_ADD and fd in self.interest:
            raise OSError(errno.EEXIST, os.strerror(errno.EEXIST))
        if op in (EPOLL_CTL_MOD, EPOLL_CTL_DEL) and fd not in self.interest:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))
        if op == EPOLL_CTL_DEL:
            del self.interest[fd]
        elif op in (EPOLL_CTL_ADD, EPOLL_CTL_MOD):
            self.interest[fd] = [events, data, 1]
            self.dut.watch(fd)
        else:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))

    def woken(self, fd: int) -> None:
        entry = self.interest.get(fd)
        if entry is not None:
            entry[2] = 1

    def ready(self, maxevents: int) -> list[tuple[int, int]]:
        found = []
        for fd, entry in self.interest.items():
            events, data, pending = entry
            if len(found) >= maxevents or not pending or not events & ~(EPOLLET | EPOLLONESHOT):
                continue
            revents = self.dut.stack.poll(fd) & (events | POLLERR | POLLHUP)
            if revents:
                found.append((revents, data))
                if events & EPOLLONESHOT:
                    entry[0] = events & (EPOLLET | EPOLLONESHOT)
            if events & EPOLLET:
                entry[2] = 0
        return found

    async def wait(self, maxevents: int, timeout_ms: int) -> list[tuple[int, int]]:
        return await self.dut.wait_for(lambda: self.ready(maxevents), timeout_ms)

    def close(self) -> None:
        if self in self.dut.epolls:
            self.dut.epolls.remove(self)


class PystackDut(Dut):
    kind = "pystack"

    def __init__(self, config: DutConfig):
        super().__init__()
        self.mtu = config.mtu
        tcp_config, unmodelled = pystack_tcp_config(config.sysctls)
        self.stack = Stack(clock=TrioClock(), seed=config.seed, tcp_config=tcp_config)
        self.unapplied = [n for n in unmodelled if not apply_stack_sysctl(self.stack, n, config.sysctls[n])]
        self.stack.add_interface(IFNAME, DUT_ADDRESS, PREFIXLEN, config.mtu)
        self.link = _BenchLink(self, config.mtu)
        self.network: Network  # set by pystack_dut once the driver runs
        self.epolls: list[PystackEpoll] = []
        self.wakeups = trio.lowlevel.ParkingLot()  # parked: poll and epoll_wait calls

    def inject(self, packet: bytes, gso_size: int = 0) -> None:
        """pystack has no GRO: a GSO packet reaches it as the one large segment GRO would have made."""
        self.injected += 1
        self.link.stats.rx_packets += 1
        self.stack.input(packet, IFNAME)
        self.network.driver.timers_changed()

    def socket(self, type: int, proto: int = 0) -> DutSocket:
        return PystackSocket(self, self.network.socket(_socket.AF_INET, type, proto))

    def timestamp_clock(self) -> float:
        return self.stack.clock.now()

    def set_sysctl(self, name: str, value: str) -> bool:
        if apply_stack_sysctl(self.stack, name, value):
            return True
        _, unmodelled = pystack_tcp_config({name: value}, self.stack.tcp.config)
        return not unmodelled

    def epoll(self) -> DutEpoll:
        epoll = PystackEpoll(self)
        self.epolls.append(epoll)
        return epoll

    async def poll(self, entries: list[tuple[DutSocket, int]], timeout_ms: int) -> list[int]:
        """``poll`` over ``Stack.poll``; POLLERR and POLLHUP always count, as the kernel's do."""
        wanted = [(sock.fd, events | POLLERR | POLLHUP) for sock, events in entries]  # type: ignore[attr-defined]
        for fd, _ in wanted:
            self.watch(fd)
        return await self.wait_for(lambda: [self.stack.poll(fd) & events for fd, events in wanted], timeout_ms)

    def watch(self, fd: int) -> None:
        """Hear the stack's wake-ups of ``fd`` (the readiness calls re-check on each)."""
        self.network.driver.watch(fd, self.woken)

    def woken(self, fd: int) -> None:
        for epoll in self.epolls:
            epoll.woken(fd)
        self.wakeups.unpark_all()

    async def wait_for(self, check: Callable[[], list[T]], timeout_ms: int) -> list[T]:
        """``check()`` once any of its items is true, re-checked after each wake-up; what it is
        after ``timeout_ms`` (-1: no limit) otherwise."""
        result = check()
        if any(result) or timeout_ms == 0:
            await trio.lowlevel.checkpoint()
            return result
        with trio.move_on_after(timeout_ms / 1000 if timeout_ms > 0 else math.inf):
            while not any(result := check()):
                await self.wakeups.park()
        return check()

    def set_qdisc(self, words: list[str]) -> bool:
        return False

    def set_route(self, options: list[str]) -> bool:
        """The attributes pystack's routes have (``mtu [lock] N``, ``advmss N``, ``initcwnd N``), on a
        route of its own to the bench, as ``ip route replace`` makes one; False for any other."""
        metrics: dict[str, int | bool] = {}
        words = list(options)
        while words:
            name = words.pop(0)
            if name == "mtu" and words[:1] == ["lock"]:
                metrics["mtu_locked"] = bool(words.pop(0))
            if name not in ("mtu", "advmss", "initcwnd") or not words or not words[0].isdigit():
                return False
            metrics[name] = int(words.pop(0))
        self.stack.add_route(BENCH_ADDRESS, 32, IFNAME, **metrics)  # type: ignore[arg-type]
        self.network.driver.timers_changed()
        return True

    def set_offloads(self, features: dict[str, bool]) -> bool:
        """pystack never offloads segmentation: every segment is built at the MSS, which is "off"."""
        return not any(features.values())

    def flush_metrics(self) -> None:
        self.stack.tcp.fastopen_cache.clear()

    def inspect(self, command: str) -> None:
        """The command run against pystack's /proc/net/tcp and tcp6, written to a folder of its own."""
        if re.sub(r"/proc/net/tcp6?\b", "", command).count("/proc/"):
            raise Unsupported(f"pystack has no such /proc file: cannot run `{command}`")
        with tempfile.TemporaryDirectory(prefix="pystack-proc-") as folder:
            for name, text in (("tcp", proc_net_tcp(self.stack)), ("tcp6", proc_net_tcp6())):
                with open(os.path.join(folder, name), "w") as file:
                    file.write(text)
            local = re.sub(r"/proc/net/(tcp6?)\b", lambda m: os.path.join(folder, m.group(1)), command)
            subprocess.run(["sh", "-c", local], capture_output=True, check=True)


@asynccontextmanager
async def pystack_dut(config: DutConfig | None = None) -> AsyncIterator[PystackDut]:
    dut = PystackDut(config or DutConfig())
    async with running(dut.stack, {IFNAME: dut.link}) as network:
        dut.network = network
        yield dut


@asynccontextmanager
async def open_dut(kind: str, config: DutConfig | None = None) -> AsyncIterator[Dut]:
    if kind == "linux":
        async with linux_dut(config) as dut:
            yield dut
    elif kind == "pystack":
        async with pystack_dut(config) as dut:
            yield dut
    else:
        raise ValueError(f"unknown DUT {kind!r}: expected one of {', '.join(DUT_KINDS)}")


def run_on(kind: str, async_fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``trio.run(async_fn, *args)`` on the clock that DUT needs: real for Linux, virtual for pystack."""
    if kind == "pystack":
        return trio.run(async_fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))
    return trio.run(async_fn, *args)


def linux_unavailable() -> str | None:
    """Why the Linux DUT cannot run here (no root, no TUN, no tools); None if it can."""
    reason = why_not()
    if reason is None and shutil.which("ip") is None:
        reason = "needs the `ip` command (iproute2) to run commands in the namespace"
    return reason

