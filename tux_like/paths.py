"""Path safety: map a client's path onto the document root, or refuse it.

One function for every protocol handler, so that there is one place where a
path may leave the root. Refused: NUL, backslashes (another system's
separator, a traversal spelling), ``..`` climbing above the root, paths
longer than ``MAX_PATH``, and any path whose real location (after every
symlink) is outside the root. Protocol decoding (HTTP's percent-escapes)
happens before; FTP paths are taken literally, so ``%2e%2e`` is a name.
"""

from __future__ import annotations

from pathlib import Path

MAX_PATH = 4096  # Linux's PATH_MAX: a longer virtual path names nothing the root can hold


def normalize(path: str) -> str | None:
    """The absolute virtual path (``/a/b``) that ``path`` names relative to the root,
    with ``.`` and ``..`` taken lexically; None when it is refused."""
    if "\x00" in path or "\\" in path:
        return None
    parts: list[str] = []
    for part in path.split("/"):
        if part == "" or part == ".":
            continue
        if part == "..":
            if not parts:
                return None  # above the root
            parts.pop()
        else:
            parts.append(part)
    virtual = "/" + "/".join(parts)
    if len(virtual.encode("utf-8", "surrogateescape")) > MAX_PATH:
        return None
    return virtual


def resolve(root: Path, path: str) -> Path | None:
    """The real file ``path`` names under ``root`` (which must be resolved already:
    ``Config.root()``), or None when the path is refused or leads outside the root.

    The file need not exist; symlinks are followed and their target checked.
    """
    virtual = normalize(path)
    if virtual is None:
        return None
    try:
        real = root.joinpath(virtual[1:]).resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return None
    if not real.is_relative_to(root):
        return None
    return real
