"""HTTP/1.1 request syntax (RFC 9110/9112): the request head, the target, ranges, dates.

Pure functions over bytes, used by the parse and process stages of
:mod:`tux_like.http`. A malformed request is a :class:`BadRequest` carrying
the status to answer; anything that could desynchronize framing (smuggling
shapes, obs-fold, bare CR) is refused with 400 and the connection closed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from functools import lru_cache
from time import gmtime

TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+\Z")
TARGET = re.compile(rb"[\x21-\x7e]+\Z")
VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])\Z")
# A field value: visible bytes (obs-text too, other controls than NUL tolerated as RFC 9110
# 5.5 allows), separated by spaces or tabs; outer whitespace is trimmed before the match.
FIELD_VALUE = re.compile(rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?\Z")
HEAD_END = re.compile(rb"\n\r?\n")
ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)\Z")
LOG_SAFE = re.compile(rb"[ !#-\[\]-~]*\Z")  # printable ASCII but quote and backslash

# Methods this server knows: GET and HEAD are served, the others get 405 with Allow.
SERVED_METHODS = (b"GET", b"HEAD")
KNOWN_METHODS = (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE", b"CONNECT")


class BadRequest(Exception):
    """A request the server refuses: ``status`` is the answer (400, 413, 414, 431, 501, 505)."""

    def __init__(self, status: int, why: str):
        super().__init__(why)
        self.status = status


@dataclass
class Head:
    """What the stages need of a parsed request head."""

    method: bytes
    target: bytes
    minor: int  # HTTP/1.minor; 1.x above 1 is served as 1.1 (RFC 9112 2.5)
    keep_alive: bool
    has_body: bool  # Content-Length > 0 or a chunked body: refused, the connection closes
    if_modified_since: str
    range: str
    if_range: str
    fields: list[tuple[bytes, bytes]]  # every field, lower-cased names (CGI passes them on)


def skip_blank_lines(buf: bytearray, start: int, end: int) -> int:
    """RFC 9112 2.2: ignore empty lines before a request line."""
    while start < end:
        if buf[start] == 10:
            start += 1
        elif buf[start] == 13 and start + 1 < end and buf[start + 1] == 10:
            start += 2
        else:
            break
    return start


def head_end(buf: bytearray, start: int, end: int) -> int:
    """Where the head starting at ``start`` ends (after its blank line), or -1 if incomplete."""
    match = HEAD_END.search(buf, start, end)
    return -1 if match is None else match.end()


def check_incomplete(buf: bytearray, start: int, end: int, max_line: int, max_fields: int,
                     max_header_len: int) -> None:
    """Refuse an unfinished head as soon as it is over a limit (414 or 431)."""
    line_end = buf.find(b"\n", start, end)
    if line_end < 0:
        if end - start > max_line + 1:  # + 1: the CR of a CRLF that has not come yet
            raise BadRequest(414, "request line too long")
        return
    if line_end - start > max_line + 1:
        raise BadRequest(414, "request line too long")
    if end - line_end - 1 > max_header_len or buf.count(b"\n", line_end + 1, end) > max_fields:
        raise BadRequest(431, "request header fields too large")


def parse_head(head: bytes, max_line: int, max_fields: int, max_header_len: int) -> Head:
    """Parse a complete head (request line, fields, blank line) or raise :class:`BadRequest`."""
    text = head.replace(b"\r\n", b"\n")
    if b"\r" in text:
        raise BadRequest(400, "bare CR in the request head")
    lines = text.split(b"\n")
    del lines[-2:]  # the blank line's two empty pieces
    request_line = lines[0]
    if len(request_line) > max_line:
        raise BadRequest(414, "request line too long")
    if len(lines) - 1 > max_fields or sum(len(line) + 2 for line in lines[1:]) > max_header_len:
        raise BadRequest(431, "request header fields too large")
    parts = request_line.split(b" ")
    if len(parts) != 3 or not TOKEN.match(parts[0]) or not TARGET.match(parts[1]):
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    matched = VERSION.match(version)
    if matched is None:
        raise BadRequest(400, "malformed HTTP version")
    major, minor = int(matched.group(1)), int(matched.group(2))

    fields: list[tuple[bytes, bytes]] = []
    hosts = 0
    lengths: set[bytes] = set()
    codings: list[bytes] = []
    connection: list[bytes] = []
    ims = rng = if_range = ""
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise BadRequest(400, "obsolete line folding")
        name, colon, value = line.partition(b":")
        value = value.strip(b" \t")
        if not colon or not TOKEN.match(name) or not FIELD_VALUE.match(value):
            raise BadRequest(400, "malformed header field")
        name = name.lower()
        fields.append((name, value))
        if name == b"host":
            hosts += 1
        elif name == b"content-length":
            lengths.update(item.strip(b" \t") for item in value.split(b","))
        elif name == b"transfer-encoding":
            codings.extend(item.strip(b" \t").lower() for item in value.split(b",") if item.strip())
        elif name == b"connection":
            connection.extend(item.strip(b" \t").lower() for item in value.split(b","))
        elif name == b"if-modified-since":
            ims = value.decode("latin-1")
        elif name == b"range":
            rng = value.decode("latin-1")
        elif name == b"if-range":
            if_range = value.decode("latin-1")

    if hosts > 1 or (hosts == 0 and major == 1 and minor >= 1):
        raise BadRequest(400, "a request needs exactly one Host field")
    has_body = False
    if lengths:
        if codings:
            raise BadRequest(400, "Content-Length with Transfer-Encoding")
        if len(lengths) != 1:
            raise BadRequest(400, "conflicting Content-Length values")
        length = lengths.pop()
        if not length.isdigit() or not length.isascii():
            raise BadRequest(400, "malformed Content-Length")
        has_body = length.strip(b"0") != b""  # no int(): its digits may be thousands
    elif codings:
        if (major, minor) == (1, 0) or codings[-1] != b"chunked":
            raise BadRequest(400, "request framing cannot be determined")
        has_body = True
    if major != 1:
        raise BadRequest(505, "HTTP version not supported")  # after the framing: 400s first
    if minor == 0:
        keep_alive = b"keep-alive" in connection and b"close" not in connection
    else:
        keep_alive = b"close" not in connection
    return Head(method, target, minor, keep_alive, has_body, ims, rng, if_range, fields)


def normalize_target(target: bytes) -> tuple[list[str], bool, str]:
    """The target's path as segments (percent-decoded once, then normalized), whether it
    ends with a slash, and the query. Traversal above the root is 403; a name with a byte
    no served file has (NUL, backslash) is 404; a bad escape or a target that is not a
    path is 400."""
    if target[:7].lower() == b"http://" or target[:8].lower() == b"https://":
        slash = target.find(b"/", target.find(b"//") + 2)
        target = target[slash:] if slash >= 0 else b"/"
    if target[:1] != b"/":
        raise BadRequest(400, "the target is not an absolute path")
    path, _, query = target.partition(b"?")
    decoded = path
    if b"%" in path:
        if BAD_ESCAPE.search(path):
            raise BadRequest(400, "malformed percent-encoding")
        decoded = ESCAPE.sub(lambda m: bytes((int(m.group(1), 16),)), path)
    if b"\x00" in decoded or b"\\" in decoded:
        raise BadRequest(404, "a byte no served file name holds")
    segments: list[str] = []
    for raw in decoded.split(b"/"):
        if raw == b"" or raw == b".":
            continue
        if raw == b"..":
            if not segments:
                raise BadRequest(403, "the path leaves the document root")
            segments.pop()
            continue
        segments.append(raw.decode("utf-8", "surrogateescape"))
    last = decoded.rsplit(b"/", 1)[-1]
    trailing = last in (b"", b".", b"..")
    return segments, trailing, query.decode("latin-1")


def byte_range(spec: str, size: int) -> tuple[int, int] | None:
    """A single ``bytes=`` range as (first, last) inclusive; None to serve the whole file
    (no range, several ranges, or a malformed one, which RFC 9110 14.2 lets a server ignore);
    (-1, -1) when unsatisfiable (416)."""
    matched = RANGE.match(spec.replace(" ", ""))
    if matched is None:
        return None
    first, last = matched.group(1), matched.group(2)
    if not first:
        if not last:
            return None
        suffix = position(last)
        if suffix == 0 or size == 0:
            return (-1, -1)
        return (max(0, size - suffix), size - 1)
    start = position(first)
    end = position(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        return (-1, -1)
    return (start, min(end, size - 1))


def position(digits: str) -> int:
    """A byte position; one longer than any file (past int()'s digit limit too) is 2**63."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else 1 << 63


def http_date(when: float) -> str:
    """An IMF-fixdate (RFC 9110 5.6.7), to the second."""
    return date_of_second(int(when))


@lru_cache(maxsize=8)
def date_of_second(second: int) -> str:
    """Formatted once per second: every answer in that second carries the same Date."""
    return formatdate(second, usegmt=True)


def parse_http_date(text: str) -> float | None:
    """A date in any of the three HTTP formats, or None if it is not one."""
    try:
        return parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def log_date(when: float) -> str:
    """The common log format's date, ``10/Oct/2000:13:55:36 +0000`` (no locale)."""
    return log_date_of_second(int(when))


@lru_cache(maxsize=8)
def log_date_of_second(second: int) -> str:
    t = gmtime(second)
    return (f"{t.tm_mday:02d}/{MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000")


def log_escape(data: bytes) -> str:
    """Client bytes made safe for one log line: non-printables, quote and backslash escaped."""
    if LOG_SAFE.match(data):
        return data.decode("ascii")
    out = []
    for byte in data:
        if byte < 0x20 or byte >= 0x7F or byte in (0x22, 0x5C):
            out.append(f"\\x{byte:02x}")
        else:
            out.append(chr(byte))
    return "".join(out)
