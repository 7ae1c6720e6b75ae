"""A thttpd-shaped server: one loop over connections whose state is an enum (thesis 6.4).

Not TUX's shape: no stage queue, no QueueStage. The loop looks each
connection's state up and runs the handler for it, and a handler moves a
connection on by changing its state. Wrapped as the thesis wraps thttpd, a
state change goes through ``set_state(conn, state, handler)``, which names
the handler of the new state, so that memwalk and stingygen read this
program as they read tux_like (``pystack stingy memwalk demos/thttpd_like.py``).

It runs: ``serve(connections, Heap())`` answers ``GET /path`` lines from an
in-memory table of files, a line at a time, until every connection is done.
Its ``alloc(heap, SITE)`` and ``release(heap, obj, SITE)`` keep thttpd's own
count of live objects: their callers expect more than memory, so they have
user wrappers (``counted``, ``uncounted``) that stingify puts around the
Stingy calls. ``stingy.second`` runs it in simulated memory.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from stingy.annotations import stingy_interface, stingy_user_wrapper
from tux_like.core import Allocator, Site, buffer_of

CNST_READING, CNST_SENDING, CNST_LINGERING, CNST_FREE = range(4)

FILES = {"/": b"<h1>thttpd-like</h1>\n", "/about": b"a loop over connection states\n"}

CONN = Site("conn", 512, buffer_of)  # connecttab entry
READ_BUF = Site("read_buf", 1024, buffer_of)  # hc->read_buf
RESPONSE = Site("response", 2048, buffer_of)  # hc->response
LOG_LINE = Site("log_line", 256, buffer_of)


@dataclass
class Connection:
    inbox: bytes
    state: int = CNST_READING
    handler: Any = None
    entry: bytearray | None = None
    response: bytearray | None = None
    sent_length: int = 0
    sent: bytes = b""
    log: list[str] = field(default_factory=list)
    queued: int = 0  # times in the scheduler's queue


@dataclass
class Heap:
    """Where the objects come from (``allocator``: swapped for the Stingy one or a simulated
    one) and thttpd's own count of the live ones per site."""

    allocator: Any = field(default_factory=Allocator)
    live: dict[str, int] = field(default_factory=dict)


@stingy_interface("Malloc", site="size")
def alloc(heap: Heap, site: Site) -> bytearray:
    return counted(heap.allocator.allocate(site), heap, site)


@stingy_user_wrapper("alloc")
def counted(memory: bytearray, heap: Heap, site: Site) -> bytearray:
    """What alloc's callers expect besides the memory: the live count kept (the user wrapper
    of 7.4.4, which stingify puts around StingyAlloc)."""
    heap.live[site.name] = heap.live.get(site.name, 0) + 1
    return memory


@stingy_interface("Free", obj="O")
def release(heap: Heap, obj: bytearray, site: Site) -> None:
    uncounted(heap.allocator.free(obj), heap, obj, site)


@stingy_user_wrapper("release")
def uncounted(freed: None, heap: Heap, obj: bytearray, site: Site) -> None:
    """release's count kept around StingyFree (its user wrapper)."""
    heap.live[site.name] -= 1


@stingy_interface("QueueStage", conn="T", handler="S")
def set_state(conn: Connection, state: int, handler: Any) -> None:
    """The wrapper of 6.4: a state change that names the handler of the new state."""
    conn.state, conn.handler = state, handler


class RoundRobin:
    """thttpd's order: every connection not free gets one step per round, in turn."""

    def __init__(self) -> None:
        self.ready: deque[tuple[Connection, Any]] = deque()

    def queue(self, conn: Connection, handler: Any) -> None:
        self.ready.append((conn, handler))

    def elect(self) -> tuple[Connection, Any] | None:
        return self.ready.popleft() if self.ready else None


@stingy_interface("Scheduler")
def serve(connections: list[Connection], heap: Heap, scheduler: Any = None) -> None:
    """thttpd's main loop: each connection's state's handler, until all are free. ``scheduler``
    (``queue(conn, handler)``, ``elect()``) orders the steps: round robin, or Stingy's."""
    scheduler = RoundRobin() if scheduler is None else scheduler
    for conn in connections:
        conn.entry = alloc(heap, CONN)
        set_state(conn, CNST_READING, handle_read)
        scheduler.queue(conn, conn.handler)
    while (ready := scheduler.elect()) is not None:
        conn, handler = ready
        handler(conn, heap)
        if conn.state != CNST_FREE:
            scheduler.queue(conn, conn.handler)


def handle_read(conn: Connection, heap: Heap) -> None:
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


def handle_send(conn: Connection, heap: Heap) -> None:
    conn.sent += bytes(conn.response[: conn.sent_length])
    release(heap, conn.response, RESPONSE)
    set_state(conn, CNST_LINGERING, handle_linger)


def handle_linger(conn: Connection, heap: Heap) -> None:
    entry = alloc(heap, LOG_LINE)
    line = f"{conn.sent_length} bytes".encode()
    entry[: len(line)] = line
    conn.log.append(bytes(entry[: len(line)]).decode())
    release(heap, entry, LOG_LINE)
    if conn.inbox:
        set_state(conn, CNST_READING, handle_read)
        return
    release(heap, conn.entry, CONN)
    set_state(conn, CNST_FREE, None)


if __name__ == "__main__":
    conns = [Connection(b"GET /\nGET /about\n"), Connection(b"GET /nope\n")]
    heap = Heap()
    serve(conns, heap)
    for conn in conns:
        print(conn.sent.decode(), end="")
    print("live objects after serving:", {k: v for k, v in heap.live.items() if v})
