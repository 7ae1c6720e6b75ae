"""The stack's TCP layer: connection and listener tables, ports, timers, ISNs, MSS.

Protocol logic lives in input/output/recovery/timers; this object owns
the tables those functions look connections up in and the stack-wide
state (settings, the timer heap, the challenge-ACK budget, the ISN key).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
import struct
from typing import TYPE_CHECKING

from ..addr import ANY
from ..icmp import TokenBucket
from ..route import cached_route
from ..socket import IPPROTO_TCP, SOCK_STREAM, Socket
from ..wire.ipv4 import HEADER_LEN as IP_HEADER_LEN
from ..wire.tcp import HEADER_LEN as TCP_HEADER_LEN
from . import congestion
from .fastopen import CachedCookie
from .mtu import mtu_to_mss
from .output import send_reset_for, sndbuf_expand
from .seq import MASK
from .tcb import CLOSED, LISTEN, SYN_RECEIVED, TCB, TcpConfig
from .timers import tcp_timers

if TYPE_CHECKING:
    from ..stack import Stack

ConnKey = tuple[int, int, int, int]


class TcpLayer:
    def __init__(self, stack: Stack, config: TcpConfig | None = None):
        self.stack = stack
        self.config = config or TcpConfig()
        self.conns: dict[ConnKey, TCB] = {}
        self.listeners: dict[int, list[TCB]] = {}
        self.fastopen_cache: dict[int, CachedCookie] = {}  # per server address (Linux tcp_metrics)
        self.ports: dict[int, list[Socket]] = {}
        self._heap: list[tuple[float, int, TCB]] = []
        self._order = itertools.count()
        limit = self.config.challenge_ack_limit
        self._challenges = None if limit is None else TokenBucket(limit, limit, limit, 0.0)
        self._isn_key = stack.random.randbytes(16)
        # Derived, not drawn: drawing would shift every later random value (ISNs, offsets).
        self.cookie_key = hashlib.blake2s(b"syncookies", key=self._isn_key).digest()

    # ------------------------------------------------------------ connections

    def new_tcb(self, sock: Socket) -> TCB:
        cfg = self.config
        tcb = TCB(sock, want_sack=cfg.sack, want_ts=cfg.timestamps, rcv_wscale=cfg.window_scale)
        tcb.cwnd = cfg.initial_cwnd
        tcb.ca = congestion.algorithm(cfg.congestion_control)
        tcb.reordering = cfg.reordering
        tcb.rtt.rto_min = cfg.rto_min
        tcb.ts_offset = self.stack.random.getrandbits(32)
        return tcb

    def renew(self, tcb: TCB) -> None:
        """Reset a closed TCB for a new connection attempt, keeping the socket's TCP options.

        After a failed or finished connection, connect() starts again from
        fresh state (retransmission count, backoff, RTT estimate, windows),
        as Linux's tcp_disconnect does; the object stays the same.
        """
        fresh = self.new_tcb(tcb.sock)
        fresh.user_mss, fresh.nodelay, fresh.cork = tcb.user_mss, tcb.nodelay, tcb.cork
        fresh.keepalive, fresh.keepidle, fresh.keepintvl = tcb.keepalive, tcb.keepidle, tcb.keepintvl
        fresh.keepcnt, fresh.user_timeout, fresh.linger = tcb.keepcnt, tcb.user_timeout, tcb.linger
        fresh.ca = type(tcb.ca)()  # TCP_CONGESTION stays chosen
        for name, value in vars(fresh).items():  # attribute by attribute: a field's watch sees it
            setattr(tcb, name, value)

    def initial_sequence(self, tcb: TCB) -> int:
        """RFC 6528: a keyed hash of the connection plus a 4-microsecond clock."""
        ident = struct.pack("!IHIH", tcb.local_addr, tcb.local_port, tcb.remote_addr, tcb.remote_port)
        digest = hashlib.blake2s(ident, key=self._isn_key, digest_size=4).digest()
        return (int.from_bytes(digest, "big") + int(self.stack.clock.now() * 250_000)) & MASK

    def stateless_ts_offset(self, tcb: TCB) -> int:
        """A timestamp offset that the connection alone determines (Linux secure_tcp_ts_off), for a
        connection made from a SYN cookie: its SYN-ACK was sent before the TCB existed."""
        ident = struct.pack("!IHIH", tcb.local_addr, tcb.local_port, tcb.remote_addr, tcb.remote_port)
        return int.from_bytes(hashlib.blake2s(ident, key=self.cookie_key, digest_size=4).digest(), "big")

    def listener(self, addr: int, port: int) -> TCB | None:
        """The listening socket for addr:port: an exact address beats a wildcard."""
        best = None
        for tcb in self.listeners.get(port, ()):
            if tcb.local_addr == addr:
                return tcb
            if tcb.local_addr == ANY:
                best = tcb
        return best

    def new_child(self, listener: TCB, laddr: int, lport: int, raddr: int, rport: int) -> TCB:
        """A connection being accepted: its own socket (no fd until accept) and TCB, in the table."""
        child = self.make_child(listener, laddr, lport, raddr, rport)
        self.conns[child.key] = child
        return child

    def make_child(self, listener: TCB, laddr: int, lport: int, raddr: int, rport: int) -> TCB:
        """A connection's socket and TCB, inheriting the listener's options, in no table (yet)."""
        parent_sock = listener.sock
        sock = Socket(-1, SOCK_STREAM, IPPROTO_TCP, waker=parent_sock.waker,
                      sndbuf=parent_sock.sndbuf, sndbuf_locked=parent_sock.sndbuf_locked,
                      rcvbuf=parent_sock.rcvbuf, rcvbuf_locked=parent_sock.rcvbuf_locked,
                      ttl=parent_sock.ttl, tos=parent_sock.tos, adu=parent_sock.adu,
                      zerocopy=parent_sock.zerocopy, mark=parent_sock.mark, oobinline=parent_sock.oobinline,
                      tsflags=parent_sock.tsflags)
        sock.local_addr, sock.local_port = laddr, lport
        sock.remote_addr, sock.remote_port = raddr, rport
        sock.connected = True
        sock.reuseaddr = parent_sock.reuseaddr  # Linux's clone keeps sk_reuse: the port is shared alike
        child = self.new_tcb(sock)
        sock.tcb = child
        child.local_addr, child.local_port, child.remote_addr, child.remote_port = laddr, lport, raddr, rport
        child.parent = listener
        child.user_mss = listener.user_mss
        child.nodelay, child.keepalive = listener.nodelay, listener.keepalive
        child.keepidle, child.keepintvl, child.keepcnt = listener.keepidle, listener.keepintvl, listener.keepcnt
        child.user_timeout, child.notsent_lowat = listener.user_timeout, listener.notsent_lowat
        child.ca = type(listener.ca)()  # the listener's congestion control (Linux inherits it)
        child.iss = self.initial_sequence(child)
        return child

    def update_mss(self, tcb: TCB) -> None:
        """Advertised and effective MSS from the route's path MTU, the peer and TCP_MAXSEG."""
        before = (tcb.mss, tcb.advmss)
        route = cached_route(self.stack, tcb.sock)
        mtu = route.path_mtu if route is not None else 576
        tcb.advmss = route.advmss if route is not None and route.advmss else mtu - IP_HEADER_LEN - TCP_HEADER_LEN
        if tcb.user_mss:
            tcb.advmss = min(tcb.advmss, tcb.user_mss)
        tcb.pmtu_cookie = mtu
        tcb.mtup_search_high = min(tcb.mtup_search_high, mtu)
        tcb.mss = mtu_to_mss(tcb, mtu)
        if tcb.mtup_enabled:
            tcb.mss = min(tcb.mss, mtu_to_mss(tcb, tcb.mtup_search_low))  # Linux tcp_sync_mss
        tcb.sock.generation += 1
        if (tcb.mss, tcb.advmss) != before:
            self.stack.notify("mss", tcb.sock)  # code specialized for the old MSS is stale

    def established(self, tcb: TCB) -> None:
        """The handshake completed: hand a passive connection to its listener."""
        tcb.sock.connected = True
        tcb.pushed_seq = tcb.snd_nxt
        if not tcb.sock.sndbuf_locked:
            sndbuf_expand(self.stack, tcb)  # Linux tcp_init_buffer_space
        if tcb.keepalive:
            tcb.keepalive_at = tcb.last_received_at + (tcb.keepidle or self.config.keepalive_time)
        parent = tcb.parent
        if parent is not None:
            parent.syn_queue = max(parent.syn_queue - 1, 0)
            if parent.state == LISTEN and not tcb.fastopen_passive:  # a Fast Open one is queued already
                parent.accept_queue.append(tcb)
                self.stack.wake(parent.sock)
        self.stack.wake(tcb.sock)

    def done(self, tcb: TCB) -> None:
        """The connection is over (CLOSED): forget it and wake whoever waits on it."""
        was = tcb.state
        tcb.state = CLOSED
        self.conns.pop(tcb.key, None)
        tcb.rto_at = tcb.delack_at = tcb.persist_at = tcb.keepalive_at = math.inf
        tcb.timewait_at = tcb.fin_wait2_at = math.inf
        if was == SYN_RECEIVED and tcb.parent is not None:
            tcb.parent.syn_queue = max(tcb.parent.syn_queue - 1, 0)
        if tcb.orphan or tcb.sock.fd < 0:
            self.unbind(tcb.sock)
        self.stack.wake(tcb.sock)

    def abort(self, tcb: TCB, error: int, send_reset: bool = False) -> None:
        """End a connection with an error for the application (and a RST to the peer if asked)."""
        if send_reset and tcb.state not in (CLOSED, LISTEN):
            send_reset_for(self.stack, tcb)
        tcb.error = error
        self.done(tcb)

    def unbind(self, sock: Socket) -> None:
        bound = self.ports.get(sock.local_port)
        if bound and sock in bound:
            bound.remove(sock)
            if not bound:
                del self.ports[sock.local_port]

    def challenge_allowed(self) -> bool:
        """The stack-wide challenge-ACK budget (tcp_challenge_ack_limit), if one is set."""
        return self._challenges is None or self._challenges.take(self.stack.clock.now())

    # ------------------------------------------------------------ timers

    def timer_changed(self, tcb: TCB) -> None:
        """File the TCB under its earliest deadline (stale heap entries are skipped later)."""
        deadline = tcb.next_deadline()
        if deadline < tcb.timer_key:
            tcb.timer_key = deadline
            heapq.heappush(self._heap, (deadline, next(self._order), tcb))

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and (heap[0][2].timer_key != heap[0][0] or heap[0][2].state == CLOSED):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def run_timers(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, tcb = heapq.heappop(heap)
            if tcb.timer_key != deadline or tcb.state == CLOSED:
                continue
            tcb.timer_key = math.inf
            tcp_timers(self.stack, tcb, now)
            if tcb.state != CLOSED:
                self.timer_changed(tcb)
