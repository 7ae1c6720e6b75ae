"""Specialization systems: tokens, the code cache, and the guards.

:class:`TokenSystem` is the part that knows no sockets (user code gets it
through specializer.user); :class:`SpecializationSystem` is one stack's.

A token stands for one specialized operation (thesis fig. 4.7): its
current function is called on every ``specialized_*`` call, so the hot
path is one dictionary lookup and one call. Guards act on announced
events: the stack announces (``Stack.notify``) the application's changes
and route and MSS updates, and the system applies the token's policy at
that moment:

* ``reject``: refuse the application's change (EBUSY), as the paper does for setsockopt;
* ``fallback``: switch the token to the generic code;
* ``respecialize``: specialize again, on the next call, for the new values;
* ``reinforce``: keep the code and offset the system (a route change: the
  code's output is steered to the new route's interface).

Guards also sit on the data (:mod:`pystack.tokens.watch`): every field a
live token assumes is watched, so a write nobody announced (the handshake,
a driver replacing a sink, a bug) still reaches the token. Such a write is
nobody's request, so it can be neither rejected nor reinforced: the
token's next call checks its assumptions and, if one no longer holds,
specializes again for the new values. Nothing is raised at the write, so
packet input is never interrupted by a guard.

In debug mode every call re-checks every assumption first.
"""

from __future__ import annotations

import ast
import builtins
import errno
import types
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pystack.errors import oserror
from pystack.route import Route, RouteTable
from pystack.socket import (
    IP_ADD_MEMBERSHIP,
    IP_DROP_MEMBERSHIP,
    IP_MTU_DISCOVER,
    IP_MULTICAST_IF,
    IP_MULTICAST_LOOP,
    IP_MULTICAST_TTL,
    IP_TOS,
    IP_TTL,
    IPPROTO_IP,
    IPPROTO_TCP,
    SO_ADU,
    SO_BROADCAST,
    SO_NO_CHECK,
    SO_RCVBUF,
    SO_REUSEADDR,
    SO_SNDBUF,
    SOCK_DGRAM,
    SOL_SOCKET,
    Socket,
)
from pystack.stack import Stack
from pystack.tcp import api as tcp_api
from pystack.tcp.tcb import SYN_RECEIVED, SYN_SENT

from .facts import Assumption, Diagnostic, SpecializationError, Stats, same
from .scenario import Scenario, all_scenarios, check_policies
from .watch import plain_type, unwatch, watch

CACHE_CAPACITY = 64
HANDSHAKE_STATES = frozenset({SYN_SENT, SYN_RECEIVED})
APPLICATION_EVENTS = frozenset({"setsockopt", "fcntl", "bind", "connect", "shutdown", "close"})

# Which socket (or TCB) field each option sets: a change to an option that
# no assumption mentions cannot break the code, and is let through.
OPTION_FIELDS: dict[tuple[int, int], str] = {
    (SOL_SOCKET, SO_REUSEADDR): "reuseaddr",
    (SOL_SOCKET, SO_BROADCAST): "broadcast",
    (SOL_SOCKET, SO_NO_CHECK): "no_check",
    (SOL_SOCKET, SO_SNDBUF): "sndbuf",
    (SOL_SOCKET, SO_RCVBUF): "rcvbuf",
    (SOL_SOCKET, tcp_api.SO_KEEPALIVE): "keepalive",
    (SOL_SOCKET, tcp_api.SO_LINGER): "linger",
    (SOL_SOCKET, SO_ADU): "adu",
    (IPPROTO_IP, IP_TTL): "ttl",
    (IPPROTO_IP, IP_TOS): "tos",
    (IPPROTO_IP, IP_MULTICAST_TTL): "mc_ttl",
    (IPPROTO_IP, IP_MULTICAST_IF): "mc_if",
    (IPPROTO_IP, IP_MULTICAST_LOOP): "mc_loop",
    (IPPROTO_IP, IP_MTU_DISCOVER): "pmtudisc",
    (IPPROTO_IP, IP_ADD_MEMBERSHIP): "memberships",
    (IPPROTO_IP, IP_DROP_MEMBERSHIP): "memberships",
    (IPPROTO_TCP, tcp_api.TCP_NODELAY): "nodelay",
    (IPPROTO_TCP, tcp_api.TCP_CORK): "cork",
    (IPPROTO_TCP, tcp_api.TCP_MAXSEG): "user_mss",
    (IPPROTO_TCP, tcp_api.TCP_USER_TIMEOUT): "user_timeout",
    (IPPROTO_TCP, tcp_api.TCP_KEEPIDLE): "keepidle",
    (IPPROTO_TCP, tcp_api.TCP_KEEPINTVL): "keepintvl",
    (IPPROTO_TCP, tcp_api.TCP_KEEPCNT): "keepcnt",
}


@dataclass
class CompiledResidual:
    function: types.FunctionType
    tree: ast.FunctionDef
    constants: dict[str, Any]

    @property
    def source(self) -> str:
        """The residual code as Python text, made when someone asks (a third of compile time)."""
        return ast.unparse(self.tree)


def load_function(module: ast.Module, name: str, constants: dict[str, Any], filename: str,
                  loader: Any = None) -> types.FunctionType:
    """Run ``module``, which defines a factory ``_factory(*constants)`` returning the residual
    function ``name``: every frozen reference is a closure cell of the result (a route
    guard's reinforcement re-points cells). How local and remote residual code is loaded."""
    namespace: dict[str, Any] = {"__builtins__": builtins, "__name__": filename, "__loader__": loader}
    exec(compile(module, filename, "exec"), namespace)
    function: types.FunctionType = namespace["_factory"](*constants.values())
    assert function.__name__ == name
    return function


def factory(fdef: ast.FunctionDef, names: list[str]) -> ast.Module:
    """``def _factory(names): <fdef>; return <fdef's name>``, not yet located."""
    return ast.Module(body=[ast.FunctionDef(
        name="_factory",
        args=ast.arguments(posonlyargs=[], args=[ast.arg(arg=k) for k in names], vararg=None,
                           kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[]),
        body=[fdef, ast.Return(value=ast.Name(id=fdef.name, ctx=ast.Load()))],
        decorator_list=[], returns=None, type_params=[],
    )], type_ignores=[])


class StaleSpecialization(AssertionError):
    """Debug mode found an assumption broken that no guard handled: a missing guard."""


@dataclass
class Specialized:
    """One residual function in the code cache."""

    key: tuple
    scenario: Scenario
    statics: dict[str, Any]
    compiled: CompiledResidual
    assumptions: list[Assumption]
    stats: Stats
    diagnostics: list[Diagnostic]
    latency: float
    trace: Any  # what the evaluator decided (specializer.trace): spec show's colours and line map; None if remote
    refcount: int = 0
    # While tokens hold it, every field it assumes is watched (watch.py), on their behalf.
    holders: list[Token] = field(default_factory=list)
    watching: list[Any] = field(default_factory=list)
    complete: bool = False  # every field it assumes could be watched
    # Watched, and no watched write since its facts were last known to hold: a cache hit
    # need not check them again.
    trusted: bool = False

    @property
    def function(self) -> Callable[..., Any]:
        return self.compiled.function

    def field_written(self, obj: Any, name: str) -> None:
        """A field the code assumed changed: every token running it checks before its next call."""
        self.trusted = False
        for token in list(self.holders):
            token.field_written(obj, name)


@dataclass(eq=False)
class Token:
    number: int
    system: TokenSystem
    scenario: Scenario
    statics: dict[str, Any]
    subject: Any  # what the code is for, for the subclass: a socket (user code: None, its statics say)
    policies: dict[str, str]
    generic: Callable[..., Any]
    debug: bool = False
    entry: Specialized | None = None
    mode: str = "specialized"  # specialized, generic, stale (re-specialize on next call)
    events: list[str] = field(default_factory=list)  # what the guards did, for people and tests
    # Told what the token runs now, each time that changes (None when it closes): a token
    # whose code the stack itself calls (a connection's output routine) keeps it there.
    hook: Callable[[Callable[..., Any] | None], None] | None = None
    companions: list[int] = field(default_factory=list)  # tokens renewed and closed with this one
    suspect: bool = False  # an assumed field was written: check before running the code again

    def install(self) -> None:
        """Point the token's slot at what should run now."""
        functions = self.system.functions
        self.suspect = False
        if self.mode == "stale":  # with or without code: specialize again at the next call
            functions[self.number] = self._respecialize_then_call
        elif self.mode == "generic" or self.entry is None:
            functions[self.number] = self.generic
        elif self.debug:
            functions[self.number] = self._checked
        else:
            functions[self.number] = self.entry.function
        if self.hook is not None:
            self.hook(functions[self.number])

    def _checked(self, *args: Any) -> Any:
        assert self.entry is not None
        for assumption in self.entry.assumptions:
            if not assumption.holds():
                raise StaleSpecialization(
                    f"token {self.number}: {assumption.subject!r}.{assumption.field} changed "
                    f"(was {assumption.value!r}) and no guard acted")
        return self.entry.function(*args)

    def field_written(self, obj: Any, name: str) -> None:
        """A watched field changed (watch.py): the next call checks the assumptions first.
        Only a slot changes here, so the write (packet input, a driver) goes on undisturbed."""
        if self.suspect or self.mode != "specialized" or self.entry is None:
            return
        self.suspect = True
        self.system.functions[self.number] = self._verify_then_call
        if self.hook is not None:
            self.hook(self._verify_then_call)

    def _verify_then_call(self, *args: Any) -> Any:
        assert self.entry is not None
        broken = next((a for a in self.entry.assumptions if not a.holds()), None)
        if broken is None:  # changed and changed back, or re-based by a guard (reinforce)
            self.install()
        else:
            self.events.append(f"stale after a write to {plain_type(broken.subject).__name__}.{broken.field}")
            self.system.release(self)
            self.mode = "stale"
            self.install()
        return self.system.functions[self.number](*args)

    def _respecialize_then_call(self, *args: Any) -> Any:
        self.system.respecialize(self)
        if self.mode == "stale":
            return self.generic(*args)  # not specializable yet: this call may make it so
        return self.system.functions[self.number](*args)


class TokenSystem:
    """Tokens, the code cache and the mechanics of the guards, for any code: what a
    token's code is for and which events reach it are a subclass's business (the
    stack's sockets: :class:`SpecializationSystem`; a user's objects: specializer.user)."""

    def __init__(self, scenarios: dict[str, Scenario]):
        self.scenarios = scenarios
        self.tokens: dict[int, Token] = {}
        self.functions: dict[int, Callable[..., Any]] = {}
        self.cache: OrderedDict[tuple, Specialized] = OrderedDict()
        self.capacity = CACHE_CAPACITY
        self.local = False  # make_local_system: null context for every request from now on
        self.hits = self.misses = 0
        self._numbers = iter(range(1, 1 << 62))

    def specializable(self, subject: Any, statics: dict[str, Any]) -> bool:
        """Can the subject's state be taken as invariant now? (Otherwise: generic code for now.)"""
        return True

    def prepare(self, subject: Any) -> None:
        """Bring derived state up to date before specializing (the stack: a route cache)."""

    # ------------------------------------------------------------ tokens

    def open(self, scenario_name: str, subject: Any, statics: dict[str, Any], generic: Callable[..., Any],
             policy: dict[str, str] | None, debug: bool,
             hook: Callable[[Callable[..., Any] | None], None] | None = None) -> int:
        scenario = self.scenarios[scenario_name]
        policies = dict(scenario.policies)
        if policy:
            check_policies(policy, ValueError, events=scenario.events)
            policies.update(policy)
        token = Token(next(self._numbers), self, scenario, statics, subject, policies, generic, debug, hook=hook)
        if self.local:
            token.mode = "generic"
        elif not self.specializable(subject, statics):
            token.mode = "stale"
        else:
            self.attach(token)
        self.tokens[token.number] = token
        token.install()
        return token.number

    def close(self, number: int) -> None:
        token = self.token(number)
        for companion in token.companions:
            self.close(companion)
        self.release(token)
        del self.tokens[number]
        del self.functions[number]
        if token.hook is not None:
            token.hook(None)

    def token(self, number: int) -> Token:
        token = self.tokens.get(number)
        if token is None:
            raise oserror(errno.EINVAL, f"no specialization token {number}")
        return token

    def respecialize(self, token: Token, statics: dict[str, Any] | None = None) -> None:
        self.release(token)
        if statics is not None:
            token.statics = statics
        if self.local:
            token.mode = "generic"
        elif not self.specializable(token.subject, token.statics):
            token.mode = "stale"  # generic code until the context settles; tried again on each call
        else:
            token.mode = "specialized"
            if self.attach(token):
                token.events.append("respecialized")
        token.install()

    def attach(self, token: Token) -> bool:
        """Give the token specialized code; if the specializer cannot, the generic code."""
        try:
            token.entry = self.lookup(token.scenario, token.subject, token.statics)
        except SpecializationError as why:
            token.mode = "generic"
            token.events.append(f"not specialized: {why}")
            return False
        self.hold(token, token.entry)
        return True

    def hold(self, token: Token, entry: Specialized) -> None:
        """The token runs the entry's code from now on; the entry's facts are watched for it."""
        token.entry = entry
        if not entry.holders:
            self.watch(entry)
        entry.holders.append(token)
        entry.trusted = entry.complete  # its facts hold now: just made, or checked

    def release(self, token: Token) -> None:
        entry = token.entry
        if entry is not None:
            entry.refcount -= 1
            entry.holders.remove(token)
            if not entry.holders:
                self.unwatch(entry)
            token.entry = None

    def watch(self, entry: Specialized) -> None:
        """Watch every field the code assumes (watch.py), for the tokens that will hold it."""
        fields: dict[int, tuple[Any, set[str]]] = {}
        for assumption in entry.assumptions:
            if assumption.kind == "field":
                fields.setdefault(id(assumption.subject), (assumption.subject, set()))[1].add(assumption.field)
        # Items of deep containers change only where an event is announced (tests/test_spec_guard_source.py).
        entry.complete = True
        for subject, names in fields.values():
            if watch(entry, subject, frozenset(names)):
                entry.watching.append(subject)
            else:
                entry.complete = False

    def unwatch(self, entry: Specialized) -> None:
        for subject in entry.watching:
            unwatch(entry, subject)
        entry.watching.clear()
        entry.trusted = False  # nobody watches its facts any more

    # ------------------------------------------------------------ the code cache

    def cache_key(self, scenario: Scenario, subject: Any, statics: dict[str, Any]) -> tuple:
        """The scenario and its statics (objects by identity: what the key does not say,
        their fields, the lookup checks against the entry's assumptions)."""
        return (scenario.name, str(scenario.source), tuple(sorted((k, _hashable(v)) for k, v in statics.items())))

    def specialize(self, scenario: Scenario, statics: dict[str, Any]) -> Specialized:
        """Run the specializer (on a device that carries one: it is imported only now)."""
        from specializer.system import specialize

        return specialize(scenario, statics)

    def lookup(self, scenario: Scenario, subject: Any, statics: dict[str, Any]) -> Specialized:
        self.prepare(subject)
        key = self.cache_key(scenario, subject, statics)
        entry = self.cache.get(key)
        if entry is not None and not entry.trusted and not all(a.holds() for a in entry.assumptions):
            entry = None  # the key does not say everything the code folded (an interface's sink): its facts do
        if entry is not None:
            self.hits += 1
            self.cache.move_to_end(key)
        else:
            self.misses += 1
            entry = self.specialize(scenario, statics)
            entry.key = key
            self.cache[key] = entry
        entry.refcount += 1  # before evicting: the entry being handed out is not unreferenced
        self.evict()
        return entry

    def evict(self) -> None:
        """Drop least recently used entries that no token holds, beyond the capacity."""
        if len(self.cache) <= self.capacity:
            return  # the common case, and it must stay cheap: lookups call this on every hit
        for key in list(self.cache):
            if len(self.cache) <= self.capacity:
                return
            if self.cache[key].refcount <= 0:
                del self.cache[key]

    # ------------------------------------------------------------ guards

    def apply(self, token: Token, event: str, policy: str) -> None:
        """A change the token's code assumed against is coming (or came): fall back for
        good, or specialize again at the next call."""
        if policy == "fallback":
            token.mode = "generic"
            self.release(token)
            token.events.append(f"fell back to generic code on {event}")
        else:
            token.mode = "stale"
            token.events.append(f"stale after {event}")
        token.install()


class SpecializationSystem(TokenSystem):
    """Everything specialization-related for one stack: its tokens are for sockets."""

    def __init__(self, stack: Stack):
        super().__init__(all_scenarios())
        self.stack = stack
        stack.watchers.append(self.on_event)

    def specializable(self, subject: Socket, statics: dict[str, Any]) -> bool:
        return specializable(subject, statics)

    def prepare(self, subject: Socket) -> None:
        refresh_route_cache(self.stack, subject)

    def cache_key(self, scenario: Scenario, subject: Socket, statics: dict[str, Any]) -> tuple:
        """Everything the residual code can depend on: any change gives another key."""
        values = tuple(sorted((k, _hashable(v)) for k, v in statics.items() if k != "self"))
        tcb = subject.tcb
        tcp_state = (tcb.state, tcb.mss, tcb.sack_ok, tcb.ts_ok, tcb.snd_wscale) if tcb is not None else ()
        return (scenario.name, id(subject), subject.generation, self.stack.routes.generation, values, tcp_state)

    def on_event(self, event: str, sock: Socket | None, detail: object) -> None:
        for token in list(self.tokens.values()):
            if token.mode != "specialized" or token.entry is None:
                continue
            if not self.concerns(token, event, sock, detail):
                continue
            policy = token.policies.get(event, "fallback")
            if policy == "reject" and event in APPLICATION_EVENTS:
                token.events.append(f"rejected {event}")
                raise oserror(errno.EBUSY, f"{event} would break specialization token {token.number}; "
                                           f"release it with done_specialize first")
            if policy == "reinforce" and event == "route" and self.reinforce(token):
                continue
            self.apply(token, event, policy)

    def concerns(self, token: Token, event: str, sock: Socket | None, detail: object) -> bool:
        """Does this event touch something the token's code assumed?"""
        assert token.entry is not None
        if event == "route":
            return any(isinstance(a.subject, Route | RouteTable) for a in token.entry.assumptions)
        if sock is not token.subject:
            return False
        if event == "setsockopt" and isinstance(detail, tuple):
            field_name = OPTION_FIELDS.get((detail[0], detail[1]))
            if field_name is not None:
                return any(a.field == field_name and a.subject in (sock, sock.tcb) for a in token.entry.assumptions)
        return True

    def reinforce(self, token: Token) -> bool:
        """Keep the code after a route change: steer its output to the new route's interface.

        Only possible when every fact the code folded from the old route and
        its interface (MTU, source address, kind, expiry, whether the
        interface has a sink...) holds for the new ones; otherwise False.
        """
        entry = token.entry
        assert entry is not None
        old_routes = {id(a.subject): a.subject for a in entry.assumptions if isinstance(a.subject, Route)}
        if len(old_routes) != 1:
            return False
        (old,) = old_routes.values()
        sock = token.subject
        if sock.connected:
            destination = sock.remote_addr
        else:
            address = token.statics.get("address")
            if address is None:
                return False
            destination = self.stack._destination(address)[0]
        # No clock: a lookup that drops an expired route would announce a route event from
        # inside this one. An expired route differs from the old one in its expiry anyway.
        new = self.stack.routes.lookup(destination)
        if new is None or not _still_holds(entry.assumptions, old, new):
            return False
        replacements = {id(old): new, id(old.iface): new.iface}
        if old.iface.sink is not None and new.iface.sink is not None:
            replacements[_key(old.iface.sink)] = new.iface.sink
        function = entry.function
        for cell in function.__closure__ or ():
            current = cell.cell_contents
            target = replacements.get(id(current)) or replacements.get(_key(current))
            if target is not None:
                cell.cell_contents = target
        routes = self.stack.routes
        if sock.connected:
            sock.dst_cache, sock.dst_generation = new, routes.generation  # offset the system to match the code
        kept = [a for a in entry.assumptions if not _about_route_table(a, routes)]
        entry.assumptions = [_retarget(a, old, new, routes) for a in kept]
        entry.assumptions.append(Assumption(routes, "generation", routes.generation))
        self.unwatch(entry)  # the entry is shared: the new facts are watched for every token on it
        self.watch(entry)
        entry.trusted = entry.complete
        token.events.append(f"reinforced: output steered to {new.iface.name}")
        return True


# Fields the send path reads only through a derived property (Route.path_mtu, Route.source):
# for them the derived value must stay, not the field (mtu 0 on a 1500-byte interface is
# the same path MTU as mtu 1500).
_DERIVED = {("route", "mtu"): "path_mtu", ("iface", "mtu"): "path_mtu",
            ("route", "src"): "source", ("iface", "address"): "source"}


def _still_holds(assumptions: list[Assumption], old: Route, new: Route) -> bool:
    """Would the code compute the same from ``new`` as from ``old``? The route's interface
    (and its sink) are what reinforcement replaces: for the sink only its presence must
    match."""
    for assumption in assumptions:
        if assumption.subject is old:
            owner, subject = "route", new
        elif assumption.subject is old.iface:
            owner, subject = "iface", new.iface
        else:
            continue
        name = assumption.field
        if owner == "route" and name == "iface":
            continue
        if owner == "iface" and name == "sink":
            if (new.iface.sink is None) != (assumption.value is None):
                return False
            continue
        derived = _DERIVED.get((owner, name))
        if derived is not None:
            if not same(getattr(new, derived), getattr(old, derived)):
                return False
        elif not same(getattr(subject, name), assumption.value):
            return False
    return True


def specializable(sock: Socket, statics: dict[str, Any]) -> bool:
    """Can the socket's state be taken as invariant now? Not an unbound datagram socket
    sending to an address (after a connect(AF_UNSPEC), say): its next send binds it,
    and the code would have folded port 0 and the implicit bind in. Not a connection
    in its handshake: the handshake decides the facts the code would fold (MSS, SACK,
    timestamps, window scale, connected); the token waits, with the generic code."""
    if sock.tcb is not None and sock.tcb.state in HANDSHAKE_STATES:
        return False
    return not (sock.type == SOCK_DGRAM and not sock.local_port and not sock.closed
                and statics.get("address") is not None)


def refresh_route_cache(stack: Stack, sock: Socket) -> None:
    """Bring a connected socket's route cache (datagram or stream) up to date before
    specializing, as its next send would (sk_dst_check). Otherwise the code would fold a
    stale cache: a route lookup on every call, and facts (``dst_cache``,
    ``dst_generation``) that its own first call falsifies. Expired routes are left for the
    send to drop, as the generic code does: the cache may hold one, and the code checks
    its expiry."""
    routes = stack.routes
    if sock.connected and sock.dst_generation != routes.generation:
        sock.dst_cache = routes.lookup(sock.remote_addr)
        sock.dst_generation = routes.generation


def _about_route_table(assumption: Assumption, routes: RouteTable) -> bool:
    """Facts about the table's state (its generation, its internal containers): after a
    reinforcement the new generation alone stands for them."""
    subject = assumption.subject
    if subject is routes:
        return True
    if isinstance(subject, list):
        return True
    return isinstance(subject, dict) and not any(isinstance(v, Socket) for v in subject.values())


def _retarget(assumption: Assumption, old: Route, new: Route, routes: RouteTable) -> Assumption:
    if assumption.subject is old:
        return Assumption(new, assumption.field, getattr(new, assumption.field), assumption.kind)
    if assumption.subject is old.iface:
        return Assumption(new.iface, assumption.field, getattr(new.iface, assumption.field), assumption.kind)
    if assumption.field == "dst_cache":
        return Assumption(assumption.subject, "dst_cache", new)
    if assumption.field == "dst_generation":
        return Assumption(assumption.subject, "dst_generation", routes.generation)
    return assumption


def _key(value: Any) -> Any:
    owner = getattr(value, "__self__", None)
    if owner is not None:
        return ("method", id(owner), getattr(value, "__name__", ""))
    return id(value)


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    try:
        hash(value)
    except TypeError:
        return id(value)
    return value


def system_of(stack: Stack) -> SpecializationSystem:
    """The stack's specialization system, made on first use; it lives in the stack's
    ``extensions`` (a weak map would keep the stack alive: the system refers to it)."""
    system = stack.extensions.get("specializer")
    if system is None:
        system = stack.extensions["specializer"] = SpecializationSystem(stack)
    return system  # type: ignore[return-value]
