"""Socket objects and the constants of the BSD API (Linux values).

Constants are plain ints taken from the stdlib's socket module: its enum
members would make every ``flags & MSG_X`` on the send path a Python call.

A Socket is plain state: the fields the send path interprets on every call
(options, flags, addresses, cached route) are ordinary attributes, so the
specializer can treat them as static fields of a partially static object.
"""

from __future__ import annotations

import errno
import socket as _k
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import oserror

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
SO_OOBINLINE = 10  # urgent data stays in the stream
SO_MARK = 36  # Linux: the packets' firewall mark (kept and reported; pystack has no policy routing)
SO_ZEROCOPY = 60  # Linux: MSG_ZEROCOPY sends allowed (accepted; pystack copies anyway)
# pystack's own option (thesis 3.1.1): commit to a fixed application data unit size.
SO_ADU = 0x4144
MAX_ADU = 65507  # the largest UDP payload: an ADU is sent as one datagram

IP_TOS = int(_k.IP_TOS)
IP_TTL = int(_k.IP_TTL)
IP_PKTINFO = 8
IP_FREEBIND = 15  # bind to an address that is not (yet) local
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
# SO_TIMESTAMPING (Linux's numbers): which transmit reports a send asks for, and how they are made.
SO_TIMESTAMPING = 37
SCM_TIMESTAMPING = SO_TIMESTAMPING
SOF_TIMESTAMPING_TX_SOFTWARE = 0x2  # a report when the packet leaves (SCM_TSTAMP_SND)
SOF_TIMESTAMPING_SOFTWARE = 0x10  # reports carry the software stamp
SOF_TIMESTAMPING_OPT_ID = 0x80  # reports carry the byte's (or datagram's) key
SOF_TIMESTAMPING_TX_SCHED = 0x100  # a report when the packet is handed to the device queue
SOF_TIMESTAMPING_TX_ACK = 0x200  # a report when the peer acknowledges the byte (TCP)
SOF_TIMESTAMPING_OPT_TSONLY = 0x800  # reports without the packet
SOF_TIMESTAMPING_OPT_STATS = 0x1000  # (only with OPT_TSONLY; pystack sends no statistics)
SOF_TIMESTAMPING_BIND_PHC = 0x8000  # stamps from a PTP clock: pystack has none
SOF_TIMESTAMPING_OPT_ID_TCP = 0x10000  # TCP keys count from write_seq, not snd_una
SOF_TIMESTAMPING_MASK = 0x3FFFF  # every flag this Linux knows (up to SOF_TIMESTAMPING_OPT_RX_FILTER)
SOF_TIMESTAMPING_TX_RECORD_MASK = SOF_TIMESTAMPING_TX_SOFTWARE | SOF_TIMESTAMPING_TX_SCHED | SOF_TIMESTAMPING_TX_ACK
SCM_TSTAMP_SND, SCM_TSTAMP_SCHED, SCM_TSTAMP_ACK = 0, 1, 2
SCM_TIMESTAMPING_DATA = struct.Struct("=qq32x")  # struct scm_timestamping: ts[0] software, ts[1..2] zero
SO_EE_ORIGIN_TIMESTAMPING = 4
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


class BadUserBuffer(bytes):
    """A user buffer of ``length`` bytes that the kernel cannot read or write (NULL, unmapped).

    The fd API takes it where a call takes or fills a buffer. The call makes
    its own checks first (a closed socket still says EPIPE, an empty queue
    EAGAIN); the copy itself fails with EFAULT, as Linux's copy_from_user
    and copy_to_user make the call fail when nothing was copied yet. It is a
    ``bytes`` of that length (the send path's ``bytes(data)`` keeps it, so
    it reaches the copy), but every copy out of it (a slice, a join, an
    iteration) faults.
    """

    def __new__(cls, length: int) -> BadUserBuffer:
        return super().__new__(cls, length)

    def __bytes__(self) -> bytes:
        return self

    def _fault(self, *args: object) -> bytes:
        raise oserror(errno.EFAULT, "bad user buffer")

    __getitem__ = __add__ = __radd__ = __iter__ = _fault  # type: ignore[assignment]


@dataclass(frozen=True)
class TxTimestamp:
    """A transmit timestamp report on the error queue (SO_TIMESTAMPING): when, which
    (SCM_TSTAMP_SND, _SCHED, _ACK), the key, and the packet it is about."""

    stamp: float
    tstype: int
    key: int
    packet: bytes


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
    rcvbuf_locked: bool = False  # set by SO_RCVBUF (Linux SOCK_RCVBUF_LOCK): TCP's window is clamped to it
    ttl: int = -1  # -1: the stack's default TTL
    tos: int = 0
    mc_ttl: int = 1
    mc_if: int = 0
    mc_loop: bool = True
    pmtudisc: int = IP_PMTUDISC_WANT
    adu: int = 0  # SO_ADU: every send is this many bytes (0: no commitment)
    zerocopy: bool = False  # SO_ZEROCOPY
    mark: int = 0  # SO_MARK
    oobinline: bool = False  # SO_OOBINLINE
    freebind: bool = False  # IP_FREEBIND
    memberships: set[tuple[int, int]] = field(default_factory=set)  # (group, interface address)
    # Queues and accounting.
    rcvq: deque[tuple[bytes, tuple[str, int]]] = field(default_factory=deque)
    rmem: int = 0
    wmem: int = 0
    error: int = 0  # pending asynchronous error (errno), reported once
    # MSG_ZEROCOPY: the next send's notification id, and completed [first, last] id ranges not yet read.
    zckey: int = 0
    # SO_TIMESTAMPING: its flags, and the key OPT_ID counts from (TCP: a sequence number).
    tsflags: int = 0
    tskey: int = 0
    # The error queue: MSG_ZEROCOPY ranges [first, last] and transmit timestamps, in order.
    errqueue: deque[list[int] | TxTimestamp] = field(default_factory=deque)
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
        tail = self.errqueue[-1] if self.errqueue else None
        if isinstance(tail, list) and (tail[1] + 1) & 0xFFFFFFFF == first:
            tail[1] = last
        else:
            self.errqueue.append([first, last])

    def tx_timestamp(self, now: float, tstype: int, key: int, packet: bytes) -> None:
        """Queue a transmit timestamp report (Linux __skb_tstamp_tx): the packet unless OPT_TSONLY,
        the key counted from tskey with OPT_ID (else 0)."""
        flags = self.tsflags
        key = (key - self.tskey) & 0xFFFFFFFF if flags & SOF_TIMESTAMPING_OPT_ID else 0
        self.errqueue.append(TxTimestamp(now, tstype, key, b"" if flags & SOF_TIMESTAMPING_OPT_TSONLY else packet))
        self.waker(self)

    def take_error(self) -> int:
        error, self.error = self.error, 0
        return error
