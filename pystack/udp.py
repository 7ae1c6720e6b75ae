"""UDP (RFC 768): port tables, input demultiplexing, ICMP errors, the send path.

``udp_sendmsg`` is written the way Linux writes it (option and flag
interpretation on every call, per-packet route validation) because the
specializer takes exactly this function and folds it for one socket.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from . import icmp, ip, ports
from .addr import ANY, BROADCAST, is_multicast, ntoa
from .errors import Malformed, oserror, would_block
from .route import BROADCAST as ROUTE_BROADCAST
from .route import cached_route
from .socket import (
    IP_PKTINFO,
    IP_PMTUDISC_DONT,
    IP_TOS,
    IP_TTL,
    IPPROTO_IP,
    MSG_DONTROUTE,
    MSG_OOB,
    MSG_PEEK,
    POLLERR,
    POLLIN,
    POLLOUT,
    SIOCINQ,
    SIOCOUTQ,
    SKB_OVERHEAD,
    Socket,
)
from .wire.ipv4 import HEADER_LEN, MAX_PACKET, PROTO_UDP, IPv4Packet
from .wire.udp import HEADER_LEN as UDP_HEADER_LEN
from .wire.udp import build_udp, parse_udp

if TYPE_CHECKING:
    from .stack import Stack

MAX_PAYLOAD = MAX_PACKET - HEADER_LEN - UDP_HEADER_LEN  # 65507


# ---------------------------------------------------------------- binding


def udp_bind(stack: Stack, sock: Socket, addr: int, port: int) -> None:
    if sock.local_port:
        raise oserror(errno.EINVAL, "socket already bound")
    if not stack.bindable(sock, addr) and addr != BROADCAST and not is_multicast(addr):
        raise oserror(errno.EADDRNOTAVAIL)
    sock.bind_port_locked = port != 0  # Linux's SOCK_BINDPORT_LOCK / SOCK_BINDADDR_LOCK
    sock.bind_addr_locked = addr != ANY
    sock.local_port = ports.bind(stack.udp_ports, sock, addr, port, stack.random)
    sock.local_addr = addr
    sock.generation += 1


def udp_connect(stack: Stack, sock: Socket, addr: int, port: int) -> None:
    """Set the default peer and pick source address and port, as ip4_datagram_connect."""
    route = stack.routes.lookup(addr, stack.clock.now())
    if route is None:
        stack.counters.ip["OutNoRoutes"] += 1
        raise oserror(errno.ENETUNREACH)
    if (route.kind == ROUTE_BROADCAST or addr == BROADCAST) and not sock.broadcast:
        raise oserror(errno.EACCES)
    if not sock.local_port:
        udp_bind(stack, sock, ANY, 0)
    if sock.local_addr == ANY:
        sock.local_addr = route.source
    sock.remote_addr = addr
    sock.remote_port = port
    sock.connected = True
    sock.dst_cache = route
    sock.dst_generation = stack.routes.generation
    sock.generation += 1


def udp_disconnect(stack: Stack, sock: Socket) -> None:
    """connect(AF_UNSPEC): forget the peer, and the address and port unless bound explicitly."""
    if not sock.bind_addr_locked:
        sock.local_addr = ANY
    if not sock.bind_port_locked:
        ports.unbind(stack.udp_ports, sock)
        sock.local_port = 0
    sock.remote_addr = 0
    sock.remote_port = 0
    sock.connected = False
    sock.dst_cache = None
    sock.generation += 1


# ---------------------------------------------------------------- sending


def udp_sendmsg(
    stack: Stack,
    sock: Socket,
    data: bytes,
    flags: int,
    address: tuple[int, int] | None,
    control: list[tuple[int, int, bytes]],
) -> int:
    """Send one datagram; the generic path that the specializer folds per socket."""
    counters = stack.counters
    if flags & MSG_OOB:
        raise oserror(errno.EOPNOTSUPP)
    if len(data) > MAX_PAYLOAD:
        raise oserror(errno.EMSGSIZE)
    if sock.adu and len(data) != sock.adu:
        raise oserror(errno.EINVAL, f"SO_ADU commits this socket to {sock.adu}-byte datagrams")
    pending = sock.take_error()
    if pending:
        raise oserror(pending)
    if address is not None:
        daddr, dport = address
        if dport == 0:
            raise oserror(errno.EINVAL, "destination port 0")
        connected = sock.connected and daddr == sock.remote_addr and dport == sock.remote_port
    else:
        if not sock.connected:
            raise oserror(errno.EDESTADDRREQ)
        daddr, dport = sock.remote_addr, sock.remote_port
        connected = True

    saddr = sock.local_addr if sock.local_addr != BROADCAST and not is_multicast(sock.local_addr) else ANY
    ttl = sock.ttl if sock.ttl >= 0 else stack.default_ttl
    cmsg_ttl = 0
    tos = sock.tos
    for level, kind, value in control:
        if level != IPPROTO_IP:
            raise oserror(errno.EINVAL, "control message level")
        if kind == IP_TTL:
            cmsg_ttl = int.from_bytes(value[:4], "little", signed=True) if len(value) == 4 else -2
            if not 1 <= cmsg_ttl <= 255:
                raise oserror(errno.EINVAL, "IP_TTL control message")
            ttl = cmsg_ttl
        elif kind == IP_TOS:
            tos = int.from_bytes(value, "little", signed=len(value) == 4)
            if len(value) not in (1, 4) or not 0 <= tos <= 255:
                raise oserror(errno.EINVAL, "IP_TOS control message")
        elif kind == IP_PKTINFO:
            if len(value) != 12:
                raise oserror(errno.EINVAL, "IP_PKTINFO control message")
            spec_dst = int.from_bytes(value[4:8], "big")
            if spec_dst:
                saddr = spec_dst
                connected = False
        else:
            raise oserror(errno.EINVAL, "control message type")

    if not sock.local_port:
        udp_bind(stack, sock, ANY, 0)

    if is_multicast(daddr):
        ttl = cmsg_ttl or sock.mc_ttl  # an IP_TTL control message wins, as in Linux
        if sock.mc_if and not saddr:
            saddr = sock.mc_if
        connected = False

    if connected:
        route = cached_route(stack, sock)
    else:
        route = stack.routes.lookup(daddr, stack.clock.now())
    if route is None:
        counters.ip["OutNoRoutes"] += 1
        raise oserror(errno.ENETUNREACH)
    if (route.kind == ROUTE_BROADCAST or daddr == BROADCAST) and not sock.broadcast:
        raise oserror(errno.EACCES)
    if flags & MSG_DONTROUTE and route.gateway:
        raise oserror(errno.ENETUNREACH, "MSG_DONTROUTE to an off-link destination")
    if not saddr:
        saddr = route.source

    if sock.wmem >= sock.sndbuf:
        counters.udp["SndbufErrors"] += 1
        raise would_block()

    datagram = build_udp(sock.local_port, dport, data, saddr, daddr, not sock.no_check)
    ip.ip_output(stack, sock, route, saddr, daddr, PROTO_UDP, datagram, ttl, tos, sock.pmtudisc)
    counters.udp["OutDatagrams"] += 1
    return len(data)


# ---------------------------------------------------------------- receiving


def udp_recvmsg(stack: Stack, sock: Socket, bufsize: int, flags: int) -> tuple[bytes, tuple[str, int], int]:
    """Return (data, source address, datagram length); EAGAIN when nothing is queued."""
    if flags & MSG_OOB:
        raise oserror(errno.EOPNOTSUPP)
    if bufsize < 0:
        raise ValueError("negative buffersize in recvfrom")
    pending = sock.take_error()
    if pending:
        raise oserror(pending)
    if not sock.rcvq:
        raise would_block()
    data, source = sock.rcvq[0]
    if not flags & MSG_PEEK:
        sock.rcvq.popleft()
        sock.rmem -= len(data) + SKB_OVERHEAD
    return data[:bufsize], source, len(data)


def udp_ioctl(sock: Socket, request: int) -> int:
    """SIOCINQ: the size of the next datagram; SIOCOUTQ: bytes queued to send (Linux udp_ioctl)."""
    if request == SIOCINQ:
        return len(sock.rcvq[0][0]) if sock.rcvq else 0
    if request == SIOCOUTQ:
        return sock.wmem
    raise oserror(errno.ENOTTY)


def udp_poll(sock: Socket) -> int:
    """What a call would not block on now, as poll(2) bits."""
    mask = POLLERR if sock.error or sock.errqueue else 0
    if sock.rcvq:
        mask |= POLLIN
    if sock.wmem < sock.sndbuf:
        mask |= POLLOUT
    return mask


def udp_input(stack: Stack, header: IPv4Packet, packet: bytes) -> None:
    counters = stack.counters
    try:
        datagram = parse_udp(header.payload, header.src, header.dst)
    except Malformed as bad:
        counters.malformed("udp", bad.reason)
        return
    sport, dport, data = datagram.sport, datagram.dport, datagram.payload
    daddr = header.dst
    if daddr == BROADCAST or is_multicast(daddr) or stack.is_broadcast(daddr):
        receivers = [s for s in stack.udp_ports.get(dport, ()) if accepts(s, daddr, header.src, sport)]
        if not receivers:
            counters.udp["IgnoredMulti"] += 1  # Linux: not NoPorts, and no ICMP
            counters.drop("udp", "ignored_multi")
            return
        delivered = False
        for sock in receivers:
            delivered = enqueue(stack, sock, data, header.src, sport) or delivered
        if delivered:
            counters.udp["InDatagrams"] += 1
        return
    sock = lookup(stack, daddr, dport, header.src, sport)
    if sock is None:
        counters.udp["NoPorts"] += 1
        counters.drop("udp", "no_port")
        icmp.send_error(stack, header, packet, icmp.DEST_UNREACH, icmp.PORT_UNREACH, 0)
        return
    if enqueue(stack, sock, data, header.src, sport):
        counters.udp["InDatagrams"] += 1


def accepts(sock: Socket, daddr: int, saddr: int, sport: int) -> bool:
    if sock.local_addr not in (ANY, daddr):
        return False
    return not sock.connected or (sock.remote_addr == saddr and sock.remote_port == sport)


def lookup(stack: Stack, daddr: int, dport: int, saddr: int, sport: int) -> Socket | None:
    """Best-matching socket, scored as Linux does; among equals the last bound wins."""
    best, best_score = None, -1
    for sock in stack.udp_ports.get(dport, ()):
        if not accepts(sock, daddr, saddr, sport):
            continue
        score = (4 if sock.local_addr else 0) + (8 if sock.connected else 0)
        if score >= best_score:
            best, best_score = sock, score
    return best


def enqueue(stack: Stack, sock: Socket, data: bytes, saddr: int, sport: int) -> bool:
    counters = stack.counters
    if sock.rmem > sock.rcvbuf:
        counters.udp["RcvbufErrors"] += 1
        counters.udp["InErrors"] += 1
        counters.drop("udp", "rcvbuf_full")
        return False
    sock.rcvq.append((data, (ntoa(saddr), sport)))
    sock.rmem += len(data) + SKB_OVERHEAD
    stack.wake(sock)
    return True


def udp_error(stack: Stack, inner: IPv4Packet, error: int, hard: bool) -> None:
    """An ICMP error about a datagram we sent: report it on a connected socket, as Linux does."""
    sport = int.from_bytes(inner.payload[0:2], "big")
    dport = int.from_bytes(inner.payload[2:4], "big")
    sock = lookup(stack, inner.src, sport, inner.dst, dport)
    if sock is None:
        stack.counters.icmp["InErrors"] += 1
        stack.counters.drop("icmp", "error_no_socket")
        return
    if error == errno.EMSGSIZE:
        hard = sock.pmtudisc != IP_PMTUDISC_DONT
    if hard and sock.connected:
        sock.error = error
        stack.wake(sock)
