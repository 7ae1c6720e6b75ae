"""A tiny HTTP handler for testing the backends and the driver apart from tux_like.http.

Installed in place of the HTTP protocol module's three entry points, it
exercises what the backends and the driver must carry: reads until a
request head is complete, a worker job per request (the file read), writes
that wait for room, keep-alive with pipelining, an idle timer (``keepalive_timeout``), 503 past
``max_connect``, and Malloc/Free of its per-request state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tux_like import http
from tux_like.core import Free, Malloc, QueueStage, Request, Site, finish


@dataclass
class Tiny:
    inbox: bytearray = field(default_factory=bytearray)
    out: memoryview = memoryview(b"")
    keep: bool = True
    work: Any = None


TINY = Site("tiny_state", 128, lambda site: Tiny())


def got_connection(req: Request) -> None:
    req.proto = Malloc(req.ti, TINY)
    req.proto.inbox.clear()
    req.ti.arm(req, req.ti.server.config.keepalive_timeout, close)
    parse(req)


def read(req: Request) -> None:
    try:
        data = req.ti.net.recv(req.sock, 4096)
    except ConnectionError:
        close(req)
        return
    if data is None:
        req.ti.wait(req, read)
    elif not data:
        close(req)
    else:
        req.proto.inbox += data
        parse(req)


def parse(req: Request) -> None:
    state = req.proto
    head, found, rest = bytes(state.inbox).partition(b"\r\n\r\n")
    if not found:
        QueueStage(req, read)
        return
    state.inbox[:] = rest
    request_line = head.split(b"\r\n")[0].split()
    state.keep = b"connection: close" not in head.lower() and request_line[-1] == b"HTTP/1.1" \
        or b"connection: keep-alive" in head.lower()
    path = req.ti.server.config.root() / request_line[1].decode().lstrip("/")
    req.ti.disarm(req)
    req.ti.submit(req, path.read_bytes, respond)


def respond(req: Request) -> None:
    state = req.proto
    work, state.work = state.work, None
    status, body = ("200 OK", work.result) if work.error is None else ("404 Not Found", b"no\n")
    req.ti.server.stats.status(int(status[:3]))
    head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n"
    head += "Connection: keep-alive\r\n\r\n" if state.keep else "Connection: close\r\n\r\n"
    state.out = memoryview(head.encode() + body)
    write(req)


def write(req: Request) -> None:
    state = req.proto
    try:
        sent = req.ti.net.send(req.sock, state.out)
    except ConnectionError:
        close(req)
        return
    req.ti.server.stats.bytes_sent += sent
    state.out = state.out[sent:]
    if state.out:
        req.ti.wait(req, write, writable=True)
    elif state.keep:
        req.ti.arm(req, req.ti.server.config.keepalive_timeout, close)
        parse(req)  # a pipelined request may be here already
    else:
        close(req)


def refuse_busy(req: Request) -> None:
    req.proto = Malloc(req.ti, TINY)
    try:
        req.ti.net.send(req.sock, b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    except ConnectionError:
        pass
    close(req)


def close(req: Request) -> None:
    release(req)
    finish(req)


def release(req: Request) -> None:
    if req.proto is not None:
        Free(req.ti, req.proto)
        req.proto = None


def install(setattr: Callable[[Any, str, Any], None] = setattr) -> None:
    """Serve HTTP with this handler: for one test (``monkeypatch.setattr``) or a whole process."""
    setattr(http, "got_connection", got_connection)
    setattr(http, "refuse_busy", refuse_busy)
    setattr(http, "release", release)


def is_placeholder(module: Any) -> bool:
    """True while a protocol module is still the core's placeholder (its branch not merged)."""
    try:
        module.got_connection(Request(ti=None))  # type: ignore[arg-type]
    except NotImplementedError:
        return True
    except Exception:  # noqa: BLE001 - a real handler fails on a request without a thread
        return False
    return False

