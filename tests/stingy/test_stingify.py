"""stingify: the rewrite touches only the sites, keeps the code analysable, and the server runs."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from stingy.cli import DEFAULT_EXCLUDE
from stingy.memwalk import memwalk
from stingy.stingify import stingify, write

PROGRAMS = Path(__file__).parent / "programs"
ROOT = Path(__file__).resolve().parents[2]


def test_sites_rewritten_with_the_size_guard_where_the_size_is_an_estimate():
    target = str(PROGRAMS / "fig52.py")
    [rewrite] = stingify(memwalk([target]), [target])
    text = rewrite.rewritten
    ast.parse(text)
    assert "task.headers: stingy_size(300) = (StingyAlloc(HEADERS) if HEADERS.size <= 300 else Malloc(HEADERS))" in text
    assert "task.request = StingyAlloc(REQUEST)" in text and "buf: stingy_count(1) = StingyAlloc(PARSE_BUF)" in text
    assert "Free(" not in text.replace("StingyFree(", "").split("def Free", 1)[1].split("\n", 3)[3]
    # Only the call sites (and the import) changed: every other line is as it was.
    removed = [line for line in rewrite.diff().splitlines() if line.startswith("-") and not line.startswith("---")]
    assert all("Malloc(" in line or "Free(" in line for line in removed)
    assert rewrite.guards == 1 and rewrite.allocs >= 3


def test_unmanaged_sites_stay_malloc(tmp_path):
    source = (PROGRAMS / "fig52.py").read_text().replace("buf: stingy_count(1) = ", "buf = ")
    bare = tmp_path / "bare.py"
    bare.write_text(source)
    [rewrite] = stingify(memwalk([str(bare)]), [str(bare)])
    assert "buf = Malloc(PARSE_BUF)" in rewrite.rewritten


SERVE = """
import sys
from pathlib import Path
import tux_like.http, tux_like.server
assert tux_like.http.__file__.startswith(sys.argv[1]), tux_like.http.__file__
from stingy.allocator import StingyAllocator
from stingy.simulate import tux_layout
from tux_like.config import make_config
from tux_like.memnet import MemoryNet, pump
from tux_like.server import Server

layout = tux_layout(targets=("tux_like", "stingy.allocator"))  # memwalk reads the rewritten source
assert layout.memory.counts["REQUEST"] >= 1
net = MemoryNet()
server = Server(make_config({"document_root": sys.argv[2], "listen": "198.18.0.2:80"}), net)
ti = server.threads[0]
ti.allocator = StingyAllocator(layout.memory, layout.labels, layout.needs)
server.action("start")
clients = [net.connect(80) for _ in range(3)]
for client in clients:
    client.send(b"GET /hello.txt HTTP/1.0\\r\\n\\r\\n")
pump(server, net, 1.7e9)
in_slab = sum(ti.allocator.instances.values())
for client in clients:
    answer = client.recv()
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"hello, world\\n"), answer
    client.shutdown_write()
pump(server, net, 1.7e9)
pump(server, net, 1.7e9 + 60)
assert in_slab > 0 and server.live_objects() == 0 and sum(ti.allocator.instances.values()) == 0
print("served", in_slab)
"""


def test_the_stingified_server_serves_http_over_memnet(tmp_path):
    rewrites = stingify(memwalk(["tux_like"], exclude=DEFAULT_EXCLUDE), ["tux_like"], DEFAULT_EXCLUDE)
    assert {r.module for r in rewrites} >= {"tux_like.http", "tux_like.server", "tux_like.core"}
    out = tmp_path / "out"
    write(rewrites, out, ROOT / "tux_like")
    for path in (out / "tux_like").glob("*.py"):
        ast.parse(path.read_text())
    assert "StingyAlloc(ti, HEADER_BUFFER)" in (out / "tux_like" / "http.py").read_text()
    www = tmp_path / "www"
    www.mkdir()
    (www / "hello.txt").write_bytes(b"hello, world\n")
    env = dict(os.environ, PYTHONPATH=f"{out}{os.pathsep}{ROOT}")
    done = subprocess.run([sys.executable, "-c", SERVE, str(out), str(www)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("served")


def test_stingify_command_prints_the_diff():
    done = subprocess.run([sys.executable, "-m", "pystack.cli", "stingy", "stingify"], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "+++ b/tux_like/http.py" in done.stdout and "+    out: stingy_count(1) = StingyAlloc(ti, HEADER_BUFFER)" \
        in done.stdout
