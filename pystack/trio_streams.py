"""trio streams over pystack TCP: ``trio.abc.HalfCloseableStream`` and ``Listener``.

They mirror trio's SocketStream and SocketListener, so code written
against trio's stream interfaces runs on pystack unchanged.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import trio

from .socket import AF_INET, SO_REUSEADDR, SOCK_STREAM, SOL_SOCKET
from .tcp.api import SHUT_WR

if TYPE_CHECKING:
    from .trio_api import Network, PyStackSocket

DEFAULT_RECEIVE_SIZE = 65536
_BROKEN = {errno.EPIPE, errno.ECONNRESET, errno.ETIMEDOUT, errno.ECONNABORTED, errno.EHOSTUNREACH}


class PyStackStream(trio.abc.HalfCloseableStream):
    """A connected pystack TCP socket as a trio stream."""

    def __init__(self, socket: PyStackSocket):
        self.socket = socket
        self._send_conflict = _OneAtATime("another task is sending on this stream")
        self._receive_conflict = _OneAtATime("another task is receiving on this stream")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        with self._send_conflict:
            if self.socket.closed:
                raise trio.ClosedResourceError("this stream was closed")
            view = memoryview(data)
            if not view:
                await trio.lowlevel.checkpoint()
                return
            with _translate_errors():
                while view:
                    sent = await self.socket.send(bytes(view[:DEFAULT_RECEIVE_SIZE * 4]))
                    view = view[sent:]

    async def wait_send_all_might_not_block(self) -> None:
        with self._send_conflict:
            if self.socket.closed:
                raise trio.ClosedResourceError("this stream was closed")
            await trio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        with self._send_conflict:
            if self.socket.closed:
                raise trio.ClosedResourceError("this stream was closed")
            await trio.lowlevel.checkpoint()
            with _translate_errors():
                self.socket.shutdown(SHUT_WR)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        with self._receive_conflict:
            if max_bytes is None:
                max_bytes = DEFAULT_RECEIVE_SIZE
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
            if self.socket.closed:
                raise trio.ClosedResourceError("this stream was closed")
            with _translate_errors():
                return await self.socket.recv(max_bytes)

    async def aclose(self) -> None:
        self.socket.close()
        await trio.lowlevel.checkpoint()


class PyStackListener(trio.abc.Listener[PyStackStream]):
    """A listening pystack TCP socket as a trio listener."""

    def __init__(self, socket: PyStackSocket):
        self.socket = socket

    async def accept(self) -> PyStackStream:
        if self.socket.closed:
            raise trio.ClosedResourceError("this listener was closed")
        connection, _peer = await self.socket.accept()
        return PyStackStream(connection)

    async def aclose(self) -> None:
        self.socket.close()
        await trio.lowlevel.checkpoint()


class _OneAtATime:
    """trio's rule for streams: a second concurrent sender (or receiver) is an error."""

    def __init__(self, message: str):
        self._message = message
        self._busy = False

    def __enter__(self) -> None:
        if self._busy:
            raise trio.BusyResourceError(self._message)
        self._busy = True

    def __exit__(self, *exc_info: object) -> None:
        self._busy = False


@contextmanager
def _translate_errors() -> Iterator[None]:
    """Connection failures become trio.BrokenResourceError, as trio's SocketStream does."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _BROKEN:
            raise trio.BrokenResourceError(f"pystack connection broke: {exc}") from exc
        if exc.errno == errno.EBADF:
            raise trio.ClosedResourceError("this stream was closed") from exc
        raise


async def open_tcp_stream(network: Network, host: str, port: int) -> PyStackStream:
    sock = network.socket(AF_INET, SOCK_STREAM)
    try:
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return PyStackStream(sock)


async def open_tcp_listeners(network: Network, port: int, *, host: str | None = None,
                             backlog: int | None = None) -> list[PyStackListener]:
    sock = network.socket(AF_INET, SOCK_STREAM)
    try:
        sock.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
        await sock.bind((host or "0.0.0.0", port))
        sock.listen(backlog if backlog is not None else 128)
    except BaseException:
        sock.close()
        raise
    return [PyStackListener(sock)]
