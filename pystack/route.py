"""The routing table: longest-prefix match, per-route MTU, a generation counter.

The generation is bumped on every change (routes added or removed, a path
MTU learnt or expired). Sockets cache their route together with the
generation it was valid in (:func:`cached_route`), and the specializer's
route guard watches it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .addr import prefix_mask
from .interface import Interface

if TYPE_CHECKING:
    from .socket import Socket
    from .stack import Stack

UNICAST = "unicast"
LOCAL = "local"
BROADCAST = "broadcast"

# Linux's defaults: a learnt path MTU is never below min_pmtu, and expires.
MIN_PMTU = 552
PMTU_EXPIRES = 600.0


# Not slotted: the specializer watches the fields its code assumed from a route, and on an
# instance dictionary a watched field is still read at full speed (pystack/tokens/watch.py).
@dataclass(eq=False)
class Route:
    prefix: int
    prefixlen: int
    iface: Interface
    gateway: int = 0
    mtu: int = 0  # 0: the interface's MTU
    src: int = 0  # preferred source address, 0: the interface's
    kind: str = UNICAST
    expires: float | None = None  # for learnt path-MTU exceptions
    mtu_locked: bool = False
    advmss: int = 0  # the MSS to announce (Linux RTAX_ADVMSS); 0: the path MTU's
    initcwnd: int = 0  # the initial congestion window (RTAX_INITCWND); 0: the stack's

    @property
    def path_mtu(self) -> int:
        return self.mtu or self.iface.mtu

    @property
    def source(self) -> int:
        return self.src or self.iface.address


@dataclass
class RouteTable:
    generation: int = 0
    on_change: Callable[[], None] = lambda: None  # called after every change
    _by_length: dict[int, dict[int, Route]] = field(default_factory=dict)
    _lengths: list[int] = field(default_factory=list)

    def add(self, route: Route) -> Route:
        """Add or replace the route for a prefix."""
        route.prefix &= prefix_mask(route.prefixlen)
        self._by_length.setdefault(route.prefixlen, {})[route.prefix] = route
        self._lengths = sorted(self._by_length, reverse=True)
        self._changed()
        return route

    def remove(self, prefix: int, prefixlen: int) -> Route:
        """Remove a route; KeyError if there is none."""
        table = self._by_length[prefixlen]
        route = table.pop(prefix & prefix_mask(prefixlen))
        if not table:
            del self._by_length[prefixlen]
            self._lengths = sorted(self._by_length, reverse=True)
        self._changed()
        return route

    def _changed(self) -> None:
        self.generation += 1
        self.on_change()

    def lookup(self, dst: int, now: float | None = None) -> Route | None:
        """The most specific route to ``dst``; expired PMTU exceptions are dropped on the way."""
        for length in self._lengths:
            route = self._by_length[length].get(dst & prefix_mask(length))
            if route is None:
                continue
            if route.expires is not None and now is not None and now >= route.expires:
                self.remove(route.prefix, route.prefixlen)
                return self.lookup(dst, now)
            return route
        return None

    def learn_pmtu(self, dst: int, mtu: int, now: float) -> bool:
        """Lower the path MTU towards ``dst`` (ICMP fragmentation needed); True if it changed."""
        route = self.lookup(dst, now)
        if route is None or route.kind != UNICAST:
            return False
        locked = mtu < MIN_PMTU
        mtu = max(mtu, MIN_PMTU)
        if mtu >= route.path_mtu:
            return False
        exception = Route(
            prefix=dst,
            prefixlen=32,
            iface=route.iface,
            gateway=route.gateway,
            mtu=mtu,
            src=route.src,
            expires=now + PMTU_EXPIRES,
            mtu_locked=locked,
        )
        self.add(exception)
        return True

    def routes(self) -> list[Route]:
        return [r for length in self._lengths for r in self._by_length[length].values()]


def cached_route(stack: Stack, sock: Socket) -> Route | None:
    """The connected socket's route, looked up again only if the table changed (sk_dst_check)."""
    route = sock.dst_cache
    if route is not None and sock.dst_generation == stack.routes.generation:
        if route.expires is None or stack.clock.now() < route.expires:
            return route
    route = stack.routes.lookup(sock.remote_addr, stack.clock.now())
    sock.dst_cache = route
    sock.dst_generation = stack.routes.generation
    return route
