"""The server: threads, listen sockets, the accept stage, the end of a connection, actions.

``Server`` is sans-IO: a driver gives it a :class:`~tux_like.core.Net`, tells
it when a socket may be ready (:meth:`Server.ready`), runs the workers' jobs
and calls :meth:`Server.step` with the time. The protocol served is a
configuration value, tested on the path as TUX tests ``tux_proto``: with it
static, specialization folds the other protocol away (thesis 7.2.1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stingy.annotations import stingy_count

from . import ftp, http
from .config import CGI_MIME_TYPE, Config, make_config
from .core import (
    PRIO_HIGH,
    REQUEST,
    Malloc,
    Net,
    QueueStage,
    Request,
    ThreadInfo,
    finish,
)

ACCEPT_BATCH = 64  # connections one accept stage takes before it lets other stages run


@dataclass
class Stats:
    """What ``pystack serve`` prints at the end: connections, requests per status, bytes."""

    connections: int = 0
    refused: int = 0
    requests: dict[int, int] = field(default_factory=dict)
    bytes_sent: int = 0
    bytes_received: int = 0
    stage_errors: int = 0

    def status(self, code: int) -> None:
        self.requests[code] = self.requests.get(code, 0) + 1


class Server:
    def __init__(self, config: Config, net: Net, log: Callable[[str], None] | None = None):
        self.config = config
        self.net = net
        self.log = log or (lambda line: None)
        self.stats = Stats()
        self.mime_types = dict(config.mime_types)  # grows with the register-mime action
        self.file_cache: dict[str, Any] = {}
        self.threads = [ThreadInfo(server=self, index=i, net=net) for i in range(config.threads)]
        for ti in self.threads:
            ti.scheduler.on_error = self.stage_failed
        self.listeners: list[Any] = []
        self.running = False

    # ------------------------------------------------------------ actions (TUX's system call)

    def action(self, name: str, **arguments: Any) -> None:
        """TUX's action call: ``start``, ``stop``, ``register_mime`` (extension, type)."""
        if name == "start":
            self.start()
        elif name == "stop":
            self.stop()
        elif name == "register_mime":
            extension, kind = arguments["extension"], arguments["type"]
            make_config({"mime_types": {extension: kind}})  # the same check as the file's
            self.mime_types[extension.lower().lstrip(".")] = kind
        else:
            raise ValueError(f"unknown action {name!r} (known: start, stop, register_mime)")

    def start(self) -> None:
        """Listen on every configured socket; each thread accepts on each of them."""
        for listen in self.config.listen:
            self.listeners.append(self.net.listen(listen.address, listen.port, 1024))
        for ti in self.threads:
            for listener in self.listeners:
                slot = Request(ti=ti, sock=listener, listener=listener)
                ti.listeners.append(slot)
                ti.wait(slot, accept_connections)
        self.running = True

    def stop(self) -> None:
        """Close the listeners and every connection; the counters stay."""
        for ti in self.threads:
            for slot in ti.listeners:
                ti.forget(slot)
            ti.listeners.clear()
            ending = [req for req, _, _ in ti.waits.values()]
            ending.extend(done.req for done in ti.work)  # parked on a worker: in no wait
            while (entry := ti.scheduler.elect()) is not None:
                ending.append(entry[0])
            for req in ending:
                if not req.closed and req.listener is None:
                    end_connection(req)
        for listener in self.listeners:
            self.net.close(listener)
        self.listeners.clear()
        self.running = False

    def stage_failed(self, req: Request, stage: Any, error: Exception) -> None:
        """A stage raised (a bug, never the client's doing): log it, count it, end only that
        connection, freeing what it holds; the server goes on."""
        self.stats.stage_errors += 1
        self.log(f"tux_like: stage {stage.__name__} failed on {req.peer}: {type(error).__name__}: {error}")
        if req.listener is None and not req.closed:
            try:
                end_connection(req)
            except Exception as again:  # noqa: BLE001 - its cleanup failed too: drop the request
                self.log(f"tux_like: ending that connection failed too: {type(again).__name__}: {again}")
                finish(req)

    # ------------------------------------------------------------ driving

    def ready(self, sock: Any) -> None:
        """A socket may have become readable or writable."""
        for ti in self.threads:
            ti.ready(sock)

    def step(self, now: float, budget: int = 256) -> bool:
        """Expire timers and run queued stages on every thread; True while stages remain."""
        pending = False
        for ti in self.threads:
            ti.expire(now)
            ti.scheduler.run(budget)
            pending = pending or bool(ti.scheduler.nonempty)
        return pending

    def next_deadline(self) -> float | None:
        deadlines = [d for ti in self.threads if (d := ti.next_deadline()) is not None]
        return min(deadlines) if deadlines else None

    def live_connections(self) -> int:
        total = 0
        for ti in self.threads:
            total += ti.requests
        return total

    def live_objects(self) -> int:
        """Per-request objects not freed yet, over every thread (zero when all is quiet)."""
        total = 0
        for ti in self.threads:
            total += ti.allocator.live_objects()
        return total

    def mime_type(self, extension: str) -> str:
        extension = extension.lower()
        return self.mime_types.get(extension) or self.config.mime_type(extension)

    def is_cgi(self, mime: str) -> bool:
        return mime == CGI_MIME_TYPE


# ---------------------------------------------------------------- generic stages


def end_connection(req: Request) -> None:
    """Close a connection from outside its stages (stop): its handler frees its objects."""
    if req.ti.server.config.protocol == "http":
        http.release(req)
    else:
        ftp.release(req)
    finish(req)


def accept_connections(slot: Request) -> None:
    """Stage (high priority): take new connections off a listen socket, start each request."""
    ti = slot.ti
    server = ti.server
    config = server.config
    for _ in range(ACCEPT_BATCH):
        accepted = ti.net.accept(slot.listener)
        if accepted is None:
            break
        sock, peer = accepted
        req: stingy_count(1) = Malloc(ti, REQUEST)  # each accepted connection's own
        req.ti, req.sock, req.peer = ti, sock, peer
        req.closed, req.listener, req.proto = False, None, None
        ti.requests += 1
        server.stats.connections += 1
        if server.live_connections() > config.max_connect:
            server.stats.refused += 1
            if config.protocol == "http":
                QueueStage(req, http.refuse_busy)
            else:
                QueueStage(req, ftp.refuse_busy)
            continue
        if config.protocol == "http":
            QueueStage(req, http.got_connection)
        else:
            QueueStage(req, ftp.got_connection)
    else:
        QueueStage(slot, accept_connections, PRIO_HIGH)  # more may be waiting: after the others
        return
    ti.wait(slot, accept_connections)
