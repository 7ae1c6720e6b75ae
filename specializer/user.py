"""Specializing your own code: the public API for any importable module.

Declare the scenarios in a ``.spec.toml`` beside the module (the format of
pystack's own, plus the events the module announces and, optionally, a
world-building hook), then::

    spec = specializer.specialize("demos.tlv_options", "tlv_encode", {"session": session})
    spec(now, payload)            # the residual code (or the generic code, as the guards decide)
    spec.source                   # the residual's source
    spec.assumptions              # what it relies on, in words
    specializer.announce(session, "set_option", "maxmsg")   # the module's own event: the guards act
    spec.close()

Guards work as for the stack's socket tokens: an announced event gets the
policy the declaration (or ``policy=``) gives it: ``reject`` refuses the change
(:class:`GuardRejected`, raised by :func:`announce` before the change is made),
``fallback`` switches to the generic code, ``respecialize`` specializes again
at the next call. Guards also sit on the data (pystack.tokens.watch): a write
to a field the code assumed, announced or not, makes the next call check the
assumptions and specialize again if one broke.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from typing import Any

from pystack.tokens.scenario import DeclarationError, Scenario, check_policies, module_scenarios
from pystack.tokens.system import Token, TokenSystem
from pystack.tokens.watch import plain_type

USER_POLICIES = ("reject", "fallback", "respecialize")  # "reinforce" is the stack's, for routes


class GuardRejected(RuntimeError):
    """An announced change would break a specialization whose policy for it is ``reject``:
    the change must not be made (close the specialization first)."""


_declared: dict[str, dict[str, Scenario]] = {}
_systems: weakref.WeakSet[UserSystem] = weakref.WeakSet()


def scenarios(module: str) -> dict[str, Scenario]:
    """The scenarios declared for ``module`` (a ``.spec.toml`` beside it), by name; loaded
    once. DeclarationError says what is wrong with a declaration, and where."""
    found = _declared.get(module)
    if found is None:
        found = module_scenarios(module)
        for scenario in found.values():
            bad = {e: p for e, p in scenario.policies.items() if p not in USER_POLICIES}
            if bad:
                raise DeclarationError(f"{scenario.source}: scenario {scenario.name}: policies for a module's own "
                                       f"events are {', '.join(USER_POLICIES)}, got {bad}")
        _declared[module] = found
    return found


def scenario_of(module: str, name: str) -> Scenario:
    """One declared scenario (DeclarationError naming the ones there are, if not)."""
    found = scenarios(module)
    if name not in found:
        raise DeclarationError(f"{module} declares no scenario {name!r}; it declares {', '.join(sorted(found))}")
    return found[name]


def build_statics(scenario: Scenario, context: dict[str, Any]) -> dict[str, Any]:
    """The statics for a context, from the declaration's world hook (``world = "mod:fn"``,
    called with the context as keywords, returning a dict of static parameters). Unknown
    context keys and statics that are not static parameters are ValueErrors."""
    world = scenario.world_function()
    accepted = inspect.signature(world).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(context) - set(accepted))
        if unknown:
            raise ValueError(f"unknown context key {unknown[0]!r} for {scenario.name} (known: {', '.join(accepted)})")
    statics = world(**context)
    if not isinstance(statics, dict):
        raise DeclarationError(f"{scenario.world} returned {type(statics).__name__}, not a dict of statics")
    return statics


def check_statics(scenario: Scenario, statics: dict[str, Any]) -> dict[str, Any]:
    """Exactly the static parameters, each given or defaulted by the entry's signature."""
    params = inspect.signature(scenario.entry_function()).parameters
    wrong = sorted(set(statics) - {n for n, bt in scenario.binding_times.items() if bt == "S"})
    if wrong:
        raise ValueError(f"{scenario.name}: {wrong[0]!r} is not a static parameter of {scenario.entry}")
    complete = dict(statics)
    for name, bt in scenario.binding_times.items():
        if bt == "S" and name not in complete:
            if params[name].default is inspect.Parameter.empty:
                raise ValueError(f"{scenario.name}: no value for the static parameter {name!r}")
            complete[name] = params[name].default
    return complete


class UserSystem(TokenSystem):
    """Specializations of user code: tokens keyed by their module's scenarios, guarded by
    the events the module announces (:func:`announce`) and by watches on the data."""

    def __init__(self) -> None:
        super().__init__({})
        _systems.add(self)

    def on_event(self, subject: Any, event: str, detail: object) -> None:
        """Apply each concerned token's policy; a rejection raises before anything changes."""
        concerned = [t for t in self.tokens.values() if t.mode == "specialized" and t.entry is not None
                     and event in t.scenario.events and (subject is self or _mentions(t, subject))]
        for token in concerned:  # a change one token refuses is made for none
            if token.policies.get(event, "fallback") == "reject":
                token.events.append(f"rejected {event}")
                raise GuardRejected(f"{event} ({detail!r}) would break specialization {token.number} "
                                    f"({token.scenario.name}); close it first")
        for token in concerned:
            self.apply(token, event, token.policies.get(event, "fallback"))


def _mentions(token: Token, subject: Any) -> bool:
    """Does the token's code rest on ``subject`` (a static, or an object it assumed facts of)?"""
    assert token.entry is not None
    return (any(v is subject for v in token.statics.values())
            or any(a.subject is subject for a in token.entry.assumptions))


_default: UserSystem | None = None


def default_system() -> UserSystem:
    """The system specializations go to when none is given."""
    global _default
    if _default is None:
        _default = UserSystem()
    return _default


def announce(subject: Any, event: str, detail: object = None) -> None:
    """Tell the specializations resting on ``subject`` (or every one of a :class:`UserSystem`
    given as subject) that ``event`` happens. Call it *before* making the change: a
    ``reject`` policy raises :class:`GuardRejected` and the change must not be made.
    An event no declaration of a live specialization names is ignored."""
    for system in list(_systems):
        if subject is system or not isinstance(subject, UserSystem):
            system.on_event(subject, event, detail)


class Specialization:
    """A function specialized for a context: call it with the entry's dynamic parameters
    (by position, in the entry's order), as the generic function would be called."""

    def __init__(self, system: UserSystem, number: int, dynamic: list[str]):
        self.system = system
        self.number = number
        self.dynamic = dynamic

    def __call__(self, *args: Any) -> Any:
        try:
            function = self.system.functions[self.number]
        except KeyError:
            raise ValueError(f"specialization {self.number} is closed") from None
        return function(*args)

    @property
    def token(self) -> Token:
        token = self.system.tokens.get(self.number)
        if token is None:
            raise ValueError(f"specialization {self.number} is closed")
        return token

    @property
    def scenario(self) -> Scenario:
        return self.token.scenario

    @property
    def statics(self) -> dict[str, Any]:
        return dict(self.token.statics)

    @property
    def mode(self) -> str:
        """``specialized``, ``generic`` (fell back) or ``stale`` (specialized again at the next call)."""
        return self.token.mode

    @property
    def events(self) -> list[str]:
        """What the guards did, in order."""
        return list(self.token.events)

    @property
    def source(self) -> str | None:
        """The residual function's source (None while the generic code runs)."""
        entry = self.token.entry
        return entry.compiled.source if entry is not None else None

    @property
    def assumptions(self) -> list[str]:
        """What the residual code relies on, one sentence each."""
        entry = self.token.entry
        if entry is None:
            return []
        names = {id(v): k for k, v in self.token.statics.items()}
        return [a.describe(lambda v: names.get(id(v)) or f"<{plain_type(v).__name__}>") for a in entry.assumptions]

    @property
    def diagnostics(self) -> list[str]:
        entry = self.token.entry
        return [f"{d.where}: {d.kind}: {d.message}" for d in entry.diagnostics] if entry is not None else []

    def generic(self, *args: Any) -> Any:
        """The generic function for the same context (the fallback)."""
        return self.token.generic(*args)

    def respecialize(self, **statics: Any) -> None:
        """Specialize again for the current state (and new statics, if given)."""
        token = self.token
        merged = check_statics(token.scenario, {**token.statics, **statics})
        token.generic = _generic(token.scenario, merged, self.dynamic)
        self.system.respecialize(token, merged)

    def close(self) -> None:
        """Release it: its guards stop acting, and calls raise ValueError."""
        self.system.close(self.number)

    def __enter__(self) -> Specialization:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        token = self.system.tokens.get(self.number)
        state = f"{token.scenario.name}: {token.mode}" if token is not None else "closed"
        return f"<Specialization {self.number} of {state}>"


def _generic(scenario: Scenario, statics: dict[str, Any], dynamic: list[str]) -> Callable[..., Any]:
    entry = scenario.entry_function()

    def generic(*args: Any) -> Any:
        return entry(**statics, **dict(zip(dynamic, args, strict=True)))

    return generic


def specialize(module: str, scenario: str, statics: dict[str, Any] | None = None, *,
               context: dict[str, Any] | None = None, policy: dict[str, str] | None = None,
               debug: bool = False, system: UserSystem | None = None) -> Specialization:
    """Specialize a scenario declared for ``module`` for the given statics, or for the
    statics its world hook builds from ``context`` (the declaration's ``context`` by default).

    ``policy`` overrides the declared guard policies per event. ``debug`` re-checks every
    assumption on each call (StaleSpecialization if one broke and no guard acted). What the
    specializer cannot specialize runs generic; ``events`` says why."""
    declared = scenario_of(module, scenario)
    if statics is None:
        statics = build_statics(declared, {**declared.context, **(context or {})})
    elif context is not None:
        raise ValueError("give statics or a context, not both")
    if policy:
        check_policies(policy, ValueError, events=declared.events)
        bad = {e: p for e, p in policy.items() if p not in USER_POLICIES}
        if bad:
            raise ValueError(f"policies for a module's own events are {', '.join(USER_POLICIES)}, got {bad}")
    statics = check_statics(declared, statics)
    system = system or default_system()
    key = f"{module}:{scenario}"
    system.scenarios.setdefault(key, declared)
    dynamic = [n for n, bt in declared.binding_times.items() if bt == "D"]
    order = list(inspect.signature(declared.entry_function()).parameters)
    dynamic.sort(key=order.index)
    number = system.open(key, None, statics, _generic(declared, statics, dynamic), policy, debug)
    return Specialization(system, number, dynamic)

