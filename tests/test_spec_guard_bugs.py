"""Guards that rested on hand-kept event plumbing, and what replaced it: guards on the data.

Each test below is a bug the twin-stack harness found, a fact a TCP token
assumed changed by a site that announced no event: a route change between
connect and do_specialize_send, an ICMP quoting acknowledged data, the
handshake under a token taken after EINPROGRESS, the trio driver replacing
an interface's sink. The last tests show the mechanism that makes such
bugs impossible: a write to any field a live token assumes, from anywhere,
makes the guard act (pystack/tokens/watch.py), and a guard acting during
packet input never raises out of it.
"""

from __future__ import annotations

import errno

import pytest
import trio
import trio.testing
from scapy.all import ICMP, IP, TCP

from pystack.clock import TrioClock
from pystack.driver import Driver
from pystack.links.memory import memory_link_pair
from pystack.links.virtual import Transmission, VirtualNetwork
from pystack.socket import IPPROTO_TCP, SOCK_STREAM
from pystack.stack import Stack
from pystack.tcp.tcb import ESTABLISHED
from pystack.tokens.system import system_of
from specializer import do_specialize_send, specialized_send, token_info
from tests.tcp_world import Connection, outcome

ME, PEER = "198.18.0.2", "198.18.0.1"


class Twin:
    """A stack with an established connection to a peer stack (tests/tcp_world.py)."""

    def __init__(self):
        self.net = VirtualNetwork(record=Transmission, log=True)
        self.clock = self.net.clock
        self.stack = self.net.add_stack(seed=11)
        self.connection = Connection(self.net, self.stack, "eth0", ME, PEER, nodelay=True)
        self.fd = self.connection.fd

    @property
    def sock(self):
        return self.stack.sockfd_lookup(self.fd)

    def pump(self, advance: float = 0.001) -> None:
        self.net.run(advance, poll=self.connection.read)


def test_a_route_change_between_connect_and_specializing_is_not_folded():
    """Bug 1: the TCP socket's route cache was not refreshed before specializing, so the code
    folded a stale dst_generation (debug mode: StaleSpecialization at the first send)."""
    generic, special = Twin(), Twin()
    for twin in (generic, special):
        twin.stack.add_interface("eth1", "198.19.0.2", 24)  # the route table changes: generation + 1
    token = do_specialize_send(special.stack, special.fd, debug=True)
    for size in (100, 3000, 10):
        data = bytes(range(256)) * (size // 256) + bytes(size % 256)
        assert outcome(specialized_send, special.stack, token, data) == outcome(generic.stack.send, generic.fd, data)
        generic.pump()
        special.pump()
        assert special.connection.wire == generic.connection.wire
    assert token_info(special.stack, token)["mode"] == "specialized"
    # The code rests on the current route cache: no route lookup left in it.
    assert "lookup" not in token_info(special.stack, token)["source"]


def _frag_needed_quoting(twin: Twin, segment: bytes, mtu: int) -> None:
    icmp = IP(src=PEER, dst=ME) / ICMP(type=3, code=4, nexthopmtu=mtu) / segment[:28]
    twin.stack.input(bytes(icmp), "eth0")


def test_frag_needed_quoting_acknowledged_data_keeps_token_and_connection_in_step():
    """Bug 2: an ICMP fragmentation-needed quoting an acknowledged segment makes the stack learn
    the path MTU, and tcp_error drops it as out of window (the MSS stays, as in Linux): nothing
    refreshed the connection's route cache before the token specialized again, and the token
    kept the old facts. The route change reaches the token through its guards, and the code
    it gets rests on the route the generic send uses."""
    generic, special = Twin(), Twin()
    token = do_specialize_send(special.stack, special.fd, debug=True)
    data = bytes(range(256)) * 12
    assert outcome(specialized_send, special.stack, token, data) == outcome(generic.stack.send, generic.fd, data)
    for twin in (generic, special):
        twin.pump()
        acknowledged = twin.connection.wire[-1]
        assert twin.sock.tcb.snd_una == twin.sock.tcb.snd_nxt  # everything is acknowledged
        _frag_needed_quoting(twin, acknowledged, 1000)
        assert twin.stack.counters.drops["icmp.error_out_of_window"] == 1
        assert twin.sock.tcb.mss == 1448  # out of window: the connection ignores it (RFC 5927)
    for size in (3000, 500, 4000):
        data = bytes(range(256)) * (size // 256)
        assert outcome(specialized_send, special.stack, token, data) == outcome(generic.stack.send, generic.fd, data)
        generic.pump()
        special.pump()
        assert special.connection.wire == generic.connection.wire
    assert special.sock.dst_cache.path_mtu == 1000  # the route the generic send uses too
    assert token_info(special.stack, token)["mode"] == "specialized"


class Handshake:
    """A non-blocking connect to a peer stack, its SYN-ACK held until the test lets it in."""

    def __init__(self):
        from pystack.tcp.tcb import TcpConfig

        # The peer's MSS (576-byte MTU) is the default the connection starts with, and no
        # timestamps: the handshake does not change the MSS, so no mss event is announced.
        config = TcpConfig(timestamps=False)
        self.net = VirtualNetwork()
        self.stack = self.net.add_stack(seed=5, tcp_config=config)
        self.peer = self.net.add_stack(seed=6, tcp_config=config)
        self.net.link(self.net.attach(self.stack, "eth0", ME),
                      self.net.attach(self.peer, "eth0", PEER, mtu=576, direction="peer"))
        listener = self.peer.socket(type=SOCK_STREAM)
        self.peer.bind(listener, ("0.0.0.0", 80))
        self.peer.listen(listener, 4)
        self.listener = listener
        self.fd = self.stack.socket(type=SOCK_STREAM)
        with pytest.raises(BlockingIOError):
            self.stack.connect(self.fd, (PEER, 80))

    def pump(self) -> None:
        """What is on the wire arrives (no time passes)."""
        self.net.run(0.0)


@pytest.mark.parametrize("debug", [False, True])
def test_a_token_taken_during_the_handshake_does_not_keep_its_facts(debug):
    """Bug 3: a token taken after EINPROGRESS folded sack_ok=False and connected=False; the
    handshake changed both without an event (the MSS did not change): debug mode raised out of
    Stack.input(), normal mode answered ENOTCONN where the generic send says EPIPE."""
    generic, special = Handshake(), Handshake()
    token = do_specialize_send(special.stack, special.fd, debug=debug)
    for world in (generic, special):
        world.pump()  # the handshake completes: no exception out of packet input
        tcb = world.stack.sockfd_lookup(world.fd).tcb
        assert tcb.state == ESTABLISHED and tcb.sack_ok and tcb.mss == 536
        child, _ = world.peer.accept(world.listener)
        world.peer.close(child)  # the peer closes: our sends end in EPIPE
    for data in (b"after the handshake", b"after the peer's FIN", b"after its RST"):
        assert outcome(specialized_send, special.stack, token, data) == outcome(generic.stack.send, generic.fd, data)
        generic.pump()
        special.pump()
    assert outcome(specialized_send, special.stack, token, b"x") == ("error", errno.EPIPE)


def test_a_token_on_a_closed_connection_gives_the_generic_errors():
    """The handshake fails (RST): the send is EPIPE-or-whatever the generic code says, never a
    fact folded from the connection attempt."""
    generic, special = Handshake(), Handshake()
    token = do_specialize_send(special.stack, special.fd)
    for world in (generic, special):
        world.peer.close(world.listener)  # the SYN meets no listener: RST
        world.pump()
    data = b"x"
    assert outcome(specialized_send, special.stack, token, data) == outcome(generic.stack.send, generic.fd, data)


def test_a_token_taken_before_the_driver_starts_transmits_through_its_link():
    """Bug 4: the trio driver replaces the interface's sink (pystack/driver.py), which the code
    had folded; a token taken before the driver ran sent into the old sink, never the link."""

    async def main() -> tuple[Stack, list[bytes]]:
        stack = Stack(clock=TrioClock(), seed=3)  # the driver runs stacks on trio's clock
        stack.add_interface("eth0", ME, 24)  # no sink yet: packets would wait in txq
        fd = stack.socket()
        stack.connect(fd, (PEER, 9))
        token = do_specialize_send(stack, fd, debug=True)  # before the driver exists
        ours, theirs = memory_link_pair(mtu=1500)
        Driver(stack, {"eth0": ours})
        assert specialized_send(stack, token, b"over the link") == 13
        with trio.fail_after(1):
            return stack, [await theirs.receive()]

    stack, received = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert received and bytes(received[0]).endswith(b"over the link")
    assert stack.interfaces["eth0"].txq == type(stack.interfaces["eth0"].txq)()


# ---------------------------------------------------------------- the mechanism


def _assumed_fields(stack: Stack, token: int) -> list:
    entry = system_of(stack).token(token).entry
    return [a for a in entry.assumptions if a.kind == "field" and not isinstance(a.subject, dict | list)]


def test_any_write_to_any_assumed_field_makes_the_guard_act():
    """Whoever writes an assumed field (no event announced), the token does not run the code
    that folded the old value: it is specialized again for the new one at its next call. The
    values are put back before the call, so that the generic answer is the same."""
    twin = Twin()
    token = do_specialize_send(twin.stack, twin.fd, debug=True)
    assumptions = _assumed_fields(twin.stack, token)
    assert len(assumptions) > 20
    system = system_of(twin.stack)
    for assumption in assumptions:
        function = system.functions[token]
        subject, name = assumption.subject, assumption.field
        old = getattr(subject, name)
        setattr(subject, name, _different(old))  # from an arbitrary place, no event
        assert system.functions[token] is not function, f"{type(subject).__name__}.{name}: no guard acted"
        setattr(subject, name, old)
        assert outcome(specialized_send, twin.stack, token, b"") == outcome(twin.stack.send, twin.fd, b"")
        assert system.functions[token] is function or token_info(twin.stack, token)["mode"] == "specialized"


def _different(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if value is None:
        return 0
    return object()


def test_writing_the_same_value_costs_nothing():
    twin = Twin()
    token = do_specialize_send(twin.stack, twin.fd)
    system = system_of(twin.stack)
    function = system.functions[token]
    twin.sock.tcb.mss = twin.sock.tcb.mss
    twin.sock.connected = True
    assert system.functions[token] is function


def test_a_guard_acting_during_packet_input_never_raises():
    """An assumed fact changes with no event, then a segment arrives: packet input runs the
    connection's output routine, whose guard re-specializes it there and then (debug mode
    raised StaleSpecialization out of Stack.input before the data guards)."""
    generic, special = Twin(), Twin()
    token = do_specialize_send(special.stack, special.fd, debug=True)
    for twin in (generic, special):
        twin.sock.tcb.nodelay = False  # from an arbitrary place, no event
        assert outcome(twin.stack.send, twin.fd, b"in flight") == ("ok", 9)
        twin.pump()  # the ACK arrives: Stack.input -> tcb.output()
    assert special.connection.wire == generic.connection.wire
    for data in (b"small", bytes(5000), b"more"):
        assert outcome(specialized_send, special.stack, token, data) == outcome(generic.stack.send, generic.fd, data)
        generic.pump()
        special.pump()
        assert special.connection.wire == generic.connection.wire
    assert token_info(special.stack, token)["mode"] == "specialized"


def test_watched_objects_go_back_to_their_class_when_no_token_needs_them():
    from specializer import done_specialize_send

    twin = Twin()
    tcb_class, sock_class = type(twin.sock.tcb), type(twin.sock)
    token = do_specialize_send(twin.stack, twin.fd)
    assert type(twin.sock.tcb) is not tcb_class  # watched: its assumed fields have write hooks
    assert isinstance(twin.sock.tcb, tcb_class) and type(twin.sock.tcb).__name__ == tcb_class.__name__
    done_specialize_send(twin.stack, token)
    assert type(twin.sock.tcb) is tcb_class and type(twin.sock) is sock_class


def test_tcp_socket_option_through_the_fd_api_still_rejects():
    """The application's changes keep their announced events and policies (reject: EBUSY).

    TCP_NODELAY: the send code folds Nagle's state (SO_SNDBUF no longer: the send buffer's room is
    tested in code the token calls, not in code it folds, so changing it breaks nothing)."""
    from pystack.tcp.api import TCP_NODELAY

    twin = Twin()
    do_specialize_send(twin.stack, twin.fd)
    with pytest.raises(OSError) as refused:
        twin.stack.setsockopt(twin.fd, IPPROTO_TCP, TCP_NODELAY, 0)
    assert refused.value.errno == errno.EBUSY


def test_tcp_frag_needed_quoting_a_segment_in_flight_still_respecializes():
    twin = Twin()
    token = do_specialize_send(twin.stack, twin.fd, debug=True)
    assert specialized_send(twin.stack, token, bytes(3000)) == 3000
    on_the_wire = twin.net.pending(twin.connection.peer_port)  # sent, not delivered yet
    in_flight = bytes(on_the_wire[0])
    sent_before = len(on_the_wire)
    _frag_needed_quoting(twin, in_flight, 1200)
    assert twin.sock.tcb.mss == 1200 - 40 - 12
    assert specialized_send(twin.stack, token, bytes(2000)) == 2000
    assert token_info(twin.stack, token)["mode"] == "specialized"
    new_segments = [bytes(raw) for raw in twin.net.pending(twin.connection.peer_port)[sent_before:]]
    assert new_segments and all(len(segment) <= 1200 for segment in new_segments)
    assert all(TCP in IP(segment) for segment in new_segments)


# ---------------------------------------------------------------- the token API's policies


@pytest.mark.parametrize("policy, named", [
    ({"setsockopt": "rejct"}, "reject, fallback, respecialize, reinforce"),
    ({"setsockpot": "reject"}, "setsockopt, fcntl"),
])
def test_a_misspelt_policy_or_event_is_refused_with_the_valid_ones(policy, named):
    """A misspelt policy was taken silently (as a re-specialization where the user asked to reject)."""
    twin = Twin()
    with pytest.raises(ValueError, match=named):
        do_specialize_send(twin.stack, twin.fd, policy=policy)
    assert not system_of(twin.stack).tokens


def test_the_declaration_loader_checks_policies_the_same_way(tmp_path):
    from pystack.tokens.scenario import DeclarationError, load_scenarios

    data = {"scenario": {"s": {"entry": "pystack.stack:Stack.send", "params": {"self": "S", "fd": "S", "data": "D",
                                                                                "flags": "S"},
                               "guards": {"setsockopt": "rejct"}}}}
    with pytest.raises(DeclarationError, match="policies are reject, fallback, respecialize, reinforce"):
        load_scenarios(tmp_path / "x.spec.toml", data, {}, {})


def test_the_watch_works_on_slotted_classes_and_refuses_builtins():
    from dataclasses import dataclass

    from pystack.tokens.watch import plain_type, unwatch, watch, watchers_of

    @dataclass(slots=True)
    class Point:
        x: int
        y: int

    class Seen:
        def __init__(self):
            self.writes = []

        def field_written(self, obj, name):
            self.writes.append(name)

    point, seen = Point(1, 2), Seen()
    assert watch(seen, point, frozenset({"x"}))
    point.y = 5  # not watched
    point.x = 1  # the same value
    point.x = 3
    assert (point.x, point.y, seen.writes) == (3, 5, ["x"])
    assert plain_type(point) is Point and watchers_of(point) == {"x": [seen]}
    unwatch(seen, point)
    assert type(point) is Point and watchers_of(point) == {}
    assert not watch(seen, {}, frozenset({"x"})) and not watch(seen, [], frozenset({"append"}))


def test_every_function_of_the_token_api_says_what_it_does():
    import specializer

    undocumented = [name for name in specializer.__all__ if not (getattr(specializer, name).__doc__ or "").strip()]
    assert not undocumented
