"""CGI/1.1 (RFC 3875) as a worker job: find the script, run it with the RFC's
environment and a time limit, parse its answer (Status, Content-Type, Location).

It blocks (a subprocess), so the HTTP stages submit it to a worker and never
call it themselves. A script that fails, answers garbage or overruns
``cgi_timeout`` is a 500 or a 504, never a hung loop.
"""

from __future__ import annotations

import os
import re
import select
import signal
import stat
import subprocess
import time
from dataclasses import dataclass
from urllib.parse import quote

from .http_files import inside
from .http_parse import FIELD_VALUE, HEAD_END

MAX_OUTPUT = 8 << 20  # a script's answer larger than this is a 500
# Request fields that are meta-variables already, or that would steer the script's own
# HTTP clients (httpoxy): not passed as HTTP_*.
SKIPPED_FIELDS = (b"content-length", b"content-type", b"proxy")
HOST_NAME = re.compile(r"\[[^\]]*\]|[^:]*")  # a Host field without its port


@dataclass
class CgiAnswer:
    """What the script answered; an ``error`` status (403, 404, 500, 504) has no fields."""

    status: int
    content_type: str = ""
    location: str = ""
    reason: str = ""
    body: bytes = b""
    error: bool = False


@dataclass
class CgiRequest:
    """The request's side of the environment, gathered by the stage (no I/O)."""

    method: str
    protocol: str
    query: str
    fields: list[tuple[bytes, bytes]]
    remote: tuple[str, int]
    local: tuple[str, int]


def run_cgi(root: str, cgi_dir: list[str], rest: list[str], request: CgiRequest,
            timeout: float) -> CgiAnswer:
    """Find the script named by the first segments of ``rest`` under the CGI directory,
    the others being PATH_INFO, run it and parse what it printed."""
    base = os.path.realpath(os.path.join(root, *cgi_dir))
    if not inside(root, base):
        return CgiAnswer(403, error=True)
    script = base
    taken = 0
    while True:
        try:
            info = os.stat(script)
        except (FileNotFoundError, NotADirectoryError):
            return CgiAnswer(404, error=True)
        except OSError:
            return CgiAnswer(403, error=True)
        if stat.S_ISREG(info.st_mode):
            break
        if not stat.S_ISDIR(info.st_mode) or taken == len(rest):
            return CgiAnswer(403, error=True)
        script = os.path.realpath(os.path.join(script, rest[taken]))
        taken += 1
        if not inside(base, script):
            return CgiAnswer(403, error=True)
    if not os.access(script, os.X_OK):
        return CgiAnswer(403, error=True)
    script_name = "/" + "/".join(cgi_dir + rest[:taken])
    path_info = "".join("/" + segment for segment in rest[taken:])
    env = environment(request, script_name, path_info, root)
    try:
        process = subprocess.Popen([script], env=env, cwd=os.path.dirname(script),
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        return CgiAnswer(500, error=True)
    with process:
        status, output = collect(process, timeout)
        if status:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # the script and whatever it started
            except ProcessLookupError:
                pass
            return CgiAnswer(status, error=True)
    return parse_output(output)


def collect(process: subprocess.Popen[bytes], timeout: float) -> tuple[int, bytes]:
    """The script's output once it has exited, or 504 past the time limit, or 500 past
    ``MAX_OUTPUT`` (read as it comes: a runaway script does not fill the memory)."""
    deadline = time.monotonic() + timeout
    fd = process.stdout.fileno()
    chunks = []
    size = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return 504, b""
        if not select.select([fd], [], [], left)[0]:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        size += len(chunk)
        if size > MAX_OUTPUT:
            return 500, b""
        chunks.append(chunk)
    try:
        process.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return 504, b""
    return 0, b"".join(chunks)


def environment(request: CgiRequest, script_name: str, path_info: str, root: str) -> dict[str, str]:
    """RFC 3875 section 4.1's meta-variables (no request body: no CONTENT_*)."""
    host = request.local[0]
    for name, value in request.fields:
        if name == b"host":
            host = HOST_NAME.match(value.decode("latin-1")).group(0) or host
    env = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_SOFTWARE": "tux_like",
        "SERVER_PROTOCOL": request.protocol,
        "SERVER_NAME": host,
        "SERVER_PORT": str(request.local[1]),
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": quote(script_name, errors="surrogateescape"),
        "QUERY_STRING": request.query,
        "REMOTE_ADDR": request.remote[0],
        "REMOTE_PORT": str(request.remote[1]),
        "PATH": "/usr/local/bin:/usr/bin:/bin",
    }
    if path_info:
        env["PATH_INFO"] = path_info
        env["PATH_TRANSLATED"] = os.path.join(root, path_info.lstrip("/"))
    for name, value in request.fields:
        if name in SKIPPED_FIELDS:
            continue
        key = "HTTP_" + name.decode("ascii").upper().replace("-", "_")
        text = value.decode("latin-1")
        env[key] = env[key] + ", " + text if key in env else text
    return {key: value for key, value in env.items() if "\x00" not in value}


def parse_output(output: bytes) -> CgiAnswer:
    """The script's header lines (up to a blank line), then its document (RFC 3875 6)."""
    blank = HEAD_END.search(output)
    if blank is None:
        return CgiAnswer(500, error=True)
    answer = CgiAnswer(200, body=output[blank.end():])
    status = ""
    for line in output[:blank.start()].split(b"\n"):
        name, colon, value = line.rstrip(b"\r").partition(b":")
        value = value.strip(b" \t")
        if not colon or not FIELD_VALUE.match(value):
            return CgiAnswer(500, error=True)
        name = name.strip().lower()
        text = value.decode("latin-1")
        if name == b"status":
            status = text
        elif name == b"content-type":
            answer.content_type = text
        elif name == b"location":
            answer.location = text
    if status:
        code, _, answer.reason = status.partition(" ")
        if not (code.isdigit() and len(code) == 3 and 200 <= int(code) < 600):
            return CgiAnswer(500, error=True)
        answer.status = int(code)
    elif answer.location:
        answer.status = 302  # a redirect, local or not, goes back to the client
    if not answer.content_type and not answer.location:
        return CgiAnswer(500, error=True)
    return answer
