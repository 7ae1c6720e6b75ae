"""The Stack: interfaces, routes, sockets, and the BSD-style fd API.

Every call is synchronous and never blocks: where a kernel would put the
caller to sleep, the stack raises BlockingIOError (EAGAIN) and the trio
layer (:mod:`pystack.trio_api`) waits for the socket's wake-up and
retries, unless the socket or the call asked for non-blocking behaviour,
in which case the EAGAIN is the answer, as in Linux.
"""

from __future__ import annotations

import errno
import random
import struct
from collections.abc import Callable, Iterable

from . import ports, udp
from .addr import ANY, BROADCAST, aton, is_multicast, ntoa, prefix_mask, sockaddr_in
from .clock import Clock, MonotonicClock
from .counters import Counters
from .errors import oserror, would_block
from .icmp import RateLimiter, icmp_input, reassembly_timeout
from .interface import Interface, Sink
from .ip import ip_input
from .reassembly import Reassembler
from .route import BROADCAST as ROUTE_BROADCAST
from .route import LOCAL, Route, RouteTable, cached_route
from .socket import (
    AF_INET,
    EXTENDED_ERR,
    F_GETFL,
    F_SETFL,
    IP_ADD_MEMBERSHIP,
    IP_DROP_MEMBERSHIP,
    IP_FREEBIND,
    IP_MTU,
    IP_MTU_DISCOVER,
    IP_MULTICAST_IF,
    IP_MULTICAST_LOOP,
    IP_MULTICAST_TTL,
    IP_RECVERR,
    IP_TOS,
    IP_TTL,
    IPPROTO_IP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    MAX_ADU,
    MSG_DONTWAIT,
    MSG_ERRQUEUE,
    MSG_OOB,
    MSG_PEEK,
    MSG_TRUNC,
    O_NONBLOCK,
    RMEM_MAX,
    SCM_TIMESTAMPING,
    SCM_TIMESTAMPING_DATA,
    SO_ADU,
    SO_BROADCAST,
    SO_EE_CODE_ZEROCOPY_COPIED,
    SO_EE_ORIGIN_TIMESTAMPING,
    SO_EE_ORIGIN_ZEROCOPY,
    SO_ERROR,
    SO_MARK,
    SO_NO_CHECK,
    SO_OOBINLINE,
    SO_RCVBUF,
    SO_REUSEADDR,
    SO_SNDBUF,
    SO_TIMESTAMPING,
    SO_TYPE,
    SO_ZEROCOPY,
    SOCK_CLOEXEC,
    SOCK_DGRAM,
    SOCK_MIN_RCVBUF,
    SOCK_MIN_SNDBUF,
    SOCK_NONBLOCK,
    SOCK_STREAM,
    SOF_TIMESTAMPING_BIND_PHC,
    SOF_TIMESTAMPING_MASK,
    SOF_TIMESTAMPING_OPT_ID,
    SOF_TIMESTAMPING_OPT_ID_TCP,
    SOF_TIMESTAMPING_OPT_STATS,
    SOF_TIMESTAMPING_OPT_TSONLY,
    SOF_TIMESTAMPING_SOFTWARE,
    SOL_SOCKET,
    WMEM_MAX,
    BadUserBuffer,
    Socket,
)
from .tcp import api as tcp_api
from .tcp.input import tcp_error, tcp_input
from .tcp.layer import TcpLayer
from .tcp.output import write_space
from .tcp.tcb import TcpConfig
from .wire.ipv4 import PROTO_ICMP, PROTO_TCP, PROTO_UDP

ALL_HOSTS_GROUP = aton("224.0.0.1")
Address = tuple[str, int]
ControlMessage = tuple[int, int, bytes]


class Stack:
    """A host's TCP/IP stack, sans I/O: bytes in through :meth:`input`, out through interfaces."""

    def __init__(self, clock: Clock | None = None, seed: int | None = None, default_ttl: int = 64,
                 tcp_config: TcpConfig | None = None):
        self.clock: Clock = clock or MonotonicClock()
        self.random = random.Random(seed)
        self.default_ttl = default_ttl
        self.counters = Counters()
        self.routes = RouteTable()
        self.interfaces: dict[str, Interface] = {}
        self.local_addresses: set[int] = set()
        self.broadcast_addresses: set[int] = set()
        self.reassembler = Reassembler(self.counters)
        self.icmp_limiter = RateLimiter()
        self.sockets: dict[int, Socket] = {}
        self.udp_ports: dict[int, list[Socket]] = {}
        # Every protocol above IP registers here, by number: its input handler,
        # (stack, IPv4Packet, raw packet), and its handler of ICMP errors about what it
        # sent, (stack, quoted IPv4Packet, errno, hard). ICMP gets no errors about itself.
        self.protocols: dict[int, Callable] = {
            PROTO_ICMP: icmp_input, PROTO_UDP: udp.udp_input, PROTO_TCP: tcp_input,
        }
        self.error_handlers: dict[int, Callable] = {PROTO_UDP: udp.udp_error, PROTO_TCP: tcp_error}
        self.tcp = TcpLayer(self, tcp_config)
        self.on_wake: Callable[[Socket], None] = lambda sock: None
        # Guards of specialized code watch the events that can break their assumptions.
        self.watchers: list[Callable[[str, Socket | None, object], None]] = []
        # Per-stack state of the tools layered on the stack (the specializer's system), found
        # in one lookup and collected with the stack.
        self.extensions: dict[str, object] = {}
        self.routes.on_change = lambda: self.notify("route")
        self._next_fd = 3
        self._ident = self.random.randrange(0x10000)
        self._loopback_queue: list[bytes] = []
        self._in_loopback = False
        self.loopback = self.add_interface("lo", aton("127.0.0.1"), 8, mtu=65535, loopback=True)

    # ------------------------------------------------------------ configuration

    def add_interface(
        self,
        name: str,
        address: str | int,
        prefixlen: int,
        mtu: int = 1500,
        sink: Sink | None = None,
        loopback: bool = False,
    ) -> Interface:
        """Attach an interface with one address; adds its subnet, local and broadcast routes."""
        if name in self.interfaces:
            raise ValueError(f"interface {name!r} exists already")
        addr = aton(address) if isinstance(address, str) else address
        iface = Interface(name, addr, prefixlen, mtu, sink, loopback)
        if loopback:
            iface.sink = self._loopback_input
        self.interfaces[name] = iface
        self.local_addresses.add(addr)
        if iface.broadcast >= 0:
            self.broadcast_addresses.add(iface.broadcast)
        self.routes.add(Route(addr & prefix_mask(prefixlen), prefixlen, iface))
        lo = iface if loopback else self.loopback
        self.routes.add(Route(addr, 32, lo, src=addr, kind=LOCAL))
        if iface.broadcast >= 0:
            self.routes.add(Route(iface.broadcast, 32, iface, src=addr, kind=ROUTE_BROADCAST))
        return iface

    def add_route(self, destination: str, prefixlen: int, interface: str, gateway: str | None = None,
                  mtu: int = 0, *, mtu_locked: bool = False, advmss: int = 0, initcwnd: int = 0) -> Route:
        """Add (or replace) a unicast route (``0.0.0.0/0`` is the default route), with Linux's
        route metrics: ``mtu [lock]``, ``advmss``, ``initcwnd``."""
        iface = self.interfaces[interface]
        return self.routes.add(
            Route(aton(destination), prefixlen, iface, gateway=aton(gateway) if gateway else 0, mtu=mtu,
                  mtu_locked=mtu_locked, advmss=advmss, initcwnd=initcwnd)
        )

    def bindable(self, sock: Socket, addr: int) -> bool:
        """Whether ``sock`` may bind to ``addr``: a local address, the wildcard, or any with
        IP_FREEBIND (Linux inet_addr_valid_or_nonlocal)."""
        return addr == ANY or addr in self.local_addresses or sock.freebind

    def is_broadcast(self, addr: int) -> bool:
        return addr == BROADCAST or addr in self.broadcast_addresses

    def joined(self, group: int) -> bool:
        if group == ALL_HOSTS_GROUP:
            return True
        return any(group == g for s in self.sockets.values() for g, _ in s.memberships)

    def next_ident(self) -> int:
        self._ident = (self._ident + 1) & 0xFFFF
        return self._ident

    def wake(self, sock: Socket) -> None:
        self.on_wake(sock)

    def notify(self, event: str, sock: Socket | None = None, detail: object = None) -> None:
        """Tell the watchers that something send paths rely on is about to change.

        Events: setsockopt, fcntl, bind, connect, shutdown, close (on a
        socket), route (the table changed), mss (a connection's MSS
        changed). A watcher may raise OSError to refuse an
        application-triggered change (the "reject" guard policy).
        """
        for watcher in self.watchers:
            watcher(event, sock, detail)

    # ------------------------------------------------------------ packets and timers

    def input(self, packet: bytes, interface: str | Interface) -> None:
        """A packet arrived on an interface."""
        iface = interface if isinstance(interface, Interface) else self.interfaces[interface]
        ip_input(self, packet, iface)

    def _loopback_input(self, packet: bytes) -> None:
        """Packets sent to ourselves come back in after the current operation, not re-entrantly."""
        self._loopback_queue.append(packet)
        if self._in_loopback:
            return
        self._in_loopback = True
        try:
            while self._loopback_queue:
                ip_input(self, self._loopback_queue.pop(0), self.loopback)
        finally:
            self._in_loopback = False

    def next_deadline(self) -> float | None:
        """When :meth:`run_timers` next has work to do."""
        deadlines = [d for d in (self.reassembler.next_deadline(), self.tcp.next_deadline()) if d is not None]
        return min(deadlines, default=None)

    def run_timers(self) -> None:
        now = self.clock.now()
        for queue in self.reassembler.expire(now):
            if queue.first is not None:
                reassembly_timeout(self, queue.first)
        self.tcp.run_timers(now)

    # ------------------------------------------------------------ the fd API

    def sockfd_lookup(self, fd: int) -> Socket:
        sock = self.sockets.get(fd)
        if sock is None:
            raise oserror(errno.EBADF)
        return sock

    def socket(self, family: int = AF_INET, type: int = SOCK_DGRAM, proto: int = 0) -> int:
        if family != AF_INET:
            raise oserror(errno.EAFNOSUPPORT)
        kind = type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)
        if kind not in (SOCK_DGRAM, SOCK_STREAM):
            raise oserror(errno.ESOCKTNOSUPPORT if kind else errno.EINVAL)
        protocol = IPPROTO_UDP if kind == SOCK_DGRAM else IPPROTO_TCP
        if proto not in (0, protocol):
            raise oserror(errno.EPROTONOSUPPORT)
        fd = self._next_fd
        self._next_fd += 1
        sock = Socket(fd, kind, protocol, nonblocking=bool(type & SOCK_NONBLOCK), waker=self.wake)
        if kind == SOCK_STREAM:
            sock.sndbuf = self.tcp.config.wmem_default
            sock.rcvbuf = self.tcp.config.rmem_default
            sock.tcb = self.tcp.new_tcb(sock)
        self.sockets[fd] = sock
        return fd

    def close(self, fd: int) -> None:
        sock = self.sockfd_lookup(fd)
        self.notify("close", sock)
        del self.sockets[fd]
        if sock.type == SOCK_STREAM:
            tcp_api.tcp_close(self, sock)
        else:
            ports.unbind(self.udp_ports, sock)
        sock.closed = True
        sock.generation += 1
        self.wake(sock)

    def bind(self, fd: int, address: Address) -> None:
        sock = self.sockfd_lookup(fd)
        addr, port = sockaddr_in(address)
        self.notify("bind", sock, address)
        if sock.type == SOCK_STREAM:
            tcp_api.tcp_bind(self, sock, addr, port)
        else:
            udp.udp_bind(self, sock, addr, port)

    def connect(self, fd: int, address: Address | None) -> None:
        """Connect; ``None`` (AF_UNSPEC) dissolves a datagram association or aborts a connection.

        For TCP this starts the handshake and raises BlockingIOError
        (EINPROGRESS), as a non-blocking connect does; :meth:`connect_result`
        then says how it went (the trio layer waits for that).
        """
        sock = self.sockfd_lookup(fd)
        self.notify("connect", sock, address)
        if address is None:
            if sock.type == SOCK_STREAM:
                self.tcp.abort(sock.tcb, 0, send_reset=True)
            else:
                udp.udp_disconnect(self, sock)
            return
        addr, port = sockaddr_in(address)
        if addr == ANY:
            addr = aton("127.0.0.1")
        if sock.type == SOCK_STREAM:
            tcp_api.tcp_connect(self, sock, addr, port)
        else:
            udp.udp_connect(self, sock, addr, port)

    def connecting(self, fd: int) -> bool:
        """Whether a TCP socket's handshake is under way (a Fast Open send may have started one)."""
        return tcp_api.tcp_connecting(self._stream(fd).tcb)

    def connect_result(self, fd: int) -> int:
        """For a TCP connect under way: EINPROGRESS, then 0 or the error (taken once)."""
        return tcp_api.tcp_connect_result(self._stream(fd).tcb)

    def listen(self, fd: int, backlog: int = 128) -> None:
        tcp_api.tcp_listen(self, self._stream(fd), backlog)

    def accept(self, fd: int) -> tuple[int, Address]:
        """A new fd for the next established connection; EAGAIN when there is none yet."""
        child = tcp_api.tcp_accept(self, self._stream(fd))
        child.fd = self._next_fd
        self._next_fd += 1
        child.nonblocking = False
        self.sockets[child.fd] = child
        return child.fd, (ntoa(child.remote_addr), child.remote_port)

    def shutdown(self, fd: int, how: int) -> None:
        sock = self.sockfd_lookup(fd)
        self.notify("shutdown", sock, how)
        if sock.type == SOCK_STREAM:
            tcp_api.tcp_shutdown(self, sock, how)
        elif not sock.connected:
            raise oserror(errno.ENOTCONN)

    def _stream(self, fd: int) -> Socket:
        sock = self.sockfd_lookup(fd)
        if sock.type != SOCK_STREAM:
            raise oserror(errno.EOPNOTSUPP)
        return sock

    def send(self, fd: int, data: bytes, flags: int = 0) -> int:
        """Send on a connected socket: a datagram, or bytes queued on a TCP connection."""
        sock = self.sockfd_lookup(fd)
        if sock.nonblocking:
            flags |= MSG_DONTWAIT
        if sock.type == SOCK_STREAM:
            return tcp_api.tcp_sendmsg(self, sock, bytes(data), flags)
        return udp.udp_sendmsg(self, sock, bytes(data), flags, None, [])

    def sendto(self, fd: int, data: bytes, flags: int = 0, address: Address | None = None) -> int:
        """Send a datagram to ``address`` (or the connected peer when None)."""
        sock = self.sockfd_lookup(fd)
        if sock.nonblocking:
            flags |= MSG_DONTWAIT
        if sock.type == SOCK_STREAM:  # the address counts only for a Fast Open send, which connects
            return tcp_api.tcp_sendmsg(self, sock, bytes(data), flags, dest=self._destination(address))
        dest = self._destination(address)
        return udp.udp_sendmsg(self, sock, bytes(data), flags, dest, [])

    def sendmsg(
        self,
        fd: int,
        buffers: Iterable[bytes],
        ancdata: Iterable[ControlMessage] = (),
        flags: int = 0,
        address: Address | None = None,
    ) -> int:
        """Gather ``buffers`` into one datagram; ``ancdata`` as Python's socket.sendmsg."""
        sock = self.sockfd_lookup(fd)
        if sock.nonblocking:
            flags |= MSG_DONTWAIT
        buffers = [bytes(b) for b in buffers]
        data = b"".join(buffers)
        if sock.type == SOCK_STREAM:
            return tcp_api.tcp_sendmsg(self, sock, data, flags, [len(b) for b in buffers], self._destination(address))
        dest = self._destination(address)
        return udp.udp_sendmsg(self, sock, data, flags, dest, [(lv, kd, bytes(v)) for lv, kd, v in ancdata])

    @staticmethod
    def _destination(address: Address | None) -> tuple[int, int] | None:
        if address is None:
            return None
        addr, port = sockaddr_in(address)
        return (aton("127.0.0.1") if addr == ANY else addr), port

    def recv(self, fd: int, bufsize: int, flags: int = 0) -> bytes:
        return self.recvfrom(fd, bufsize, flags)[0]

    def recv_into(self, fd: int, buffer: bytearray | memoryview | BadUserBuffer, nbytes: int = 0,
                  flags: int = 0) -> int:
        """As Python's socket.recv_into. A BadUserBuffer fails with EFAULT once there is something
        to copy: TCP leaves the data queued (Linux tcp_recvmsg copied nothing, so consumed
        nothing), a datagram is dropped (udp_recvmsg frees it)."""
        size = nbytes or len(buffer)
        if isinstance(buffer, BadUserBuffer):
            stream = self.sockfd_lookup(fd).type == SOCK_STREAM
            if self.recv(fd, size, (flags | MSG_PEEK) if stream else flags):
                raise oserror(errno.EFAULT, "bad user buffer")
            return 0
        data = self.recv(fd, size, flags)
        memoryview(buffer)[: len(data)] = data
        return len(data)

    def splice_read(self, fd: int, size: int) -> bytes:
        """The bytes splice(2) would move from a TCP socket into a pipe (the pipe is the caller's):
        up to the urgent mark; a blocking call at the mark gets b"" (Linux tcp_splice_read)."""
        return tcp_api.tcp_splice_read(self, self._stream(fd), size)

    def recvfrom(self, fd: int, bufsize: int, flags: int = 0) -> tuple[bytes, Address]:
        data, _ancdata, _msg_flags, source = self.recvmsg(fd, bufsize, flags)
        return data, source

    def recvmsg(self, fd: int, bufsize: int, flags: int = 0) -> tuple[bytes, list, int, Address]:
        """As Python's socket.recvmsg: (data, ancdata, msg_flags, address); MSG_TRUNC if cut."""
        sock = self.sockfd_lookup(fd)
        if flags & MSG_ERRQUEUE:
            return self._recv_errqueue(sock, bufsize)
        if sock.type == SOCK_STREAM:
            if sock.nonblocking:
                flags |= MSG_DONTWAIT
            data = tcp_api.tcp_recvmsg(self, sock, bufsize, flags)
            ancillary = []
            if sock.tcb.recvmsg_inq:
                inq = struct.pack("i", tcp_api.tcp_inq(sock.tcb))
                ancillary.append((IPPROTO_TCP, tcp_api.TCP_CM_INQ, inq))
            msg_flags = MSG_OOB if flags & MSG_OOB and data else 0  # the urgent byte (Linux tcp_recv_urg)
            return data, ancillary, msg_flags, (ntoa(sock.remote_addr), sock.remote_port)
        data, source, length = udp.udp_recvmsg(self, sock, bufsize, flags)
        return data, [], MSG_TRUNC if length > bufsize else 0, source

    @staticmethod
    def _recv_errqueue(sock: Socket, bufsize: int) -> tuple[bytes, list, int, Address]:
        """The next report of the error queue as Linux's ip_recv_error gives it; EAGAIN if none (never
        waits). A MSG_ZEROCOPY completion: its IP_RECVERR message. A transmit timestamp: the packet,
        SCM_TIMESTAMPING (the stack clock's time, with SOF_TIMESTAMPING_SOFTWARE), IP_RECVERR."""
        if not sock.errqueue:
            raise would_block()
        entry = sock.errqueue.popleft()
        if isinstance(entry, list):
            first, last = entry
            info = EXTENDED_ERR.pack(0, SO_EE_ORIGIN_ZEROCOPY, 0, SO_EE_CODE_ZEROCOPY_COPIED, 0, first, last)
            return b"", [(IPPROTO_IP, IP_RECVERR, info)], MSG_ERRQUEUE, ("0.0.0.0", 0)
        ancillary = []
        if sock.tsflags & SOF_TIMESTAMPING_SOFTWARE:
            seconds, nanoseconds = divmod(round(entry.stamp * 1e9), 1_000_000_000)
            ancillary.append((SOL_SOCKET, SCM_TIMESTAMPING, SCM_TIMESTAMPING_DATA.pack(seconds, nanoseconds)))
        info = EXTENDED_ERR.pack(errno.ENOMSG, SO_EE_ORIGIN_TIMESTAMPING, 0, 0, 0, entry.tstype, entry.key)
        ancillary.append((IPPROTO_IP, IP_RECVERR, info))
        flags = MSG_ERRQUEUE | (MSG_TRUNC if len(entry.packet) > bufsize else 0)
        return entry.packet[:bufsize], ancillary, flags, ("0.0.0.0", 0)

    def poll(self, fd: int) -> int:
        """What a call on ``fd`` would not block on now: POLLIN, POLLOUT, POLLERR, POLLHUP bits."""
        sock = self.sockfd_lookup(fd)
        if sock.type == SOCK_STREAM:
            return tcp_api.tcp_poll(self, sock)
        return udp.udp_poll(sock)

    def ioctl(self, fd: int, request: int) -> int:
        """The integer ioctls of sockets: SIOCINQ (FIONREAD), SIOCOUTQ (TIOCOUTQ), SIOCOUTQNSD."""
        sock = self.sockfd_lookup(fd)
        if sock.type == SOCK_STREAM:
            return tcp_api.tcp_ioctl(sock, request)
        return udp.udp_ioctl(sock, request)

    def is_nonblocking(self, fd: int, flags: int = 0) -> bool:
        """Whether an EAGAIN from a call on ``fd`` with ``flags`` is final (no waiting)."""
        return bool(flags & (MSG_DONTWAIT | MSG_ERRQUEUE)) or self.sockfd_lookup(fd).nonblocking

    def fcntl(self, fd: int, cmd: int, arg: int = 0) -> int:
        sock = self.sockfd_lookup(fd)
        if cmd == F_GETFL:
            return O_NONBLOCK if sock.nonblocking else 0
        if cmd == F_SETFL:
            self.notify("fcntl", sock, arg)
            sock.nonblocking = bool(arg & O_NONBLOCK)
            sock.generation += 1
            return 0
        raise oserror(errno.EINVAL)

    def getsockname(self, fd: int) -> Address:
        sock = self.sockfd_lookup(fd)
        return ntoa(sock.local_addr), sock.local_port

    def getpeername(self, fd: int) -> Address:
        sock = self.sockfd_lookup(fd)
        if not sock.connected:
            raise oserror(errno.ENOTCONN)
        return ntoa(sock.remote_addr), sock.remote_port

    # ------------------------------------------------------------ options

    def setsockopt(self, fd: int, level: int, option: int, value: int | bytes) -> None:
        sock = self.sockfd_lookup(fd)
        number = _option_int(value)
        self.notify("setsockopt", sock, (level, option, value))
        if level == SOL_SOCKET:
            if option == SO_REUSEADDR:
                sock.reuseaddr = bool(number)
            elif option == SO_BROADCAST:
                sock.broadcast = bool(number)
            elif option == SO_NO_CHECK:
                sock.no_check = bool(number)
            elif option == SO_SNDBUF:
                sock.sndbuf = max(min(max(number, 0), WMEM_MAX) * 2, SOCK_MIN_SNDBUF)
                sock.sndbuf_locked = True
                if sock.tcb is None:
                    self.wake(sock)
                else:
                    write_space(self, sock.tcb)  # a TCP writer waiting for room is woken if it has some
            elif option == SO_RCVBUF:
                sock.rcvbuf = max(min(max(number, 0), RMEM_MAX) * 2, SOCK_MIN_RCVBUF)
                sock.rcvbuf_locked = True
            elif option == SO_ADU:
                if not 0 <= number <= MAX_ADU:
                    raise oserror(errno.EINVAL, f"SO_ADU takes 0 to {MAX_ADU} bytes")
                sock.adu = number
            elif option == SO_ZEROCOPY:
                sock.zerocopy = tcp_api.flag_option(number)  # for TCP and UDP sockets alike (Linux)
            elif option == SO_MARK:
                sock.mark = number & 0xFFFFFFFF
            elif option == SO_OOBINLINE:
                sock.oobinline = bool(number)
            elif option == SO_TIMESTAMPING:
                self._set_timestamping(sock, number)
            elif sock.type != SOCK_STREAM or not tcp_api.set_socket_option(self, sock, option, value, number):
                raise oserror(errno.ENOPROTOOPT)
        elif level == IPPROTO_IP:
            self._set_ip_option(sock, option, value, number)
        elif level == IPPROTO_TCP and sock.type == SOCK_STREAM:
            tcp_api.set_tcp_option(self, sock, option, value, number)
        else:
            raise oserror(errno.ENOPROTOOPT)
        sock.generation += 1

    @staticmethod
    def _set_timestamping(sock: Socket, flags: int) -> None:
        """SO_TIMESTAMPING's checks (Linux sock_set_timestamping); OPT_ID, newly set, starts the keys
        (a TCP socket must be connected or connecting: its keys are sequence numbers)."""
        if (flags & ~SOF_TIMESTAMPING_MASK or flags & SOF_TIMESTAMPING_BIND_PHC
                or (flags & SOF_TIMESTAMPING_OPT_ID_TCP and not flags & SOF_TIMESTAMPING_OPT_ID)
                or (flags & SOF_TIMESTAMPING_OPT_STATS and not flags & SOF_TIMESTAMPING_OPT_TSONLY)):
            raise oserror(errno.EINVAL)
        if flags & SOF_TIMESTAMPING_OPT_ID and not sock.tsflags & SOF_TIMESTAMPING_OPT_ID:
            sock.tskey = tcp_api.timestamping_key(sock, flags) if sock.type == SOCK_STREAM else 0
        sock.tsflags = flags

    def _set_ip_option(self, sock: Socket, option: int, value: int | bytes, number: int) -> None:
        if option == IP_TTL:
            if number != -1 and not 1 <= number <= 255:
                raise oserror(errno.EINVAL)
            sock.ttl = number
        elif option == IP_TOS:
            sock.tos = number & 0xFF
        elif option == IP_MULTICAST_TTL:
            if number == -1:
                number = 1
            if not 0 <= number <= 255:
                raise oserror(errno.EINVAL)
            sock.mc_ttl = number
        elif option == IP_MULTICAST_LOOP:
            sock.mc_loop = bool(number)
        elif option == IP_MULTICAST_IF:
            addr = int.from_bytes(value[:4], "big") if isinstance(value, bytes) else number
            if addr and addr not in self.local_addresses:
                raise oserror(errno.EADDRNOTAVAIL)
            sock.mc_if = addr
        elif option == IP_MTU_DISCOVER:
            if not 0 <= number <= 5:
                raise oserror(errno.EINVAL)
            sock.pmtudisc = number
        elif option == IP_FREEBIND:
            sock.freebind = bool(number)
        elif option in (IP_ADD_MEMBERSHIP, IP_DROP_MEMBERSHIP):
            if not isinstance(value, bytes) or len(value) < 8:
                raise oserror(errno.EINVAL)
            group = int.from_bytes(value[0:4], "big")
            iface_addr = int.from_bytes(value[4:8], "big")
            if not is_multicast(group):
                raise oserror(errno.EINVAL)
            membership = (group, iface_addr)
            if option == IP_ADD_MEMBERSHIP:
                if membership in sock.memberships:
                    raise oserror(errno.EADDRINUSE)
                sock.memberships.add(membership)
            elif membership in sock.memberships:
                sock.memberships.remove(membership)
            else:
                raise oserror(errno.EADDRNOTAVAIL)
        else:
            raise oserror(errno.ENOPROTOOPT)

    def getsockopt(self, fd: int, level: int, option: int, buflen: int = 0) -> int | bytes:
        sock = self.sockfd_lookup(fd)
        value = self._get_option(sock, level, option)
        if buflen and isinstance(value, int):
            return struct.pack("i", value)[:buflen]
        return value

    def _get_option(self, sock: Socket, level: int, option: int) -> int | bytes:
        if level == IPPROTO_TCP and sock.type == SOCK_STREAM:
            return tcp_api.get_tcp_option(self, sock, option)
        if level == SOL_SOCKET and sock.type == SOCK_STREAM:
            if option == SO_ERROR:
                return tcp_api.tcb_take_error(sock.tcb) or sock.take_error()
            value = tcp_api.get_socket_option(sock, option)
            if value is not None:
                return value
        if level == SOL_SOCKET:
            values = {
                SO_REUSEADDR: int(sock.reuseaddr),
                SO_BROADCAST: int(sock.broadcast),
                SO_NO_CHECK: int(sock.no_check),
                SO_SNDBUF: sock.sndbuf,
                SO_RCVBUF: sock.rcvbuf,
                SO_ADU: sock.adu,
                SO_ZEROCOPY: int(sock.zerocopy),
                SO_MARK: sock.mark,
                SO_OOBINLINE: int(sock.oobinline),
                SO_TIMESTAMPING: sock.tsflags,
                SO_TYPE: sock.type,
            }
            if option == SO_ERROR:
                return sock.take_error()
            if option in values:
                return values[option]
        elif level == IPPROTO_IP:
            if option == IP_MTU:
                if not sock.connected:
                    raise oserror(errno.ENOTCONN)
                route = cached_route(self, sock)
                if route is None:
                    raise oserror(errno.ENOTCONN)
                return route.path_mtu
            values = {
                IP_TTL: sock.ttl if sock.ttl >= 0 else self.default_ttl,
                IP_TOS: sock.tos,
                IP_MULTICAST_TTL: sock.mc_ttl,
                IP_MULTICAST_LOOP: int(sock.mc_loop),
                IP_MULTICAST_IF: sock.mc_if,
                IP_MTU_DISCOVER: sock.pmtudisc,
                IP_FREEBIND: int(sock.freebind),
            }
            if option in values:
                return values[option]
        raise oserror(errno.ENOPROTOOPT)


def _option_int(value: int | bytes) -> int:
    """Option values come as ints or packed C ints, as with Python's socket.setsockopt."""
    if isinstance(value, bool | int):
        return int(value)
    if isinstance(value, bytes | bytearray):
        if len(value) >= 4:
            return struct.unpack("i", bytes(value[:4]))[0]
        if len(value) == 1:
            return value[0]
        raise oserror(errno.EINVAL)
    raise TypeError("option value must be an int or bytes")

