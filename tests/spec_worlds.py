"""Two identical worlds for the specializer's equivalence tests.

The contract of the specializer (DESIGN.md, "Equivalence is the
contract"): for every context and every input, specialized code emits the
same packets and gives the same results, errors included, as the generic
code, and still does after any event that breaks one of its invariants.

:class:`Worlds` builds two stacks that are identical down to their random
seed and virtual clock: the *generic* world is driven through the fd API
(``stack.send``, ``stack.sendto``), the *special* world through the token
API with ``debug=True``, so that an assumption broken without a guard
acting raises :class:`~specializer.system.StaleSpecialization` at once.
Every operation goes to both worlds, and :meth:`Worlds.check` then
compares what can be seen: the outcome (value, or exception type and
errno), the packets each interface emitted (byte for byte: the IP ID is
deterministic since both stacks have the same seed and history), the
packets waiting in the transmit queues of interfaces without a sink, the
counters, the route tables and the socket's state.

Application events (setsockopt, fcntl, connect, bind, shutdown, close)
go to the special world first: when a guard there rejects the change
(EBUSY, the ``reject`` policy), the generic world does not get it either,
so that both keep the same state.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from scapy.all import ICMP, IP, UDP

from pystack.addr import aton, ntoa
from pystack.links.virtual import VirtualNetwork
from pystack.route import Route
from pystack.socket import F_SETFL, O_NONBLOCK, Socket
from pystack.stack import Stack
from pystack.tokens.system import StaleSpecialization, system_of
from specializer import (
    do_specialize_send,
    do_specialize_sendto,
    done_specialize_send,
    done_specialize_sendto,
    re_specialize_send,
    re_specialize_sendto,
    specialized_send,
    specialized_sendto,
    token_info,
)

Address = tuple[str, int]

ME = "198.18.0.2"  # eth0, 198.18.0.0/24
PEER = "198.18.0.1"  # on eth0's link, and its default gateway
ME1 = "198.19.0.2"  # eth1, 198.19.0.0/24
PEER1 = "198.19.0.1"
FAR = "198.18.7.9"  # off-link: through a gateway

# Socket fields that are the stack's private bookkeeping, not behaviour: the
# route cache (reinforcement re-bases it in the special world, the generic
# world refreshes it lazily on its next send), and hooks.
PRIVATE_SOCKET_FIELDS = frozenset({"dst_cache", "dst_generation", "waker", "tcb"})


@dataclass(frozen=True)
class IfaceConf:
    name: str
    address: str
    prefixlen: int = 24
    mtu: int = 1500
    sink: bool = True  # False: packets wait in the interface's txq (and count against SO_SNDBUF)


@dataclass(frozen=True)
class RouteConf:
    destination: str
    prefixlen: int
    iface: str
    gateway: str | None = None
    mtu: int = 0


DEFAULT_IFACES = (IfaceConf("eth0", ME), IfaceConf("eth1", ME1))
DEFAULT_ROUTES = (RouteConf("0.0.0.0", 0, "eth0", gateway=PEER),)


@dataclass(frozen=True)
class Outcome:
    """What an operation gave: a value, or an exception as (type, errno)."""

    value: Any = None
    error: tuple[type, int | None] | None = None

    @classmethod
    def of(cls, operation: Callable[[], Any]) -> Outcome:
        try:
            return cls(value=operation())
        except StaleSpecialization:
            raise  # a guard did not act: that is a failure of the test, not an outcome
        except AssertionError:
            raise
        except Exception as exc:  # noqa: BLE001 - every exception is an outcome to compare
            return cls(error=(type(exc), getattr(exc, "errno", None)))

    @property
    def errno(self) -> int | None:
        return self.error[1] if self.error else None

    def __str__(self) -> str:
        if self.error is None:
            return f"-> {self.value!r}"
        kind, code = self.error
        return f"raises {kind.__name__}({errno.errorcode.get(code, code) if code else ''})"


class Rejected(Exception):
    """The special world's guard refused an application event (EBUSY): nobody applied it."""


class World:
    """One stack on a virtual network, with packets kept per interface (its port's ``sent``)."""

    def __init__(self, ifaces: Sequence[IfaceConf], routes: Sequence[RouteConf], seed: int,
                 default_ttl: int = 64):
        self.net = VirtualNetwork()
        self.clock = self.net.clock
        self.stack = self.net.add_stack(seed=seed, default_ttl=default_ttl)
        self.sent: dict[str, list[bytes]] = {}
        for conf in ifaces:
            if conf.sink:
                self.sent[conf.name] = self.net.attach(self.stack, conf.name, conf.address, conf.prefixlen,
                                                       mtu=conf.mtu).sent
            else:  # not on the network: its packets wait in the interface's txq
                self.stack.add_interface(conf.name, conf.address, conf.prefixlen, mtu=conf.mtu)
        for route in routes:
            self.stack.add_route(route.destination, route.prefixlen, route.iface, route.gateway, route.mtu)
        self.fd = -1
        self.token: int | None = None
        self.second: int | None = None  # another token for the same socket and context

    @property
    def sock(self) -> Socket | None:
        return self.stack.sockets.get(self.fd)

    def observable(self) -> dict[str, Any]:
        """Everything the two worlds must agree on (Route objects reduced to their fields)."""
        stack = self.stack
        state: dict[str, Any] = {
            "sent": {name: list(packets) for name, packets in self.sent.items()},
            "txq": {name: [bytes(skb.data) for skb, _ in iface.txq] for name, iface in stack.interfaces.items()},
            "tx_packets": {name: iface.tx_packets for name, iface in stack.interfaces.items()},
            "counters": stack.counters.snapshot(),
            "routes": sorted(_route_fields(r) for r in stack.routes.routes()),
            "route_generation": stack.routes.generation,
            "ip_ident": stack._ident,
            "fds": sorted(stack.sockets),
        }
        for fd, sock in stack.sockets.items():
            state[f"socket {fd}"] = socket_state(sock)
        return state


def socket_state(sock: Socket) -> dict[str, Any]:
    return {name: value for name, value in vars(sock).items() if name not in PRIVATE_SOCKET_FIELDS}


def _route_fields(route: Route) -> tuple:
    return (route.prefix, route.prefixlen, route.iface.name, route.gateway, route.mtu, route.src,
            route.kind, route.expires, route.mtu_locked)


class EquivalenceError(AssertionError):
    pass


@dataclass
class Worlds:
    """A generic world and a special world, driven in lock step."""

    ifaces: Sequence[IfaceConf] = DEFAULT_IFACES
    routes: Sequence[RouteConf] = DEFAULT_ROUTES
    seed: int = 7
    debug: bool = True
    default_ttl: int = 64
    log: list[str] = field(default_factory=list)  # what was done, for failure messages

    def __post_init__(self) -> None:
        self.generic = World(self.ifaces, self.routes, self.seed, self.default_ttl)
        self.special = World(self.ifaces, self.routes, self.seed, self.default_ttl)
        self.kind: str | None = None  # "connected" or "sendto"
        self.dest: Address | None = None
        self.flags = 0
        self.policy: dict[str, str] | None = None

    @property
    def worlds(self) -> tuple[World, World]:
        return self.generic, self.special

    # ------------------------------------------------------------ comparing

    def compare(self, what: str, generic: Outcome, special: Outcome) -> Outcome:
        self.log.append(f"{what}: {generic}")
        if generic != special:
            self.fail(f"{what}: generic {generic}, specialized {special}")
        self.check()
        return generic

    def check(self) -> None:
        """Both worlds must look the same from outside."""
        a, b = self.generic.observable(), self.special.observable()
        if a == b:
            return
        for key in sorted(a.keys() | b.keys()):
            if a.get(key) != b.get(key):
                self.fail(f"worlds differ in {key}:\n{_difference(a.get(key), b.get(key))}")

    def fail(self, message: str) -> None:
        history = "\n    ".join(self.log[-25:])
        source = ""
        if self.special.token is not None and self.special.token in system_of(self.special.stack).tokens:
            info = token_info(self.special.stack, self.special.token)
            source = f"\n  token: mode {info['mode']}, events {info['events']}\n{info['source']}"
        raise EquivalenceError(f"{message}\n  history:\n    {history}{source}")

    def both(self, what: str, operation: Callable[[World], Any]) -> Outcome:
        """The same operation in both worlds (not an application event: nothing to reject)."""
        return self.compare(what, Outcome.of(lambda: operation(self.generic)),
                            Outcome.of(lambda: operation(self.special)))

    def event(self, what: str, operation: Callable[[World], Any]) -> Outcome:
        """An application event: the special world first; if a guard rejects it, neither applies it."""
        tokens = system_of(self.special.stack).tokens
        rejected_before = sum(e.startswith("rejected") for t in tokens.values() for e in t.events)
        special = Outcome.of(lambda: operation(self.special))
        rejected = sum(e.startswith("rejected") for t in tokens.values() for e in t.events) > rejected_before
        if rejected:
            if special.errno != errno.EBUSY:
                self.fail(f"{what}: a guard rejected it but the caller got {special}")
            self.log.append(f"{what}: rejected (EBUSY)")
            self.check()
            raise Rejected(what)
        generic = Outcome.of(lambda: operation(self.generic))
        return self.compare(what, generic, special)

    # ------------------------------------------------------------ the socket and its token

    def open(self, kind: str, dest: Address, options: Sequence[tuple[int, int, int | bytes]] = (),
             policy: dict[str, str] | None = None, flags: int = 0, nonblocking: bool = False,
             bind: Address | None = None) -> Outcome:
        """A UDP socket in both worlds, options set, connected (``kind="connected"``) or not
        (``"sendto"``, to the fixed ``dest``), then specialized in the special world.

        The outcome is that of the set-up (an error if connect or an option failed:
        then there is no token, and sends are compared as generic against generic).
        """
        self.kind, self.dest, self.flags, self.policy = kind, dest, flags, policy
        for world in self.worlds:
            world.fd = world.stack.socket()
        if nonblocking:
            self.both("fcntl O_NONBLOCK", lambda w: w.stack.fcntl(w.fd, F_SETFL, O_NONBLOCK))
        for level, option, value in options:
            self.both(f"setsockopt({level}, {option}, {value!r})",
                      lambda w, lv=level, op=option, v=value: w.stack.setsockopt(w.fd, lv, op, v))
        if bind is not None:
            self.both(f"bind {bind}", lambda w: w.stack.bind(w.fd, bind))
        if kind == "connected":
            outcome = self.both(f"connect {dest}", lambda w: w.stack.connect(w.fd, dest))
            if outcome.error:
                return outcome
        elif kind != "sendto":
            raise ValueError(kind)
        return self.specialize()

    def specialize(self) -> Outcome:
        """A new token in the special world (the generic world has nothing to do, except the
        implicit bind of do_specialize_sendto, which is mirrored)."""
        special = self.special
        stack = special.stack
        if self.kind == "connected":
            outcome = Outcome.of(lambda: do_specialize_send(stack, special.fd, flags=self.flags,
                                                            policy=self.policy, debug=self.debug))
        else:
            assert self.dest is not None
            generic = self.generic
            if generic.sock is not None and not generic.sock.local_port:
                # do_specialize_sendto binds now, as the first send would: so does the generic world.
                Outcome.of(lambda: generic.stack.bind(generic.fd, ("0.0.0.0", 0)))
            outcome = Outcome.of(lambda: do_specialize_sendto(stack, special.fd, self.dest, flags=self.flags,
                                                              policy=self.policy, debug=self.debug))
        special.token = outcome.value if outcome.error is None else None
        self.log.append(f"specialize {self.kind} {self.dest} policy={self.policy}: {outcome}")
        self.check()
        return outcome

    def send(self, data: bytes | bytearray | memoryview, second: bool = False) -> Outcome:
        """One send in both worlds: the generic call, and the token's specialized call
        (the second token's, if asked and there is one)."""
        what = f"send {type(data).__name__}[{len(data) if hasattr(data, '__len__') else '?'}]"
        generic, special = self.generic, self.special
        token = special.second if second and special.second is not None else special.token
        if second:
            what += " (second token)"
        if self.kind == "connected":
            g = Outcome.of(lambda: generic.stack.send(generic.fd, data, self.flags))
            if token is None:
                s = Outcome.of(lambda: special.stack.send(special.fd, data, self.flags))
            else:
                s = Outcome.of(lambda: specialized_send(special.stack, token, data))
        else:
            g = Outcome.of(lambda: generic.stack.sendto(generic.fd, data, self.flags, self.dest))
            if token is None:
                s = Outcome.of(lambda: special.stack.sendto(special.fd, data, self.flags, self.dest))
            else:
                s = Outcome.of(lambda: specialized_sendto(special.stack, token, data))
        return self.compare(what, g, s)

    def second_token(self, policy: dict[str, str] | None) -> Outcome:
        """Another token for the same socket and context, with its own guard policies (it
        shares the first one's code when the context has not changed since)."""
        special = self.special
        system = system_of(special.stack)
        if special.second is not None and special.second in system.tokens:
            system.close(special.second)
        stack = special.stack
        if self.kind == "connected":
            outcome = Outcome.of(lambda: do_specialize_send(stack, special.fd, flags=self.flags,
                                                            policy=policy, debug=self.debug))
        else:
            assert self.dest is not None
            generic = self.generic
            if generic.sock is not None and not generic.sock.local_port:
                Outcome.of(lambda: generic.stack.bind(generic.fd, ("0.0.0.0", 0)))
            outcome = Outcome.of(lambda: do_specialize_sendto(stack, special.fd, self.dest, flags=self.flags,
                                                              policy=policy, debug=self.debug))
        special.second = outcome.value if outcome.error is None else None
        self.log.append(f"second token policy={policy}: {outcome}")
        self.check()
        return outcome

    def respecialize(self) -> None:
        special = self.special
        if special.token is None:
            return
        if self.kind == "connected":
            Outcome.of(lambda: re_specialize_send(special.stack, special.token))
        else:
            Outcome.of(lambda: re_specialize_sendto(special.stack, special.token))
        self.log.append("re_specialize")
        self.check()

    def done(self) -> None:
        special = self.special
        if special.token is None:
            return
        if self.kind == "connected":
            done_specialize_send(special.stack, special.token)
        else:
            done_specialize_sendto(special.stack, special.token)
        special.token = None
        self.log.append("done_specialize")
        self.check()

    def info(self) -> dict[str, Any] | None:
        token = self.special.token
        return None if token is None else token_info(self.special.stack, token)

    # ------------------------------------------------------------ application events

    def setsockopt(self, level: int, option: int, value: int | bytes) -> Outcome:
        return self.event(f"setsockopt({level}, {option}, {value!r})",
                          lambda w: w.stack.setsockopt(w.fd, level, option, value))

    def fcntl(self, flags: int) -> Outcome:
        return self.event(f"fcntl F_SETFL {flags:#o}", lambda w: w.stack.fcntl(w.fd, F_SETFL, flags))

    def connect(self, address: Address | None) -> Outcome:
        outcome = self.event(f"connect {address}", lambda w: w.stack.connect(w.fd, address))
        return outcome

    def close(self) -> Outcome:
        return self.event("close", lambda w: w.stack.close(w.fd))

    # ------------------------------------------------------------ the system around

    def add_route(self, route: RouteConf) -> Outcome:
        return self.both(f"add route {route}", lambda w: w.stack.add_route(
            route.destination, route.prefixlen, route.iface, route.gateway, route.mtu) and None)

    def add_route_object(self, what: str, make: Callable[[Stack], Route]) -> Outcome:
        """Add a route built by ``make`` (for fields add_route has no argument for, like src)."""
        return self.both(what, lambda w: w.stack.routes.add(make(w.stack)) and None)

    def remove_route(self, destination: str, prefixlen: int) -> Outcome:
        return self.both(f"remove route {destination}/{prefixlen}",
                         lambda w: w.stack.routes.remove(aton(destination), prefixlen) and None)

    def advance(self, seconds: float) -> None:
        for world in self.worlds:
            world.clock.advance(seconds)
        self.log.append(f"clock +{seconds}")

    def drain(self, iface: str, limit: int | None = None) -> Outcome:
        return self.both(f"drain {iface}", lambda w: w.stack.interfaces[iface].drain(limit))

    def icmp_error(self, kind: int, code: int, nexthopmtu: int = 0, iface: str = "eth0",
                   source: str = PEER) -> Outcome:
        """An ICMP error about a datagram our socket sent to its peer, arriving in both worlds."""
        sock = self.generic.sock
        if sock is None:
            return Outcome()
        if sock.connected:
            dst, dport = sock.remote_addr, sock.remote_port
        else:
            assert self.dest is not None
            dst, dport = Stack._destination(self.dest)  # as sendto reads it ("" is 127.0.0.1)
        src = sock.local_addr or self.generic.stack.interfaces[iface].address
        quote = bytes(IP(src=ntoa(src), dst=ntoa(dst), ttl=64, id=1) / UDP(sport=sock.local_port, dport=dport))
        message = ICMP(type=kind, code=code, nexthopmtu=nexthopmtu) if kind == 3 and code == 4 \
            else ICMP(type=kind, code=code)
        packet = bytes(IP(src=source, dst=ntoa(self.generic.stack.interfaces[iface].address)) / message / quote)
        return self.both(f"icmp {kind}/{code} mtu={nexthopmtu} via {iface}",
                         lambda w: w.stack.input(packet, iface))

    def port_unreachable(self, iface: str = "eth0") -> Outcome:
        return self.icmp_error(3, 3, iface=iface)

    def frag_needed(self, mtu: int, iface: str = "eth0") -> Outcome:
        return self.icmp_error(3, 4, nexthopmtu=mtu, iface=iface)

    def mutate_socket(self, **fields: Any) -> None:
        """Change socket fields behind the stack's back in both worlds (no event is announced)."""
        for world in self.worlds:
            for name, value in fields.items():
                setattr(world.sock, name, value)


def _difference(generic: Any, special: Any) -> str:
    """The first place two observations differ (packets dissected by scapy)."""
    if isinstance(generic, dict) and isinstance(special, dict):
        for key in sorted(generic.keys() | special.keys(), key=str):
            if generic.get(key) != special.get(key):
                return f"  [{key!r}]\n{_difference(generic.get(key), special.get(key))}"
    if isinstance(generic, list) and isinstance(special, list):
        if len(generic) != len(special):
            lines = [f"  generic has {len(generic)} items, specialized {len(special)}"]
        else:
            lines = []
        for index, (g, s) in enumerate(zip(generic, special, strict=False)):
            if g != s:
                lines.append(f"  first difference at [{index}]:")
                if isinstance(g, bytes) and isinstance(s, bytes):
                    lines.append(f"  generic     {IP(g).summary()} {_short(g.hex(), 200)}")
                    lines.append(f"  specialized {IP(s).summary()} {_short(s.hex(), 200)}")
                else:
                    lines.append(f"  generic     {_short(g)}\n  specialized {_short(s)}")
                break
        else:
            extra = generic[len(special):] or special[len(generic):]
            lines.append(f"  extra items: {_short(extra)}")
        return "\n".join(lines)
    return f"  generic     {_short(generic)}\n  specialized {_short(special)}"


def _short(value: Any, limit: int = 600) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
