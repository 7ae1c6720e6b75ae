"""memwalk on small programs whose stage graphs and lifetimes are known by construction."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from stingy.memwalk import MemwalkError, format_report, memwalk, to_dot

PROGRAMS = Path(__file__).parent / "programs"


@pytest.fixture(scope="module")
def fig52():
    return memwalk([str(PROGRAMS / "fig52.py")])


def short(names) -> set[str]:
    return {n.rsplit(".", 1)[-1] for n in names}


def test_stages_are_the_event_entered_components(fig52) -> None:
    assert short(fig52.stages) == {"listen", "accept", "read", "parse", "process", "respond", "respond_fast",
                                   "log"}
    assert [n for n, s in fig52.stages.items() if s.root] == ["fig52.listen"]  # queues, never queued
    successors = {n.rsplit(".", 1)[-1]: short(s.successors) for n, s in fig52.stages.items()}
    assert successors == {
        "listen": {"accept"}, "accept": {"read"}, "read": {"parse"}, "parse": {"parse", "process"},
        "process": {"respond", "respond_fast"},  # through the HANDLERS table: the alias analysis
        "respond": {"log"}, "respond_fast": set(), "log": set(),
    }
    assert short(fig52.stages["fig52.parse"].functions) == {"parse", "helper"}


def test_a_node_with_both_edge_kinds_is_duplicated(fig52) -> None:
    """log is queued by respond and called by respond_fast: a stage of its own, and part of respond_fast."""
    assert "fig52.log" in fig52.stages
    assert short(fig52.stages["fig52.respond_fast"].functions) == {"respond_fast", "log"}


def test_the_scheduler_and_the_cycle(fig52) -> None:
    assert short(fig52.scheduler) == {"scheduler", "dispatch"}
    assert [short(c) for c in fig52.stage_cycles] == [{"parse"}]
    assert fig52.recursion == []


def test_lifetimes_regions_and_global_objects(fig52) -> None:
    objects = {o.site.label: o for o in fig52.objects.values()}
    request, scratch, headers, stats, parse_buf = (objects[k] for k in
                                                   ("request", "scratch", "headers", "stats", "parse_buf"))
    assert short(request.live_in) == {"accept", "read", "parse", "process", "respond", "respond_fast"}
    assert short(scratch.live_in) == {"read", "parse", "process"}
    assert short(scratch.freed_in) == {"process"}
    assert (request.size, scratch.size) == (1024, 2048)  # from the Site definitions, 2 * 1024 folded
    assert headers.size == 300 and headers.kind == "per-task"  # dynamic, sized by stingy_size
    assert parse_buf.count == 1 and parse_buf.kind == "per-task"  # in a cycle, stingy_count(1)
    assert stats.kind == "global-final"  # live at the terminal stages
    # Live together somewhere -> different regions; request and scratch share parse, so differ.
    assert len({request.region, scratch.region, parse_buf.region}) == 3
    assert fig52.unmatched_frees == []


def test_without_annotations_the_dynamic_and_cyclic_objects_are_unmanaged(tmp_path) -> None:
    source = (PROGRAMS / "fig52.py").read_text()
    source = source.replace("buf: stingy_count(1) = ", "buf = ").replace("task.headers: stingy_size(300) = ",
                                                                             "task.headers = ")
    bare = tmp_path / "bare.py"
    bare.write_text(source)
    report = memwalk([str(bare)])
    objects = {o.site.label: o for o in report.objects.values()}
    assert objects["parse_buf"].kind == "unmanaged" and objects["parse_buf"].count is None
    assert objects["headers"].kind == "unmanaged" and objects["headers"].size is None
    assert any("headers" in note for note in report.notes)


def test_recursion_and_stack_depth(tmp_path) -> None:
    program = tmp_path / "rec.py"
    program.write_text(textwrap.dedent('''
        def stingy_interface(kind, **roles):
            return lambda f: f

        @stingy_interface("QueueStage", t="T", s="S")
        def QueueStage(t, s):
            pass

        def start(t):
            QueueStage(t, walk)

        def walk(t):
            a = b = c = d = 0
            deeper(t)

        def deeper(t):
            x = 1
            if x:
                deeper(t)
    '''))
    report = memwalk([str(program)])
    assert [short(c) for c in report.recursion] == [{"deeper"}]
    walk = report.stages["rec.walk"]
    assert walk.stack == (32 + 8 * 5) + (32 + 8 * 2)  # walk's frame (t, a-d) over deeper's (t, x), once


def test_output_and_entry(fig52) -> None:
    text = format_report(fig52)
    assert "parse" in text and "stage cycle: parse" in text and "global-final" in text
    dot = to_dot(fig52)
    assert dot.startswith("digraph") and '"process" -> "respond_fast"' in dot
    limited = memwalk([str(PROGRAMS / "fig52.py")], entry="respond")  # the stages it reaches
    assert short(limited.stages) == {"respond", "log"}
    with pytest.raises(MemwalkError, match="names 0 functions"):
        memwalk([str(PROGRAMS / "fig52.py")], entry="nosuch")


def test_the_command_line(tmp_path, capsys) -> None:
    from pystack.cli import main

    program = str(PROGRAMS / "fig52.py")
    assert main(["stingy", "memwalk", program, "--dot", str(tmp_path / "scg.dot")]) == 0
    assert "stage cycle: parse" in capsys.readouterr().out
    assert (tmp_path / "scg.dot").read_text().startswith("digraph")
    assert main(["stingy", "stingygen", program, "--cache-kb", "64", "--dot", str(tmp_path / "map.dot")]) == 0
    out = capsys.readouterr().out
    assert "instance limits" in out and "high slab" in out and "region 0" in out
    assert main(["stingy", "memwalk", "no.such.module"]) == 2
    assert main(["stingy", "stingygen", program, "--tau-kb", "1"]) == 2
    assert "no limits fit" in capsys.readouterr().err


def test_an_object_freed_before_its_cycle_comes_back_is_bounded() -> None:
    """thttpd's keep-alive loop: read -> send -> linger -> read; the read buffer is freed in the
    stage that allocates it, the response before the loop returns: one instance per task each."""
    report = memwalk([str(Path(__file__).parents[2] / "demos" / "thttpd_like.py")])
    assert short(report.stages) == {"serve", "handle_read", "handle_send", "handle_linger"}
    assert [short(c) for c in report.stage_cycles] == [{"handle_read", "handle_send", "handle_linger"}]
    objects = {o.site.label: o for o in report.objects.values()}
    assert {k: (o.count, o.kind) for k, o in objects.items()} == {
        "conn": (1, "per-task"), "read_buf": (1, "per-task"), "response": (1, "per-task"),
        "log_line": (1, "per-task")}
    assert short(objects["conn"].live_in) == {"serve", "handle_read", "handle_send", "handle_linger"}


def test_the_thttpd_like_program_runs_and_frees_everything() -> None:
    from demos.thttpd_like import Connection, Heap, serve

    conns = [Connection(b"GET /\nGET /about\n"), Connection(b"GET /nope\n")]
    heap = Heap()
    serve(conns, heap)
    assert conns[0].sent.count(b"200 OK") == 2 and b"404" in conns[1].sent
    assert not any(heap.live.values()) and heap.allocator.live_objects() == 0


def test_a_free_through_any_target_of_a_chained_assignment_matches_its_site(tmp_path) -> None:
    """``out = task.out = Malloc(...)`` then ``Free(task.out)``: the object is kept in both."""
    source = (PROGRAMS / "fig52.py").read_text().replace(
        "    task.scratch = Malloc(SCRATCH)\n", "    scratch = task.scratch = Malloc(SCRATCH)\n")
    assert "scratch = task.scratch" in source
    path = tmp_path / "chained.py"
    path.write_text(source)
    report = memwalk([str(path)])
    assert report.unmatched_frees == []
    scratch = next(o for o in report.objects.values() if o.site.label == "scratch")
    assert short(scratch.freed_in) == {"process"}


def test_two_modules_with_the_same_site_name_have_two_objects(tmp_path) -> None:
    """http's and ftp's LISTING_BUFFER: one constant name, two sites, two objects."""
    common = textwrap.dedent('''
        def stingy_interface(kind, **roles):
            return lambda f: f

        class Site:
            def __init__(self, name, size):
                self.name, self.size = name, size

        @stingy_interface("QueueStage", t="T", s="S")
        def QueueStage(t, s):
            pass

        @stingy_interface("Malloc", site="size")
        def Malloc(site):
            return bytearray(site.size)

        @stingy_interface("Free", obj="O")
        def Free(obj):
            pass
    ''')
    for name, size in (("one", 100), ("two", 300)):
        (tmp_path / f"{name}.py").write_text(common + textwrap.dedent(f'''
            BUFFER = Site("{name}_buffer", {size})

            def start(t):
                QueueStage(t, work)

            def work(t):
                t.buffer = Malloc(BUFFER)
                QueueStage(t, done)

            def done(t):
                Free(t.buffer)
        '''))
    report = memwalk([str(tmp_path / "one.py"), str(tmp_path / "two.py")])
    sizes = {o.site.label: o.size for o in report.objects.values()}
    assert sizes == {"one_buffer": 100, "two_buffer": 300}
    assert sorted(report.objects) == ["one.BUFFER", "two.BUFFER"]
