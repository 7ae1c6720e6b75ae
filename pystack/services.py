"""The classic small services: echo (RFC 862), discard (RFC 863), chargen (RFC 864), UDP and TCP."""

from __future__ import annotations

import trio

from .trio_api import Network, PyStackSocket
from .trio_streams import PyStackStream

ECHO_PORT = 7
DISCARD_PORT = 9
CHARGEN_PORT = 19
MAX_DATAGRAM = 65535
CHARGEN_TCP_LIMIT = 1 << 30  # a TCP chargen stream stops by itself after this many bytes

# RFC 864's pattern: the 95 printable ASCII characters, rotated one per line.
_PRINTABLE = bytes(range(32, 127))


def chargen_lines(start: int, size: int) -> bytes:
    """``size`` bytes of the chargen pattern, 72-character lines, starting at line ``start``."""
    out = bytearray()
    line = start
    while len(out) < size:
        offset = line % len(_PRINTABLE)
        out += (_PRINTABLE[offset:] + _PRINTABLE[:offset])[:72] + b"\r\n"
        line += 1
    return bytes(out[:size])


# ---------------------------------------------------------------- UDP


async def udp_echo(sock: PyStackSocket) -> None:
    while True:
        data, peer = await sock.recvfrom(MAX_DATAGRAM)
        await _reply(sock, data, peer)


async def udp_discard(sock: PyStackSocket) -> None:
    while True:
        await sock.recvfrom(MAX_DATAGRAM)


async def udp_chargen(sock: PyStackSocket, network: Network) -> None:
    """Each datagram received is answered with 0-512 characters of the pattern."""
    line = 0
    while True:
        _, peer = await sock.recvfrom(MAX_DATAGRAM)
        size = network.stack.random.randrange(513)
        await _reply(sock, chargen_lines(line, size), peer)
        line += 1


async def _reply(sock: PyStackSocket, data: bytes, peer: tuple[str, int]) -> None:
    try:
        await sock.sendto(data, peer)
    except OSError:
        pass  # an unreachable or refused peer is its problem; the service keeps serving


# ---------------------------------------------------------------- TCP


async def tcp_echo(stream: PyStackStream) -> None:
    async with stream:
        try:
            while data := await stream.receive_some():
                await stream.send_all(data)
            await stream.send_eof()
        except trio.BrokenResourceError:
            pass


async def tcp_discard(stream: PyStackStream) -> None:
    async with stream:
        try:
            while await stream.receive_some():
                pass
        except trio.BrokenResourceError:
            pass


async def tcp_chargen(stream: PyStackStream) -> None:
    """Send the pattern until the client goes away (or a gigabyte has gone)."""
    block = chargen_lines(0, 74 * 95)  # one full rotation of the pattern
    async with stream:
        try:
            for _ in range(CHARGEN_TCP_LIMIT // len(block)):
                await stream.send_all(block)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


# ---------------------------------------------------------------- all of them


async def serve_services(network: Network, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve echo, discard and chargen over UDP and TCP on all addresses until cancelled."""
    sockets: list[PyStackSocket] = []
    try:
        async with trio.open_nursery() as nursery:
            for port, serve in ((ECHO_PORT, udp_echo), (DISCARD_PORT, udp_discard)):
                sock = network.socket()
                sockets.append(sock)
                await sock.bind(("0.0.0.0", port))
                nursery.start_soon(serve, sock)
            chargen = network.socket()
            sockets.append(chargen)
            await chargen.bind(("0.0.0.0", CHARGEN_PORT))
            nursery.start_soon(udp_chargen, chargen, network)
            for port, handler in ((ECHO_PORT, tcp_echo), (DISCARD_PORT, tcp_discard), (CHARGEN_PORT, tcp_chargen)):
                await nursery.start(network.serve_tcp, handler, port)
            task_status.started()
    finally:
        for sock in sockets:
            sock.close()


