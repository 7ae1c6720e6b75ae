"""The four tools on the second program (demos/thttpd_like.py): stingify with user wrappers,
the rewritten program serving, the Stingy scheduler's DynCheck on its loop, and the sweep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pystack.cli import main
from stingy.allocator import StingyAllocator
from stingy.memwalk import memwalk
from stingy.scheduler import StingyScheduler
from stingy.second import PROGRAM, closed_loop, load, second_layout
from stingy.stingify import StingifyError, stingify, write
from stingy.sweep import sweep

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def layout():
    return second_layout()


def test_calls_that_take_more_than_context_and_site_go_through_the_user_wrapper():
    [rewrite] = stingify(memwalk([str(PROGRAM)]), [str(PROGRAM)])
    text = rewrite.rewritten
    assert "buffer = counted(StingyAlloc(heap, READ_BUF), heap, READ_BUF)" in text
    assert "uncounted(StingyFree(heap, conn.response), heap, conn.response, RESPONSE)" in text
    assert "alloc(heap, " not in text.split("def handle_read", 1)[1]
    assert "release(heap, " not in text.split("def handle_read", 1)[1]
    assert (rewrite.allocs, rewrite.frees) == (4, 4)


def test_without_a_user_wrapper_such_a_call_is_refused_with_what_to_declare(tmp_path, capsys):
    bare = tmp_path / "bare_thttpd.py"
    bare.write_text(PROGRAM.read_text().replace('@stingy_user_wrapper("release")\n', ""))
    with pytest.raises(StingifyError, match=r"bare_thttpd.py:\d+: release\(\) takes heap, obj, site.*"
                                            r"stingy_user_wrapper\('release'\)"):
        stingify(memwalk([str(bare)]), [str(bare)])
    assert main(["stingy", "stingify", str(bare)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stingy_user_wrapper('release')" in err


SERVE = """
import sys
import demos.thttpd_like as program
assert program.__file__.startswith(sys.argv[1]), program.__file__
from stingy.allocator import StingyAllocator
from stingy.scheduler import StingyScheduler
from stingy.simulate import layout_of

layout = layout_of([program.__file__, "stingy.allocator"], [])  # memwalk reads the rewritten source
heap = program.Heap(StingyAllocator(layout.memory, layout.labels, layout.needs))
scheduler = StingyScheduler(heap.allocator, layout.order)
conns = [program.Connection(b"GET /\\nGET /about\\n"), program.Connection(b"GET /nope\\n")]
program.serve(conns, heap, scheduler)
assert conns[0].sent == (b"HTTP/1.0 200 OK\\r\\n\\r\\n" + program.FILES["/"]
                         + b"HTTP/1.0 200 OK\\r\\n\\r\\n" + program.FILES["/about"]), conns[0].sent
assert conns[1].sent == b"HTTP/1.0 404 Not Found\\r\\n\\r\\n", conns[1].sent
assert not any(heap.live.values()) and heap.allocator.live_objects() == 0
assert heap.allocator.fallbacks == 0 and sum(scheduler.elections.values()) > 0
print("served", sorted(heap.live))
"""


def test_the_stingified_second_program_serves(tmp_path):
    rewrites = stingify(memwalk([str(PROGRAM)]), [str(PROGRAM)])
    out = tmp_path / "out"
    write(rewrites, out, ROOT / "demos")
    assert "StingyAlloc(heap, RESPONSE)" in (out / "demos" / "thttpd_like.py").read_text()
    env = dict(os.environ, PYTHONPATH=f"{out}{os.pathsep}{ROOT}")
    done = subprocess.run([sys.executable, "-c", SERVE, str(out)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "served ['conn', 'log_line', 'read_buf', 'response']\n"


def test_dyncheck_keeps_the_loop_within_the_slab(layout):
    """More connections than the response region holds: round robin spills, Stingy's scheduler does not."""
    program = load()
    limit = layout.memory.counts["RESPONSE"]
    spills = {}
    for name in ("round robin", "stingy"):
        allocator = StingyAllocator(layout.memory, layout.labels, layout.needs)
        scheduler = StingyScheduler(allocator, layout.order) if name == "stingy" else None
        conns = [program.Connection(b"GET /\nGET /about\n") for _ in range(limit + 100)]
        heap = program.Heap(allocator)
        program.serve(conns, heap, scheduler)
        assert all(c.sent.count(b"200 OK") == 2 for c in conns) and allocator.live_objects() == 0
        spills[name] = allocator.spills
        if scheduler is not None:
            assert scheduler.elections["maximal flow"] + scheduler.elections["insufficient memory"] > 0
    assert spills["round robin"] >= 100 and spills["stingy"] == 0


def test_simulated_second_program_serves_and_stingy_misses_less_in_the_plastic_zone(layout):
    results = {v: closed_loop(v, 1000, 2000, layout) for v in ("original", "stingy")}
    assert all(r.errors == 0 and r.requests == 2000 for r in results.values())
    assert results["stingy"].l2_misses < results["original"].l2_misses
    single = {v: closed_loop(v, 1, 200, layout) for v in ("original", "stingy")}
    # One connection: its working set fits either way, only the first touches miss.
    assert all(r.l2_misses_per_request < 0.1 for r in single.values())


def test_sweep_runs_the_second_program(tmp_path):
    records, peaks = sweep([1, 50], program="thttpd_like", progress=None)
    assert [(r["variant"], r["concurrency"]) for r in records] == [
        ("original", 1), ("stingy", 1), ("original", 50), ("stingy", 50)]
    assert all(r["requests_per_second"] > 0 for r in records) and peaks == {}
    out = tmp_path / "second.json"
    assert main(["stingy", "sweep", "--program", "thttpd_like", "--concurrency", "2", "--json", str(out)]) == 0
    assert {r["variant"] for r in json.loads(out.read_text())} == {"original", "stingy"}
    assert main(["stingy", "sweep", "--program", "thttpd_like", "--httperf", "--json", str(out)]) == 2


def test_an_object_freed_in_the_stage_that_allocates_it_does_not_bound_the_batch(layout):
    """handle_linger's log line is back before the next linger runs: a batch of lingers needs one."""
    assert layout.memory.counts["LOG_LINE"] == 1
    assert layout.needs["handle_linger"] == {"LOG_LINE": 0}
    assert layout.needs["handle_read"] == {"READ_BUF": 0, "RESPONSE": 1}
    allocator = StingyAllocator(layout.memory, layout.labels, layout.needs)
    assert allocator.headroom("handle_linger") > 1 and allocator.dyn_check("handle_linger", batch=50)
    assert allocator.headroom("handle_read") == layout.memory.counts["RESPONSE"]
