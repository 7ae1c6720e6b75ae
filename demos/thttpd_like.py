"""A thttpd-shaped server: one loop over connections whose state is an enum (thesis 6.4).

Not TUX's shape: no stage queue, no QueueStage. The loop looks each
connection's state up and runs the handler for it, and a handler moves a
connection on by changing its state. Wrapped as the thesis wraps thttpd, a
state change goes through ``set_state(conn, state, handler)``, which names
the handler of the new state, so that memwalk and stingygen read this
program as they read tux_like (``pystack stingy memwalk demos/thttpd_like.py``).

It runs: ``serve(connections)`` answers ``GET /path`` lines from an
in-memory table of files, a line at a time, until every connection is done.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stingy.annotations import stingy_interface

CNST_READING, CNST_SENDING, CNST_LINGERING, CNST_FREE = range(4)

FILES = {"/": b"<h1>thttpd-like</h1>\n", "/about": b"a loop over connection states\n"}


class Site:
    def __init__(self, name: str, size: int):
        self.name, self.size = name, size


CONN = Site("conn", 512)  # connecttab entry
READ_BUF = Site("read_buf", 1024)  # hc->read_buf
RESPONSE = Site("response", 2048)  # hc->response
LOG_LINE = Site("log_line", 256)


@dataclass
class Connection:
    inbox: bytes
    state: int = CNST_READING
    handler: object = None
    read_buf: bytearray | None = None
    response: bytearray | None = None
    sent: bytes = b""
    log: list[str] = field(default_factory=list)


@stingy_interface("Malloc", site="size")
def alloc(heap: dict, site: Site) -> bytearray:
    heap[site.name] = heap.get(site.name, 0) + 1
    return bytearray(site.size)


@stingy_interface("Free", obj="O")
def release(heap: dict, obj: bytearray, site: Site) -> None:
    heap[site.name] -= 1


@stingy_interface("QueueStage", conn="T", handler="S")
def set_state(conn: Connection, state: int, handler: object) -> None:
    """The wrapper of 6.4: a state change that names the handler of the new state."""
    conn.state, conn.handler = state, handler


@stingy_interface("Scheduler")
def serve(connections: list[Connection], heap: dict) -> None:
    """thttpd's main loop: every connection not free, its state's handler, until all are free."""
    for conn in connections:
        conn.read_buf = alloc(heap, CONN)
        set_state(conn, CNST_READING, handle_read)
    while any(c.state != CNST_FREE for c in connections):
        for conn in connections:
            if conn.state != CNST_FREE:
                conn.handler(conn, heap)


def handle_read(conn: Connection, heap: dict) -> None:
    buffer = alloc(heap, READ_BUF)
    line = conn.inbox.split(b"\n", 1)[0]
    buffer[: len(line)] = line
    conn.inbox = conn.inbox[len(line) + 1:]
    conn.response = alloc(heap, RESPONSE)
    body = lookup(bytes(buffer[: len(line)]))
    head = b"HTTP/1.0 200 OK\r\n\r\n" if body is not None else b"HTTP/1.0 404 Not Found\r\n\r\n"
    conn.response[: len(head) + len(body or b"")] = head + (body or b"")
    conn.sent_length = len(head) + len(body or b"")
    release(heap, buffer, READ_BUF)
    set_state(conn, CNST_SENDING, handle_send)


def lookup(line: bytes) -> bytes | None:
    parts = line.split()
    return FILES.get(parts[1].decode("ascii", "replace")) if len(parts) >= 2 else None


def handle_send(conn: Connection, heap: dict) -> None:
    conn.sent += bytes(conn.response[: conn.sent_length])
    release(heap, conn.response, RESPONSE)
    set_state(conn, CNST_LINGERING, handle_linger)


def handle_linger(conn: Connection, heap: dict) -> None:
    entry = alloc(heap, LOG_LINE)
    conn.log.append(f"{len(conn.sent)} bytes")
    release(heap, entry, LOG_LINE)
    if conn.inbox:
        set_state(conn, CNST_READING, handle_read)
        return
    release(heap, conn.read_buf, CONN)
    set_state(conn, CNST_FREE, None)


if __name__ == "__main__":
    conns = [Connection(b"GET /\nGET /about\n"), Connection(b"GET /nope\n")]
    heap: dict[str, int] = {}
    serve(conns, heap)
    for conn in conns:
        print(conn.sent.decode(), end="")
    print("live objects after serving:", {k: v for k, v in heap.items() if v})
