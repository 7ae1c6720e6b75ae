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

import struct
from dataclasses import dataclass

# net.ipv4.tcp_fastopen bits (Linux include/net/tcp.h TFO_*)
CLIENT_ENABLE = 0x1
SERVER_ENABLE = 0x2
CLIENT_NO_COOKIE = 0x4  # the client sends data in the SYN without a cookie
SERVER_COOKIE_NOT_REQD = 0x200  # the server takes a SYN's data without a valid cookie
SERVER_WO_SOCKOPT1 = 0x400  # every listener is Fast Open, as with TCP_FASTOPEN, without it
DEFAULT_SYSCTL = CLIENT_ENABLE  # Linux's default
DEFAULT_MAX_QLEN = 10  # a listener's queue without the sockopt (Linux TFO_SERVER_WO_SOCKOPT1's backlog)

COOKIE_LEN = 8  # what a server makes (TCP_FASTOPEN_COOKIE_SIZE)
COOKIE_MIN, COOKIE_MAX = 4, 16  # what a client accepts (RFC 7413 4.1.1)
EXP_KIND, EXP_MAGIC = 254, 0xF989  # the experimental option (RFC 6994) Linux still understands
KEY_LEN = 16
# Linux's boot-time key is random; pystack's default is packetdrill's defaults.sh key, so that
# runs repeat: a stack that serves Fast Open sets its own (tcp_fastopen_key).
DEFAULT_KEY = bytes.fromhex("a1a1a1a1b2b2b2b2c3c3c3c3d4d4d4d4")

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


@dataclass
class CachedCookie:
    """What a client remembers of one server (Linux tcp_fastopen_metrics)."""

    cookie: bytes = b""
    mss: int = 0
    exp: bool = False  # the server answered in the experimental option
    syn_loss: bool = False  # a SYN with data went unanswered: the next SYN carries none
