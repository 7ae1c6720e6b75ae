"""The TCP send scenario: specialized and generic sends put the same segments on the wire."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pystack.links.virtual import Transmission, VirtualNetwork
from pystack.socket import IPPROTO_TCP
from pystack.tcp.api import TCP_CORK
from pystack.tcp.tcb import TcpConfig
from specializer import do_specialize_send, specialized_send, token_info

from .tcp_world import Connection


class World:
    """One sending stack with a connection to its own peer stack (tests/tcp_world.py)."""

    def __init__(self, nodelay: bool, sack: bool, timestamps: bool):
        self.net = VirtualNetwork(record=Transmission, log=True)
        self.stack = self.net.add_stack(seed=11, tcp_config=TcpConfig(sack=sack, timestamps=timestamps))
        self.connection = Connection(self.net, self.stack, "eth0", "198.18.0.2", "198.18.0.1", nodelay=nodelay)
        self.fd = self.connection.fd

    def pump(self, advance: float) -> None:
        """Let ``advance`` seconds pass, the peer reading all that arrives."""
        self.net.run(advance, poll=self.connection.read)

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


def _send_and_compare(generic: World, special: World, token: int, data: bytes) -> None:
    expected = outcome(generic.stack.send, generic.fd, data)
    got = outcome(specialized_send, special.stack, token, data)
    assert got == expected
    generic.pump(0.001)
    special.pump(0.001)
    assert special.wire == generic.wire


def test_dynamic_receive_state_is_read_at_run_time():
    """The advertised window counts the out-of-order queue, and a D-SACK block is reported once:
    both are dynamic state that the specialized send must read when it runs (not fold, not share)."""
    generic = World(nodelay=True, sack=True, timestamps=True)
    special = World(nodelay=True, sack=True, timestamps=True)
    token = do_specialize_send(special.stack, special.fd, debug=True)
    _send_and_compare(generic, special, token, b"first")
    for world in (generic, special):
        tcb = world.stack.sockfd_lookup(world.fd).tcb
        # Out-of-order data held for the application (as a peer's lost segment would leave it).
        tcb.out_of_order.insert((tcb.rcv_nxt + 5000) & 0xFFFFFFFF, bytes(30000), tcb.rcv_nxt)
        tcb.sack_recent.insert(0, (tcb.rcv_nxt + 5000) & 0xFFFFFFFF)
        tcb.rcv_edge = (tcb.rcv_nxt + 1000) & 0xFFFFFFFF  # so the free space decides the window
    _send_and_compare(generic, special, token, b"with a hole in the receive queue")
    for world in (generic, special):
        tcb = world.stack.sockfd_lookup(world.fd).tcb
        tcb.out_of_order.clear()
        tcb.sack_recent.clear()
        tcb.dsack = ((tcb.rcv_nxt - 100) & 0xFFFFFFFF, (tcb.rcv_nxt - 50) & 0xFFFFFFFF)
    _send_and_compare(generic, special, token, b"reports a duplicate once")
    _send_and_compare(generic, special, token, b"and then no more")


def test_committed_adu_folds_the_size_checks_and_stays_equivalent():
    """With SO_ADU committed, a send that passed the size check has a known, non-zero length:
    the empty-send test and the error message fold (the message with its static ADU)."""
    from pystack.socket import SO_ADU, SOL_SOCKET

    generic = World(nodelay=True, sack=True, timestamps=True)
    special = World(nodelay=True, sack=True, timestamps=True)
    for world in (generic, special):
        world.stack.setsockopt(world.fd, SOL_SOCKET, SO_ADU, 1448)
    token = do_specialize_send(special.stack, special.fd, debug=True)
    source = token_info(special.stack, token)["source"]
    assert "if not data" not in source and "elif not data" not in source
    assert "'SO_ADU commits this socket to 1448-byte sends'" in source
    for size in (1448, 0, 1447, 1448, 1449, 1448):
        _send_and_compare(generic, special, token, bytes(range(256)) * 5 + bytes(size - 1280) if size >= 1280
                          else bytes(size))


def test_segments_clocked_out_by_acks_run_the_specialized_output():
    """A bulk send leaves most segments to the ACKs: the token installs the connection's
    output routine (scenario tcp_output), which the stack runs on every arriving segment."""
    from pystack.tokens.system import system_of
    from specializer import done_specialize_send

    generic = World(nodelay=True, sack=True, timestamps=True)
    special = World(nodelay=True, sack=True, timestamps=True)
    token = do_specialize_send(special.stack, special.fd, debug=True)
    system = system_of(special.stack)
    (companion,) = system.token(token).companions
    assert system.token(companion).scenario.name == "tcp_output"
    tcb = special.stack.sockfd_lookup(special.fd).tcb
    assert tcb.output is system.functions[companion] and tcb.output is not None
    installed = tcb.output
    runs = []
    tcb.output = lambda: (runs.append(1), installed())[1]  # count the stack's calls
    data = bytes(range(256)) * 800  # 200 KB: far beyond the initial window
    assert outcome(generic.stack.send, generic.fd, data) == outcome(specialized_send, special.stack, token, data)
    for _ in range(60):
        generic.pump(0.01)
        special.pump(0.01)
        assert special.wire == generic.wire
    assert special.received == generic.received == bytearray(data)
    assert len(runs) > 50  # one per segment that arrived (an ACK for every second data segment)
    done_specialize_send(special.stack, token)
    assert tcb.output is None and companion not in system.tokens


def test_the_output_routine_falls_back_when_the_connection_closes():
    from pystack.tokens.system import system_of

    world = World(nodelay=True, sack=True, timestamps=True)
    token = do_specialize_send(world.stack, world.fd)
    (companion,) = system_of(world.stack).token(token).companions
    tcb = world.stack.sockfd_lookup(world.fd).tcb
    assert tcb.output is not None
    world.stack.close(world.fd)  # guard policy for close: fall back to the generic code
    assert tcb.output is None
    assert token_info(world.stack, companion)["mode"] == "generic"
    for _ in range(10):
        world.pump(0.3)  # the FIN exchange runs the generic output
    assert world.connection.peer.sockets  # the peer's end is still there, closing normally


def test_a_path_mtu_drop_makes_both_routines_respecialize_for_the_new_mss():
    """ICMP fragmentation needed: the route changes (reinforcement cannot keep code that folded
    the old path MTU) and the MSS drops (the mss event); the send and output routines go stale,
    specialize again for the new MSS, and the segments stay those of the generic stack."""
    from scapy.all import ICMP, IP

    from pystack.tokens.system import system_of

    generic = World(nodelay=True, sack=True, timestamps=True)
    special = World(nodelay=True, sack=True, timestamps=True)
    token = do_specialize_send(special.stack, special.fd, debug=True)
    (companion,) = system_of(special.stack).token(token).companions
    data = bytes(range(256)) * 20
    assert outcome(generic.stack.send, generic.fd, data) == outcome(specialized_send, special.stack, token, data)
    for world in (generic, special):
        first = world.net.pending(world.connection.peer_port)[0]  # in flight, not delivered yet
        icmp = IP(src="198.18.0.1", dst="198.18.0.2") / ICMP(type=3, code=4, nexthopmtu=1000) / first[:28]
        world.stack.input(bytes(icmp), "eth0")
        assert world.stack.sockfd_lookup(world.fd).tcb.mss == 1000 - 40 - 12
    assert token_info(special.stack, token)["mode"] == "stale"
    for _ in range(3):
        _send_and_compare(generic, special, token, data)  # resegmented at 948 bytes, as the generic stack
        for world in (generic, special):
            world.pump(0.05)
        assert special.wire == generic.wire
    assert token_info(special.stack, token)["mode"] == "specialized"
    assert "respecialized" in token_info(special.stack, token)["events"]
    assert "948" in token_info(special.stack, token)["source"]
    assert token_info(special.stack, companion)["mode"] == "specialized"
    assert special.received == generic.received


def test_an_mss_change_is_announced_and_the_tokens_respecialize():
    """update_mss announces a changed MSS (the mss event; policy respecialize), whatever caused
    it, so code folded for the old MSS never runs again."""
    generic = World(nodelay=True, sack=True, timestamps=True)
    special = World(nodelay=True, sack=True, timestamps=True)
    token = do_specialize_send(special.stack, special.fd, debug=True)
    for world in (generic, special):
        tcb = world.stack.sockfd_lookup(world.fd).tcb
        tcb.user_mss = 700  # as TCP_MAXSEG would set it, without the option's own guard
        world.stack.tcp.update_mss(tcb)
    assert token_info(special.stack, token)["events"] == ["stale after mss"]
    _send_and_compare(generic, special, token, bytes(range(256)) * 10)
    assert "688" in token_info(special.stack, token)["source"]  # 700 less the timestamp option
