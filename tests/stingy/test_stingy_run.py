"""The Stingy scheduler, the simulated server and the sweep: checks that can fail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stingy.heap import GeneralMalloc
from stingy.load import LATENCY, _start, closed_loop, open_loop
from stingy.scheduler import StingyScheduler
from stingy.simulate import Tracer, document_root, tux_layout
from stingy.sweep import peak, sweep
from tux_like.core import Request
from tux_like.http import RECV_BUFFER


class FakeMemory:
    """A per-stage room count standing in for the Stingy allocator."""

    def __init__(self, room: dict[str, int]):
        self.room = room

    def dyn_check(self, stage: str, batch: int = 1) -> bool:
        return self.room.get(stage, 1 << 30) >= batch

    def headroom(self, stage: str) -> int:
        return self.room.get(stage, 1 << 30)


def stage(name: str):
    def run(req: Request) -> None:
        pass
    run.__name__ = name
    return run


def queued(scheduler: StingyScheduler, name: str, count: int) -> None:
    function = stage(name)
    for _ in range(count):
        scheduler.queue(Request(ti=None), function)


def test_never_elects_a_stage_whose_dyncheck_fails_while_another_is_eligible():
    memory = FakeMemory({"alloc": 0})
    scheduler = StingyScheduler(memory, {"alloc": 0, "later": 3})
    queued(scheduler, "alloc", 5)
    queued(scheduler, "later", 2)
    names = [scheduler.elect()[1].__name__ for _ in range(7)]
    assert names == ["later", "later"] + ["alloc"] * 5  # alloc only once nothing else can run
    assert scheduler.elections["insufficient memory"] == 1
    assert scheduler.elect() is None


def test_a_batch_stops_when_memory_runs_out_mid_batch():
    memory = FakeMemory({"alloc": 3})
    scheduler = StingyScheduler(memory, {"alloc": 0, "other": 1})
    queued(scheduler, "alloc", 2)
    queued(scheduler, "other", 1)
    first = scheduler.elect()
    assert first[1].__name__ == "alloc"
    memory.room["alloc"] = 0  # the first run took the last slot
    assert scheduler.elect()[1].__name__ == "other"


def test_maximal_flow_first_then_earlier_stages():
    memory = FakeMemory({"full": 2})
    scheduler = StingyScheduler(memory, {"early": 0, "full": 5, "late": 4})
    queued(scheduler, "late", 3)
    queued(scheduler, "early", 3)
    queued(scheduler, "full", 2)  # as many as its memory allows: maximal flow
    names = [scheduler.elect()[1].__name__ for _ in range(8)]
    assert names == ["full"] * 2 + ["early"] * 3 + ["late"] * 3  # batches, by stage


def test_traced_buffers_and_fields_reach_the_cache():
    tracer = Tracer()
    site = tracer.traced_site(RECV_BUFFER)
    buf = site.make(site)
    tracer.placed(buf, 0x1000_0000)
    before = tracer.cache.stats()["L1d"]["STORE_count"]
    buf[0:100] = b"x" * 100
    assert tracer.cache.stats()["L1d"]["STORE_count"] > before
    assert bytes(buf[:3]) == b"xxx"


def test_stingy_layout_misses_less_than_general_malloc_on_a_crafted_workload():
    """Many live connections' buffers touched in turn: kmalloc scatters them past the L2,
    the slab keeps the ones the scheduler lets run inside it."""
    layout = tux_layout()
    region = layout.memory.region_of("HEADER_BUFFER")
    slots = layout.memory.counts["HEADER_BUFFER"]
    heap = GeneralMalloc()
    scattered = [heap.malloc(16384) for _ in range(2000)]
    packed = [region.start + i * 4096 for i in range(slots)]

    def misses(addresses):
        tracer = Tracer()
        for _ in range(4):
            for address in addresses:
                tracer.cache.store(address, 2048)
        return tracer.cache.misses()[1]

    original = misses(scattered)
    stingy = misses(packed * (len(scattered) // slots))
    assert stingy * 4 < original


@pytest.fixture(scope="module")
def www(tmp_path_factory):
    base = tmp_path_factory.mktemp("www")
    return base / "www", document_root(base, files=8)


@pytest.fixture(scope="module")
def layout():
    return tux_layout()


def test_both_variants_serve_every_request_and_stingy_misses_less_at_high_concurrency(www, layout):
    root, targets = www
    original = closed_loop("original", 400, 400, root, targets, layout)
    stingy = closed_loop("stingy", 400, 400, root, targets, layout)
    for result in (original, stingy):
        assert result.errors == 0 and result.requests >= 400 and result.seconds > 0
    assert stingy.l2_misses_per_request < original.l2_misses_per_request / 2
    assert stingy.requests_per_second > original.requests_per_second
    for result in (original, stingy):  # every measured stage run and miss is in the busy time
        assert result.stage_runs >= result.requests and 0 < result.miss_share < 1
        assert result.seconds >= (result.instruction_cycles + result.miss_cycles) / 1.4e9 * 0.999
    assert stingy.miss_share < original.miss_share


def test_low_concurrency_is_bound_by_the_network_not_the_server(www, layout):
    root, targets = www
    one = closed_loop("original", 1, 50, root, targets, layout)
    assert one.requests_per_second < 1 / (2 * 50e-6)


def test_open_loop_fails_past_the_servers_capacity(www, layout):
    root, targets = www
    easy = open_loop("stingy", 5_000, 300, root, targets, layout)
    assert easy.timed_out == 0 and easy.errors == 0
    swamped = open_loop("stingy", 5_000_000, 1500, root, targets, layout)
    assert swamped.timed_out > 0


def test_peak_bisects_to_the_threshold():
    found = peak(lambda rate: rate <= 123_456)
    assert 100_000 < found <= 123_456


def test_sweep_command_writes_records_of_the_schema(tmp_path):
    out = tmp_path / "sweep.json"
    done = subprocess.run([sys.executable, "-m", "pystack.cli", "stingy", "sweep", "--concurrency", "1,20",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    records = json.loads(out.read_text())
    assert {(r["variant"], r["concurrency"]) for r in records} == {(v, c) for v in ("original", "stingy")
                                                                  for c in (1, 20)}
    for record in records:
        assert set(record) == {"variant", "concurrency", "requests_per_second", "l2_misses_per_request"}
        assert record["requests_per_second"] > 0 and record["l2_misses_per_request"] >= 0
    assert "c=20" in done.stderr  # progress while it runs


def test_sweep_command_refuses_bad_points(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pystack.cli", "stingy", "sweep", "--concurrency", "0,x",
                           "--json", str(tmp_path / "x.json")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and not Path(tmp_path / "x.json").exists()


def test_an_answer_is_late_by_what_the_client_sees_including_both_transits(www, layout):
    """No client sees an answer sooner than two transits after sending: a timeout of exactly
    that makes every request late, however quickly the server answers."""
    root, targets = www
    result = open_loop("original", 5_000, 100, root, targets, layout, timeout=2 * LATENCY)
    assert result.timed_out == result.requests


def test_the_clients_fin_reaches_the_server_two_transits_after_its_answer(www, layout):
    root, targets = www
    run = _start("original", root, targets, layout, seed=1)
    run.request()
    while not run.answered:
        run.step()
    answered_at = run.clock
    [(sock, data)] = run.collect()
    assert data.startswith(b"HTTP/1.1 200 ")
    [(when, _, action)] = run.events
    assert when == pytest.approx(answered_at + 2 * LATENCY) and action.__name__ == "shutdown_write"


@pytest.mark.parametrize("command", [
    ["sweep", "--concurrency", "1", "--json", "{missing}/x.json"],
    ["memwalk", "--dot", "{missing}/x.dot"],
    ["stingify", "--out", "{file}"],
])
def test_an_output_path_that_cannot_be_written_is_one_line_and_exit_2(tmp_path, command):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    args = [part.format(missing=tmp_path / "missing", file=a_file) for part in command]
    done = subprocess.run([sys.executable, "-m", "pystack.cli", "stingy", *args], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "ab " not in done.stderr  # the sweep refused before running


def test_the_peak_is_the_highest_rate_tried_that_was_served_in_time():
    probes: list[dict] = []
    records, peaks = sweep([1], quick=True, peaks=True, probes=probes, progress=None)
    assert len(records) == 2 and set(peaks) == {"original", "stingy"}
    for variant, rate in peaks.items():
        tried = [p for p in probes if p["variant"] == variant]
        assert len(tried) == 5 and any(not p["ok"] for p in tried)
        assert rate == pytest.approx(max(p["rate"] for p in tried if p["ok"]), abs=1)
        for probe in tried:  # below the peak, what is offered is served
            if probe["ok"]:
                assert probe["requests_per_second"] > 0.9 * probe["rate"]
