"""FTP (RFC 959), anonymous and read-only, with passive data connections (RFC 2428 EPSV),
SIZE and MDTM (RFC 3659): the second protocol TUX serves, as stages over the core.

Two kinds of request. The control request (the accepted connection) reads one
command line at a time into its command buffer and answers through its reply
buffer. A transfer (RETR, LIST, NLST) is a request of its own, made by the
control request once its 150 reply is out: it accepts the connection on the
passive listener PASV/EPSV opened, sends the file (read a chunk at a time by a
worker) or the listing (a listing buffer refilled line by line), closes, and
hands the 226 (or 425/426/451) back to the control request, which stays parked
meanwhile (it reads no command during a transfer; pipelined commands wait in
the socket).

Every filesystem access (resolving a path, stat, listing, reading a file) runs
on a worker (``ti.submit``): the stages never block. Paths go through
:mod:`tux_like.paths`, so nothing outside ``config.document_root`` is named,
listed or sent. Only anonymous logins (USER anonymous or ftp): another user
name gets 530, as a server with no accounts says "this server is anonymous
only" rather than pretend to take a password it never checks.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from stat import S_ISDIR, S_ISREG, filemode
from typing import Any

from stingy.annotations import stingy_count

from .core import REQUEST, Free, Malloc, QueueStage, Request, Site, buffer_of, finish
from .paths import normalize, resolve

# ---------------------------------------------------------------- per-request objects


@dataclass(eq=False)
class Session:
    """A control connection's state: login, directory, type, its passive listener, its transfer."""

    command: Any = None  # the command buffer (COMMAND_BUFFER)
    command_len: int = 0
    discarding: bool = False  # the rest of an over-long line is being dropped
    reply: Any = None  # the reply buffer (REPLY_BUFFER)
    reply_len: int = 0
    reply_sent: int = 0
    user_ok: bool = False  # USER anonymous was given: PASS is next
    logged_in: bool = False
    cwd: str = "/"
    binary: bool = False  # TYPE I; RFC 959's default is TYPE A
    epsv_all: bool = False  # after EPSV ALL, PASV is refused (RFC 2428)
    passive: Any = None  # the data listener of the last PASV/EPSV, not yet used
    verb: str = ""  # the command being served (for the stage a worker's result goes to)
    pending: str = ""  # its virtual path
    transfer: Request | None = None  # the transfer request, once made
    quitting: bool = False
    work: Any = None  # set by ThreadInfo.complete


@dataclass(eq=False)
class Transfer:
    """A data transfer's state: where it came from, what it sends, how far it is."""

    control: Request | None = None
    listener: Any = None  # until the data connection is accepted
    out: Any = None  # what is being sent: a chunk of the file or the listing buffer
    sent: int = 0
    end: int = 0
    total: int = 0  # bytes sent, for the transfer log
    path: Path | None = None  # RETR's file (its real path), read a chunk at a time
    offset: int = 0  # of the next chunk
    eof: bool = False
    binary: bool = True
    after_cr: bool = False  # TYPE A: the last chunk ended in CR (a LF next is not bare)
    entries: list[tuple[str, int, int, int, float]] | None = None  # a listing's, not yet formatted
    next_entry: int = 0
    names_only: bool = False  # NLST
    work: Any = None


def session_of(site: Site) -> Session:
    return Session()


def transfer_of(site: Site) -> Transfer:
    return Transfer()


SESSION = Site("ftp_session", 256, session_of)
# vsftpd's VSFTP_MAX_COMMAND_LINE: a longer line gets 500 and is dropped up to its end.
COMMAND_BUFFER = Site("ftp_command_buffer", 4096, buffer_of)
# One reply at a time: the longest is a 257 naming a MAX_PATH directory with every quote doubled.
REPLY_BUFFER = Site("ftp_reply_buffer", 8448, buffer_of)
TRANSFER = Site("ftp_transfer", 128, transfer_of)
LISTING_BUFFER = Site("ftp_listing_buffer", 4096, buffer_of)  # a page, as TUX's
FILE_CHUNK = 65536  # what one worker read of RETR's file takes: memory per transfer stays bounded

FEATURES = "211-Features:\r\n EPSV\r\n MDTM\r\n PASV\r\n SIZE\r\n TVFS\r\n211 End"
KNOWN = (
    "USER", "PASS", "QUIT", "FEAT", "SYST", "NOOP", "PWD", "XPWD", "TYPE", "MODE", "STRU", "PASV",
    "EPSV", "PORT", "EPRT", "ABOR", "CWD", "XCWD", "CDUP", "XCUP", "SIZE", "MDTM", "RETR", "LIST", "NLST",
)
BEFORE_LOGIN = ("USER", "PASS", "QUIT", "FEAT")
WRITES = ("STOR", "STOU", "APPE", "DELE", "RMD", "XRMD", "MKD", "XMKD", "RNFR", "RNTO", "SITE")
NOT_IMPLEMENTED = ("ACCT", "SMNT", "REIN", "REST", "ALLO", "STAT", "HELP", "OPTS", "MLST", "MLSD", "AUTH")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


# ---------------------------------------------------------------- control connection


def got_connection(req: Request) -> None:
    """Stage: a new control connection: its objects, then the 220 greeting."""
    ti = req.ti
    session = Malloc(ti, SESSION)
    session.command = Malloc(ti, COMMAND_BUFFER)
    session.reply = Malloc(ti, REPLY_BUFFER)
    req.proto = session
    reply(req, "220 tux_like FTP server ready (anonymous, read-only).")
    QueueStage(req, send_reply)


def refuse_busy(req: Request) -> None:
    """Stage: a connection past max_connect: 421 (one try: a fresh socket has room) and close."""
    try:
        req.ti.net.send(req.sock, b"421 Too many connections, try again later.\r\n")
    except ConnectionError:
        pass
    finish(req)


def reply(req: Request, text: str) -> None:
    """Append one reply to the reply buffer (sent by ``send_reply``); counted per code."""
    session = req.proto
    data = text.encode("utf-8", "surrogateescape") + b"\r\n"
    end = session.reply_len + len(data)
    session.reply[session.reply_len:end] = data
    session.reply_len = end
    req.ti.server.stats.status(int(text[:3]))


def send_reply(req: Request) -> None:
    """Stage: flush the reply buffer (partial sends wait for room), then go on: close after
    QUIT or a 421, start a transfer after its 150, else read the next command."""
    ti = req.ti
    session = req.proto
    config = ti.server.config
    while session.reply_sent < session.reply_len:
        try:
            sent = ti.net.send(req.sock, memoryview(session.reply)[session.reply_sent:session.reply_len])
        except ConnectionError:
            QueueStage(req, close_control)
            return
        if sent == 0:
            ti.wait(req, send_reply, writable=True)
            ti.arm(req, config.request_timeout, close_control)
            return
        session.reply_sent += sent
        ti.server.stats.bytes_sent += sent
    session.reply_len = session.reply_sent = 0
    if session.quitting:
        QueueStage(req, close_control)
    elif session.transfer is not None:
        ti.disarm(req)  # parked on the transfer, which has its own timer
        ti.arm(session.transfer, config.request_timeout, data_timeout)
        QueueStage(session.transfer, accept_data)
    else:
        ti.arm(req, config.keepalive_timeout, idle_timeout)  # from now until a whole command line
        QueueStage(req, parse_command)


def read_command(req: Request) -> None:
    """Stage: read more of the command line into the command buffer."""
    ti = req.ti
    session = req.proto
    room = len(session.command) - session.command_len
    try:
        data = ti.net.recv(req.sock, room)
    except ConnectionError:
        QueueStage(req, close_control)
        return
    if data is None:
        ti.wait(req, read_command)
        return
    if not data:
        QueueStage(req, close_control)  # the client closed the control connection
        return
    ti.server.stats.bytes_received += len(data)
    end = session.command_len + len(data)
    session.command[session.command_len:end] = data
    session.command_len = end
    QueueStage(req, parse_command)


def parse_command(req: Request) -> None:
    """Stage: take one whole line from the command buffer and run it; an incomplete line
    reads more (the cycle of TUX's parse stage); an over-long one gets 500 and is dropped."""
    session = req.proto
    if session.quitting:
        return  # a 421 is on its way out: the connection is closing
    buffer = session.command
    while True:
        line_end = buffer.find(b"\n", 0, session.command_len)
        if line_end < 0:
            break
        line = bytes(buffer[:line_end])
        rest = session.command_len - line_end - 1
        buffer[:rest] = buffer[line_end + 1:session.command_len]
        session.command_len = rest
        if session.discarding:
            session.discarding = False  # the end of the over-long line: drop it
            continue
        req.ti.disarm(req)
        run_command(req, line.rstrip(b"\r").decode("utf-8", "surrogateescape"))
        return
    if session.discarding:
        session.command_len = 0
    elif session.command_len == len(buffer):
        session.command_len = 0
        session.discarding = True
        reply(req, "500 Command line too long.")
        QueueStage(req, send_reply)
        return
    QueueStage(req, read_command)


def run_command(req: Request, line: str) -> None:
    """Answer one command line: a reply now, or a worker's job whose stage replies."""
    session = req.proto
    verb, _, argument = line.partition(" ")
    verb = verb.upper()
    if not (verb.isascii() and verb.isalpha() and len(verb) <= 4):
        reply(req, "500 Syntax error, command unrecognized.")
    elif not session.logged_in and verb not in BEFORE_LOGIN and is_known(verb):
        reply(req, "530 Please login with USER and PASS.")
    elif verb == "USER":
        if session.logged_in:
            reply(req, "530 Already logged in; the user cannot change.")
        elif argument.lower() in ("anonymous", "ftp"):
            session.user_ok = True
            reply(req, "331 Anonymous login ok, send your e-mail address as password.")
        else:
            session.user_ok = False
            reply(req, "530 This server is anonymous only.")
    elif verb == "PASS":
        if session.logged_in:
            reply(req, "230 Already logged in.")
        elif session.user_ok:
            session.logged_in = True
            reply(req, "230 Login successful.")
        else:
            reply(req, "503 Login with USER first.")
    elif verb == "QUIT":
        session.quitting = True
        reply(req, "221 Goodbye.")
    elif verb == "FEAT":
        reply(req, FEATURES)
    elif verb == "SYST":
        reply(req, "215 UNIX Type: L8")
    elif verb == "NOOP":
        reply(req, "200 NOOP ok.")
    elif verb == "PWD" or verb == "XPWD":
        reply(req, '257 "' + session.cwd.replace('"', '""') + '" is the current directory.')
    elif verb == "TYPE":
        kind = argument.upper()
        if kind in ("I", "L 8"):
            session.binary = True
            reply(req, "200 Switching to Binary mode.")
        elif kind in ("A", "A N"):
            session.binary = False
            reply(req, "200 Switching to ASCII mode.")
        elif kind:
            reply(req, "504 Only TYPE A (non-print) and TYPE I are served.")
        else:
            reply(req, "501 TYPE wants A or I.")
    elif verb == "MODE":
        reply(req, "200 Mode set to S." if argument.upper() == "S" else "504 Only MODE S is served.")
    elif verb == "STRU":
        reply(req, "200 Structure set to F." if argument.upper() == "F" else "504 Only STRU F is served.")
    elif verb == "PASV":
        if session.epsv_all:
            reply(req, "503 EPSV ALL was given: use EPSV.")
        else:
            port = open_passive(req)
            if port:
                address = req.ti.net.local_address(req.sock)[0].replace(".", ",")
                reply(req, f"227 Entering Passive Mode ({address},{port >> 8},{port & 255}).")
    elif verb == "EPSV":
        kind = argument.upper()
        if kind == "ALL":
            session.epsv_all = True
            reply(req, "200 EPSV ALL ok.")
        elif kind in ("", "1"):
            port = open_passive(req)
            if port:
                reply(req, f"229 Entering Extended Passive Mode (|||{port}|).")
        elif kind.isdigit():
            reply(req, "522 Network protocol not supported, use (1).")
        else:
            reply(req, "501 EPSV wants 1 or ALL.")
    elif verb == "PORT" or verb == "EPRT":
        reply(req, "502 Active mode is off: use PASV or EPSV.")
    elif verb == "ABOR":
        close_passive(req)
        reply(req, "226 No transfer to abort.")
    elif verb in WRITES:
        reply(req, "550 Permission denied: this server is read-only.")
    elif verb in NOT_IMPLEMENTED:
        reply(req, "502 Command not implemented.")
    elif verb == "CWD" or verb == "XCWD" or verb == "CDUP" or verb == "XCUP":
        target = ".." if verb == "CDUP" or verb == "XCUP" else argument
        if target:
            submit(req, verb, target, is_directory, changed_directory)
            return
        reply(req, "501 CWD wants a directory.")
    elif verb == "SIZE" or verb == "MDTM":
        if argument:
            submit(req, verb, argument, partial(stat_file, binary=session.binary or verb == "MDTM"), file_status)
            return
        reply(req, f"501 {verb} wants a file name.")
    elif verb == "RETR" or verb == "LIST" or verb == "NLST":
        if session.passive is None:
            reply(req, "425 Use PASV or EPSV first.")
        elif verb == "RETR":
            if argument:
                submit(req, verb, argument, open_file, transfer_ready)
                return
            reply(req, "501 RETR wants a file name.")
        else:
            submit(req, verb, listing_argument(argument), list_directory, transfer_ready)
            return
    else:
        reply(req, "500 Unknown command.")
    QueueStage(req, send_reply)


def is_known(verb: str) -> bool:
    """A command this server recognizes (an unknown one gets 500 even before login)."""
    return verb in KNOWN or verb in WRITES or verb in NOT_IMPLEMENTED



def listing_argument(argument: str) -> str:
    """LIST/NLST's path, without the ``ls`` options clients send (``LIST -la``)."""
    while argument.startswith("-"):
        _, _, argument = argument.partition(" ")
    return argument or "."


def submit(req: Request, verb: str, argument: str, job: Any, then: Any) -> None:
    """Run a filesystem ``job(root, virtual)`` on a worker for ``verb``; ``then`` answers.
    A path that leaves the root is refused here, before any filesystem access."""
    session = req.proto
    base = "" if argument.startswith("/") else session.cwd
    virtual = normalize(base + "/" + argument)
    if virtual is None:
        reply(req, "550 No such file or directory.")
        QueueStage(req, send_reply)
        return
    session.verb, session.pending = verb, virtual
    req.ti.submit(req, partial(job, req.ti.server.config.document_root, virtual), then)


def changed_directory(req: Request) -> None:
    """Stage: CWD/CDUP's answer, from the worker's look at the directory."""
    session = req.proto
    work = session.work
    if work.error is None and work.result:
        session.cwd = session.pending
        reply(req, "250 Directory successfully changed.")
    else:
        reply(req, "550 Failed to change directory.")
    QueueStage(req, send_reply)


def file_status(req: Request) -> None:
    """Stage: SIZE's or MDTM's answer (RFC 3659), for regular files only."""
    session = req.proto
    work = session.work
    if work.error is not None:
        reply(req, "550 Could not get the file's status.")
    elif session.verb == "SIZE":
        reply(req, f"213 {work.result[0]}")
    else:
        reply(req, "213 " + time.strftime("%Y%m%d%H%M%S", time.gmtime(work.result[1])))
    QueueStage(req, send_reply)


def transfer_ready(req: Request) -> None:
    """Stage: the worker has the file or the listing: make the transfer request, send 150;
    ``send_reply`` starts the transfer once the 150 is out."""
    session = req.proto
    work = session.work
    if work.error is not None:
        reply(req, "550 Failed to open file." if session.verb == "RETR" else "550 Failed to open directory.")
        QueueStage(req, send_reply)
        return
    ti = req.ti
    transfer = Malloc(ti, TRANSFER)
    transfer.control, transfer.listener = req, session.passive
    transfer.sent = transfer.next_entry = transfer.total = 0
    transfer.end = 0
    if session.verb == "RETR":
        transfer.path, size = work.result
        transfer.out, transfer.entries, transfer.offset, transfer.eof = b"", None, 0, False
        transfer.binary, transfer.after_cr = session.binary, False
        mode = "BINARY" if session.binary else "ASCII"
        reply(req, f"150 Opening {mode} mode data connection ({size} bytes).")
    else:
        listing: stingy_count(1) = Malloc(ti, LISTING_BUFFER)  # one per transfer
        transfer.out = listing
        transfer.entries, transfer.path = work.result, None
        transfer.names_only = session.verb == "NLST"
        reply(req, "150 Here comes the directory listing.")
    session.passive = None  # the transfer owns the listener now
    data: stingy_count(1) = Malloc(ti, REQUEST)  # the transfer's connection
    data.ti, data.sock, data.peer = ti, transfer.listener, ("", 0)
    data.closed, data.listener, data.proto, data.waiting = False, None, transfer, ""
    ti.requests += 1
    session.transfer = data
    QueueStage(req, send_reply)


def idle_timeout(req: Request) -> None:
    """Stage (timer): no whole command line in keepalive_timeout: 421 and close."""
    req.proto.quitting = True
    reply(req, "421 Timeout: closing the control connection.")
    QueueStage(req, send_reply)


def close_control(req: Request) -> None:
    """Stage: end the control connection (and its transfer, its passive listener)."""
    release(req)
    finish(req)


def open_passive(req: Request) -> int:
    """Open a data listener on a port of ``ftp_passive_ports`` (from a random start, so the
    port is not guessed: RFC 2577), replacing an unused one; 0 and a 425 when none is free."""
    close_passive(req)
    ti = req.ti
    low, high = ti.server.config.ftp_passive_ports
    span = high - low + 1
    address = ti.net.local_address(req.sock)[0]
    start = random.randrange(span)
    for offset in range(span):
        port = low + (start + offset) % span
        try:
            req.proto.passive = ti.net.listen(address, port, 1)
        except OSError:
            continue
        return port
    reply(req, "425 No passive port is free.")
    return 0


def close_passive(req: Request) -> None:
    session = req.proto
    if session.passive is not None:
        req.ti.net.close(session.passive)
        session.passive = None


# ---------------------------------------------------------------- data connection


def accept_data(data: Request) -> None:
    """Stage: accept the data connection from the control connection's host (another host's
    connection on the port is closed: RFC 2577), then close the listener."""
    ti = data.ti
    transfer = data.proto
    while True:
        accepted = ti.net.accept(transfer.listener)
        if accepted is None:
            ti.wait(data, accept_data)
            return
        sock, peer = accepted
        if peer[0] == transfer.control.peer[0]:
            break
        ti.net.close(sock)
    ti.net.close(transfer.listener)
    transfer.listener = None
    data.sock, data.peer = sock, peer
    QueueStage(data, send_data)


def send_data(data: Request) -> None:
    """Stage: send the file (a worker reads each chunk) or the listing (refilling the listing
    buffer), partial sends waiting for room; at the end close and hand 226 to the control
    connection. The timer runs only while the request waits on its socket."""
    ti = data.ti
    transfer = data.proto
    while True:
        if transfer.sent == transfer.end:
            if transfer.path is not None and not transfer.eof:
                ti.disarm(data)
                ti.submit(data, partial(read_chunk, transfer.path, transfer.offset), got_chunk)
                return
            if transfer.path is not None or not fill_listing(transfer):
                end_transfer(data, "226 Transfer complete.")
                return
        try:
            sent = ti.net.send(data.sock, memoryview(transfer.out)[transfer.sent:transfer.end])
        except ConnectionError:
            end_transfer(data, "426 Data connection closed; transfer aborted.")
            return
        if sent == 0:
            ti.wait(data, send_data, writable=True)
            ti.arm(data, ti.server.config.request_timeout, data_timeout)
            return
        transfer.sent += sent
        transfer.total += sent
        ti.server.stats.bytes_sent += sent


def fill_listing(transfer: Transfer) -> bool:
    """Format the next listing lines into the listing buffer; False when nothing is left."""
    entries = transfer.entries
    buffer = transfer.out
    end = 0
    while transfer.next_entry < len(entries):
        line = listing_line(entries[transfer.next_entry], transfer.names_only)
        if end + len(line) > len(buffer):
            break
        buffer[end:end + len(line)] = line
        end += len(line)
        transfer.next_entry += 1
    transfer.sent, transfer.end = 0, end
    return end > 0


def got_chunk(data: Request) -> None:
    """Stage: a worker read the file's next chunk: send it (in TYPE A with CRLF line ends)."""
    transfer = data.proto
    work = transfer.work
    if work.error is not None:
        end_transfer(data, "451 Local error reading the file; transfer aborted.")
        return
    raw = work.result
    transfer.offset += len(raw)
    transfer.eof = len(raw) < FILE_CHUNK
    transfer.out = raw if transfer.binary else to_crlf(raw, transfer.after_cr)
    transfer.after_cr = raw.endswith(b"\r")
    transfer.sent, transfer.end = 0, len(transfer.out)
    QueueStage(data, send_data)


def listing_line(entry: tuple[str, int, int, int, float], names_only: bool) -> bytes:
    """One line of NLST (the name) or LIST (``ls -l`` as ftplib and curl parse it; always
    the year form of the date: the stages have no wall clock to tell a recent file)."""
    name, mode, links, size, mtime = entry
    if names_only:
        return name.encode("utf-8", "surrogateescape") + b"\r\n"
    when = time.gmtime(mtime)
    line = (f"{filemode(mode)} {links:>3} ftp      ftp      {size:>12} "
            f"{MONTHS[when.tm_mon - 1]} {when.tm_mday:>2}  {when.tm_year} {name}\r\n")
    return line.encode("utf-8", "surrogateescape")


def data_timeout(data: Request) -> None:
    """Stage (timer): no data connection, or no progress, within request_timeout."""
    if data.proto.listener is not None:
        end_transfer(data, "425 Can't open data connection.")
    else:
        end_transfer(data, "426 Data connection stalled; transfer aborted.")


def end_transfer(data: Request, line: str) -> None:
    """Close the data connection, free the transfer, give ``line`` to the control connection;
    one log line per transfer (peer, command, path, reply code, bytes) when logging is on."""
    control = data.proto.control
    session = control.proto
    server = data.ti.server
    if server.config.logging:
        server.log(f'{control.peer[0]} anonymous "{session.verb} {session.pending}" {line[:3]} {data.proto.total}')
    free_transfer(data)
    finish(data)
    session.transfer = None
    reply(control, line)
    QueueStage(control, send_reply)


def free_transfer(data: Request) -> None:
    """Free the transfer's objects (its listener, if never used, closes with the request)."""
    transfer = data.proto
    if transfer.entries is not None:
        Free(data.ti, transfer.out)
    transfer.out = transfer.entries = transfer.control = transfer.path = transfer.work = None
    Free(data.ti, transfer)
    data.proto = None


def release(req: Request) -> None:
    """Free the handler's objects of a control request (with its transfer and passive
    listener) or of a transfer (whose parked control connection, waiting on nothing else,
    ends with it: this is how ``Server.stop`` reaches it)."""
    proto = req.proto
    if proto is None:
        return
    ti = req.ti
    if isinstance(proto, Transfer):
        control = proto.control
        free_transfer(req)
        control.proto.transfer = None
        close_control(control)
        return
    if proto.transfer is not None:
        data = proto.transfer
        proto.transfer = None
        free_transfer(data)
        finish(data)
    close_passive(req)
    Free(ti, proto.command)
    Free(ti, proto.reply)
    proto.command = proto.reply = proto.work = None
    Free(ti, proto)
    req.proto = None


# ---------------------------------------------------------------- worker jobs (may block)


def find(root: str, virtual: str) -> Path:
    path = resolve(Path(root).resolve(), virtual)
    if path is None:
        raise FileNotFoundError(virtual)
    return path


def regular_file(root: str, virtual: str) -> tuple[Path, os.stat_result]:
    """The real path and status of a regular file (a directory is no file to send)."""
    path = find(root, virtual)
    status = path.stat()
    if not S_ISREG(status.st_mode):
        raise IsADirectoryError(virtual)
    return path, status


def is_directory(root: str, virtual: str) -> bool:
    return find(root, virtual).is_dir()


def stat_file(root: str, virtual: str, binary: bool) -> tuple[int, float]:
    """A regular file's size as RETR would send it in the current TYPE (RFC 3659 4: in
    TYPE A, counted with CRLF line ends) and its modification time."""
    path, status = regular_file(root, virtual)
    if binary:
        return status.st_size, status.st_mtime
    size, after_cr = 0, False
    with path.open("rb") as file:
        while chunk := file.read(FILE_CHUNK):
            size += len(to_crlf(chunk, after_cr))
            after_cr = chunk.endswith(b"\r")
    return size, status.st_mtime


def open_file(root: str, virtual: str) -> tuple[Path, int]:
    """RETR's file: its real path (read later a chunk at a time) and its size."""
    path, status = regular_file(root, virtual)
    return path, status.st_size


def read_chunk(path: Path, offset: int) -> bytes:
    """Up to FILE_CHUNK bytes of the file from ``offset`` (fewer: the end of the file)."""
    with path.open("rb") as file:
        file.seek(offset)
        return file.read(FILE_CHUNK)


def to_crlf(data: bytes, after_cr: bool) -> bytes:
    """TYPE A's line ends (RFC 959 3.1.1.1): every bare LF becomes CRLF; ``after_cr`` says
    the data before ``data`` ended in CR, so a LF it starts with is not bare."""
    if after_cr and data.startswith(b"\n"):
        return b"\n" + to_crlf(data[1:], False)
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def list_directory(root: str, virtual: str) -> list[tuple[str, int, int, int, float]]:
    """A directory's entries (or a file's own), sorted; an entry whose real location is
    outside the root (a symlink leaving it) or that cannot be named on one line is left out."""
    real_root = Path(root).resolve()
    path = resolve(real_root, virtual)
    if path is None:
        raise FileNotFoundError(virtual)
    status = path.stat()
    if not S_ISDIR(status.st_mode):
        return [(virtual.rsplit("/", 1)[1], status.st_mode, status.st_nlink, status.st_size, status.st_mtime)]
    entries = []
    for name in sorted(os.listdir(path)):
        if "\r" in name or "\n" in name:
            continue
        target = resolve(real_root, virtual + "/" + name)
        if target is None:
            continue
        try:
            status = target.stat()
        except OSError:
            continue  # a dangling symlink
        entries.append((name, status.st_mode, status.st_nlink, status.st_size, status.st_mtime))
    return entries
