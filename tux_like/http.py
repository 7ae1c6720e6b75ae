"""HTTP/1.1 stages (RFC 9110/9112): GET and HEAD of static files, directory listings, CGI.

TUX's decomposition (thesis 7.1.3), one function per stage; the stage graph
(``memwalk`` reads it off the ``QueueStage`` / ``wait`` / ``submit`` / ``arm`` calls)::

    got_connection -> read_request <-> parse_request -> process_message
    process_message -> send_headers | file_found (worker) | cgi_done (worker)
    file_found -> send_headers | list_directory -> send_headers
    send_headers -> send_body -> log_request -> keepalive_or_flush
    keepalive_or_flush -> parse_request (pipelined) | read_request | linger -> close_connection

Parsing an incomplete request waits for more bytes and parses again (the
read/parse cycle). A file-cache miss goes to a worker (``ti.submit``) that
reads the file off the loop. Per-connection objects come from ``Malloc`` at
the module's sites and are freed by :func:`release`; response headers (and a
small body with them) go out of the output header buffer, listings out of the
listing buffer, file bodies out of the file cache (global) or, for large
files, out of the chunks workers read. Time is ``req.ti.now``: Date and the
log need the driver to give wall-clock seconds.
"""

from __future__ import annotations

import html
from urllib.parse import quote

from stingy.annotations import stingy_count

from .cgi import CgiRequest, run_cgi
from .core import Free, Malloc, QueueStage, Request, Site, buffer_of, finish
from .http_files import FileEntry, find_file, read_chunk
from .http_parse import (
    KNOWN_METHODS,
    SERVED_METHODS,
    BadRequest,
    Head,
    byte_range,
    check_incomplete,
    head_end,
    http_date,
    log_date,
    log_escape,
    normalize_target,
    parse_head,
    parse_http_date,
    skip_blank_lines,
)


class HttpState:
    """The HTTP handler's per-connection object (``req.proto``), reused across keep-alive."""

    __slots__ = (
        "work", "recv", "start", "end", "eof", "head", "head_end", "line_end", "keep_alive",
        "status", "out", "out_len", "out_sent", "listing", "body", "body_pos", "body_sent",
        "entry", "file_pos", "file_end", "cache_key", "segments",
    )

    def __init__(self) -> None:
        self.work = None  # the worker's Work (core.ThreadInfo.submit sets it)
        self.recv: bytearray | None = None  # receive buffer; bytes [start, end) are unparsed
        self.start = self.end = 0
        self.eof = False  # the client half-closed
        self.line_end = -1  # where the request line ends in recv (for the log)
        self.keep_alive = False
        self.segments: list[str] = []
        self.cache_key = ""
        self.reset_response()

    def reset_response(self) -> None:
        self.head: Head | None = None
        self.head_end = 0
        self.status = 0
        self.out: bytearray | None = None  # output header buffer; [out_sent, out_len) unsent
        self.out_len = self.out_sent = 0
        self.listing: bytearray | None = None
        self.body: memoryview | None = None  # the body part in hand; [body_pos:] unsent
        self.body_pos = self.body_sent = 0
        self.entry: FileEntry | None = None  # a large file sent in chunks: [file_pos, file_end)
        self.file_pos = self.file_end = 0


def http_state_of(site: Site) -> HttpState:
    return HttpState()


# Allocation sites, with the sizes the allocator charges (TUX's per-request objects).
HTTP_STATE = Site("http_state", 512, http_state_of)
RECV_BUFFER = Site("recv_buffer", 16384, buffer_of)  # holds a head up to the default limits
HEADER_BUFFER = Site("header_buffer", 4096, buffer_of)
LISTING_BUFFER = Site("listing_buffer", 65536, buffer_of)

STREAM_CHUNK = 256 * 1024  # a worker reads a large file this much at a time
FILE_CACHE_ENTRIES = 256
FILE_CACHE_TTL = 2.0  # seconds a cached file is served without looking at the disk again
LINGER_TIMEOUT = 2.0  # after the last response, how long unread client bytes are drained
LOCATION_LIMIT = HEADER_BUFFER.size - 512  # a redirect longer than this is refused (414)
ALLOW = "Allow: GET, HEAD\r\n"
# Errors after which the byte stream cannot be trusted (or the client is to go away); after
# the others (403, 404, 405, 416, 501, CGI's 500/504) a request without content keeps it.
CLOSING = (400, 408, 413, 414, 431, 503, 505)

REASONS = {
    200: "OK", 206: "Partial Content", 301: "Moved Permanently", 302: "Found",
    304: "Not Modified", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 413: "Content Too Large",
    414: "URI Too Long", 416: "Range Not Satisfiable", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}


# ---------------------------------------------------------------- connection


def got_connection(req: Request) -> None:
    """Stage: a new connection: its state and receive buffer, then read its first request."""
    ti = req.ti
    proto = Malloc(ti, HTTP_STATE)
    proto.recv = Malloc(ti, RECV_BUFFER)
    req.proto = proto
    ti.arm(req, ti.server.config.keepalive_timeout, close_connection)
    QueueStage(req, read_request)


def refuse_busy(req: Request) -> None:
    """Stage: a connection past ``max_connect``: 503 and close, without reading it."""
    req.proto = Malloc(req.ti, HTTP_STATE)
    error_response(req, 503, "Retry-After: 1\r\n")


def read_request(req: Request) -> None:
    """Stage: read what the client sent into the receive buffer, then parse it."""
    ti = req.ti
    proto = req.proto
    buf = proto.recv
    if proto.start and proto.end == len(buf):  # full of a pipelined tail: move it to the front
        buf[: proto.end - proto.start] = buf[proto.start : proto.end]
        proto.end -= proto.start
        proto.start = 0
    if proto.end == len(buf):
        QueueStage(req, parse_request)  # full: parsing says which limit it broke
        return
    try:
        data = ti.net.recv(req.sock, len(buf) - proto.end)
    except ConnectionError:
        QueueStage(req, close_connection)
        return
    if data is None:
        ti.wait(req, read_request)
        return
    if not data:
        proto.eof = True
        if proto.start < proto.end:
            QueueStage(req, parse_request)  # what came before the half-close may be a request
        else:
            QueueStage(req, close_connection)
        return
    if proto.start == proto.end:  # the first byte of a request: its time starts now
        proto.start = proto.end = 0
        ti.arm(req, ti.server.config.request_timeout, request_timed_out)
    count = len(data)
    buf[proto.end : proto.end + count] = data
    proto.end += count
    ti.server.stats.bytes_received += count
    QueueStage(req, parse_request)


def parse_request(req: Request) -> None:
    """Stage: parse a request head out of the receive buffer; an incomplete one waits for
    more bytes and comes back here (the read/parse cycle)."""
    ti = req.ti
    proto = req.proto
    config = ti.server.config
    buf = proto.recv
    start = proto.start = skip_blank_lines(buf, proto.start, proto.end)
    end = head_end(buf, start, proto.end)
    try:
        if end < 0:
            check_incomplete(buf, start, proto.end, config.max_request_line, config.max_headers,
                             config.max_header_len)
            if start == 0 and proto.end == len(buf):
                raise BadRequest(431 if buf.find(b"\n", 0, proto.end) >= 0 else 414, "too large")
            if proto.eof:
                QueueStage(req, close_connection)  # half-closed inside a request: no answer
            else:
                ti.wait(req, read_request)
            return
        head = parse_head(bytes(buf[start:end]), config.max_request_line, config.max_headers,
                          config.max_header_len)
    except BadRequest as bad:
        ti.disarm(req)
        error_response(req, bad.status)
        return
    ti.disarm(req)
    proto.head = head
    proto.head_end = end
    proto.keep_alive = head.keep_alive
    QueueStage(req, process_message)


def request_timed_out(req: Request) -> None:
    """Stage (timer): a request not complete within ``request_timeout``: 408 and close."""
    error_response(req, 408)


# ---------------------------------------------------------------- the message


def process_message(req: Request) -> None:
    """Stage: decide the answer: method, request content, path, then the file cache (a miss
    goes to a worker) or the CGI directory (always a worker)."""
    ti = req.ti
    proto = req.proto
    server = ti.server
    config = server.config
    head = proto.head
    if head.method not in SERVED_METHODS:
        if head.has_body:
            proto.keep_alive = False  # its content is unread: the stream is out of step
        if head.method in KNOWN_METHODS:
            error_response(req, 405, ALLOW)
        else:
            error_response(req, 501)
        return
    if head.has_body:
        error_response(req, 413)  # this server takes no request content
        return
    try:
        segments, trailing, query = normalize_target(head.target)
    except BadRequest as bad:
        error_response(req, bad.status)
        return
    proto.segments = segments
    cgi_dir = [part for part in config.cgi_dir.split("/") if part]
    if cgi_dir and segments[: len(cgi_dir)] == cgi_dir:
        request = CgiRequest(head.method.decode(), f"HTTP/1.{head.minor}", query, head.fields,
                             req.peer, ti.net.local_address(req.sock))
        rest = segments[len(cgi_dir):]
        timeout = config.cgi_timeout
        ti.submit(req, lambda: run_cgi(str(config.root()), cgi_dir, rest, request, timeout),
                  cgi_done)
        return
    key = proto.cache_key = "/".join(segments) + ("/" if trailing else "")
    entry = server.file_cache.get(key)
    if entry is not None:
        if ti.now - entry.loaded_at < FILE_CACHE_TTL:
            respond_file(req, entry)
            return
        # Stale: this request looks at the disk again; the requests that come meanwhile are
        # served the entry rather than each sending a worker to the disk too.
        entry.loaded_at = ti.now
    index_files = config.index_files
    now = ti.now
    ti.submit(req, lambda: find_file(str(config.root()), segments, trailing, index_files,
                                     server.mime_type, server.is_cgi, now), file_found)


def file_found(req: Request) -> None:
    """Stage (after a worker): a file for the cache, a directory to list, 301, 403 or 404."""
    proto = req.proto
    work = proto.work
    cache = req.ti.server.file_cache
    if work.error is not None or work.result.status != 200 or work.result.listing is not None:
        cache.pop(proto.cache_key, None)  # no longer a file to serve from the cache
    if work.error is not None:
        proto.work = None
        error_response(req, 500)
        return
    found = work.result
    if found.status == 301:
        proto.work = None
        redirect(req)
    elif found.status != 200:
        proto.work = None
        error_response(req, found.status)
    elif found.listing is not None:
        QueueStage(req, list_directory)  # the listing stays in proto.work for that stage
    else:
        proto.work = None
        if len(cache) >= FILE_CACHE_ENTRIES and proto.cache_key not in cache:
            del cache[next(iter(cache))]  # the oldest entry makes room
        cache[proto.cache_key] = found.entry
        respond_file(req, found.entry)


def list_directory(req: Request) -> None:
    """Stage: an HTML listing of a directory without an index file, in the listing buffer."""
    proto = req.proto
    names = proto.work.result.listing
    proto.work = None
    listing: stingy_count(1) = Malloc(req.ti, LISTING_BUFFER)  # one per response: freed before the next
    proto.listing = listing
    length = render_listing(listing, proto.segments, names)
    start_response(req, 200, length, "text/html; charset=utf-8", "")
    set_body(req, memoryview(listing)[:length])


def cgi_done(req: Request) -> None:
    """Stage (after a worker): the script's answer, or 500/504 when it failed."""
    proto = req.proto
    work = proto.work
    proto.work = None
    answer = work.result
    if work.error is not None or answer.error:
        error_response(req, 500 if work.error is not None else answer.status)
        return
    extra = f"Location: {answer.location}\r\n" if answer.location else ""
    if answer.status in (204, 304):  # answers that never have content (RFC 9110 15.3.5, 15.4.5)
        start_response(req, answer.status, None, "", extra, answer.reason)
        QueueStage(req, send_headers)
        return
    start_response(req, answer.status, len(answer.body), answer.content_type, extra, answer.reason)
    set_body(req, memoryview(answer.body))


# ---------------------------------------------------------------- answers (helpers of the stages above)


def respond_file(req: Request, entry: FileEntry) -> None:
    """200, 206, 304 or 416 for a regular file, by If-Modified-Since and Range."""
    head = req.proto.head
    if head.if_modified_since:
        since = parse_http_date(head.if_modified_since)
        if since is not None and int(entry.mtime) <= since:
            start_response(req, 304, None, "", f"Last-Modified: {entry.last_modified}\r\n")
            QueueStage(req, send_headers)
            return
    first, last, status = 0, entry.size - 1, 200
    extra = f"Last-Modified: {entry.last_modified}\r\nAccept-Ranges: bytes\r\n"
    if head.range and (not head.if_range or head.if_range == entry.last_modified):
        wanted = byte_range(head.range, entry.size)
        if wanted == (-1, -1):
            error_response(req, 416, f"Content-Range: bytes */{entry.size}\r\n")
            return
        if wanted is not None:
            first, last, status = wanted[0], wanted[1], 206
            extra += f"Content-Range: bytes {first}-{last}/{entry.size}\r\n"
    start_response(req, status, last + 1 - first, entry.content_type, extra)
    if entry.data is not None:
        set_body(req, memoryview(entry.data)[first : last + 1])
        return
    proto = req.proto
    if head.method != b"HEAD":
        proto.entry, proto.file_pos, proto.file_end = entry, first, last + 1
    QueueStage(req, send_headers)


def redirect(req: Request) -> None:
    """301 to the directory's path with its slash (re-encoded: no raw byte reaches a header)."""
    proto = req.proto
    path = "/".join(proto.segments).encode("utf-8", "surrogateescape")
    location = "/" + quote(path, safe="/!$&'()*+,;=:@-._~") + "/"
    query = proto.head.target.partition(b"?")[2]
    if query:
        location += "?" + query.decode("ascii")
    if len(location) > LOCATION_LIMIT:
        error_response(req, 414)
        return
    body = b'<html><body><a href="' + html.escape(location).encode() + b'">moved</a></body></html>\n'
    start_response(req, 301, len(body), "text/html", f"Location: {location}\r\n")
    set_body(req, memoryview(body))


def error_response(req: Request, status: int, extra: str = "") -> None:
    """An error answer with a short HTML body; after some errors the connection closes."""
    if status in CLOSING:
        req.proto.keep_alive = False
    text = f"{status} {REASONS[status]}"
    body = f"<html><head><title>{text}</title></head><body><h1>{text}</h1></body></html>\n".encode()
    start_response(req, status, len(body), "text/html", extra)
    set_body(req, memoryview(body))


def start_response(req: Request, status: int, length: int | None, content_type: str,
                   extra: str, reason: str = "") -> None:
    """Write the status line and header fields into a new output header buffer (a CGI
    script's status may come with its own reason phrase)."""
    ti = req.ti
    proto = req.proto
    proto.status = status
    ti.server.stats.status(status)
    reason = reason or REASONS.get(status, "")
    lines = f"HTTP/1.1 {status} {reason}\r\nDate: {http_date(ti.now)}\r\nServer: tux_like\r\n"
    if content_type:
        lines += f"Content-Type: {content_type}\r\n"
    if length is not None:
        lines += f"Content-Length: {length}\r\n"
    lines += extra
    if not proto.keep_alive:
        lines += "Connection: close\r\n"
    elif proto.head.minor == 0:
        lines += "Connection: keep-alive\r\n"
    data = (lines + "\r\n").encode("latin-1")
    out: stingy_count(1) = Malloc(ti, HEADER_BUFFER)  # one per response: freed before the next
    proto.out = out
    out[: len(data)] = data
    proto.out_len = len(data)
    proto.out_sent = 0


def set_body(req: Request, body: memoryview) -> None:
    """Attach the body (none for HEAD), in the header buffer's room when it fits there (one
    send for a small answer), then send."""
    proto = req.proto
    if not answers_head(proto):
        length = len(body)
        if proto.out_len + length <= len(proto.out):
            proto.out[proto.out_len : proto.out_len + length] = body
            proto.out_len += length
            proto.body_sent = length
        else:
            proto.body = body
    QueueStage(req, send_headers)


def answers_head(proto: HttpState) -> bool:
    """Whether the answer is to a HEAD (read off the request line if the head did not parse)."""
    if proto.head is not None:
        return proto.head.method == b"HEAD"
    return proto.recv is not None and proto.recv.startswith(b"HEAD ", proto.start, proto.end)


def render_listing(listing: bytearray, segments: list[str], names: list[tuple[str, bool]]) -> int:
    """Write an HTML listing into the buffer (names escaped, links percent-encoded); a listing
    the buffer cannot hold ends with a note of how many entries it left out."""
    shown = html.escape(("/" + "/".join(segments) + "/").replace("//", "/").encode(
        "utf-8", "surrogateescape").decode("utf-8", "replace"))
    top = f"<html><head><title>Index of {shown}</title></head><body><h1>Index of {shown}</h1><ul>\n"
    end = "</ul></body></html>\n"
    room = len(listing) - len(end) - 64  # 64: the note on entries left out
    data = bytearray(top.encode())
    if segments:
        data += b'<li><a href="../">../</a></li>\n'
    for index, (name, is_dir) in enumerate(names):
        raw = name.encode("utf-8", "surrogateescape")
        slash = "/" if is_dir else ""
        item = (f'<li><a href="{quote(raw)}{slash}">'
                f'{html.escape(raw.decode("utf-8", "replace"))}{slash}</a></li>\n').encode()
        if len(data) + len(item) > room:
            data += f"<li>({len(names) - index} more entries not shown)</li>\n".encode()
            break
        data += item
    data += end.encode()
    listing[: len(data)] = data
    return len(data)


# ---------------------------------------------------------------- sending


def send_headers(req: Request) -> None:
    """Stage: send the header buffer (partial sends wait for the socket to drain)."""
    ti = req.ti
    proto = req.proto
    try:
        sent = ti.net.send(req.sock, memoryview(proto.out)[proto.out_sent : proto.out_len])
    except ConnectionError:
        QueueStage(req, abort_response)
        return
    ti.server.stats.bytes_sent += sent
    proto.out_sent += sent
    if proto.out_sent < proto.out_len:
        ti.arm(req, ti.server.config.request_timeout, abort_response)  # a client that stopped reading
        ti.wait(req, send_headers, writable=True)
        return
    ti.disarm(req)
    if proto.body is not None or proto.file_pos < proto.file_end:
        QueueStage(req, send_body)
    else:
        QueueStage(req, log_request)


def send_body(req: Request) -> None:
    """Stage: send the body part in hand; a large file's next chunk comes from a worker."""
    ti = req.ti
    proto = req.proto
    body = proto.body
    if body is None:
        entry, offset = proto.entry, proto.file_pos
        length = min(STREAM_CHUNK, proto.file_end - offset)
        ti.submit(req, lambda: read_chunk(entry, offset, length), chunk_read)
        return
    try:
        sent = ti.net.send(req.sock, body[proto.body_pos :])
    except ConnectionError:
        QueueStage(req, abort_response)
        return
    ti.server.stats.bytes_sent += sent
    proto.body_pos += sent
    proto.body_sent += sent
    if proto.body_pos < len(body):
        ti.arm(req, ti.server.config.request_timeout, abort_response)
        ti.wait(req, send_body, writable=True)
        return
    ti.disarm(req)
    proto.body = None
    proto.body_pos = 0
    if proto.file_pos < proto.file_end:
        QueueStage(req, send_body)  # the next chunk
    else:
        QueueStage(req, log_request)


def chunk_read(req: Request) -> None:
    """Stage (after a worker): the next chunk of a large file, or the end if it changed."""
    proto = req.proto
    work = proto.work
    proto.work = None
    if work.error is not None:
        QueueStage(req, abort_response)  # the promised length cannot be kept: close
        return
    proto.body = memoryview(work.result)
    proto.file_pos += len(work.result)
    QueueStage(req, send_body)


def log_request(req: Request) -> None:
    """Stage: the access log line (common log format), when logging is on."""
    write_log(req)
    QueueStage(req, keepalive_or_flush)


def keepalive_or_flush(req: Request) -> None:
    """Stage: free the response's objects; the next pipelined request, a wait for one,
    or (no keep-alive) send FIN and drain what the client still sends."""
    ti = req.ti
    proto = req.proto
    config = ti.server.config
    consumed = proto.head_end
    free_response(req)
    if not proto.keep_alive:
        try:
            ti.net.shutdown_write(req.sock)
        except ConnectionError:
            QueueStage(req, close_connection)
            return
        ti.arm(req, LINGER_TIMEOUT, close_connection)
        QueueStage(req, linger)
        return
    proto.start = consumed
    if proto.start < proto.end:
        ti.arm(req, config.request_timeout, request_timed_out)
        QueueStage(req, parse_request)
    elif proto.eof:
        QueueStage(req, close_connection)
    else:
        proto.start = proto.end = 0
        ti.arm(req, config.keepalive_timeout, close_connection)
        ti.wait(req, read_request)


def linger(req: Request) -> None:
    """Stage: after FIN, read and drop the client's bytes until it closes (or the linger
    timer), so that closing with unread data does not reset the answer away."""
    ti = req.ti
    while True:
        try:
            data = ti.net.recv(req.sock, 65536)
        except ConnectionError:
            break
        if data is None:
            ti.wait(req, linger)
            return
        if not data:
            break
        ti.server.stats.bytes_received += len(data)
    QueueStage(req, close_connection)


def abort_response(req: Request) -> None:
    """Stage: the client reset or stalled mid-response: log what was sent, close."""
    write_log(req)
    QueueStage(req, close_connection)


def close_connection(req: Request) -> None:
    """Stage: free the handler's objects, then the request structure and the socket."""
    release(req)
    finish(req)


def write_log(req: Request) -> None:
    proto = req.proto
    server = req.ti.server
    if not server.config.logging or not proto.status:
        return
    line = "-"
    if proto.recv is not None and proto.start < proto.end:
        stop = proto.recv.find(b"\n", proto.start, proto.end)
        stop = proto.end if stop < 0 else stop
        stop = min(stop, proto.start + 512)
        line = log_escape(bytes(proto.recv[proto.start : stop]).rstrip(b"\r"))
    size = str(proto.body_sent) if proto.body_sent else "-"
    server.log(f'{req.peer[0]} - - [{log_date(req.ti.now)}] "{line}" {proto.status} {size}')


def free_response(req: Request) -> None:
    """Free what one response allocated (header and listing buffers) and reset its fields."""
    ti = req.ti
    proto = req.proto
    if proto.out is not None:
        Free(ti, proto.out)
    if proto.listing is not None:
        Free(ti, proto.listing)
    proto.reset_response()
    proto.work = None


def release(req: Request) -> None:
    """Free every object of the handler's on this connection (closing stages, server stop)."""
    proto = req.proto
    if proto is None:
        return
    ti = req.ti
    free_response(req)
    if proto.recv is not None:
        Free(ti, proto.recv)
    Free(ti, proto)
    req.proto = None
