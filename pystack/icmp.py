"""ICMP: echo replies, error generation with rate limits, inbound errors to sockets."""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import ip
from .addr import BROADCAST, is_multicast
from .errors import Malformed
from .ipoptions import NoReply, reply_options
from .route import MIN_PMTU
from .socket import IP_PMTUDISC_DONT
from .wire.icmp import (
    DEST_UNREACH,
    ECHO_REPLY,
    ECHO_REQUEST,
    ERROR_TYPES,
    EXC_FRAGTIME,
    FRAG_NEEDED,
    PARAM_PROBLEM,
    PORT_UNREACH,
    PROTO_UNREACH,
    SOURCE_QUENCH,
    TIME_EXCEEDED,
    TIMESTAMP_REPLY,
    TIMESTAMP_REQUEST,
    build_icmp,
    parse_icmp,
)
from .wire.ipv4 import HEADER_LEN, PROTO_ICMP, IPv4Packet, build_ipv4_header, parse_quoted_ipv4

if TYPE_CHECKING:
    from .stack import Stack

__all__ = ["DEST_UNREACH", "PARAM_PROBLEM", "PORT_UNREACH", "PROTO_UNREACH", "TIME_EXCEEDED"]

# Linux: an ICMP error carries as much of the offending datagram as fits in 576 bytes.
ERROR_MAX_TOTAL = 576
IPTOS_TOS_MASK = 0x1E
IPTOS_PREC_INTERNETCONTROL = 0xC0
MS_PER_DAY = 86_400_000

# (errno, hard error) for each destination-unreachable code, as Linux's icmp_err_convert.
UNREACH_ERRORS = {
    0: (errno.ENETUNREACH, False),
    1: (errno.EHOSTUNREACH, False),
    2: (errno.ENOPROTOOPT, True),
    3: (errno.ECONNREFUSED, True),
    4: (errno.EMSGSIZE, False),
    5: (errno.EOPNOTSUPP, False),
    6: (errno.ENETUNREACH, True),
    7: (errno.EHOSTDOWN, True),
    8: (errno.ENONET, True),
    9: (errno.ENETUNREACH, True),
    10: (errno.EHOSTUNREACH, True),
    11: (errno.ENETUNREACH, False),
    12: (errno.EHOSTUNREACH, False),
    13: (errno.EHOSTUNREACH, True),
    14: (errno.EHOSTUNREACH, True),
    15: (errno.EHOSTUNREACH, True),
}

_OUT_MIB = {
    ECHO_REPLY: "OutEchoReps",
    DEST_UNREACH: "OutDestUnreachs",
    TIME_EXCEEDED: "OutTimeExcds",
    PARAM_PROBLEM: "OutParmProbs",
    TIMESTAMP_REPLY: "OutTimestampReps",
}
_IN_MIB = {
    ECHO_REPLY: "InEchoReps",
    ECHO_REQUEST: "InEchos",
    DEST_UNREACH: "InDestUnreachs",
    TIME_EXCEEDED: "InTimeExcds",
    PARAM_PROBLEM: "InParmProbs",
    SOURCE_QUENCH: "InSrcQuenchs",
    TIMESTAMP_REQUEST: "InTimestamps",
}


@dataclass
class TokenBucket:
    rate: float  # tokens per second
    burst: float
    tokens: float
    stamp: float

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class RateLimiter:
    """Linux's ICMP error limits: per destination (1/s, burst 6) and global (1000/s, burst 50)."""

    def __init__(self, per_host_rate: float = 1.0, per_host_burst: float = 6.0,
                 global_rate: float = 1000.0, global_burst: float = 50.0, max_hosts: int = 4096):
        self.per_host_rate = per_host_rate
        self.per_host_burst = per_host_burst
        self.global_bucket = TokenBucket(global_rate, global_burst, global_burst, 0.0)
        self.hosts: dict[int, TokenBucket] = {}
        self.max_hosts = max_hosts

    def allow(self, dst: int, now: float) -> str | None:
        """None if an error may go to ``dst`` now, else the counter to charge."""
        if not self.global_bucket.take(now):
            return "OutRateLimitGlobal"
        bucket = self.hosts.get(dst)
        if bucket is None:
            if len(self.hosts) >= self.max_hosts:
                self.hosts.clear()
            bucket = self.hosts[dst] = TokenBucket(
                self.per_host_rate, self.per_host_burst, self.per_host_burst, now
            )
        return None if bucket.take(now) else "OutRateLimitHost"


def icmp_input(stack: Stack, header: IPv4Packet, packet: bytes) -> None:
    counters = stack.counters
    counters.icmp["InMsgs"] += 1
    try:
        message = parse_icmp(header.payload)
    except Malformed as bad:
        counters.malformed("icmp", bad.reason)
        return
    counters.icmp[_IN_MIB.get(message.kind, "InOther")] += 1
    if message.kind == ECHO_REQUEST:
        echo_reply(stack, header, message.rest, message.payload)
    elif message.kind == TIMESTAMP_REQUEST:
        timestamp_reply(stack, header, message.rest, message.payload)
    elif message.kind in ERROR_TYPES:
        error_input(stack, message.kind, message.code, message.rest, message.payload)
    else:
        counters.drop("icmp", "ignored_type")


def echo_reply(stack: Stack, header: IPv4Packet, rest: int, body: bytes) -> None:
    if header.dst not in stack.local_addresses:  # icmp_echo_ignore_broadcasts, as Linux
        stack.counters.drop("icmp", "echo_to_broadcast")
        return
    output(stack, header.dst, header.src, ECHO_REPLY, 0, rest, body, header.tos, header)


def timestamp_reply(stack: Stack, header: IPv4Packet, rest: int, body: bytes) -> None:
    """RFC 792's timestamp reply, as Linux's icmp_timestamp: the originate time copied, the
    receive and transmit times both now, in milliseconds since midnight UT."""
    if header.dst not in stack.local_addresses:  # RFC 1122 3.2.2.8, as for echo
        stack.counters.drop("icmp", "timestamp_to_broadcast")
        return
    if len(body) < 4:
        stack.counters.icmp["InErrors"] += 1
        stack.counters.drop("icmp", "truncated")
        return
    times = body[:4] + ms_since_midnight(stack).to_bytes(4, "big") * 2
    output(stack, header.dst, header.src, TIMESTAMP_REPLY, 0, rest, times, header.tos, header)


def error_input(stack: Stack, kind: int, code: int, rest: int, body: bytes) -> None:
    """An ICMP error about a datagram we sent: tell the protocol and socket concerned."""
    counters = stack.counters
    try:
        inner = parse_quoted_ipv4(body)
    except Malformed:
        counters.icmp["InErrors"] += 1
        counters.drop("icmp", "error_quote_malformed")
        return
    if kind == DEST_UNREACH and code == FRAG_NEEDED:
        stack.routes.learn_pmtu(inner.dst, rest & 0xFFFF or MIN_PMTU, stack.clock.now())
    if kind == DEST_UNREACH:
        error, hard = UNREACH_ERRORS.get(code, (errno.EHOSTUNREACH, False))
    elif kind == TIME_EXCEEDED:
        error, hard = errno.EHOSTUNREACH, False
    elif kind == PARAM_PROBLEM:
        error, hard = errno.EPROTO, True
    else:
        counters.drop("icmp", "ignored_error_type")
        return
    handler = stack.error_handlers.get(inner.proto)
    if handler is None:
        counters.drop("icmp", "error_for_unknown_protocol")
    else:
        handler(stack, inner, error, hard)


def send_error(stack: Stack, header: IPv4Packet, packet: bytes, kind: int, code: int, rest: int) -> None:
    """Send an ICMP error about ``packet`` unless RFC 1122 forbids it or the rate limit says no."""
    counters = stack.counters
    if header.dst == BROADCAST or is_multicast(header.dst) or stack.is_broadcast(header.dst):
        return
    if header.src == 0 or stack.is_broadcast(header.src) or is_multicast(header.src):
        return  # RFC 1122 3.2.2: the source must name a single host
    if header.frag_offset != 0:
        return
    if header.proto == PROTO_ICMP:
        quoted = packet[header.header_length :]
        if len(quoted) < 1 or quoted[0] in ERROR_TYPES or quoted[0] > 18:
            return
    limited = stack.icmp_limiter.allow(header.src, stack.clock.now())
    if limited is not None:
        counters.icmp[limited] += 1
        return
    quote = packet[: min(len(packet), header.total_length, ERROR_MAX_TOTAL - HEADER_LEN - 8)]
    src = header.dst if header.dst in stack.local_addresses else 0
    # Linux: the original TOS bits with precedence "internetwork control" (0xC0).
    tos = (header.tos & IPTOS_TOS_MASK) | IPTOS_PREC_INTERNETCONTROL
    output(stack, src, header.src, kind, code, rest, quote, tos, header if kind != PARAM_PROBLEM else None)


def output(stack: Stack, src: int, dst: int, kind: int, code: int, rest: int, body: bytes, tos: int,
           answering: IPv4Packet | None = None) -> None:
    """Send a message; one ``answering`` a datagram echoes its Record Route and Timestamp
    options (RFC 1122 3.2.2.6), or is not sent where Linux's ip_options_echo fails."""
    route = stack.routes.lookup(dst, stack.clock.now())
    if route is None:
        stack.counters.icmp["OutErrors"] += 1
        stack.counters.ip["OutNoRoutes"] += 1
        return
    src = src or route.source
    options = b""
    if answering is not None and answering.options:
        try:
            options = reply_options(answering.options, src, lambda a: _stamps_here(stack, a), ms_since_midnight(stack))
        except NoReply:
            stack.counters.drop("icmp", "options_not_echoed")
            return
    message = build_icmp(kind, code, rest, body)
    stack.counters.icmp["OutMsgs"] += 1
    stack.counters.icmp[_OUT_MIB.get(kind, "OutOther")] += 1
    # Linux's ICMP socket uses IP_PMTUDISC_DONT: replies and errors never carry DF.
    ip.ip_output(
        stack, None, route, src, dst, PROTO_ICMP, message, stack.default_ttl, tos, IP_PMTUDISC_DONT, options,
    )


def ms_since_midnight(stack: Stack) -> int:
    """The time ICMP and IP timestamps carry: milliseconds since midnight UT (RFC 792)."""
    return int(stack.clock.wall() * 1000) % MS_PER_DAY


def _stamps_here(stack: Stack, address: int) -> bool:
    """Whether a prespecified Timestamp hop is this host: anything but a remote unicast
    address (Linux asks inet_addr_type of its local table)."""
    return address in stack.local_addresses or address == 0 or stack.is_broadcast(address) or is_multicast(address)


def reassembly_timeout(stack: Stack, first: IPv4Packet) -> None:
    """ICMP time exceeded for a datagram whose reassembly timed out (first fragment seen),
    quoting that fragment as far as 576 bytes allow, as Linux's ip_expire does."""
    quoted_header = build_ipv4_header(
        first.src, first.dst, first.proto, len(first.payload), first.ttl, first.tos, first.ident,
        first.flags | (first.frag_offset >> 3), options=first.options,
    )
    send_error(stack, first, quoted_header + first.payload, TIME_EXCEEDED, EXC_FRAGTIME, 0)
