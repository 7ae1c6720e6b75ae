"""The smallest ASGI app that serves the benchmark's files: what hypercorn and uvicorn run in
``python -m bench --only tux``, beside tux_like serving the same directory.

It serves the regular files directly in ``$TUX_BENCH_ROOT`` (GET and HEAD, 404 otherwise)
and keeps them in memory after the first read, as tux_like's file cache does, so that
the servers are compared, not file reads.
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Awaitable, Callable
from typing import Any

ROOT = os.path.realpath(os.environ.get("TUX_BENCH_ROOT", "."))
_files: dict[str, tuple[bytes, bytes]] = {}  # URL path -> (body, content type)

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def lookup(path: str) -> tuple[bytes, bytes] | None:
    """The body and type of the file at URL ``path``, or None: only files directly in ROOT."""
    found = _files.get(path)
    if found is None:
        full = os.path.realpath(os.path.join(ROOT, path.lstrip("/")))
        if os.path.dirname(full) != ROOT or not os.path.isfile(full):
            return None
        with open(full, "rb") as f:
            kind = mimetypes.guess_type(full)[0] or "application/octet-stream"
            found = _files[path] = (f.read(), kind.encode())
    return found


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    found = lookup(scope["path"]) if scope["method"] in ("GET", "HEAD") else None
    status, (body, kind) = (200, found) if found is not None else (404, (b"not found\n", b"text/plain"))
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
