"""Errors raised by the stack: OSError with Linux errno values, and packet rejects."""

from __future__ import annotations

import errno
import os


def oserror(code: int, detail: str | None = None) -> OSError:
    """An OSError carrying a Linux errno, like the kernel's socket calls raise.

    ``OSError(code, ...)`` picks the matching subclass (BlockingIOError for
    EAGAIN, ConnectionRefusedError for ECONNREFUSED, ...), so callers can
    catch either the subclass or check ``exc.errno``.
    """
    message = os.strerror(code)
    if detail:
        message = f"{message} ({detail})"
    return OSError(code, message)


def would_block() -> BlockingIOError:
    return BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))


class Malformed(Exception):
    """A packet was rejected; ``reason`` is the drop counter it is charged to."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
