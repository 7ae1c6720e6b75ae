"""IPv4 input (validation, local delivery, reassembly) and output (fragmentation).

Input charges every rejected packet to one drop reason (``ip.<reason>``)
and the matching SNMP counter. Output builds headers from explicit
arguments: the route, the addresses and the socket's IP options, the way
a kernel's ip_output does, so the specializer can fold them.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from . import icmp
from .addr import BROADCAST, is_loopback, is_multicast, is_reserved_class_e
from .errors import Malformed, oserror
from .interface import Interface
from .route import Route
from .skbuff import alloc_skb, skb_copy_data
from .socket import IP_PMTUDISC_DO, IP_PMTUDISC_PROBE, IP_PMTUDISC_WANT, Socket
from .wire.ipv4 import (
    FLAG_DF,
    FLAG_MF,
    HEADER_LEN,
    MAX_PACKET,
    IPv4Packet,
    build_ipv4_header,
    check_options,
    has_source_route,
    options_for_later_fragments,
    parse_ipv4,
)

if TYPE_CHECKING:
    from .stack import Stack

# Which SNMP counter each header drop reason is charged to, as Linux does.
_HEADER_MIB = {
    "truncated": "InTruncatedPkts",
    "checksum": "InCsumErrors",
}


def ip_input(stack: Stack, packet: bytes, iface: Interface) -> None:
    counters = stack.counters
    counters.ip["InReceives"] += 1
    iface.rx_packets += 1
    try:
        header = parse_ipv4(packet)
    except Malformed as bad:
        counters.ip[_HEADER_MIB.get(bad.reason, "InHdrErrors")] += 1
        if bad.reason == "checksum":
            counters.ip["InHdrErrors"] += 1
        counters.drop("ip", bad.reason)
        return
    # Addresses before options, as Linux (route lookup, then ip_rcv_options):
    # a parameter problem must never go to a martian (spoofed own or loopback) source.
    reason = martian(stack, header, iface)
    if reason is not None:
        counters.ip["InAddrErrors"] += 1
        counters.drop("ip", reason)
        return
    if header.options:
        bad_at = check_options(header.options)
        if bad_at is not None:
            counters.ip["InHdrErrors"] += 1
            counters.drop("ip", "bad_options")
            icmp.send_error(stack, header, packet, icmp.PARAM_PROBLEM, 0, (HEADER_LEN + bad_at) << 24)
            return
        if has_source_route(header.options):
            counters.ip["InDiscards"] += 1
            counters.drop("ip", "source_route")
            return
    if header.is_fragment:
        try:
            whole = stack.reassembler.add(header, stack.clock.now())
        except Malformed as bad:
            counters.drop("ip", bad.reason)
            return
        if whole is None:
            return
        header = whole
        # ICMP errors quote the reassembled datagram, not the last fragment.
        packet = build_ipv4_header(
            header.src, header.dst, header.proto, len(header.payload), header.ttl, header.tos,
            header.ident, header.flags, options=header.options,
        ) + header.payload
    deliver(stack, header, packet)


def martian(stack: Stack, header: IPv4Packet, iface: Interface) -> str | None:
    """Why a packet's addresses make it unacceptable here, or None.

    A host does not forward: anything not addressed to one of its
    addresses, a broadcast, or a joined multicast group is dropped.
    """
    src, dst = header.src, header.dst
    if is_multicast(src) or src == BROADCAST or is_reserved_class_e(src) or src == 0:
        return "martian_source"  # Linux's ipv4_is_lbcast: a subnet's broadcast address is let through
    if not iface.loopback and (is_loopback(src) or src in stack.local_addresses):
        return "martian_source"
    if dst in stack.local_addresses:
        if is_loopback(dst) and not iface.loopback:
            return "martian_destination"
        return None
    if dst == BROADCAST or dst == iface.broadcast:
        return None
    if is_multicast(dst):
        return None if stack.joined(dst) else "multicast_not_joined"
    if dst == 0 or is_loopback(dst):
        return "martian_destination"
    return "not_for_us"


def deliver(stack: Stack, header: IPv4Packet, packet: bytes) -> None:
    """Hand a (reassembled) datagram to the input handler its protocol registered (Stack.protocols)."""
    counters = stack.counters
    handler = stack.protocols.get(header.proto)
    if handler is None:
        counters.ip["InUnknownProtos"] += 1
        counters.drop("ip", "unknown_protocol")
        icmp.send_error(stack, header, packet, icmp.DEST_UNREACH, icmp.PROTO_UNREACH, 0)
        return
    counters.ip["InDelivers"] += 1
    handler(stack, header, packet)


def ip_output(
    stack: Stack,
    sock: Socket | None,
    route: Route,
    src: int,
    dst: int,
    proto: int,
    data: bytes,
    ttl: int,
    tos: int,
    pmtudisc: int = IP_PMTUDISC_WANT,
    options: bytes = b"",
) -> None:
    """Send one transport datagram, fragmenting it if it exceeds the path MTU.

    DF follows Linux: set when the socket asks for path-MTU discovery and
    the datagram fits; a datagram too big for the path with DF required
    fails with EMSGSIZE. ``options`` (a multiple of 4 bytes) are the IP
    options an ICMP reply echoes; sockets send none.
    """
    counters = stack.counters
    counters.ip["OutRequests"] += 1
    mtu = route.path_mtu
    total = HEADER_LEN + len(options) + len(data)
    if total > MAX_PACKET:
        counters.ip["OutDiscards"] += 1
        raise oserror(errno.EMSGSIZE)
    if total <= mtu:
        df = pmtudisc == IP_PMTUDISC_DO or pmtudisc == IP_PMTUDISC_PROBE or (
            pmtudisc == IP_PMTUDISC_WANT and not route.mtu_locked
        )
        if df:
            ident = next_socket_ident(sock)
            flags = FLAG_DF
        else:
            ident = stack.next_ident()
            flags = 0
        ip_emit(sock, route, mtu, src, dst, proto, data, ttl, tos, ident, flags, options)
        return
    if pmtudisc == IP_PMTUDISC_DO or pmtudisc == IP_PMTUDISC_PROBE:
        counters.ip["FragFails"] += 1
        raise oserror(errno.EMSGSIZE)
    ip_fragment(stack, sock, route, mtu, src, dst, proto, data, ttl, tos, options)


def ip_fragment(
    stack: Stack,
    sock: Socket | None,
    route: Route,
    mtu: int,
    src: int,
    dst: int,
    proto: int,
    data: bytes,
    ttl: int,
    tos: int,
    options: bytes = b"",
) -> None:
    """Send a datagram larger than the path MTU as fragments (Linux ip_fragment).

    Its own function, as in Linux, so that a specialization scenario can
    leave this rare path out of line (a datagram whose size is dynamic)
    or unfold it (a committed ADU, whose fragments are known in advance).
    The first fragment carries the options; the others keep only those
    marked copied, the rest turned to NOPs (ip_options_fragment).
    """
    counters = stack.counters
    ident = stack.next_ident()
    chunk = (mtu - HEADER_LEN - len(options)) & ~7
    offset = 0
    while offset < len(data):
        piece = data[offset : offset + chunk]
        more = FLAG_MF if offset + len(piece) < len(data) else 0
        ip_emit(sock, route, mtu, src, dst, proto, piece, ttl, tos, ident, more | (offset >> 3), options)
        counters.ip["FragCreates"] += 1
        offset += len(piece)
        if options:
            options = options_for_later_fragments(options)
    counters.ip["FragOKs"] += 1


def ip_emit(
    sock: Socket | None,
    route: Route,
    mtu: int,
    src: int,
    dst: int,
    proto: int,
    payload: bytes,
    ttl: int,
    tos: int,
    ident: int,
    flags_fragment: int,
    options: bytes = b"",
) -> None:
    """One packet: allocate its buffer, write the header in place, copy the payload in, transmit."""
    header_length = HEADER_LEN + len(options)
    skb = alloc_skb(header_length, len(payload), mtu)
    build_ipv4_header(src, dst, proto, len(payload), ttl, tos, ident, flags_fragment, skb.data, options)
    skb_copy_data(skb, header_length, payload)
    route.iface.transmit(skb, sock)


def next_socket_ident(sock: Socket | None) -> int:
    """IP ID of a DF datagram: a per-socket counter when connected, else 0 (RFC 6864)."""
    if sock is None or not sock.connected:
        return 0
    ident = sock.ip_id
    sock.ip_id = (ident + 1) & 0xFFFF
    return ident
