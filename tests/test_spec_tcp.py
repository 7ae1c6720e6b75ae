"""The TCP send scenario: specialized and generic sends put the same segments on the wire."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pystack.clock import VirtualClock
from pystack.socket import IPPROTO_TCP
from pystack.stack import Stack
from pystack.tcp.api import TCP_CORK
from pystack.tcp.tcb import TcpConfig
from specializer import do_specialize_send, specialized_send, token_info
from specializer.tcp_world import Connection


class World:
    """One sending stack with a connection to its own peer stack (specializer.tcp_world)."""

    def __init__(self, nodelay: bool, sack: bool, timestamps: bool):
        self.clock = VirtualClock()
        self.stack = Stack(clock=self.clock, seed=11, tcp_config=TcpConfig(sack=sack, timestamps=timestamps))
        self.connection = Connection(self.stack, "eth0", "198.18.0.2", "198.18.0.1", nodelay=nodelay)
        self.fd = self.connection.fd

    def pump(self, advance: float) -> None:
        self.clock.advance(advance)
        self.connection.pump()

    @property
    def wire(self) -> list[bytes]:
        return self.connection.wire

    @property
    def received(self) -> bytearray:
        return self.connection.received


def outcome(send, *args):
    try:
        return ("ok", send(*args))
    except OSError as exc:
        return ("error", type(exc), exc.errno)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    nodelay=st.booleans(),
    sack=st.booleans(),
    timestamps=st.booleans(),
    sends=st.lists(st.tuples(st.integers(0, 5000), st.sampled_from([0.0, 0.001, 0.05, 0.3])), min_size=1,
                   max_size=25),
)
def test_specialized_tcp_send_emits_what_generic_send_emits(nodelay, sack, timestamps, sends):
    generic = World(nodelay, sack, timestamps)
    special = World(nodelay, sack, timestamps)
    token = do_specialize_send(special.stack, special.fd, debug=True)
    assert token_info(special.stack, token)["mode"] == "specialized"
    for index, (size, advance) in enumerate(sends):
        data = bytes((index + i) % 251 for i in range(size))
        expected = outcome(generic.stack.send, generic.fd, data)
        got = outcome(specialized_send, special.stack, token, data)
        assert got == expected, f"send {index} of {size} bytes"
        generic.pump(advance)
        special.pump(advance)
        assert special.wire == generic.wire, f"after send {index}: the segments differ"
    for _ in range(20):
        generic.pump(0.25)
        special.pump(0.25)
    assert special.wire == generic.wire
    assert special.received == generic.received
    assert special.stack.counters.snapshot() == generic.stack.counters.snapshot()


def test_cork_is_a_static_fact_and_its_change_is_guarded():
    world = World(nodelay=False, sack=True, timestamps=True)
    token = do_specialize_send(world.stack, world.fd, debug=True)
    with pytest.raises(OSError) as refused:
        world.stack.setsockopt(world.fd, IPPROTO_TCP, TCP_CORK, 1)
    assert refused.value.errno == 16  # EBUSY: the default policy rejects option changes
    assert specialized_send(world.stack, token, b"still fine") == 10
