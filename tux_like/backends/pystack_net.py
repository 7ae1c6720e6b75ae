"""The server on pystack's own fd API, in the process that runs the stack.

As TUX runs in the kernel beside TCP, the stages' socket calls here are
plain function calls into the stack: no system-call boundary, no copy into
a kernel. Readiness comes from the stack's wake-ups (``Driver.watch``),
checked against ``Stack.poll`` so that only the awaited event reports.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator

import trio

from pystack.driver import Driver
from pystack.socket import (
    AF_INET,
    IPPROTO_TCP,
    MSG_DONTWAIT,
    POLLERR,
    POLLHUP,
    POLLIN,
    POLLOUT,
    SOCK_STREAM,
)
from pystack.tcp.api import SHUT_WR, TCP_NODELAY

from . import connection_error

READABLE = POLLIN | POLLERR | POLLHUP
WRITABLE = POLLOUT | POLLERR | POLLHUP


class PystackNet:
    """:class:`tux_like.core.Net` on a stack run by ``driver``; sockets are its fds."""

    def __init__(self, driver: Driver):
        self.driver = driver
        self.stack = driver.stack
        self.ready: deque[int] = deque()
        self.on_ready: Callable[[], None] = lambda: None
        self._armed: dict[int, int] = {}  # fd -> the poll bits its watch waits for

    async def run(self) -> None:
        """Nothing to poll: the stack's wake-ups arrive through ``Driver.watch``."""
        await trio.sleep_forever()

    def take_ready(self) -> Iterator[int]:
        ready = self.ready
        while ready:
            yield ready.popleft()

    # ------------------------------------------------------------ Net

    def listen(self, address: str, port: int, backlog: int) -> int:
        stack = self.stack
        fd = stack.socket(AF_INET, SOCK_STREAM)
        try:
            # Headers and bodies go out as they are sent: no Nagle wait on a keep-alive
            # connection (accepted connections inherit it).
            stack.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, 1)
            stack.bind(fd, (address, port))
            stack.listen(fd, backlog)
        except BaseException:
            stack.close(fd)
            raise
        self.driver.watch(fd, self._woken)
        return fd

    def accept(self, listener: int) -> tuple[int, tuple[str, int]] | None:
        try:
            fd, peer = self.stack.accept(listener)
        except BlockingIOError:
            return None
        self.driver.watch(fd, self._woken)
        return fd, peer

    def recv(self, sock: int, size: int) -> bytes | None:
        try:
            return self.stack.recv(sock, size, MSG_DONTWAIT)
        except BlockingIOError:
            return None
        except OSError as error:
            raise connection_error(error) from None
        finally:
            self.driver.timers_changed()  # a window update may have gone out

    def send(self, sock: int, data: bytes | bytearray | memoryview) -> int:
        try:
            return self.stack.send(sock, data, MSG_DONTWAIT)
        except BlockingIOError:
            return 0
        except OSError as error:
            raise connection_error(error) from None
        finally:
            self.driver.timers_changed()

    def shutdown_write(self, sock: int) -> None:
        try:
            self.stack.shutdown(sock, SHUT_WR)
        except OSError:
            pass  # the connection is gone already: the next recv or send says so
        self.driver.timers_changed()

    def close(self, sock: int) -> None:
        self.driver.watch(sock, None)
        self._armed.pop(sock, None)
        if sock in self.stack.sockets:
            self.stack.close(sock)
            self.driver.timers_changed()

    def watch(self, sock: int, writable: bool) -> None:
        self._armed[sock] = WRITABLE if writable else READABLE
        self._woken(sock)  # ready already?

    def local_address(self, sock: int) -> tuple[str, int]:
        return self.stack.getsockname(sock)

    # ------------------------------------------------------------ wake-ups

    def _woken(self, fd: int) -> None:
        """The stack woke ``fd`` (or a watch was armed): report it if what it waits for is there."""
        wanted = self._armed.get(fd)
        if wanted is not None and self.stack.poll(fd) & wanted:
            del self._armed[fd]
            self.ready.append(fd)
            self.on_ready()
