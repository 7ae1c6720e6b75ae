"""Path safety: the one place where a client's path is mapped onto the document root."""

from __future__ import annotations

from pathlib import Path

import pytest

from tux_like.paths import MAX_PATH, normalize, resolve


@pytest.mark.parametrize(("path", "virtual"), [
    ("", "/"), ("/", "/"), ("a/b", "/a/b"), ("/a//b/./c/", "/a/b/c"), ("a/../b", "/b"), ("a/..", "/"),
    ("%2e%2e", "/%2e%2e"), ("...", "/..."), ("a/b/../../c", "/c"),
])
def test_normalize_takes_dots_lexically(path: str, virtual: str) -> None:
    assert normalize(path) == virtual


@pytest.mark.parametrize("path", ["..", "/..", "a/../..", "../a", "a\\b", "..\\a", "a\x00b", "x/" * (MAX_PATH // 2 + 1)])
def test_normalize_refuses_climbing_backslashes_nul_and_overlong(path: str) -> None:
    assert normalize(path) is None


def test_resolve_follows_symlinks_and_keeps_to_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "f").write_text("x")
    (tmp_path / "out").write_text("secret")
    (root / "in").symlink_to(root / "f")
    (root / "out").symlink_to(tmp_path / "out")
    (root / "up").symlink_to("..")
    (root / "loop").symlink_to("loop")
    root = root.resolve()
    assert resolve(root, "/") == root
    assert resolve(root, "d/../f") == root / "f"
    assert resolve(root, "in") == root / "f"
    assert resolve(root, "missing") == root / "missing"  # need not exist
    for refused in ("out", "up", "up/out", "d/../../out", "loop", "/etc/passwd/..\\x"):
        assert resolve(root, refused) is None, refused
    assert resolve(root, "/etc/passwd") == root / "etc" / "passwd"  # absolute means from the root
