"""TCP Fast Open (RFC 7413) as Linux does it: cookies, the sysctl's bits, the client's cookie cache.

A server's cookie is SipHash-2-4 of the client's and the server's address
under the 16-byte tcp_fastopen_key (Linux __tcp_fastopen_cookie_gen_cipher:
8 bytes, the hash in little-endian order); the key is the sysctl's four
32-bit words, each stored little-endian (proc_tcp_fastopen_key), or the
raw bytes of TCP_FASTOPEN_KEY. A client keeps the last cookie and MSS each
server sent (Linux keeps them in tcp_metrics), and whether the server
wanted the experimental option (kind 254, magic 0xF989) instead of kind 34.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import oserror
from .seq import seq_add
from .tcb import CLOSED, LISTEN, SYN_RECEIVED

if TYPE_CHECKING:
    from ..stack import Stack
    from ..wire.tcp import TcpSegment
    from .tcb import TCB

# net.ipv4.tcp_fastopen bits (Linux include/net/tcp.h TFO_*)
CLIENT_ENABLE = 0x1
SERVER_ENABLE = 0x2
CLIENT_NO_COOKIE = 0x4  # the client sends data in the SYN without a cookie
SERVER_COOKIE_NOT_REQD = 0x200  # the server takes a SYN's data without a valid cookie
SERVER_WO_SOCKOPT1 = 0x400  # every listener is Fast Open, as with TCP_FASTOPEN, without it

# Socket options (linux/tcp.h)
TCP_FASTOPEN = 23  # a listener takes data in SYNs; the value: how many may wait for their ACK
TCP_FASTOPEN_CONNECT = 30  # connect() returns at once; the first write sends the SYN with its data
TCP_FASTOPEN_KEY = 33  # a listener's own key
OPTIONS = (TCP_FASTOPEN, TCP_FASTOPEN_CONNECT, TCP_FASTOPEN_KEY)
MAX_TCP_OPTION_SPACE = 40  # left free in a SYN with data (Linux: for options middleboxes add)
SOMAXCONN = 4096

COOKIE_LEN = 8  # what a server makes (TCP_FASTOPEN_COOKIE_SIZE)
COOKIE_MIN, COOKIE_MAX = 4, 16  # what a client accepts (RFC 7413 4.1.1)
EXP_KIND, EXP_MAGIC = 254, 0xF989  # the experimental option (RFC 6994) Linux still understands
KEY_LEN = 16

_M64 = (1 << 64) - 1


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M64


def _sipround(v0: int, v1: int, v2: int, v3: int) -> tuple[int, int, int, int]:
    v0 = (v0 + v1) & _M64
    v1 = _rotl(v1, 13) ^ v0
    v0 = _rotl(v0, 32)
    v2 = (v2 + v3) & _M64
    v3 = _rotl(v3, 16) ^ v2
    v0 = (v0 + v3) & _M64
    v3 = _rotl(v3, 21) ^ v0
    v2 = (v2 + v1) & _M64
    v1 = _rotl(v1, 17) ^ v2
    return v0, v1, _rotl(v2, 32), v3


def siphash24(key: bytes, data: bytes) -> int:
    """SipHash-2-4 (Aumasson and Bernstein), as Linux's lib/siphash.c: the 64-bit value."""
    k0, k1 = struct.unpack("<QQ", key)
    v = (k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D, k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573)
    end = len(data) - len(data) % 8
    last = (len(data) & 0xFF) << 56 | int.from_bytes(data[end:], "little")
    for m in (*struct.unpack_from(f"<{end // 8}Q", data), last):
        v = _sipround(v[0], v[1], v[2], v[3] ^ m)
        v = _sipround(*v)
        v = (v[0] ^ m, v[1], v[2], v[3])
    v = (v[0], v[1], v[2] ^ 0xFF, v[3])
    for _ in range(4):
        v = _sipround(*v)
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def make_cookie(key: bytes, client: bytes, server: bytes) -> bytes:
    """The cookie a server with ``key`` gives the client at address ``client`` (network-order bytes)."""
    return struct.pack("<Q", siphash24(key, client + server))


def parse_key(text: str) -> bytes:
    """The key of ``net.ipv4.tcp_fastopen_key``'s text (four hex words joined by '-'); ValueError if not one.

    Linux accepts a second (backup) key after a comma; the primary one is what makes cookies."""
    words = text.strip().split(",")[0].split("-")
    if len(words) != 4:
        raise ValueError(f"tcp_fastopen_key {text!r}: four 32-bit hex words joined by '-' expected")
    return b"".join(struct.pack("<I", int(word, 16) & 0xFFFFFFFF) for word in words)


def valid_cookie(cookie: bytes | None) -> bytes | None:
    """A cookie option's value as Linux takes it (tcp_parse_fastopen_option): a request (b""), an
    even-length cookie of 4 to 16 bytes, or None (no option, or one of a length it ignores)."""
    if cookie is None or cookie == b"" or COOKIE_MIN <= len(cookie) <= COOKIE_MAX and len(cookie) % 2 == 0:
        return cookie
    return None


# ---------------------------------------------------------------- server


def set_option(stack: Stack, tcb: TCB, option: int, value: int | bytes, number: int) -> None:
    """setsockopt() of one of OPTIONS (Linux do_tcp_setsockopt)."""
    if option == TCP_FASTOPEN_CONNECT:
        if not 0 <= number <= 1:
            raise oserror(errno.EINVAL)
        if not stack.tcp.config.fastopen & CLIENT_ENABLE:
            raise oserror(errno.EOPNOTSUPP)
        if tcb.state != CLOSED:
            raise oserror(errno.EINVAL)
        tcb.fastopen_connect = bool(number)
    elif option == TCP_FASTOPEN:
        if number < 0 or tcb.state not in (CLOSED, LISTEN):
            raise oserror(errno.EINVAL)
        tcb.fastopen_max_qlen = min(number, SOMAXCONN)
    elif option == TCP_FASTOPEN_KEY:
        # Linux also takes a backup key after the first (key rotation): cookies come from the first.
        if not isinstance(value, bytes | bytearray) or len(value) not in (KEY_LEN, 2 * KEY_LEN):
            raise oserror(errno.EINVAL)
        tcb.fastopen_key = bytes(value[:KEY_LEN])


def listen_tune(stack: Stack, listener: TCB, backlog: int) -> None:
    """listen(): with tcp_fastopen's 0x400 every listener takes Fast Open (Linux inet_listen)."""
    bits = stack.tcp.config.fastopen
    if bits & SERVER_WO_SOCKOPT1 and bits & SERVER_ENABLE and not listener.fastopen_max_qlen:
        listener.fastopen_max_qlen = backlog


def queue_has_room(stack: Stack, listener: TCB) -> bool:
    """Linux tcp_fastopen_queue_check: Fast Open is on for the listener and fewer of its Fast Open
    connections than TCP_FASTOPEN's limit still wait for the peer's ACK."""
    if not listener.fastopen_max_qlen:
        return False
    pending = sum(1 for child in listener.accept_queue if child.fastopen_passive and child.state == SYN_RECEIVED)
    if pending >= listener.fastopen_max_qlen:
        stack.counters.tcp["TCPFastOpenListenOverflow"] += 1
        return False
    return True


def syn_input(stack: Stack, listener: TCB, child: TCB, client: int, server: int, seg: TcpSegment) -> bool:
    """A SYN to a listener, as Linux's tcp_try_fastopen: True if ``child`` took the data it carries
    (a valid cookie, or tcp_fastopen's 0x200), so that it joins the accept queue at once.

    Otherwise its SYN-ACK carries the cookie the client should have sent,
    when the SYN carried a cookie option (a request, or a wrong cookie).
    """
    bits = stack.tcp.config.fastopen
    counters = stack.counters.tcp
    cookie = valid_cookie(seg.options.fastopen)
    if not (bits & SERVER_ENABLE and (seg.payload or cookie is not None) and queue_has_room(stack, listener)):
        return False
    valid = make_cookie(listener.fastopen_key or stack.tcp.config.fastopen_key,
                        client.to_bytes(4, "big"), server.to_bytes(4, "big"))
    if bits & SERVER_COOKIE_NOT_REQD or cookie == valid:
        counters["TCPFastOpenPassive"] += 1
        child.fastopen_passive = True
        child.syn_data_acked = bool(seg.payload)
        child.syn_data_received = len(seg.payload)
        child.recv_buffer += seg.payload
        child.rcv_nxt = child.rcv_adv = child.rcv_edge = child.rcv_wup = seq_add(child.rcv_nxt, len(seg.payload))
        child.cwnd = stack.tcp.config.initial_cwnd  # it may send before the handshake ends
        child.ca.init(child, stack.clock.now())
        return True
    if cookie == b"":
        counters["TCPFastOpenCookieReqd"] += 1
    elif cookie is not None:
        counters["TCPFastOpenPassiveFail"] += 1
    if cookie is not None:
        child.fastopen_option, child.fastopen_option_exp = valid, seg.options.fastopen_exp
    return False


@dataclass
class CachedCookie:
    """What a client remembers of one server (Linux tcp_fastopen_metrics)."""

    cookie: bytes = b""
    mss: int = 0  # the MSS of its last SYN-ACK
    exp: bool = False  # the cookie came in the experimental option (and goes back in it)
    try_exp: int = 0  # 1: a request in kind 34 went unanswered, ask in the experimental form; 2: back


# ---------------------------------------------------------------- client


def defer_connect(stack: Stack, tcb: TCB) -> bool:
    """connect() with TCP_FASTOPEN_CONNECT and a cookie cached: it returns at once, and the first
    write sends the SYN with the data (Linux tcp_fastopen_defer_connect)."""
    cached = stack.tcp.fastopen_cache.get(tcb.remote_addr)
    return tcb.fastopen_connect and (bool(cached and cached.cookie) or no_cookie(stack))


def no_cookie(stack: Stack) -> bool:
    return bool(stack.tcp.config.fastopen & CLIENT_NO_COOKIE)


def prepare_syn(stack: Stack, tcb: TCB, data: bytes | None) -> int:
    """Our SYN's Fast Open option, and how much of ``data`` (a Fast Open send's) it carries
    (Linux tcp_send_syn_data): with a cached cookie (or tcp_fastopen's 0x4, none), as much as
    the server's cached MSS less 40 bytes of options allows; without, a cookie request and no data."""
    if data is None and not tcb.fastopen_connect:
        return 0  # a plain connect()
    cached = stack.tcp.fastopen_cache.get(tcb.remote_addr) or CachedCookie()
    if data is not None and (cached.cookie or no_cookie(stack)):
        mss = min(tcb.advmss, cached.mss or tcb.advmss, tcb.user_mss or tcb.advmss)
        taken = min(max(mss - MAX_TCP_OPTION_SPACE, 0), len(data))
        if not no_cookie(stack):
            tcb.fastopen_option, tcb.fastopen_option_exp = cached.cookie, cached.exp
        tcb.syn_data = taken > 0
    else:
        tcb.fastopen_option, tcb.fastopen_option_exp = b"", cached.try_exp == 1
        taken = 0
    tcb.syn_fastopen = tcb.fastopen_option is not None
    tcb.syn_fastopen_exp = tcb.syn_fastopen and tcb.fastopen_option_exp
    return taken


def synack_input(stack: Stack, tcb: TCB, seg: TcpSegment, syn_retransmitted: bool) -> bool:
    """The SYN-ACK of a Fast Open SYN, its ACK taken (Linux tcp_rcv_fastopen_synack): the cache
    learns the server's MSS and cookie; True if data of the SYN is still unacknowledged (to be
    sent again at once)."""
    cookie = valid_cookie(seg.options.fastopen)
    unacked = tcb.syn_data and bool(tcb.rtx)
    try_exp = 0
    if not tcb.syn_fastopen:
        cookie = None  # unsolicited: ignored
    elif not syn_retransmitted and not cookie and not tcb.syn_data:
        try_exp = 2 if tcb.syn_fastopen_exp else 1  # asked, and no cookie came
    cached = stack.tcp.fastopen_cache.setdefault(tcb.remote_addr, CachedCookie())
    if seg.options.mss:
        cached.mss = seg.options.mss  # as sent, whatever TCP_MAXSEG clamps this connection to (Linux)
    if cookie:
        cached.cookie, cached.exp = cookie, seg.options.fastopen_exp
    elif try_exp > cached.try_exp and not cached.cookie and not cached.exp:
        cached.try_exp = try_exp
    if unacked:
        stack.counters.tcp["TCPFastOpenActiveFail"] += 1
        return True
    tcb.syn_data_acked = tcb.syn_data
    if tcb.syn_data_acked:
        stack.counters.tcp["TCPFastOpenActive"] += 1
    return False
