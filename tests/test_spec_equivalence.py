"""Specialized sends against generic sends, for random contexts and payloads.

Each example builds two identical worlds (tests/spec_worlds.py): a socket
with random options, connected or sending to one fixed destination, over
an interface of random MTU, with or without a gateway; the special world
specializes it (debug mode: every call re-checks every assumption). Then
both worlds get the same sends (empty, odd and even lengths, around the
MTU, fragmenting, over 65507, as bytes, bytearray or memoryview) and the
same ICMP errors, and must agree exactly: results and errors, packets byte
for byte, counters, routes and socket state.
"""

from __future__ import annotations

import errno
import random

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pystack.socket import (
    IP_MTU_DISCOVER,
    IP_MULTICAST_TTL,
    IP_PMTUDISC_DO,
    IP_PMTUDISC_DONT,
    IP_PMTUDISC_WANT,
    IP_TOS,
    IP_TTL,
    IPPROTO_IP,
    MSG_DONTROUTE,
    MSG_DONTWAIT,
    MSG_OOB,
    SO_ADU,
    SO_BROADCAST,
    SO_NO_CHECK,
    SO_SNDBUF,
    SOL_SOCKET,
)
from tests.spec_worlds import FAR, ME, PEER, IfaceConf, RouteConf, Worlds

SETTINGS = settings(max_examples=70, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

DESTINATIONS = {
    "peer": (PEER, 9),  # on the link
    "far": (FAR, 4242),  # through the default route
    "subnet-broadcast": ("198.18.0.255", 5000),
    "limited-broadcast": ("255.255.255.255", 67),
    "multicast": ("239.1.2.3", 5353),
    "other-link": ("198.19.0.77", 7),  # eth1
    "loopback": ("127.0.0.1", 9),  # lo: delivered back into the stack
    "self": (ME, 9),  # a local address: through lo too
    "any": ("", 9),  # INADDR_ANY: 127.0.0.1
}


@st.composite
def contexts(draw: st.DrawFn) -> dict:
    dest = draw(st.sampled_from(["peer", "peer", "far", "far", "far", "other-link", "subnet-broadcast",
                                 "limited-broadcast", "multicast", "loopback", "self", "any"]))
    mtu = draw(st.one_of(st.sampled_from([576, 1280, 1500, 9000]), st.integers(576, 9000)))
    options: list[tuple[int, int, int]] = []
    if draw(st.booleans()):
        options.append((IPPROTO_IP, IP_TTL, draw(st.sampled_from([1, 2, 64, 255, -1]))))
    if draw(st.booleans()):
        options.append((IPPROTO_IP, IP_TOS, draw(st.integers(0, 255))))
    if draw(st.booleans()):
        options.append((IPPROTO_IP, IP_MTU_DISCOVER,
                        draw(st.sampled_from([IP_PMTUDISC_DONT, IP_PMTUDISC_WANT, IP_PMTUDISC_DO]))))
    if draw(st.booleans()):
        options.append((SOL_SOCKET, SO_NO_CHECK, 1))
    if "broadcast" in dest and draw(st.sampled_from([True, True, True, False])) or draw(st.booleans()):
        options.append((SOL_SOCKET, SO_BROADCAST, 1))
    if draw(st.booleans()):
        options.append((IPPROTO_IP, IP_MULTICAST_TTL, draw(st.integers(0, 255))))
    sink = draw(st.sampled_from([True, True, False]))
    if not sink or draw(st.booleans()):
        options.append((SOL_SOCKET, SO_SNDBUF, draw(st.sampled_from([0, 3000, 8192, 65536]))))
    adu = 0
    if draw(st.sampled_from([False, False, True])):  # a committed ADU: the sizes fold
        adu = draw(st.one_of(st.sampled_from([1, 1024, mtu - 28, mtu - 27, 8000, 65507]), st.integers(1, 3 * mtu)))
        options.append((SOL_SOCKET, SO_ADU, min(adu, 65507)))
    draw(st.randoms(use_true_random=False)).shuffle(options)
    return {
        "kind": draw(st.sampled_from(["connected", "sendto"])),
        "mtu": mtu,
        "eth1_mtu": draw(st.sampled_from([mtu, 1500, 9000])),
        "routes": draw(st.sampled_from(["gateway", "gateway", "on-link", "none"])),
        "dest": dest,
        "options": options,
        "sink": sink,
        "nonblocking": draw(st.booleans()),
        "flags": draw(st.sampled_from([0] * 6 + [MSG_DONTWAIT, MSG_DONTROUTE, MSG_DONTROUTE, MSG_OOB])),
        "bind": draw(st.sampled_from([None, ("0.0.0.0", 0), (ME, 0), (ME, 6000)])),
        "receiver": draw(st.booleans()),  # a socket bound to port 9 in each world
        "adu": min(adu, 65507),
    }


def sizes_for(mtu: int, adu: int = 0) -> st.SearchStrategy[int]:
    room = mtu - 28  # largest payload in one unfragmented packet
    if adu:  # mostly the committed size, sometimes another (EINVAL)
        return st.one_of(st.just(adu), st.just(adu), st.sampled_from([0, adu - 1, adu + 1, 65508]))
    return st.one_of(
        st.sampled_from([0, 1, 2, 7, 8, room - 1, room, room + 1, room + 2, 2 * room + 9,
                         65507, 65508, 70000]),
        st.integers(0, 3 * mtu),
    )


def payloads(mtu: int, adu: int = 0) -> st.SearchStrategy:
    def build(size_seed_kind: tuple[int, int, str]) -> bytes | bytearray | memoryview:
        size, seed, kind = size_seed_kind
        data = random.Random(seed).randbytes(size)
        if kind == "bytearray":
            return bytearray(data)
        if kind == "memoryview":
            return memoryview(bytearray(b"..." + data))[3:]
        return data

    return st.tuples(sizes_for(mtu, adu), st.integers(0, 2**16),
                     st.sampled_from(["bytes", "bytes", "bytearray", "memoryview"])).map(build)


def make_worlds(ctx: dict) -> Worlds:
    ifaces = (IfaceConf("eth0", ME, mtu=ctx["mtu"], sink=ctx["sink"]),
              IfaceConf("eth1", "198.19.0.2", mtu=ctx["eth1_mtu"]))
    routes = {
        "gateway": (RouteConf("0.0.0.0", 0, "eth0", gateway=PEER),),
        "on-link": (RouteConf("0.0.0.0", 0, "eth0"),),
        "none": (),
    }[ctx["routes"]]
    return Worlds(ifaces=ifaces, routes=routes)


def open_socket(worlds: Worlds, ctx: dict) -> None:
    if ctx["receiver"]:
        worlds.both("receiver on port 9", lambda w: w.stack.bind(w.stack.socket(), ("0.0.0.0", 9)))
    outcome = worlds.open(ctx["kind"], DESTINATIONS[ctx["dest"]], options=ctx["options"], flags=ctx["flags"],
                          nonblocking=ctx["nonblocking"], bind=ctx["bind"])
    event(f"token: {'none, ' + str(outcome) if outcome.error else 'specialized'}")


@SETTINGS
@given(ctx=contexts(), data=st.data())
def test_sends_agree(ctx: dict, data: st.DataObject) -> None:
    worlds = make_worlds(ctx)
    open_socket(worlds, ctx)
    for _ in range(data.draw(st.integers(1, 8), label="sends")):
        outcome = worlds.send(data.draw(payloads(ctx["mtu"], ctx["adu"]), label="payload"))
        event(f"send {outcome}" if outcome.error else "send ok")
        if outcome.errno == errno.EAGAIN and data.draw(st.booleans(), label="drain"):
            worlds.drain("eth0")


@SETTINGS
@given(ctx=contexts(), data=st.data())
def test_pending_errors_agree(ctx: dict, data: st.DataObject) -> None:
    """An ICMP port unreachable makes the next send on a connected socket fail (ECONNREFUSED)
    in both worlds, once; an ICMP fragmentation-needed lowers the path MTU in both."""
    worlds = make_worlds(ctx)
    open_socket(worlds, ctx)
    worlds.send(data.draw(payloads(ctx["mtu"], ctx["adu"]), label="first"))
    if data.draw(st.booleans(), label="port unreachable"):
        worlds.port_unreachable()
    else:
        worlds.frag_needed(data.draw(st.sampled_from([68, 552, 576, 1000, 1400, 1499, 8000]), label="mtu"))
    for _ in range(3):
        worlds.send(data.draw(payloads(ctx["mtu"], ctx["adu"]), label="after"))


def test_port_unreachable_refuses_next_send_once() -> None:
    worlds = Worlds()
    worlds.open("connected", (FAR, 9))
    assert worlds.send(b"ping").value == 4
    worlds.port_unreachable()
    assert worlds.generic.sock.error == errno.ECONNREFUSED
    assert worlds.send(b"ping").errno == errno.ECONNREFUSED
    assert worlds.send(b"ping").value == 4
    assert worlds.info()["mode"] == "specialized"


def test_checksum_zero_goes_out_as_ffff() -> None:
    """A payload whose UDP checksum computes to 0 is sent with 0xFFFF, by both codes."""
    worlds = Worlds()
    worlds.open("connected", (PEER, 9))
    probe = b"checksum" + b"\x00\x00"
    worlds.send(probe)
    checksum = int.from_bytes(worlds.generic.sent["eth0"][-1][26:28], "big")
    total = ~checksum & 0xFFFF  # the folded sum over pseudo-header, header and payload
    word = (0xFFFF - total) % 0xFFFF
    worlds.send(probe[:-2] + word.to_bytes(2, "big"))
    assert worlds.generic.sent["eth0"][-1][26:28] == b"\xff\xff"
    assert worlds.special.sent["eth0"][-1][26:28] == b"\xff\xff"


def test_sendto_port_zero_and_broadcast_refused() -> None:
    worlds = Worlds()
    worlds.open("sendto", ("198.18.0.255", 0))
    assert worlds.send(b"x").errno == errno.EINVAL
    worlds = Worlds()
    worlds.open("sendto", ("198.18.0.255", 9))
    assert worlds.send(b"x").errno == errno.EACCES


def test_sndbuf_fills_then_drains() -> None:
    """No sink: packets wait in the txq and count against SO_SNDBUF; EAGAIN until drained."""
    worlds = Worlds(ifaces=(IfaceConf("eth0", ME, sink=False), IfaceConf("eth1", "198.19.0.2")))
    worlds.open("connected", (PEER, 9), options=[(SOL_SOCKET, SO_SNDBUF, 0)])
    results = [worlds.send(b"x" * 1000) for _ in range(8)]
    assert any(r.errno == errno.EAGAIN for r in results)
    worlds.drain("eth0", limit=2)
    assert worlds.send(b"x" * 1000).value == 1000


def test_inputs_that_are_not_bytes_fail_alike() -> None:
    worlds = Worlds()
    worlds.open("connected", (PEER, 9))
    for data in ("text", 5, None, [1, 2, 3], 3.5, b"ok"):
        worlds.send(data)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["connected", "sendto"])
def test_sends_to_ourselves_come_back_in(kind: str) -> None:
    """Through lo, a datagram is delivered (or answered with a port unreachable) during the
    send: both codes see the same re-entrant input."""
    worlds = Worlds()
    worlds.both("receiver", lambda w: w.stack.bind(w.stack.socket(), ("0.0.0.0", 9)))
    worlds.open(kind, (ME, 9))
    assert worlds.send(b"to me").value == 5
    assert len(worlds.generic.stack.sockets[3].rcvq) == 1
    worlds.both("close receiver", lambda w: w.stack.close(3))
    worlds.send(b"nobody")  # port unreachable, through lo: the connected socket gets ECONNREFUSED
    outcome = worlds.send(b"again")
    assert outcome.errno == (errno.ECONNREFUSED if kind == "connected" else None)


# ---------------------------------------------------------------- histories the state machine found


@pytest.mark.parametrize("kind", ["connected", "sendto"])
def test_learnt_path_mtu_then_expiry(kind: str) -> None:
    """The code specialized for a learnt path MTU checks its expiry; once expired, the send
    drops the exception route (once) and goes by the route beneath, as the generic code."""
    worlds = Worlds()
    worlds.open(kind, (FAR, 9), policy={"route": "respecialize"})
    worlds.frag_needed(1000)
    worlds.send(b"x")  # connected: the pending EMSGSIZE
    worlds.send(b"x" * 1400)
    assert worlds.info()["mode"] == "specialized"
    worlds.advance(601)
    for _ in range(3):
        assert worlds.send(b"x" * 1400).value == 1400
    assert len(worlds.generic.stack.routes.routes()) == len(worlds.special.stack.routes.routes())


def test_respecialize_after_close_gives_ebadf() -> None:
    worlds = Worlds()
    worlds.open("connected", (FAR, 9), policy={"close": "respecialize"})
    worlds.close()
    assert worlds.send(b"x").errno == errno.EBADF
    assert worlds.info()["mode"] == "specialized"  # code that raises EBADF


def test_sendto_after_connect_and_disconnect_binds_as_the_generic_send() -> None:
    """connect(AF_UNSPEC) unbinds an implicitly bound socket: the next send binds it again,
    and the token's code must not have folded port 0 in."""
    worlds = Worlds()
    worlds.open("sendto", ("198.19.0.77", 7), policy={"connect": "respecialize"})
    worlds.connect((PEER, 9))
    worlds.connect(None)
    assert worlds.generic.sock.local_port == 0
    worlds.send(b"first")  # binds, in both worlds
    assert worlds.special.sock.local_port != 0
    worlds.send(b"second")
    assert worlds.info()["mode"] == "specialized"


@pytest.mark.parametrize(("mtu", "adu"), [(1500, 1), (1500, 1024), (1500, 1472), (1500, 1473), (1500, 4000),
                                          (9000, 8000), (9000, 8972), (1500, 65507)])
@pytest.mark.parametrize("kind", ["connected", "sendto"])
def test_committed_adu_sends_agree(mtu: int, adu: int, kind: str) -> None:
    """With SO_ADU the residual computes every size once (linear or paged buffers, the
    fragments): the ADU-sized sends, and the ones of other sizes it refuses, agree."""
    worlds = Worlds(ifaces=(IfaceConf("eth0", ME, mtu=mtu),))
    worlds.open(kind, (PEER, 9), options=[(SOL_SOCKET, SO_ADU, adu)])
    assert worlds.info()["mode"] == "specialized"
    for size in (adu, adu, adu - 1, adu + 1, adu):
        worlds.send(random.Random(size).randbytes(size))
    datagram = adu + 8
    per_send = 1 if datagram + 20 <= mtu else -(-datagram // ((mtu - 20) & ~7))
    assert len(worlds.special.sent["eth0"]) == 3 * per_send  # the three ADU-sized sends went out
