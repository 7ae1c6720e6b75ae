"""An in-memory socket layer for the server, and a driver that runs it in virtual time.

The third implementation of :class:`~tux_like.core.Net`, beside pystack's and
the kernel's: connections are byte queues, a test (or a load generator in
simulated time) plays the clients. ``pump`` is a complete driver: readiness,
workers (run inline), timers, stages, until nothing is left to do.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

SEND_BUFFER = 256 * 1024  # what a server socket takes before send() returns short


@dataclass(eq=False)
class MemoryListener:
    address: tuple[str, int]
    backlog: int
    pending: deque[MemorySocket] = field(default_factory=deque)
    watched: bool = False


@dataclass(eq=False)
class MemorySocket:
    """The server's end of a connection; ``client`` is the test's end of the same one."""

    net: MemoryNet
    local: tuple[str, int]
    peer: tuple[str, int]
    inbox: bytearray = field(default_factory=bytearray)  # client -> server, unread
    outbox: bytearray = field(default_factory=bytearray)  # server -> client, unread
    client_closed_write: bool = False
    server_closed_write: bool = False
    reset: bool = False
    closed: bool = False
    watch_read: bool = False
    watch_write: bool = False

    @property
    def client(self) -> MemoryClient:
        return MemoryClient(self)


class MemoryClient:
    """The client's end: what a test writes, reads, half-closes or resets."""

    def __init__(self, sock: MemorySocket):
        self.sock = sock

    def send(self, data: bytes) -> None:
        sock = self.sock
        if sock.closed or sock.client_closed_write:
            raise BrokenPipeError("the connection is closed")
        sock.inbox += data
        sock.net.poke(sock, readable=True)

    def recv(self) -> bytes:
        """Everything the server has sent so far (and frees its send buffer)."""
        sock = self.sock
        data = bytes(sock.outbox)
        sock.outbox.clear()
        if data:
            sock.net.poke(sock, writable=True)
        return data

    def shutdown_write(self) -> None:
        self.sock.client_closed_write = True
        self.sock.net.poke(self.sock, readable=True)

    def reset(self) -> None:
        self.sock.reset = True
        self.sock.net.poke(self.sock, readable=True, writable=True)

    @property
    def server_closed(self) -> bool:
        """The server closed or shut down its side (and everything it sent was read)."""
        return (self.sock.closed or self.sock.server_closed_write) and not self.sock.outbox


class MemoryNet:
    def __init__(self, address: str = "198.18.0.2"):
        self.address = address
        self.listeners: dict[int, MemoryListener] = {}
        self.ready: deque[Any] = deque()
        self.open_sockets = 0
        self._ports = iter(range(40000, 65536))

    # ------------------------------------------------------------ the test's side

    def connect(self, port: int) -> MemoryClient:
        """Open a connection to a listening port (refused if nothing listens there)."""
        listener = self.listeners.get(port)
        if listener is None:
            raise ConnectionRefusedError(f"nothing listens on port {port}")
        sock = MemorySocket(self, (self.address, port), ("198.18.0.1", next(self._ports)))
        listener.pending.append(sock)
        self.open_sockets += 1
        if listener.watched:
            listener.watched = False
            self.ready.append(listener)
        return sock.client

    def poke(self, sock: MemorySocket, readable: bool = False, writable: bool = False) -> None:
        if (readable and sock.watch_read) or (writable and sock.watch_write):
            sock.watch_read = sock.watch_write = False
            self.ready.append(sock)

    # ------------------------------------------------------------ Net

    def listen(self, address: str, port: int, backlog: int) -> MemoryListener:
        if port in self.listeners:
            raise OSError(98, f"port {port} is in use")
        listener = self.listeners[port] = MemoryListener((address, port), backlog)
        return listener

    def accept(self, listener: MemoryListener) -> tuple[MemorySocket, tuple[str, int]] | None:
        if not listener.pending:
            return None
        sock = listener.pending.popleft()
        return sock, sock.peer

    def recv(self, sock: MemorySocket, size: int) -> bytes | None:
        if sock.reset:
            raise ConnectionResetError("connection reset by peer")
        if sock.inbox:
            data = bytes(sock.inbox[:size])
            del sock.inbox[:size]
            return data
        return b"" if sock.client_closed_write else None

    def send(self, sock: MemorySocket, data: bytes | bytearray | memoryview) -> int:
        if sock.reset:
            raise ConnectionResetError("connection reset by peer")
        if sock.server_closed_write or sock.closed:
            raise BrokenPipeError("send after shutdown")
        room = SEND_BUFFER - len(sock.outbox)
        taken = min(room, len(data))
        sock.outbox += data[:taken]
        return taken

    def shutdown_write(self, sock: MemorySocket) -> None:
        sock.server_closed_write = True

    def close(self, sock: Any) -> None:
        if isinstance(sock, MemoryListener):
            self.listeners.pop(sock.address[1], None)
            while sock.pending:  # connections never accepted: the kernel resets them
                self.close(sock.pending.popleft())
            return
        if not sock.closed:
            sock.closed = True
            self.open_sockets -= 1

    def watch(self, sock: Any, writable: bool) -> None:
        if isinstance(sock, MemoryListener):
            if sock.pending:
                self.ready.append(sock)
            else:
                sock.watched = True
            return
        if writable:
            if len(sock.outbox) < SEND_BUFFER or sock.reset:
                self.ready.append(sock)
            else:
                sock.watch_write = True
        elif sock.inbox or sock.client_closed_write or sock.reset:
            self.ready.append(sock)
        else:
            sock.watch_read = True

    def local_address(self, sock: Any) -> tuple[str, int]:
        return sock.address if isinstance(sock, MemoryListener) else sock.local

    # ------------------------------------------------------------ the driver

    def take_ready(self) -> Iterator[Any]:
        while self.ready:
            yield self.ready.popleft()


def deliver_events(server: Any, net: MemoryNet) -> None:
    """What happened since the last step: readiness to the server, the workers' jobs run inline."""
    for sock in net.take_ready():
        server.ready(sock)
    for ti in server.threads:
        while ti.work:
            done = ti.work.popleft()
            try:
                done.result = done.job()
            except Exception as error:  # noqa: BLE001 - a worker's failure is its request's answer
                done.error = error
            ti.complete(done)


def pump(server: Any, net: MemoryNet, now: float = 0.0, max_rounds: int = 100_000) -> int:
    """Run the server until it has nothing to do at ``now``: readiness, workers (inline),
    stages. Returns the rounds taken; a server that never settles is an error."""
    for rounds in range(max_rounds):
        deliver_events(server, net)
        if not server.step(now) and not net.ready and not any(ti.work for ti in server.threads):
            return rounds
    raise RuntimeError(f"the server did not settle in {max_rounds} rounds")
