"""Sends interleaved with every event that can break a specialization, in two worlds.

A hypothesis state machine drives the generic world (fd API) and the
special world (token API, debug mode) through the same history: sends,
setsockopt (allowed or refused by a guard), fcntl, connect to another
peer or dissolving the association, bind, shutdown, close, route changes
(same path, other interface with the same or another MTU and source),
ICMP port unreachable and fragmentation needed (path MTU), the clock
running past a learnt path MTU's expiry, draining transmit queues, and
the token's own life (re_specialize, done and re-request), and a second
token for the same socket (sharing code with the first). Each token gets
a guard policy per event, drawn from all four. After every step both
worlds must look the same (tests/spec_worlds.py).

When the special world's guard rejects an application event, the
generic world does not get it either (the model of the reject policy).
"""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from pystack.addr import aton
from pystack.route import Route
from pystack.socket import (
    IP_MTU_DISCOVER,
    IP_MULTICAST_IF,
    IP_MULTICAST_TTL,
    IP_TOS,
    IP_TTL,
    IPPROTO_IP,
    MSG_DONTROUTE,
    O_NONBLOCK,
    SO_ADU,
    SO_BROADCAST,
    SO_NO_CHECK,
    SO_RCVBUF,
    SO_REUSEADDR,
    SO_SNDBUF,
    SOL_SOCKET,
)
from pystack.tokens.scenario import POLICIES
from pystack.tokens.system import system_of
from tests.spec_worlds import FAR, ME, ME1, PEER, PEER1, IfaceConf, Rejected, RouteConf, Worlds

EVENTS = ("setsockopt", "fcntl", "connect", "bind", "shutdown", "close", "route")

policies = st.fixed_dictionaries({event: st.sampled_from(POLICIES) for event in EVENTS})

OPTION_CHANGES = st.one_of(
    st.tuples(st.just(IPPROTO_IP), st.just(IP_TTL), st.sampled_from([1, 5, 64, 128, 255, -1, 0, 256])),
    st.tuples(st.just(IPPROTO_IP), st.just(IP_TOS), st.sampled_from([0, 0x10, 0xB8, 0x1FF])),
    st.tuples(st.just(IPPROTO_IP), st.just(IP_MTU_DISCOVER), st.sampled_from([0, 1, 2, 3, 9])),
    st.tuples(st.just(IPPROTO_IP), st.just(IP_MULTICAST_TTL), st.sampled_from([0, 4, 300])),
    st.tuples(st.just(IPPROTO_IP), st.just(IP_MULTICAST_IF), st.sampled_from([0, aton(ME), aton(ME1), 1])),
    st.tuples(st.just(SOL_SOCKET), st.just(SO_NO_CHECK), st.sampled_from([0, 1])),
    st.tuples(st.just(SOL_SOCKET), st.just(SO_BROADCAST), st.sampled_from([0, 1])),
    st.tuples(st.just(SOL_SOCKET), st.just(SO_SNDBUF), st.sampled_from([0, 4096, 200000])),
    st.tuples(st.just(SOL_SOCKET), st.just(SO_RCVBUF), st.sampled_from([0, 65536])),  # no assumption on it
    st.tuples(st.just(SOL_SOCKET), st.just(SO_REUSEADDR), st.sampled_from([0, 1])),
    st.tuples(st.just(SOL_SOCKET), st.just(SO_ADU), st.sampled_from([0, 100, 1472, 8000])),  # sizes fold
)

FAR_NET = "198.18.7.0"


def _route_with_source(prefix: str, prefixlen: int, iface: str, gateway: str, src: str):
    def make(stack):
        return Route(aton(prefix), prefixlen, stack.interfaces[iface], gateway=aton(gateway), src=aton(src))
    return make


ROUTE_CHANGES = {
    # Same interface and path: reinforcement keeps everything.
    "far-net via eth0": RouteConf(FAR_NET, 24, "eth0", gateway=PEER),
    # Another interface (another source address; the same MTU when eth1's equals eth0's).
    "far-net via eth1": RouteConf(FAR_NET, 24, "eth1", gateway=PEER1),
    # Another interface, and a smaller path MTU.
    "far-host via eth1, mtu 1280": RouteConf(FAR, 32, "eth1", gateway=PEER1, mtu=1280),
    "far-host via eth0, mtu 1000": RouteConf(FAR, 32, "eth0", gateway=PEER, mtu=1000),
    "default via eth1": RouteConf("0.0.0.0", 0, "eth1", gateway=PEER1),
    "default via eth0": RouteConf("0.0.0.0", 0, "eth0", gateway=PEER),
    "peer via eth1": RouteConf(PEER, 32, "eth1"),
}
SOURCED_ROUTES = {
    # Another interface with eth0's source address: for a sendto token, the same source.
    "far-net via eth1, src eth0": (FAR_NET, 24, "eth1", PEER1, ME),
    "peer via eth1, src eth0": (PEER, 32, "eth1", PEER1, ME),
}
REMOVALS = [(FAR_NET, 24), (FAR, 32), ("0.0.0.0", 0), (PEER, 32)]

DESTINATIONS = [(FAR, 4242), (PEER, 9), ("198.19.0.77", 7), ("198.18.0.255", 5000), ("239.1.2.3", 5353)]


def payloads() -> st.SearchStrategy[bytes]:
    sizes = st.one_of(st.sampled_from([0, 1, 100, 100, 551, 972, 1252, 1253, 1472, 1472, 1473, 3000, 8000,
                                       8000, 8972, 65507, 65508]),
                      st.integers(0, 4000))
    return st.tuples(sizes, st.integers(0, 255)).map(lambda s: random.Random(s[1]).randbytes(s[0]))


# After each event, most often one send: its effect is seen at once.
probes = st.one_of(st.none(), payloads(), payloads())


class SpecializedSendMachine(RuleBasedStateMachine):
    worlds: Worlds

    def probe(self, data: bytes | None) -> None:
        if data is not None:
            self.worlds.send(data)

    @initialize(
        kind=st.sampled_from(["connected", "sendto"]),
        dest=st.sampled_from(DESTINATIONS),
        policy=policies,
        mtus=st.sampled_from([(1500, 1500), (1500, 9000), (9000, 1500), (1280, 1280), (576, 1500)]),
        sink=st.sampled_from([True, True, False]),
        options=st.lists(OPTION_CHANGES, max_size=3),
        flags=st.sampled_from([0, 0, 0, MSG_DONTROUTE]),
    )
    def setup(self, kind, dest, policy, mtus, sink, options, flags) -> None:
        ifaces = (IfaceConf("eth0", ME, mtu=mtus[0], sink=sink), IfaceConf("eth1", ME1, mtu=mtus[1]))
        self.worlds = Worlds(ifaces=ifaces, routes=(RouteConf("0.0.0.0", 0, "eth0", gateway=PEER),))
        self.worlds.open(kind, dest, options=options, policy=policy, flags=flags)

    # ------------------------------------------------------------ sends

    @rule(data=payloads())
    def send(self, data: bytes) -> None:
        self.worlds.send(data)

    @rule(data=payloads(), kind=st.sampled_from(["bytearray", "memoryview"]))
    def send_buffer(self, data: bytes, kind: str) -> None:
        self.worlds.send(bytearray(data) if kind == "bytearray" else memoryview(data))

    # ------------------------------------------------------------ application events

    @rule(change=OPTION_CHANGES, probe=probes)
    def setsockopt(self, change, probe: bytes | None) -> None:
        try:
            self.worlds.setsockopt(*change)
        except Rejected:
            pass
        self.probe(probe)

    @rule(nonblocking=st.booleans(), probe=probes)
    def fcntl(self, nonblocking: bool, probe: bytes | None) -> None:
        try:
            self.worlds.fcntl(O_NONBLOCK if nonblocking else 0)
        except Rejected:
            pass
        self.probe(probe)

    @rule(address=st.sampled_from([*DESTINATIONS, (PEER, 53), None]), probe=probes)
    def connect(self, address, probe: bytes | None) -> None:
        try:
            self.worlds.connect(address)
        except Rejected:
            pass
        self.probe(probe)

    @rule(address=st.sampled_from([("0.0.0.0", 0), (ME, 0), (ME, 7000)]), probe=probes)
    def bind(self, address, probe: bytes | None) -> None:
        try:
            self.worlds.event(f"bind {address}", lambda w: w.stack.bind(w.fd, address))
        except Rejected:
            pass
        self.probe(probe)

    @rule(probe=probes)
    def shutdown(self, probe: bytes | None) -> None:
        try:
            self.worlds.event("shutdown", lambda w: w.stack.shutdown(w.fd, 1))
        except Rejected:
            pass
        self.probe(probe)

    @rule(really=st.sampled_from([False, False, False, True]), probe=probes)
    def close(self, really: bool, probe: bytes | None) -> None:
        """Rarely: after a close, every send is EBADF, the rest of the run says little."""
        if really:
            try:
                self.worlds.close()
            except Rejected:
                pass
        self.probe(probe)

    # ------------------------------------------------------------ the system

    @rule(name=st.sampled_from(sorted(ROUTE_CHANGES)), probe=probes)
    def add_route(self, name: str, probe: bytes | None) -> None:
        self.worlds.add_route(ROUTE_CHANGES[name])
        self.probe(probe)

    @rule(name=st.sampled_from(sorted(SOURCED_ROUTES)), probe=probes)
    def add_sourced_route(self, name: str, probe: bytes | None) -> None:
        self.worlds.add_route_object(name, _route_with_source(*SOURCED_ROUTES[name]))
        self.probe(probe)

    @rule(prefix=st.sampled_from(REMOVALS), probe=probes)
    def remove_route(self, prefix, probe: bytes | None) -> None:
        self.worlds.remove_route(*prefix)
        self.probe(probe)

    @rule(mtu=st.sampled_from([68, 552, 576, 1000, 1280, 1400, 1499, 8000]), probe=probes)
    def frag_needed(self, mtu: int, probe: bytes | None) -> None:
        self.worlds.frag_needed(mtu)
        self.probe(probe)

    @rule(probe=probes)
    def port_unreachable(self, probe: bytes | None) -> None:
        self.worlds.port_unreachable()
        self.probe(probe)

    @rule(seconds=st.sampled_from([1.0, 300.0, 601.0]), probe=probes)
    def advance_clock(self, seconds: float, probe: bytes | None) -> None:
        self.worlds.advance(seconds)
        self.probe(probe)

    @rule(limit=st.sampled_from([None, 1]), probe=probes)
    def drain(self, limit, probe: bytes | None) -> None:
        self.worlds.drain("eth0", limit)
        self.probe(probe)

    # ------------------------------------------------------------ the token

    @rule(probe=probes)
    def re_specialize(self, probe: bytes | None) -> None:
        self.worlds.respecialize()
        self.probe(probe)

    @rule(policy=policies, probe=probes)
    def done_and_request_again(self, policy, probe: bytes | None) -> None:
        self.worlds.done()
        self.worlds.policy = policy
        self.worlds.specialize()
        self.probe(probe)

    @rule(policy=policies, probe=probes)
    def second_token(self, policy: dict[str, str], probe: bytes | None) -> None:
        self.worlds.second_token(policy)
        self.probe(probe)

    @rule(data=payloads())
    def send_second(self, data: bytes) -> None:
        self.worlds.send(data, second=True)

    @invariant()
    def agree(self) -> None:
        if hasattr(self, "worlds"):
            self.worlds.check()

    def teardown(self) -> None:
        """The code cache's reference counts are the number of tokens holding each entry."""
        if hasattr(self, "worlds"):
            system = system_of(self.worlds.special.stack)
            held = Counter(id(t.entry) for t in system.tokens.values() if t.entry is not None)
            entries = {id(e): e for e in system.cache.values()}
            entries.update({id(t.entry): t.entry for t in system.tokens.values() if t.entry is not None})
            for key, entry in entries.items():
                assert entry.refcount == held[key], (entry.scenario.name, entry.refcount, held[key])


SpecializedSendMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestSpecializedSend = SpecializedSendMachine.TestCase
