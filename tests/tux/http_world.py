"""A tux_like HTTP server on the in-memory Net, a document root, and h11 to read its answers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h11

from tux_like.config import make_config
from tux_like.memnet import MemoryClient, MemoryNet, pump
from tux_like.server import Server

NOW = 1_700_000_000.0  # virtual wall-clock seconds (Date and the log read them)
SECRET = b"TOP-SECRET-OUTSIDE-THE-ROOT"


def make_root(base: Path) -> Path:
    """A document root beside a secret file no request may ever read."""
    (base / "secret.txt").write_bytes(SECRET)
    root = base / "www"
    root.mkdir()
    (root / "hello.txt").write_bytes(b"hello, world\n")
    (root / "page.html").write_bytes(b"<p>page</p>\n")
    (root / "digits.txt").write_bytes(b"0123456789")
    (root / "empty.txt").write_bytes(b"")
    (root / "docs").mkdir()
    (root / "docs" / "index.html").write_bytes(b"<h1>docs</h1>\n")
    (root / "files").mkdir()
    (root / "files" / "<b>&x.txt").write_bytes(b"tricky\n")
    (root / "files" / "plain.txt").write_bytes(b"plain\n")
    (root / "files" / "sub").mkdir()
    os.utime(root / "hello.txt", (NOW - 3600, NOW - 3600))
    return root


class World:
    """The server, its net and clock; helpers to talk to it and to check nothing is left."""

    def __init__(self, root: Path, **options: Any):
        values = {"document_root": str(root), "listen": "198.18.0.2:80"}
        values.update(options)
        self.config = make_config(values)
        self.net = MemoryNet()
        self.logs: list[str] = []
        self.server = Server(self.config, self.net, self.logs.append)
        self.server.action("start")
        self.now = NOW

    def connect(self) -> MemoryClient:
        return self.net.connect(80)

    def run(self, advance: float = 0.0) -> None:
        self.now += advance
        pump(self.server, self.net, self.now)

    def exchange(self, data: bytes, client: MemoryClient | None = None) -> tuple[MemoryClient, bytes]:
        client = client or self.connect()
        client.send(data)
        self.run()
        return client, client.recv()

    def drain(self, client: MemoryClient) -> bytes:
        """Read everything the server sends, letting it run between reads (large bodies)."""
        out = bytearray()
        while True:
            self.run()
            data = client.recv()
            if not data:
                return bytes(out)
            out += data

    def leave(self, *clients: MemoryClient) -> None:
        """Every client goes away; then nothing of theirs may remain."""
        for client in clients:
            if not client.sock.closed:
                client.shutdown_write()
        self.run()
        self.run(advance=60.0)
        assert self.server.live_connections() == 0
        assert self.server.live_objects() == 0, self.server.threads[0].allocator.live
        assert self.net.open_sockets == 0


def get(target: str, *fields: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {target} HTTP/{version}"]
    if version == "1.1" and not any(f.lower().startswith("host:") for f in fields):
        lines.append("Host: test")
    lines.extend(fields)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def responses(data: bytes, methods: list[str], early_close: bool = False) -> list[tuple[h11.Response, bytes]]:
    """Parse the server's bytes with an h11 client, one answer per request sent (HEAD aware);
    every answer must parse cleanly and the bytes must end with the last one. With
    ``early_close``, an answer that closes the connection may come before the last request's."""
    client = h11.Connection(h11.CLIENT)
    client.receive_data(data)
    out = []
    for index, method in enumerate(methods):
        if index:
            client.start_next_cycle()
        client.send(h11.Request(method=method, target="/", headers=[("Host", "t")]))
        client.send(h11.EndOfMessage())
        response = None
        body = bytearray()
        while True:
            event = client.next_event()
            assert event is not h11.NEED_DATA, f"answer {index} is incomplete"
            if isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        out.append((response, bytes(body)))
        if client.our_state is h11.MUST_CLOSE or client.their_state is h11.MUST_CLOSE:
            assert early_close or index == len(methods) - 1, "the server closed before the last answer"
            break
    if client.their_state is not h11.MUST_CLOSE:
        assert client.next_event() is h11.NEED_DATA, "bytes after the last answer"
    return out


def one(data: bytes, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """The single answer in ``data``: status, header fields (lower-case names), body."""
    [(response, body)] = responses(data, [method])
    fields = {name.decode().lower(): value.decode("latin-1") for name, value in response.headers}
    return response.status_code, fields, body
