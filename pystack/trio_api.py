"""trio-native sockets on a pystack Stack, shaped like ``trio.socket`` objects.

Every call goes to the stack's fd API; when the stack says EAGAIN on a
blocking socket, the call parks until the socket is woken and retries,
so ``await sock.recvfrom(2048)`` blocks as it would on a kernel socket.
:class:`Network` also offers trio's high-level TCP calls
(``open_tcp_stream``, ``open_tcp_listeners``, ``serve_tcp``), so a trio
program moves from the kernel's network to pystack by changing one call.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Self, TypeVar

import trio

from . import trio_streams as streams
from .driver import Driver
from .errors import oserror
from .links.base import Link
from .socket import AF_INET, SOCK_DGRAM, SOCK_STREAM, BadUserBuffer
from .stack import Address, ControlMessage, Stack

T = TypeVar("T")


class Network:
    """A stack under a running driver: the place trio code gets sockets from."""

    def __init__(self, driver: Driver):
        self.driver = driver
        self.stack: Stack = driver.stack

    def socket(self, family: int = AF_INET, type: int = SOCK_DGRAM, proto: int = 0) -> PyStackSocket:
        return PyStackSocket(self, self.stack.socket(family, type, proto))

    async def open_tcp_stream(self, host: str, port: int) -> streams.PyStackStream:
        """Connect to host:port (a dotted quad: pystack resolves no names), like trio's."""
        return await streams.open_tcp_stream(self, host, port)

    async def open_tcp_listeners(self, port: int, *, host: str | None = None,
                                 backlog: int | None = None) -> list[streams.PyStackListener]:
        return await streams.open_tcp_listeners(self, port, host=host, backlog=backlog)

    async def serve_tcp(self, handler: Callable[[streams.PyStackStream], Awaitable[object]], port: int, *,
                        host: str | None = None, backlog: int | None = None,
                        handler_nursery: trio.Nursery | None = None,
                        task_status: trio.TaskStatus[list[streams.PyStackListener]] = trio.TASK_STATUS_IGNORED,
                        ) -> None:
        """Like trio.serve_tcp: listen on ``port`` and run ``handler(stream)`` per connection."""
        listeners = await self.open_tcp_listeners(port, host=host, backlog=backlog)
        await trio.serve_listeners(handler, listeners, handler_nursery=handler_nursery,
                                   task_status=task_status)


@asynccontextmanager
async def running(stack: Stack, links: Mapping[str, Link]) -> AsyncIterator[Network]:
    """Run ``stack`` on ``links`` (interface name -> link) for the body of an ``async with``."""
    driver = Driver(stack, links)
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        try:
            yield Network(driver)
        finally:
            nursery.cancel_scope.cancel()


class PyStackSocket:
    """A socket of the stack, with trio's socket methods (awaitable where trio's are)."""

    def __init__(self, network: Network, fd: int):
        self._network = network
        self._stack = network.stack
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    @property
    def type(self) -> int:
        return self._stack.sockfd_lookup(self._fd).type

    async def _call(self, flags: int, call: Callable[[], T]) -> T:
        """Run a stack call, waiting on the socket while it says EAGAIN and we may block."""
        await trio.lowlevel.checkpoint_if_cancelled()
        driver = self._network.driver
        while True:
            try:
                result = call()
            except BlockingIOError as pending:
                driver.timers_changed()
                if self._stack.is_nonblocking(self._fd, flags):
                    raise
                if pending.errno == errno.EINPROGRESS:
                    await self._handshake()  # a Fast Open send connected, its SYN took no data: then send
                else:
                    await driver.wait_socket(self._fd)
                continue
            except BaseException:
                driver.timers_changed()
                raise
            driver.timers_changed()
            await trio.lowlevel.cancel_shielded_checkpoint()
            return result

    async def bind(self, address: Address) -> None:
        await trio.lowlevel.checkpoint()
        self._stack.bind(self._fd, address)

    async def connect(self, address: Address | None) -> None:
        """Connect; for TCP, wait for the handshake (unless the socket is non-blocking)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        driver = self._network.driver
        try:
            self._stack.connect(self._fd, address)
        except BlockingIOError as pending:
            driver.timers_changed()
            if pending.errno != errno.EINPROGRESS or self._stack.is_nonblocking(self._fd):
                raise
            await self._handshake()
        await trio.lowlevel.cancel_shielded_checkpoint()

    def listen(self, backlog: int = 128) -> None:
        self._stack.listen(self._fd, backlog)

    async def accept(self) -> tuple[PyStackSocket, Address]:
        fd, peer = await self._call(0, lambda: self._stack.accept(self._fd))
        return PyStackSocket(self._network, fd), peer

    def shutdown(self, how: int) -> None:
        self._stack.shutdown(self._fd, how)
        self._network.driver.timers_changed()

    async def send(self, data: bytes, flags: int = 0) -> int:
        return await self._fastopen_wait(flags, await self._call(flags, lambda: self._stack.send(self._fd, data, flags)))

    async def _fastopen_wait(self, flags: int, result: T) -> T:
        """A blocking send that opened a connection (Fast Open: MSG_FASTOPEN, TCP_FASTOPEN_CONNECT)
        returns once the handshake is over, or fails with its error, as Linux's does."""
        if self.type == SOCK_STREAM and not self._stack.is_nonblocking(self._fd, flags) \
                and self._stack.connecting(self._fd):
            await self._handshake()
        return result

    async def _handshake(self) -> None:
        """Wait for the handshake under way; its error, if it failed."""
        while (outcome := self._stack.connect_result(self._fd)) == errno.EINPROGRESS:
            await self._network.driver.wait_socket(self._fd)
        if outcome:
            raise oserror(outcome) from None

    async def sendto(self, data: bytes, flags_or_address: int | Address, address: Address | None = None) -> int:
        """``sendto(data, address)`` or ``sendto(data, flags, address)``, as Python's socket."""
        if address is None:
            flags, address = 0, flags_or_address  # type: ignore[assignment]
        else:
            flags = flags_or_address  # type: ignore[assignment]
        return await self._fastopen_wait(flags, await self._call(
            flags, lambda: self._stack.sendto(self._fd, data, flags, address)))

    async def sendmsg(
        self,
        buffers: Iterable[bytes],
        ancdata: Iterable[ControlMessage] = (),
        flags: int = 0,
        address: Address | None = None,
    ) -> int:
        buffers, ancdata = list(buffers), list(ancdata)
        return await self._fastopen_wait(flags, await self._call(
            flags, lambda: self._stack.sendmsg(self._fd, buffers, ancdata, flags, address)))

    async def recv(self, bufsize: int, flags: int = 0) -> bytes:
        return await self._call(flags, lambda: self._stack.recv(self._fd, bufsize, flags))

    async def recv_into(self, buffer: bytearray | memoryview | BadUserBuffer, nbytes: int = 0, flags: int = 0) -> int:
        return await self._call(flags, lambda: self._stack.recv_into(self._fd, buffer, nbytes, flags))

    async def splice_read(self, size: int) -> bytes:
        return await self._call(0, lambda: self._stack.splice_read(self._fd, size))

    async def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Address]:
        return await self._call(flags, lambda: self._stack.recvfrom(self._fd, bufsize, flags))

    async def recvmsg(self, bufsize: int, ancbufsize: int = 0, flags: int = 0) -> tuple[bytes, list, int, Address]:
        return await self._call(flags, lambda: self._stack.recvmsg(self._fd, bufsize, flags))

    def setsockopt(self, level: int, option: int, value: int | bytes) -> None:
        self._stack.setsockopt(self._fd, level, option, value)

    def getsockopt(self, level: int, option: int, buflen: int = 0) -> int | bytes:
        return self._stack.getsockopt(self._fd, level, option, buflen)

    def getsockname(self) -> Address:
        return self._stack.getsockname(self._fd)

    def getpeername(self) -> Address:
        return self._stack.getpeername(self._fd)

    def close(self) -> None:
        if self._fd in self._stack.sockets:
            self._stack.close(self._fd)
            self._network.driver.timers_changed()

    @property
    def closed(self) -> bool:
        return self._fd not in self._stack.sockets

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
