"""A virtual network: stacks wired together in memory, in virtual time (sans-IO).

Tests, benchmarks and ``pystack spec show`` need stacks that exchange
packets with no device, no driver and no real time. A :class:`VirtualNetwork`
owns one :class:`VirtualClock` shared by its stacks; each interface
attached to it is a :class:`Port`. A port with no peer keeps what it sends
in ``sent``, for a test that plays the far end. A port linked to another
one sends its packets there through a queue ordered by arrival time (after
a delay, or as an :class:`ImpairmentModel` decides), so nothing is
re-entrant. Time moves only from event to event (a packet arriving, a
stack's timer), and only through :meth:`VirtualNetwork.step`: a run with
the same seeds sees the same packets at the same virtual instants.

A linked port's sink only notes the packet (the send paths that benchmarks
time pay no more); the network puts it on the wire before its next event,
at the instant it was sent, since the clock has not moved. The network
keeps the buffers the interfaces hand it without copying them: each
packet has a buffer of its own (``ip_emit`` allocates it), which the stack
never touches again.
"""

from __future__ import annotations

import errno
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pystack.clock import VirtualClock
from pystack.errors import oserror
from pystack.links.impair import ImpairmentModel
from pystack.stack import Stack
from pystack.tcp.tcb import TcpConfig

Record = Callable[[float, str, bytearray], Any]


@dataclass
class Transmission:
    """One packet as a port put it on the wire: when, which direction, the bytes."""

    time: float
    direction: str
    raw: bytes | bytearray


class Port:
    """An interface of a stack on the network: where its packets go, and what it sent to nobody."""

    def __init__(self, network: VirtualNetwork, stack: Stack, interface: str, address: str, prefixlen: int,
                 mtu: int, direction: str):
        self.network = network
        self.stack = stack
        self.direction = direction  # how records label what this port sends
        self.peer: Port | None = None
        self.delay = 0.0
        self.model: ImpairmentModel | None = None  # replaces the delay when there is one
        self.sent: list[Any] = []  # what this port sent while it had no peer
        self.iface = stack.add_interface(interface, address, prefixlen, mtu=mtu)
        self._plug()

    def _plug(self) -> None:
        """Choose the interface's sink: the cheapest one that does what the port must."""
        network = self.network
        if self.peer is not None:
            self.iface.sink = self._hand_over
        elif network.record is None and network._log is None:
            self.iface.sink = self.sent.append  # the bare buffers, at no cost
        else:
            self.iface.sink = self._keep

    def _hand_over(self, packet: bytearray) -> None:
        self.network._outbox.append((self, packet))

    def _keep(self, packet: bytearray) -> None:
        self.network._flush()  # the log stays in sending order
        self.sent.append(self.network._record(self, packet))


class VirtualNetwork:
    """Stacks on one virtual clock, their interfaces wired port to port.

    ``record(time, direction, raw)`` is what ``Port.sent`` and ``log`` keep
    of each packet (the bare buffer when it is None); with ``log`` every
    packet any port sends is also kept in ``log``, in sending order. A
    ``filter(record)`` sees each packet bound for a peer: None delivers it,
    False drops it, bytes are delivered instead. ``check(stack)`` runs
    after every packet delivered to a stack and every run of its timers
    (the tests check invariants there). ``max_steps`` bounds the events the
    network processes, so that a livelock fails instead of hanging.
    """

    def __init__(self, *, record: Record | None = None, log: bool = False,
                 check: Callable[[Stack], None] | None = None, max_steps: int | None = None):
        self.clock = VirtualClock()
        self.stacks: list[Stack] = []
        self.ports: dict[str, Port] = {}
        self.record = record
        self.filter: Callable[[Any], bytes | bool | None] | None = None
        self.check = check
        self.steps = 0
        self.max_steps = max_steps
        self._log: list[Any] | None = [] if log else None
        self._outbox: list[tuple[Port, bytearray]] = []  # sent by linked ports, not on the wire yet
        self._queue: list[tuple[float, int, Port, bytearray | bytes]] = []  # on the wire, by arrival
        self._order = itertools.count()  # breaks arrival-time ties in sending order

    # ------------------------------------------------------------ building

    def add_stack(self, seed: int | None = None, tcp_config: TcpConfig | None = None,
                  default_ttl: int = 64) -> Stack:
        """A new stack on the network's clock, whose timers the network runs."""
        stack = Stack(clock=self.clock, seed=seed, default_ttl=default_ttl, tcp_config=tcp_config)
        self.stacks.append(stack)
        return stack

    def attach(self, stack: Stack, interface: str, address: str, prefixlen: int = 24, mtu: int = 1500,
               direction: str | None = None) -> Port:
        """Add an interface to one of the network's stacks; ``direction`` (default: the
        interface's name) labels what it sends and must be unique on the network."""
        if stack not in self.stacks:
            raise ValueError("the stack is not on this network (make it with add_stack)")
        direction = interface if direction is None else direction
        if direction in self.ports:
            raise ValueError(f"the network has a port {direction!r} already (give a direction)")
        port = Port(self, stack, interface, address, prefixlen, mtu, direction)
        self.ports[direction] = port
        return port

    def link(self, a: Port, b: Port, delay: float = 0.0, model_ab: ImpairmentModel | None = None,
             model_ba: ImpairmentModel | None = None) -> None:
        """Wire two ports back to back: each one's packets arrive at the other after ``delay``
        (or as its direction's impairment model decides). Link before specializing: the
        residual code keeps the sink it was made with."""
        if a.peer is not None or b.peer is not None:
            raise ValueError("a port can be linked to one peer only")
        for port, peer, model in ((a, b, model_ab), (b, a, model_ba)):
            port.peer, port.delay, port.model = peer, delay, model
            port._plug()

    def unlink(self, a: Port) -> None:
        """Take the wire between ``a`` and its peer away: from now on both keep what they send
        (what is on the wire already still arrives)."""
        self._flush()
        b = a.peer
        if b is None:
            raise ValueError(f"port {a.direction!r} is not linked")
        for port in (a, b):
            port.peer = None
            port._plug()

    # ------------------------------------------------------------ packets

    @property
    def log(self) -> list[Any] | None:
        """Every packet sent, in sending order (None: the network keeps no log)."""
        self._flush()
        return self._log

    def _record(self, port: Port, packet: bytearray) -> Any:
        record = packet if self.record is None else self.record(self.clock.now(), port.direction, packet)
        if self._log is not None:
            self._log.append(record)
        return record

    def _flush(self) -> None:
        """Put what the linked ports sent since the last event on the wire."""
        if not self._outbox:
            return
        outbox, self._outbox = self._outbox, []
        now = self.clock.now()
        for port, packet in outbox:
            raw: bytearray | bytes = packet
            record = self._record(port, packet)
            if self.filter is not None:
                verdict = self.filter(record)
                if verdict is False:
                    continue
                if isinstance(verdict, bytes | bytearray):
                    raw = verdict
            deliveries = port.model.process(raw, now) if port.model else [(now + port.delay, raw)]
            for at, data in deliveries:
                heapq.heappush(self._queue, (max(at, now), next(self._order), port.peer, data))

    def deliver(self, port: Port, raw: bytes | bytearray) -> None:
        """Hand a packet to the port's stack at once (from outside any stack's code)."""
        port.stack.input(raw, port.iface)
        if self.check is not None:
            self.check(port.stack)

    def pending(self, port: Port) -> list[bytes | bytearray]:
        """The packets on their way to ``port``, in arrival order."""
        self._flush()
        return [raw for _, _, to, raw in sorted(self._queue, key=lambda e: e[:2]) if to is port]

    # ------------------------------------------------------------ time

    def next_event(self) -> float | None:
        self._flush()
        times = [t for t in (stack.next_deadline() for stack in self.stacks) if t is not None]
        if self._queue:
            times.append(self._queue[0][0])
        return min(times, default=None)

    def step(self, until: float) -> bool:
        """Process the next event at or before ``until``; False (the clock at ``until``) if there is none."""
        self.steps += 1
        if self.max_steps is not None and self.steps > self.max_steps:
            raise RuntimeError(f"more than {self.max_steps} steps: the network does not settle")
        self._flush()
        now = self.clock.now()
        if not (self._queue and self._queue[0][0] <= now):
            when = self.next_event()
            if when is None or when > until:
                if until > now:
                    self.clock.advance(until - now)
                return False
            if when > now:
                self.clock.advance(when - now)
        if self._queue and self._queue[0][0] <= self.clock.now():
            _, _, port, raw = heapq.heappop(self._queue)
            self.deliver(port, raw)
            return True
        for stack in self.stacks:
            stack.run_timers()
            if self.check is not None:
                self.check(stack)
        return True

    def run(self, seconds: float = 0.0, poll: Callable[[], None] | None = None) -> None:
        """Let ``seconds`` of virtual time pass, handling every packet and timer on the way
        (``poll()`` before each event: the applications' turn)."""
        end = self.clock.now() + seconds
        while True:
            if poll is not None:
                poll()
            if not self.step(end):
                return

    def run_until(self, predicate: Callable[[], bool], timeout: float,
                  poll: Callable[[], None] | None = None) -> float:
        """Run until ``predicate()`` holds (checked after every event, and ``poll()``); returns the time."""
        end = self.clock.now() + timeout
        while True:
            if poll is not None:
                poll()
            if predicate():
                return self.clock.now()
            if not self.step(end):
                if poll is not None:
                    poll()
                if predicate():
                    return self.clock.now()
                raise TimeoutError(f"condition not met within {timeout} virtual seconds")

    # ------------------------------------------------------------ TCP

    def establish(self, client: Stack, fd: int, address: tuple[str, int], server: Stack, listener: int,
                  timeout: float = 10.0) -> int:
        """Connect the client's TCP socket ``fd`` to ``address``, where the server's ``listener``
        listens, and run until the server has the connection; returns the server's accepted fd."""
        try:
            client.connect(fd, address)
        except BlockingIOError as exc:
            if exc.errno != errno.EINPROGRESS:
                raise
        result = errno.EINPROGRESS

        def settled() -> bool:
            nonlocal result
            result = client.connect_result(fd)  # (an error is reported once)
            return result != errno.EINPROGRESS

        self.run_until(settled, timeout)
        if result:
            raise oserror(result, f"connecting to {address[0]}:{address[1]} on the virtual network")
        self.run_until(lambda: bool(server.sockets[listener].tcb.accept_queue), timeout)
        accepted, _ = server.accept(listener)
        return accepted
