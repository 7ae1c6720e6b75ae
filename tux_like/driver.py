"""The trio driver of the server: readiness, stages, timers and workers, on either backend.

One task runs the loop TUX's threads run: take the sockets the backend says
are ready, hand them to :meth:`Server.ready`, start the worker jobs the
stages submitted, run queued stages (:meth:`Server.step`), and sleep until
the next timer or the next readiness event when nothing is queued. ``now``
is wall-clock seconds (Date headers and logs read it) kept on trio's clock:
the offset between the two is taken once, so timers never jump with the
system clock, and a ``MockClock`` moves the server's time too. Worker jobs (file reads, CGI) run in threads, a bounded
number at a time; each one's completion re-queues its request. The stages
never see trio: it lives here and in the backends.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from .config import Config
from .core import ThreadInfo, Work
from .server import Server

WORKERS = 8  # worker threads at a time (file reads, CGI)


class ServerDriver:
    """Runs ``server`` on ``net`` (a backend of :mod:`tux_like.backends`) until cancelled."""

    def __init__(self, server: Server, net: Any, workers: int = WORKERS):
        self.server = server
        self.net = net
        self._limiter = trio.CapacityLimiter(workers)
        self._kick = trio.Event()
        net.on_ready = self.kick

    def kick(self) -> None:
        """Something is ready: wake the loop if it sleeps."""
        self._kick.set()

    def action(self, name: str, **arguments: Any) -> None:
        """TUX's action call (start, stop, register_mime) on the running server."""
        self.server.action(name, **arguments)
        self.kick()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the server (listening when this reports started), serve until cancelled,
        then stop it: every connection closed, the counters kept."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.net.run)
            self.action("start")
            task_status.started()
            try:
                await self._loop(nursery)
            finally:
                if self.server.running:
                    self.server.action("stop")
                nursery.cancel_scope.cancel()

    async def _loop(self, nursery: trio.Nursery) -> None:
        server, net = self.server, self.net
        epoch = time.time() - trio.current_time()  # trio's clock + epoch = wall-clock seconds
        while True:
            self._kick = trio.Event()
            for sock in net.take_ready():
                server.ready(sock)
            pending = server.step(trio.current_time() + epoch)
            for ti in server.threads:
                while ti.work:
                    nursery.start_soon(self._work, ti, ti.work.popleft())
            if pending or net.ready or self._kick.is_set():
                await trio.lowlevel.checkpoint()  # let packets and workers in between batches
                continue
            deadline = server.next_deadline()
            with trio.move_on_at(math.inf if deadline is None else deadline - epoch):
                await self._kick.wait()

    async def _work(self, ti: ThreadInfo, work: Work) -> None:
        try:
            work.result = await trio.to_thread.run_sync(work.job, limiter=self._limiter)
        except Exception as error:  # noqa: BLE001 - a job's failure is its request's answer
            work.error = error
        ti.complete(work)
        self.kick()


@asynccontextmanager
async def serving(config: Config, net: Any, log: Callable[[str], None] | None = None,
                  workers: int = WORKERS) -> AsyncIterator[ServerDriver]:
    """A server for the body of an ``async with``: listening on entry, stopped on exit."""
    driver = ServerDriver(Server(config, net, log), net, workers)
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        try:
            yield driver
        finally:
            nursery.cancel_scope.cancel()
