"""The classic small services over UDP: echo (RFC 862), discard (RFC 863), chargen (RFC 864)."""

from __future__ import annotations

import trio

from .trio_api import DatagramSocket, Network

ECHO_PORT = 7
DISCARD_PORT = 9
CHARGEN_PORT = 19
MAX_DATAGRAM = 65535

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


async def udp_echo(sock: DatagramSocket) -> None:
    while True:
        data, peer = await sock.recvfrom(MAX_DATAGRAM)
        await _reply(sock, data, peer)


async def udp_discard(sock: DatagramSocket) -> None:
    while True:
        await sock.recvfrom(MAX_DATAGRAM)


async def udp_chargen(sock: DatagramSocket, network: Network) -> None:
    """Each datagram received is answered with 0-512 characters of the pattern."""
    line = 0
    while True:
        _, peer = await sock.recvfrom(MAX_DATAGRAM)
        size = network.stack.random.randrange(513)
        await _reply(sock, chargen_lines(line, size), peer)
        line += 1


async def _reply(sock: DatagramSocket, data: bytes, peer: tuple[str, int]) -> None:
    try:
        await sock.sendto(data, peer)
    except OSError:
        pass  # an unreachable or refused peer is its problem; the service keeps serving


async def serve_udp_services(network: Network, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Bind and serve echo, discard and chargen on all addresses until cancelled."""
    sockets = []
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
            task_status.started()
    finally:
        for sock in sockets:
            sock.close()
