"""Socket objects and the constants of the BSD API (Linux values).

Constants are plain ints taken from the stdlib's socket module: its enum
members would make every ``flags & MSG_X`` on the send path a Python call.

A Socket is plain state: the fields the send path interprets on every call
(options, flags, addresses, cached route) are ordinary attributes, so the
specializer can treat them as static fields of a partially static object.
"""

from __future__ import annotations

import socket as _k
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .route import Route

AF_INET = int(_k.AF_INET)
AF_UNSPEC = int(_k.AF_UNSPEC)
SOCK_DGRAM = int(_k.SOCK_DGRAM)
SOCK_STREAM = int(_k.SOCK_STREAM)
SOCK_NONBLOCK = int(_k.SOCK_NONBLOCK)
SOCK_CLOEXEC = int(_k.SOCK_CLOEXEC)
IPPROTO_IP = int(_k.IPPROTO_IP)
IPPROTO_UDP = int(_k.IPPROTO_UDP)
IPPROTO_TCP = int(_k.IPPROTO_TCP)
SOL_SOCKET = int(_k.SOL_SOCKET)

SO_REUSEADDR = int(_k.SO_REUSEADDR)
SO_BROADCAST = int(_k.SO_BROADCAST)
SO_SNDBUF = int(_k.SO_SNDBUF)
SO_RCVBUF = int(_k.SO_RCVBUF)
SO_ERROR = int(_k.SO_ERROR)
SO_TYPE = int(_k.SO_TYPE)
SO_NO_CHECK = 11
SO_ZEROCOPY = 60  # Linux: MSG_ZEROCOPY sends allowed (accepted; pystack copies anyway)
# pystack's own option (thesis 3.1.1): commit to a fixed application data unit size.
SO_ADU = 0x4144
MAX_ADU = 65507  # the largest UDP payload: an ADU is sent as one datagram

IP_TOS = int(_k.IP_TOS)
IP_TTL = int(_k.IP_TTL)
IP_PKTINFO = 8
IP_MTU_DISCOVER = 10
IP_MTU = 14
IP_MULTICAST_IF = int(_k.IP_MULTICAST_IF)
IP_MULTICAST_TTL = int(_k.IP_MULTICAST_TTL)
IP_MULTICAST_LOOP = int(_k.IP_MULTICAST_LOOP)
IP_ADD_MEMBERSHIP = int(_k.IP_ADD_MEMBERSHIP)
IP_DROP_MEMBERSHIP = int(_k.IP_DROP_MEMBERSHIP)

IP_PMTUDISC_DONT = 0
IP_PMTUDISC_WANT = 1
IP_PMTUDISC_DO = 2
IP_PMTUDISC_PROBE = 3

MSG_OOB = int(_k.MSG_OOB)
MSG_PEEK = int(_k.MSG_PEEK)
MSG_DONTROUTE = int(_k.MSG_DONTROUTE)
MSG_TRUNC = int(_k.MSG_TRUNC)
MSG_DONTWAIT = int(_k.MSG_DONTWAIT)
MSG_CONFIRM = int(_k.MSG_CONFIRM)
MSG_NOSIGNAL = int(_k.MSG_NOSIGNAL)
MSG_WAITALL = int(_k.MSG_WAITALL)
MSG_ERRQUEUE = 0x2000
MSG_ZEROCOPY = 0x4000000
IP_RECVERR = 11
# struct sock_extended_err (and the offender address after it) of a MSG_ZEROCOPY completion.
EXTENDED_ERR = struct.Struct("=IBBBBII16x")
SO_EE_ORIGIN_ZEROCOPY = 5
SO_EE_CODE_ZEROCOPY_COPIED = 1  # pystack always copies
# ioctl requests (Linux's numbers): bytes readable, bytes not yet acknowledged, bytes not yet sent.
SIOCINQ = 0x541B
SIOCOUTQ = 0x5411
SIOCOUTQNSD = 0x894B
# poll(2) bits (Linux values), as Stack.poll reports them.
POLLIN = 0x001
POLLOUT = 0x004
POLLERR = 0x008
POLLHUP = 0x010

O_NONBLOCK = 0o4000
F_GETFL = 3
F_SETFL = 4

# Linux defaults (net.core.{r,w}mem_default / _max) and minimums.
RMEM_DEFAULT = 212992
WMEM_DEFAULT = 212992
RMEM_MAX = 212992
WMEM_MAX = 212992
SOCK_MIN_RCVBUF = 2304
SOCK_MIN_SNDBUF = 4608
# What a queued datagram costs beyond its payload (an skb's bookkeeping).
SKB_OVERHEAD = 768


@dataclass(eq=False)
class Socket:
    fd: int
    type: int
    proto: int
    nonblocking: bool = False
    closed: bool = False
    # Addresses (ints). A bound socket has a local port; a connected one a peer.
    local_addr: int = 0
    local_port: int = 0
    remote_addr: int = 0
    remote_port: int = 0
    connected: bool = False
    bind_addr_locked: bool = False  # bound explicitly: kept by connect(AF_UNSPEC)
    bind_port_locked: bool = False
    # Options.
    reuseaddr: bool = False
    broadcast: bool = False
    no_check: bool = False
    sndbuf: int = WMEM_DEFAULT
    sndbuf_locked: bool = False  # set by SO_SNDBUF: TCP no longer sizes it (SOCK_SNDBUF_LOCK)
    rcvbuf: int = RMEM_DEFAULT
    ttl: int = -1  # -1: the stack's default TTL
    tos: int = 0
    mc_ttl: int = 1
    mc_if: int = 0
    mc_loop: bool = True
    pmtudisc: int = IP_PMTUDISC_WANT
    adu: int = 0  # SO_ADU: every send is this many bytes (0: no commitment)
    zerocopy: bool = False  # SO_ZEROCOPY
    memberships: set[tuple[int, int]] = field(default_factory=set)  # (group, interface address)
    # Queues and accounting.
    rcvq: deque[tuple[bytes, tuple[str, int]]] = field(default_factory=deque)
    rmem: int = 0
    wmem: int = 0
    error: int = 0  # pending asynchronous error (errno), reported once
    # MSG_ZEROCOPY: the next send's notification id, and completed [first, last] id ranges not yet read.
    zckey: int = 0
    errqueue: deque[list[int]] = field(default_factory=deque)
    # Route cache, valid while the route table's generation is unchanged.
    dst_cache: Route | None = None
    dst_generation: int = -1
    ip_id: int = 0
    # Bumped whenever anything the send path reads changes: guards watch it.
    generation: int = 0
    # TCP: the connection state (a pystack.tcp.tcb.TCB), and whether this socket listens.
    tcb: Any = field(default=None, repr=False)
    listening: bool = False
    # The stack's wake-up hook: called when the socket may have become readable or writable.
    waker: Callable[[Socket], None] = field(default=lambda sock: None, repr=False)

    def release_wmem(self, size: int) -> None:
        self.wmem = max(0, self.wmem - size)
        self.waker(self)

    def zerocopy_completed(self, first: int, last: int) -> None:
        """Notify the ids ``first``..``last`` done; one notification with the last one if they follow
        it (Linux skb_zerocopy_notify_extend)."""
        if self.errqueue and (self.errqueue[-1][1] + 1) & 0xFFFFFFFF == first:
            self.errqueue[-1][1] = last
        else:
            self.errqueue.append([first, last])

    def take_error(self) -> int:
        error, self.error = self.error, 0
        return error
