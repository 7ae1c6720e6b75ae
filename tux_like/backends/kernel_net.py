"""The server on the kernel's sockets: non-blocking calls, readiness from epoll.

The same stages as on pystack, for comparison: each watch arms the socket
in an epoll set, one-shot and level-triggered (so a socket ready already
reports at once); the backend's trio task waits for the epoll descriptor
and hands the ready sockets to the driver. Sockets come from
``make_socket``, so that a caller can create them inside a namespace.
"""

from __future__ import annotations

import select
import socket
from collections import deque
from collections.abc import Callable, Iterator

import trio

from . import connection_error

READABLE = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLONESHOT
WRITABLE = select.EPOLLOUT | select.EPOLLONESHOT
EVENTS_PER_POLL = 1024


class KernelNet:
    """:class:`tux_like.core.Net` on kernel sockets (``socket.socket`` objects)."""

    def __init__(self, make_socket: Callable[[int, int], socket.socket] = socket.socket):
        self.make_socket = make_socket
        self.ready: deque[socket.socket] = deque()
        self.on_ready: Callable[[], None] = lambda: None
        self._epoll = select.epoll()
        self._registered: dict[int, socket.socket] = {}  # fd -> its socket, while open

    async def run(self) -> None:
        """Wait for the epoll set, queue what it reports; closes the set when cancelled."""
        epoll, registered = self._epoll, self._registered
        try:
            while True:
                await trio.lowlevel.wait_readable(epoll.fileno())
                for fd, _ in epoll.poll(0, EVENTS_PER_POLL):
                    sock = registered.get(fd)
                    if sock is not None:
                        self.ready.append(sock)
                if self.ready:
                    self.on_ready()
        finally:
            epoll.close()

    def take_ready(self) -> Iterator[socket.socket]:
        ready = self.ready
        while ready:
            yield ready.popleft()

    # ------------------------------------------------------------ Net

    def listen(self, address: str, port: int, backlog: int) -> socket.socket:
        sock = self.make_socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # No Nagle wait between a response's header and body (accepted sockets inherit it).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            sock.bind((address, port))
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        return sock

    def accept(self, listener: socket.socket) -> tuple[socket.socket, tuple[str, int]] | None:
        try:
            sock, peer = listener.accept()
        except (BlockingIOError, ConnectionAbortedError):
            return None  # nothing waiting (or it went away before we took it)
        sock.setblocking(False)
        return sock, peer[:2]

    def recv(self, sock: socket.socket, size: int) -> bytes | None:
        try:
            return sock.recv(size)
        except BlockingIOError:
            return None
        except OSError as error:
            raise connection_error(error) from None

    def send(self, sock: socket.socket, data: bytes | bytearray | memoryview) -> int:
        try:
            return sock.send(data)
        except BlockingIOError:
            return 0
        except OSError as error:
            raise connection_error(error) from None

    def shutdown_write(self, sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the connection is gone already: the next recv or send says so

    def close(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        if fd >= 0 and self._registered.get(fd) is sock:
            del self._registered[fd]  # closing the descriptor takes it out of the epoll set
        sock.close()

    def watch(self, sock: socket.socket, writable: bool) -> None:
        fd = sock.fileno()
        events = WRITABLE if writable else READABLE
        if self._registered.get(fd) is sock:
            self._epoll.modify(fd, events)
        else:
            self._epoll.register(fd, events)
            self._registered[fd] = sock

    def local_address(self, sock: socket.socket) -> tuple[str, int]:
        return sock.getsockname()[:2]
