"""The staged core in virtual time: scheduler priorities, waits, timers, workers, memory."""

from __future__ import annotations

import pytest

from tux_like.core import (
    PRIO_HIGH,
    PRIO_LOW,
    PRIO_NORMAL,
    REQUEST,
    Allocator,
    Free,
    Malloc,
    QueueStage,
    Request,
    Scheduler,
    Site,
    ThreadInfo,
    buffer_of,
)
from tux_like.memnet import MemoryNet

BUFFER = Site("buffer", 4096, buffer_of)


def make_ti() -> ThreadInfo:
    return ThreadInfo(server=None, index=0, net=MemoryNet())


def test_the_scheduler_elects_by_priority_then_in_order() -> None:
    ti = make_ti()
    ran: list[str] = []

    def stage_named(name: str):
        def stage(req: Request) -> None:
            ran.append(name)
        stage.__name__ = name
        return stage

    req = Request(ti=ti)
    QueueStage(req, stage_named("low1"), PRIO_LOW)
    QueueStage(req, stage_named("normal1"), PRIO_NORMAL)
    QueueStage(req, stage_named("high1"), PRIO_HIGH)
    QueueStage(req, stage_named("normal2"))
    QueueStage(req, stage_named("high2"), PRIO_HIGH)
    assert ti.scheduler.run(3) == 3
    assert ran == ["high1", "high2", "normal1"]
    assert ti.scheduler.run(10) == 2
    assert ran[3:] == ["normal2", "low1"]
    assert ti.scheduler.nonempty == 0 and len(ti.scheduler) == 0
    assert ti.scheduler.stage_runs == {"high1": 1, "high2": 1, "normal1": 1, "normal2": 1, "low1": 1}


def test_a_stage_queued_on_a_closed_request_does_not_run() -> None:
    ti = make_ti()
    req = Request(ti=ti)
    ran = []
    QueueStage(req, lambda r: ran.append(r))
    req.closed = True
    assert ti.scheduler.run(5) == 1 and ran == []


def test_a_timer_interrupts_a_wait_and_a_disarmed_timer_never_fires() -> None:
    ti = make_ti()
    net: MemoryNet = ti.net  # type: ignore[assignment]
    listener = net.listen("198.18.0.2", 80, 8)
    client = net.connect(80)
    sock, _ = net.accept(listener)
    req = Request(ti=ti, sock=sock)
    fired: list[str] = []

    def on_data(r: Request) -> None:
        fired.append("data")

    def on_timeout(r: Request) -> None:
        fired.append("timeout")

    ti.wait(req, on_data)
    ti.arm(req, 5.0, on_timeout)
    assert ti.next_deadline() == 5.0
    ti.expire(4.9)
    ti.scheduler.run(10)
    assert fired == []
    ti.expire(5.0)
    ti.scheduler.run(10)
    assert fired == ["timeout"]
    client.send(b"late")  # the wait was cancelled by the timeout: no stage runs for it
    for ready in net.take_ready():
        ti.ready(ready)
    ti.scheduler.run(10)
    assert fired == ["timeout"]

    ti.arm(req, 1.0, on_timeout)
    ti.disarm(req)
    assert ti.next_deadline() is None
    ti.expire(100.0)
    assert ti.scheduler.run(10) == 0


def test_a_worker_result_requeues_the_request_unless_it_ended() -> None:
    ti = make_ti()

    class Proto:
        work = None

    req = Request(ti=ti, proto=Proto())
    seen = []
    ti.submit(req, lambda: 42, lambda r: seen.append(r.proto.work.result))
    done = ti.work.popleft()
    done.result = done.job()
    ti.complete(done)
    ti.scheduler.run(5)
    assert seen == [42]

    ti.submit(req, lambda: 43, lambda r: seen.append(r.proto.work.result))
    req.closed = True
    done = ti.work.popleft()
    done.result = done.job()
    ti.complete(done)
    assert ti.scheduler.run(5) == 0 and seen == [42]


def test_malloc_and_free_count_what_is_live_per_site() -> None:
    ti = make_ti()
    req = Malloc(ti, REQUEST)
    buffers = [Malloc(ti, BUFFER) for _ in range(3)]
    assert isinstance(req, Request) and all(len(b) == 4096 for b in buffers)
    assert ti.allocator.live == {"request": 1, "buffer": 3}
    assert ti.allocator.live_bytes == REQUEST.size + 3 * 4096
    for b in buffers:
        Free(ti, b)
    Free(ti, req)
    assert ti.allocator.live_objects() == 0 and ti.allocator.live_bytes == 0
    with pytest.raises(ValueError, match="did not allocate"):
        Free(ti, bytearray(10))
    with pytest.raises(ValueError):
        Free(ti, req)  # twice


def test_the_interface_functions_carry_their_marks() -> None:
    assert QueueStage.__stingy_interface__ == ("QueueStage", {"req": "T", "stage": "S"})
    assert Malloc.__stingy_interface__[0] == "Malloc"
    assert Free.__stingy_interface__[0] == "Free"
    assert Scheduler.run.__stingy_interface__ == ("Scheduler", {})
    assert isinstance(Allocator(), Allocator)


def test_a_timer_due_while_a_stage_is_queued_waits_for_it() -> None:
    """Data and the deadline in one step: one continuation, not two chains."""
    ti = make_ti()
    req = Request(ti=ti)
    ran: list[str] = []

    def on_data(r: Request) -> None:
        ran.append("data")

    def on_timeout(r: Request) -> None:
        ran.append("timeout")

    ti.arm(req, 1.0, on_timeout)
    QueueStage(req, on_data)  # readiness queued the next stage...
    ti.expire(1.0)  # ...and the deadline passes in the same step
    ti.scheduler.run(10)
    assert ran == ["data"]
    ti.expire(1.0)  # the stage neither re-armed nor disarmed: the timer fires now
    ti.scheduler.run(10)
    assert ran == ["data", "timeout"]

    ti.arm(req, 1.0, on_timeout)
    QueueStage(req, lambda r: ti.disarm(r))
    ti.expire(5.0)
    ti.scheduler.run(10)
    ti.expire(5.0)
    assert ti.scheduler.run(10) == 0 and ran == ["data", "timeout"]
