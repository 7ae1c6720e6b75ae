"""TCP twin stacks: a token's sends against the generic sends, whatever happens around them.

As tests/test_spec_equivalence.py does for UDP: two identical worlds (same
seeds, same virtual clock steps), each a stack connected to a peer stack
of its own on a virtual network. The generic world sends with
``stack.send``, the special world through a debug-mode token (an
assumption broken with no guard acting raises StaleSpecialization at
once). Hypothesis chooses when the token is taken (during the handshake
or after it) and what happens then: sends, time passing, routes and
interfaces added, ICMP errors quoting any segment sent so far (in flight
or acknowledged, fragmentation-needed included), socket options, the
interface's sink replaced (as the trio driver does when it starts), the
peer sending or closing. After every step the worlds must agree: the
outcome of the operation (value or errno), every segment our stack put on
the wire, what the peer received, and the counters.
"""

from __future__ import annotations

import errno

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import ICMP, IP

from pystack.links.virtual import Transmission, VirtualNetwork
from pystack.socket import IPPROTO_TCP, SOCK_STREAM
from pystack.tcp.api import TCP_CORK, TCP_NODELAY
from pystack.tcp.tcb import TcpConfig
from specializer import do_specialize_send, specialized_send, token_info
from tests.tcp_world import outcome

ME, PEER = "198.18.0.2", "198.18.0.1"


class World:
    """Our stack and its peer stack, linked on a virtual network (pystack/links/virtual.py)."""

    def __init__(self, sack: bool, timestamps: bool, peer_mtu: int):
        config = TcpConfig(sack=sack, timestamps=timestamps)
        self.net = VirtualNetwork(record=Transmission, log=True)
        self.stack = self.net.add_stack(seed=21, tcp_config=config)
        self.peer = self.net.add_stack(seed=22, tcp_config=config)
        self.port = self.net.attach(self.stack, "eth0", ME)
        self.net.link(self.port, self.net.attach(self.peer, "eth0", PEER, mtu=peer_mtu, direction="peer"))
        self.received = bytearray()
        self.listener = self.peer.socket(type=SOCK_STREAM)
        self.peer.bind(self.listener, ("0.0.0.0", 80))
        self.peer.listen(self.listener, 4)
        self.peer_fd: int | None = None
        self.fd = self.stack.socket(type=SOCK_STREAM)
        self.token: int | None = None

    @property
    def wire(self) -> list[bytes]:
        """Every packet our stack put on the wire, in order."""
        return [bytes(record.raw) for record in self.net.log if record.direction == self.port.direction]

    def connect(self) -> None:
        try:
            self.stack.connect(self.fd, (PEER, 80))
        except BlockingIOError:
            pass

    def pump(self, advance: float) -> None:
        """``advance`` seconds pass; the peer's application accepts and reads all that arrives."""
        self.net.run(advance, poll=self._peer_application)

    def _peer_application(self) -> None:
        if self.peer_fd is None:
            try:
                self.peer_fd = self.peer.accept(self.listener)[0]
            except BlockingIOError:
                return
        while True:
            try:
                data = self.peer.recv(self.peer_fd, 1 << 20)
            except OSError:
                return
            if not data:
                return
            self.received += data

    def observable(self) -> dict:
        return {"wire": list(self.wire), "received": bytes(self.received),
                "counters": self.stack.counters.snapshot(), "drops": dict(self.stack.counters.drops)}


class Twins:
    def __init__(self, sack: bool, timestamps: bool, peer_mtu: int):
        self.generic = World(sack, timestamps, peer_mtu)
        self.special = World(sack, timestamps, peer_mtu)
        self.log: list[str] = []

    @property
    def worlds(self) -> tuple[World, World]:
        return self.generic, self.special

    def check(self, what: str) -> None:
        self.log.append(what)
        a, b = self.generic.observable(), self.special.observable()
        for key in a:
            assert a[key] == b[key], f"after {self.log}: the worlds differ in {key}" + self.token_text()

    def token_text(self) -> str:
        token = self.special.token
        if token is None:
            return ""
        info = token_info(self.special.stack, token)
        return f"\n token: {info['mode']} {info['events']}"

    def take_token(self) -> None:
        if self.special.token is None:
            self.special.token = do_specialize_send(self.special.stack, self.special.fd, debug=True)
            self.check("token")

    def send(self, size: int) -> None:
        data = bytes((size + i) % 251 for i in range(size))
        generic = outcome(self.generic.stack.send, self.generic.fd, data)
        if self.special.token is None:
            special = outcome(self.special.stack.send, self.special.fd, data)
        else:
            special = outcome(specialized_send, self.special.stack, self.special.token, data)
        assert generic == special, f"after {self.log}: send {size}: generic {generic}, specialized {special}" \
            + self.token_text()
        self.check(f"send {size} -> {generic}")

    def both(self, what: str, operation) -> None:
        for world in self.worlds:
            operation(world)
        self.check(what)

    def option(self, option: int, value: int) -> None:
        """An application event: the special world first; a guard's EBUSY means neither applies it."""
        special = outcome(self.special.stack.setsockopt, self.special.fd, IPPROTO_TCP, option, value)
        if special == ("error", errno.EBUSY):
            self.check(f"setsockopt {option}={value}: rejected")
            return
        generic = outcome(self.generic.stack.setsockopt, self.generic.fd, IPPROTO_TCP, option, value)
        assert generic == special
        self.check(f"setsockopt {option}={value}")

    def icmp(self, pick: int, kind: int, code: int, mtu: int) -> None:
        """An ICMP error quoting one of the segments our stack sent (any: acknowledged or not)."""
        if not self.generic.wire:
            return
        segment = self.generic.wire[pick % len(self.generic.wire)]
        message = ICMP(type=kind, code=code, nexthopmtu=mtu) if (kind, code) == (3, 4) else ICMP(type=kind, code=code)
        packet = bytes(IP(src=PEER, dst=ME) / message / segment[:28])
        self.both(f"icmp {kind}/{code} mtu {mtu} quoting #{pick % len(self.generic.wire)}",
                  lambda w: w.stack.input(packet, "eth0"))


def _replace_sink(world: World) -> None:
    """What the trio driver does when it starts: a new sink for the interface, no event."""
    out = world.stack.interfaces["eth0"].sink
    world.stack.interfaces["eth0"].sink = lambda packet: out(bytearray(packet))


def _add_interface(world: World) -> None:
    if "eth1" not in world.stack.interfaces:
        world.net.attach(world.stack, "eth1", "198.19.0.2")


def _host_route(world: World) -> None:
    world.stack.add_route(PEER, 32, "eth0")  # the same path, a new route object


def _peer_sends(world: World) -> None:
    if world.peer_fd is not None:
        outcome(world.peer.send, world.peer_fd, b"from the peer " * 50)


def _peer_closes(world: World) -> None:
    if world.peer_fd is not None and world.peer_fd in world.peer.sockets:
        world.peer.close(world.peer_fd)


STEPS = st.one_of(
    st.tuples(st.just("send"), st.sampled_from([0, 1, 100, 1448, 3000, 20000])),
    st.tuples(st.just("pump"), st.sampled_from([0.0, 0.001, 0.05, 0.3, 2.0])),
    st.tuples(st.just("token"), st.none()),
    st.tuples(st.just("frag_needed"), st.tuples(st.integers(0, 1000), st.sampled_from([576, 1000, 1280, 1400]))),
    st.tuples(st.just("icmp"), st.tuples(st.integers(0, 1000), st.sampled_from([(3, 1), (3, 3), (11, 0)]))),
    st.tuples(st.just("nodelay"), st.booleans()),
    st.tuples(st.just("cork"), st.booleans()),
    st.tuples(st.just("sink"), st.none()),
    st.tuples(st.just("interface"), st.none()),
    st.tuples(st.just("host_route"), st.none()),
    st.tuples(st.just("peer_sends"), st.none()),
    st.tuples(st.just("peer_closes"), st.none()),
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    sack=st.booleans(),
    timestamps=st.booleans(),
    peer_mtu=st.sampled_from([576, 1500]),
    token_during_handshake=st.booleans(),
    steps=st.lists(STEPS, min_size=1, max_size=14),
)
def test_tcp_token_sends_as_the_generic_code_whatever_happens(sack, timestamps, peer_mtu, token_during_handshake,
                                                              steps):
    twins = Twins(sack, timestamps, peer_mtu)
    twins.both("connect", World.connect)
    if token_during_handshake:
        twins.take_token()
    twins.both("handshake", lambda w: w.pump(0.0))
    for action, argument in steps:
        if action == "send":
            twins.send(argument)
        elif action == "pump":
            twins.both(f"pump {argument}", lambda w, a=argument: w.pump(a))
        elif action == "token":
            twins.take_token()
        elif action == "frag_needed":
            pick, mtu = argument
            twins.icmp(pick, 3, 4, mtu)
        elif action == "icmp":
            pick, (kind, code) = argument
            twins.icmp(pick, kind, code, 0)
        elif action == "nodelay":
            twins.option(TCP_NODELAY, int(argument))
        elif action == "cork":
            twins.option(TCP_CORK, int(argument))
        elif action == "sink":
            twins.both("sink replaced", _replace_sink)
        elif action == "interface":
            twins.both("eth1 added", _add_interface)
        elif action == "host_route":
            twins.both("host route to the peer", _host_route)
        elif action == "peer_sends":
            twins.both("the peer sends", _peer_sends)
        elif action == "peer_closes":
            twins.both("the peer closes", _peer_closes)
    twins.take_token()
    for size in (10, 5000):
        twins.send(size)
        twins.both("pump", lambda w: w.pump(0.05))
    for _ in range(6):
        twins.both("drain", lambda w: w.pump(0.5))
