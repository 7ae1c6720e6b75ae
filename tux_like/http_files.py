"""The HTTP handler's worker jobs on the file system: find a file, read a chunk of one.

These block (stat, open, read, scandir), so the stages never call them: they
go to a worker with ``ti.submit`` and their result re-queues the request.
Containment is checked on the resolved path: a symlink that leaves the
document root is refused as if the file were not readable (403).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass

from .http_parse import http_date

CACHE_FILE_LIMIT = 1 << 20  # files up to this size are read whole into the file cache


@dataclass
class FileEntry:
    """A regular file as the file cache holds it (global data, shared by requests)."""

    path: str  # resolved, inside the root
    size: int
    mtime: float
    last_modified: str
    content_type: str
    ident: tuple[int, int]  # (st_dev, st_ino): a streamed read checks it is still this file
    data: bytes | None  # the whole content when cached; None: streamed in chunks by workers
    loaded_at: float


@dataclass
class Found:
    """A lookup's answer: a file, a directory to list, a redirect to add the slash, or an error."""

    status: int  # 200, 301 (directory without its slash), 403, 404
    entry: FileEntry | None = None
    listing: list[tuple[str, bool]] | None = None  # (name, is a directory), sorted


def inside(root: str, real: str) -> bool:
    return real == root or real.startswith(root + os.sep)


def find_file(root: str, segments: list[str], trailing: bool, index_files: tuple[str, ...],
              mime_type: Callable[[str], str], is_cgi: Callable[[str], bool], now: float) -> Found:
    """Resolve a normalized path under ``root`` (itself resolved) to what to answer."""
    real = os.path.realpath(os.path.join(root, *segments))
    if not inside(root, real):
        return Found(403)
    try:
        info = os.stat(real)
    except (FileNotFoundError, NotADirectoryError):
        return Found(404)
    except OSError:
        return Found(403)
    if stat.S_ISDIR(info.st_mode):
        if segments and not trailing:
            return Found(301)
        for name in index_files:
            index = os.path.realpath(os.path.join(real, name))
            if inside(root, index) and os.path.isfile(index):
                return load_file(index, mime_type, is_cgi, now)
        try:
            with os.scandir(real) as entries:
                listing = sorted((entry.name, entry.is_dir()) for entry in entries)
        except OSError:
            return Found(403)
        return Found(200, listing=listing)
    if trailing:
        return Found(404)  # a file named as a directory
    if not stat.S_ISREG(info.st_mode):
        return Found(403)  # devices, fifos, sockets are never served
    return load_file(real, mime_type, is_cgi, now)


def load_file(real: str, mime_type: Callable[[str], str], is_cgi: Callable[[str], bool],
              now: float) -> Found:
    """Open a resolved regular file (no symlink followed now) and read it if it is small."""
    kind = mime_type(os.path.splitext(real)[1].lstrip("."))
    if is_cgi(kind):
        return Found(403)  # a script outside the CGI directory: its source is not served
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return Found(404)
    except OSError:
        return Found(403)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return Found(403)
        data = None
        if info.st_size <= CACHE_FILE_LIMIT:
            data = read_exactly(fd, 0, info.st_size)
    except OSError:
        return Found(403)
    finally:
        os.close(fd)
    entry = FileEntry(real, info.st_size, info.st_mtime, http_date(info.st_mtime), kind,
                      (info.st_dev, info.st_ino), data, now)
    return Found(200, entry=entry)


def read_exactly(fd: int, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset``; a file that shrank under us is an error."""
    parts = []
    while length:
        part = os.pread(fd, length, offset)
        if not part:
            raise OSError("the file changed while it was read")
        parts.append(part)
        offset += len(part)
        length -= len(part)
    return b"".join(parts)


def read_chunk(entry: FileEntry, offset: int, length: int) -> bytes:
    """A chunk of a large file for the send-body stage, from the same file it started with."""
    fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) != entry.ident or info.st_size < offset + length:
            raise OSError("the file changed while it was sent")
        return read_exactly(fd, offset, length)
    finally:
        os.close(fd)
