"""What each guard policy does, the local system, the code cache, and debug mode.

One test per policy (thesis 4.1.1 and the LCN paper): ``reject`` refuses
the application's change (EBUSY) and leaves the option as it was;
``fallback`` switches the token to the generic code; ``respecialize``
produces new code for the new value; ``reinforce`` keeps the code and
steers its output to the route's new interface when every fact the code
folded from the old route holds for the new one, and otherwise has the
code re-specialized. Output is checked against the generic code in a twin
world (tests/spec_worlds.py) throughout.
"""

from __future__ import annotations

import ast
import errno

import pytest

from pystack.addr import aton
from pystack.links.virtual import VirtualNetwork
from pystack.route import Route
from pystack.socket import (
    F_SETFL,
    IP_TOS,
    IP_TTL,
    IPPROTO_IP,
    O_NONBLOCK,
    SO_RCVBUF,
    SOL_SOCKET,
)
from pystack.stack import Stack
from pystack.tokens.system import StaleSpecialization, system_of
from specializer import (
    do_default_send,
    do_specialize_send,
    do_specialize_sendto,
    done_specialize_send,
    make_local_system,
    re_specialize_send,
    specialized_send,
    specialized_sendto,
    token_info,
)
from tests.spec_worlds import FAR, ME, ME1, PEER, PEER1, IfaceConf, Rejected, RouteConf, Worlds

FAR_NET = "198.18.7.0"


def ttl_of(packet: bytes) -> int:
    return packet[8]


def constants_in(source: str) -> set:
    return {node.value for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Constant)}


# ---------------------------------------------------------------- reject


def test_reject_refuses_the_change_with_ebusy_and_leaves_the_option() -> None:
    worlds = Worlds()
    worlds.open("connected", (FAR, 9), policy={"setsockopt": "reject", "fcntl": "reject"})
    stack, fd, token = worlds.special.stack, worlds.special.fd, worlds.special.token
    with pytest.raises(OSError) as refused:
        stack.setsockopt(fd, IPPROTO_IP, IP_TTL, 5)
    assert refused.value.errno == errno.EBUSY
    assert stack.getsockopt(fd, IPPROTO_IP, IP_TTL) == 64
    with pytest.raises(OSError) as refused:
        stack.fcntl(fd, F_SETFL, O_NONBLOCK)
    assert refused.value.errno == errno.EBUSY
    assert stack.fcntl(fd, 3) == 0  # F_GETFL: still blocking
    info = token_info(stack, token)
    assert info["mode"] == "specialized"
    assert info["events"] == ["rejected setsockopt", "rejected fcntl"]
    worlds.send(b"after")  # the generic world never got the change either: same packets
    assert ttl_of(worlds.special.sent["eth0"][-1]) == 64


def test_reject_lets_options_the_code_does_not_depend_on_through() -> None:
    worlds = Worlds()
    worlds.open("connected", (FAR, 9), policy={"setsockopt": "reject"})
    worlds.setsockopt(SOL_SOCKET, SO_RCVBUF, 65536)  # no assumption mentions rcvbuf
    assert worlds.info()["events"] == []
    with pytest.raises(Rejected):
        worlds.setsockopt(IPPROTO_IP, IP_TOS, 0x10)
    worlds.send(b"x")


def test_released_token_lets_the_change_through() -> None:
    worlds = Worlds()
    worlds.open("connected", (FAR, 9), policy={"setsockopt": "reject"})
    worlds.done()
    worlds.setsockopt(IPPROTO_IP, IP_TTL, 5)
    worlds.specialize()
    worlds.send(b"x")
    assert ttl_of(worlds.special.sent["eth0"][-1]) == 5


# ---------------------------------------------------------------- fallback


def test_fallback_switches_to_generic_code() -> None:
    worlds = Worlds()
    worlds.open("connected", (FAR, 9), policy={"setsockopt": "fallback"})
    worlds.send(b"before")
    worlds.setsockopt(IPPROTO_IP, IP_TTL, 5)
    info = worlds.info()
    assert info["mode"] == "generic"
    assert info["source"] is None
    assert info["events"] == ["fell back to generic code on setsockopt"]
    worlds.send(b"after")
    assert [ttl_of(p) for p in worlds.special.sent["eth0"]] == [64, 5]


def test_fallback_on_close_gives_ebadf() -> None:
    worlds = Worlds()
    worlds.open("sendto", (PEER, 9), policy={"close": "fallback"})
    worlds.close()
    assert worlds.info()["mode"] == "generic"
    assert worlds.send(b"x").errno == errno.EBADF


# ---------------------------------------------------------------- respecialize


def test_respecialize_makes_new_code_for_the_new_value() -> None:
    worlds = Worlds()
    worlds.open("connected", (FAR, 9), policy={"setsockopt": "respecialize"},
                options=[(IPPROTO_IP, IP_TTL, 77)])
    before = worlds.info()["source"]
    assert 77 in constants_in(before) and 123 not in constants_in(before)
    worlds.setsockopt(IPPROTO_IP, IP_TTL, 123)
    assert worlds.info()["mode"] == "stale"  # specialized again on the next call
    worlds.send(b"x")
    info = worlds.info()
    assert info["mode"] == "specialized"
    assert info["events"] == ["stale after setsockopt", "respecialized"]
    assert 123 in constants_in(info["source"]) and 77 not in constants_in(info["source"])
    assert ttl_of(worlds.special.sent["eth0"][-1]) == 123


def test_explicit_re_specialize_send() -> None:
    worlds = Worlds()
    worlds.open("connected", (FAR, 9), policy={"setsockopt": "fallback"})
    worlds.setsockopt(IPPROTO_IP, IP_TTL, 9)
    assert worlds.info()["mode"] == "generic"
    worlds.respecialize()
    assert worlds.info()["mode"] == "specialized"
    assert 9 in constants_in(worlds.info()["source"])
    worlds.send(b"x")


# ---------------------------------------------------------------- reinforce

TWO_LINKS = (IfaceConf("eth0", ME), IfaceConf("eth1", ME1))


def test_reinforce_steers_a_connected_socket_to_another_interface() -> None:
    """A connected socket's source address is its own (fixed at connect time): with the
    same MTU, a route through eth1 changes nothing the code folded but the interface."""
    worlds = Worlds(ifaces=TWO_LINKS)
    worlds.open("connected", (FAR, 9), policy={"route": "reinforce"})
    before = worlds.info()["source"]
    worlds.send(b"via eth0")
    worlds.add_route(RouteConf(FAR_NET, 24, "eth1", gateway=PEER1))
    info = worlds.info()
    assert info["mode"] == "specialized"
    assert info["events"] == ["reinforced: output steered to eth1"]
    assert info["source"] == before  # the same code
    worlds.send(b"via eth1")
    assert len(worlds.special.sent["eth0"]) == 1
    assert len(worlds.special.sent["eth1"]) == 1
    worlds.send(b"x" * 4000)  # fragments go the same way
    assert len(worlds.special.sent["eth1"]) == 4


def test_reinforce_steers_sendto_when_source_and_mtu_stay() -> None:
    """For sendto the source address comes from the route: a route through eth1 that keeps
    eth0's address as its source (and the same MTU) can be reinforced."""
    worlds = Worlds(ifaces=TWO_LINKS)
    worlds.open("sendto", (FAR, 9), policy={"route": "reinforce"})
    worlds.add_route_object("far-net via eth1, src eth0", lambda stack: Route(
        aton(FAR_NET), 24, stack.interfaces["eth1"], gateway=aton(PEER1), src=aton(ME)))
    assert worlds.info()["events"] == ["reinforced: output steered to eth1"]
    worlds.send(b"steered")
    assert len(worlds.special.sent["eth1"]) == 1
    assert worlds.special.sent["eth1"][0][12:16] == aton(ME).to_bytes(4, "big")


def test_reinforce_gives_way_when_the_source_changes() -> None:
    worlds = Worlds(ifaces=TWO_LINKS)
    worlds.open("sendto", (FAR, 9), policy={"route": "reinforce"})
    worlds.add_route(RouteConf(FAR_NET, 24, "eth1", gateway=PEER1))  # source: eth1's address
    assert worlds.info()["mode"] == "stale"
    worlds.send(b"x")
    assert worlds.info()["events"] == ["stale after route", "respecialized"]
    assert worlds.special.sent["eth1"][0][12:16] == aton(ME1).to_bytes(4, "big")


@pytest.mark.parametrize("kind", ["connected", "sendto"])
def test_reinforce_gives_way_when_the_mtu_changes(kind: str) -> None:
    worlds = Worlds(ifaces=(IfaceConf("eth0", ME), IfaceConf("eth1", ME1, mtu=9000)))
    worlds.open(kind, (FAR, 9), policy={"route": "reinforce"})
    worlds.add_route_object("far-net via eth1 (mtu 9000), src eth0", lambda stack: Route(
        aton(FAR_NET), 24, stack.interfaces["eth1"], gateway=aton(PEER1), src=aton(ME)))
    assert worlds.info()["mode"] == "stale"
    worlds.send(b"x" * 4000)  # one packet on eth1's 9000-byte MTU, not three fragments
    assert len(worlds.special.sent["eth1"]) == 1
    assert 9000 in constants_in(worlds.info()["source"])  # the new path MTU, folded


def test_reinforce_gives_way_on_a_learnt_path_mtu() -> None:
    worlds = Worlds()
    worlds.open("connected", (FAR, 9), policy={"route": "reinforce"})
    worlds.frag_needed(1000)
    worlds.send(b"x")  # the socket's pending EMSGSIZE
    worlds.send(b"x" * 1400)
    assert worlds.info()["mode"] == "specialized"
    assert len(worlds.special.sent["eth0"]) == 2  # two fragments for the 1000-byte path MTU


def test_reinforce_needs_a_sink_where_there_was_one() -> None:
    """eth1 has no sink (packets wait in its txq): the code that calls eth0's sink cannot
    be steered there."""
    worlds = Worlds(ifaces=(IfaceConf("eth0", ME), IfaceConf("eth1", ME1, sink=False)))
    worlds.open("connected", (FAR, 9), policy={"route": "reinforce"})
    worlds.add_route(RouteConf(FAR_NET, 24, "eth1", gateway=PEER1))
    assert worlds.info()["mode"] == "stale"
    worlds.send(b"queued")
    assert len(worlds.special.stack.interfaces["eth1"].txq) == 1


# ---------------------------------------------------------------- the local system


def test_make_local_system_gives_generic_code() -> None:
    worlds = Worlds()
    make_local_system(worlds.special.stack)
    worlds.open("connected", (FAR, 9))
    info = worlds.info()
    assert info["mode"] == "generic" and info["source"] is None
    worlds.send(b"x")
    worlds.respecialize()
    assert worlds.info()["mode"] == "generic"
    worlds.send(b"y")
    assert system_of(worlds.special.stack).cache == {}


# ---------------------------------------------------------------- the code cache


def bench() -> tuple[Stack, list[bytes]]:
    net = VirtualNetwork()
    stack = net.add_stack(seed=3)
    out = net.attach(stack, "eth0", ME, 24).sent
    stack.add_route("0.0.0.0", 0, "eth0", gateway=PEER)
    return stack, out


def connected_socket(stack: Stack, port: int = 9) -> int:
    fd = stack.socket()
    stack.connect(fd, (FAR, port))
    return fd


def test_tokens_for_the_same_context_share_one_entry() -> None:
    stack, _ = bench()
    fd = connected_socket(stack)
    system = system_of(stack)
    first = do_specialize_send(stack, fd)
    second = do_specialize_send(stack, fd, policy={"setsockopt": "fallback"})
    entry = system.tokens[first].entry
    assert entry is not None and system.tokens[second].entry is entry
    assert (system.misses, system.hits, entry.refcount) == (1, 1, 2)
    assert len(system.cache) == 1
    done_specialize_send(stack, first)
    assert entry.refcount == 1
    done_specialize_send(stack, second)
    assert entry.refcount == 0
    assert entry.key in system.cache  # kept for the next request, until evicted
    third = do_specialize_send(stack, fd)
    assert system.tokens[third].entry is entry and system.hits == 2


def test_another_context_is_another_entry() -> None:
    stack, _ = bench()
    fd = connected_socket(stack)
    system = system_of(stack)
    first = do_specialize_send(stack, fd)
    second = do_specialize_send(stack, fd, flags=0x40)  # MSG_DONTWAIT
    assert system.tokens[first].entry is not system.tokens[second].entry
    other = do_specialize_send(stack, connected_socket(stack, 10))
    assert system.tokens[other].entry not in (system.tokens[first].entry, system.tokens[second].entry)
    assert len(system.cache) == 3


def test_eviction_drops_only_unreferenced_entries_beyond_capacity() -> None:
    stack, _ = bench()
    system = system_of(stack)
    system.capacity = 2
    held = do_specialize_send(stack, connected_socket(stack, 1))
    held_entry = system.tokens[held].entry
    released = []
    for port in (2, 3, 4):
        token = do_specialize_send(stack, connected_socket(stack, port))
        released.append(system.tokens[token].entry)
        done_specialize_send(stack, token)
    # least recently used first: the held entry stays, the oldest released ones go
    assert list(system.cache.values()) == [held_entry, released[-1]]
    assert held_entry.refcount == 1


def test_eviction_never_drops_the_entry_it_hands_out() -> None:
    """Over capacity with every older entry in use, a new entry is still cached (and
    shared by the next token for its context)."""
    stack, _ = bench()
    system = system_of(stack)
    system.capacity = 1
    do_specialize_send(stack, connected_socket(stack, 1))
    fd = connected_socket(stack, 2)
    first = do_specialize_send(stack, fd)
    second = do_specialize_send(stack, fd)
    assert system.tokens[first].entry is system.tokens[second].entry


def test_done_token_is_gone() -> None:
    stack, _ = bench()
    fd = connected_socket(stack)
    token = do_specialize_send(stack, fd)
    done_specialize_send(stack, token)
    for call in (specialized_send, do_default_send):
        with pytest.raises(OSError) as gone:
            call(stack, token, b"x")
        assert gone.value.errno == errno.EINVAL
    with pytest.raises(OSError):
        re_specialize_send(stack, token)


# ---------------------------------------------------------------- debug mode


def test_debug_mode_catches_a_change_no_guard_saw() -> None:
    """A socket field changed behind the stack's back, past even the guards on the data
    (straight into the instance dictionary): the debug token refuses to run code whose
    assumption broke; a non-debug token would send stale packets."""
    stack, out = bench()
    fd = connected_socket(stack)
    checked = do_specialize_send(stack, fd, debug=True)
    unchecked = do_specialize_send(stack, fd)
    assert specialized_send(stack, checked, b"x") == 1
    vars(stack.sockets[fd])["ttl"] = 5  # bypasses setsockopt and the field's watch: no guard acts
    with pytest.raises(StaleSpecialization, match="ttl"):
        specialized_send(stack, checked, b"x")
    specialized_send(stack, unchecked, b"x")
    assert ttl_of(out[-1]) == 64  # what a missing guard costs: the generic code would send 5
    stack.send(fd, b"x")
    assert ttl_of(out[-1]) == 5


def test_debug_mode_catches_a_route_changed_in_place() -> None:
    stack, _ = bench()
    fd = connected_socket(stack)
    token = do_specialize_send(stack, fd, debug=True)
    vars(stack.routes.lookup(aton(FAR)))["mtu"] = 1000  # in place: no route event, no watch
    with pytest.raises(StaleSpecialization, match="mtu"):
        specialized_send(stack, token, b"x")


def test_debug_mode_passes_when_guards_act() -> None:
    stack, _ = bench()
    fd = stack.socket()
    token = do_specialize_sendto(stack, fd, (FAR, 9), debug=True, policy={"setsockopt": "respecialize"})
    stack.setsockopt(fd, IPPROTO_IP, IP_TTL, 5)
    stack.add_route(FAR_NET, 24, "eth0", gateway=PEER)
    assert specialized_sendto(stack, token, b"x") == 1


def test_a_stack_with_tokens_is_collected_with_its_system() -> None:
    """The system lives in the stack: dropping the stack frees both (no global map keeps it)."""
    import gc
    import weakref

    worlds = Worlds()
    worlds.open("connected", (FAR, 9))
    worlds.send(b"x")
    stack_ref = weakref.ref(worlds.special.stack)
    system_ref = weakref.ref(system_of(worlds.special.stack))
    del worlds
    gc.collect()
    assert stack_ref() is None and system_ref() is None
