"""The trio driver: moves packets between links and the sans-IO stack, runs its timers.

One reader task per link feeds received packets to ``stack.input``;
interfaces transmit straight into their link (``send_nowait`` never
blocks); one timer task sleeps until ``stack.next_deadline()``; sockets'
wake-ups unpark the tasks waiting on them in the trio API, and call the
watchers of code that runs its own readiness loop (``watch``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import trio

from .clock import TrioClock
from .links.base import Link
from .socket import Socket
from .stack import Stack


class Driver:
    def __init__(self, stack: Stack, links: Mapping[str, Link]):
        if not isinstance(stack.clock, TrioClock):
            # The timer task sleeps until stack.next_deadline() on trio's clock: a deadline on
            # any other clock is never reached (or always passed), and the task spins.
            raise TypeError(
                f"the trio driver needs a stack on trio's clock, not {type(stack.clock).__name__}: "
                "build it with Stack(clock=pystack.clock.TrioClock()) inside trio.run "
                "(trio.testing.MockClock gives virtual time); VirtualClock is for driving the "
                "sans-IO core by hand (stack.input, stack.run_timers)"
            )
        self.stack = stack
        self.links = dict(links)
        self._lots: dict[int, trio.lowlevel.ParkingLot] = {}
        self._watchers: dict[int, Callable[[int], None]] = {}
        self._timer_scope: trio.CancelScope | None = None
        for name, link in self.links.items():
            iface = stack.interfaces.get(name)
            if iface is None:
                raise ValueError(f"no interface {name!r} on the stack for link {link.name!r}")
            iface.sink = link.send_nowait
        stack.on_wake = self._wake

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled (or until every link closed)."""
        async with trio.open_nursery() as nursery:
            for name, link in self.links.items():
                nursery.start_soon(self._read, name, link)
            await nursery.start(self._timers)
            task_status.started()

    async def _read(self, name: str, link: Link) -> None:
        stack = self.stack
        iface = stack.interfaces[name]
        while True:
            try:
                packet = await link.receive()
            except (trio.ClosedResourceError, trio.EndOfChannel):
                return
            stack.input(packet, iface)
            self.timers_changed()

    async def _timers(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        started = False
        while True:
            deadline = self.stack.next_deadline()
            with trio.CancelScope(deadline=math.inf if deadline is None else deadline) as scope:
                self._timer_scope = scope
                if not started:
                    task_status.started()
                    started = True
                await trio.sleep_forever()
            self._timer_scope = None
            self.stack.run_timers()

    def timers_changed(self) -> None:
        """Call after anything that may have armed an earlier timer in the stack."""
        scope = self._timer_scope
        if scope is None:
            return
        deadline = self.stack.next_deadline()
        if deadline is not None and deadline < scope.deadline:
            scope.deadline = deadline

    def _wake(self, sock: Socket) -> None:
        lot = self._lots.get(sock.fd)
        if lot is not None:
            lot.unpark_all()
        watcher = self._watchers.get(sock.fd)
        if watcher is not None:
            watcher(sock.fd)

    def watch(self, fd: int, callback: Callable[[int], None] | None) -> None:
        """Call ``callback(fd)`` on each wake-up of ``fd`` (None: stop), for an event loop
        of its own (the tux_like server) rather than a task per socket. It runs inside the
        stack's call, so it may look (``stack.poll``) and note the event, nothing more."""
        if callback is None:
            self._watchers.pop(fd, None)
        else:
            self._watchers[fd] = callback

    async def wait_socket(self, fd: int) -> None:
        """Sleep until the stack says something happened on ``fd`` (data, space, error, close)."""
        lot = self._lots.setdefault(fd, trio.lowlevel.ParkingLot())
        try:
            await lot.park()
        finally:
            if not lot and fd not in self.stack.sockets:
                self._lots.pop(fd, None)

