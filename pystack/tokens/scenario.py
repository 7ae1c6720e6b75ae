"""Scenario declarations, Tempo-style, read from ``*.spec.toml`` files beside the code.

A declaration file names the partially static objects (for each class,
which fields are static, and which static containers have invariant
contents) and the scenarios: an entry function, a binding time ``S`` or
``D`` for each parameter, the callees to unfold, the external functions
that are pure (evaluated at specialization time when their arguments are
static), and the guard policy for each event that can break the
scenario's assumptions.

Any importable module can be declared this way (:func:`module_scenarios`):
``pkg/mod.spec.toml`` beside ``pkg/mod.py`` (every ``*.spec.toml`` under a
package's directory for a package, as for pystack itself). A user's file
names the events its code announces (``events = [...]``, see
:func:`specializer.announce`) and may name a world-building hook
(``world = "pkg.mod:make_world"``) that returns a scenario's statics for a
context.
"""

from __future__ import annotations

import importlib
import inspect
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .watch import plain_type

POLICIES = ("reject", "fallback", "respecialize", "reinforce")
# The events pystack's stack announces (Stack.notify): the guard events of its own declarations.
STACK_EVENTS = ("setsockopt", "fcntl", "bind", "connect", "shutdown", "close", "route", "mss")


class DeclarationError(Exception):
    """A declaration file is wrong: the message says where."""


def check_policies(policies: dict[str, str], error: type[Exception], where: str = "",
                   events: tuple[str, ...] = STACK_EVENTS) -> None:
    """Every event must be one the code announces and every policy one the system applies:
    a misspelt policy would otherwise be taken as another (``"rejct"`` as a re-specialization)."""
    for event, policy in policies.items():
        if event not in events:
            raise error(f"{where}unknown guard event {event!r}; events are {', '.join(events) or 'none declared'}")
        if policy not in POLICIES:
            raise error(f"{where}unknown guard policy {policy!r} for {event}; policies are {', '.join(POLICIES)}")


@dataclass(frozen=True)
class ObjectSpec:
    name: str
    cls: type
    static_fields: frozenset[str]
    deep_fields: frozenset[str] = frozenset()
    # A value object (a dataclass the code builds and only reads): the evaluator keeps its
    # fields and the residual code never allocates it, unless it escapes.
    virtual: bool = False

    def check(self, obj: Any) -> None:
        """Every declared field must exist on a real instance (checked when one is first met)."""
        unknown = {f for f in self.static_fields if not hasattr(obj, f)}
        if unknown:
            raise DeclarationError(f"objects.{self.name} declares fields its instances lack: {sorted(unknown)}")


@dataclass
class Scenario:
    name: str
    description: str
    entry: str
    binding_times: dict[str, str]
    objects: dict[type, ObjectSpec]
    unfold: frozenset[Any]
    pure: frozenset[Any]
    observe: frozenset[Any]  # no effects, dynamic result: calls may be dropped when unused
    policies: dict[str, str]
    source: Path
    context: dict[str, Any] = field(default_factory=dict)  # default context values for `spec show`
    world: str = ""  # "pkg.mod:function": the statics for a context (a user's scenario)
    events: tuple[str, ...] = STACK_EVENTS  # the events its code announces
    package: str = "pystack"  # where the figures look for the generic code the entry can reach

    def entry_function(self) -> Any:
        return resolve(self.entry, self.source)

    def world_function(self) -> Any:
        """The declaration's world-building hook (DeclarationError if it names none)."""
        if not self.world:
            raise DeclarationError(f"{self.source}: scenario {self.name} names no world (world = \"module:function\")")
        return resolve(self.world, self.source)

    @property
    def protocol(self) -> str:
        """The transport the scenario's socket speaks, by the names' convention (udp_..., tcp_...)."""
        return self.name.split("_", 1)[0]

    def parameters(self, func: Any) -> list[str]:
        return list(inspect.signature(func).parameters)

    def object_spec(self, obj: Any) -> ObjectSpec | None:
        return self.objects.get(plain_type(obj))

    def unfolds(self, func: Any) -> bool:
        return func in self.unfold

    def is_pure(self, func: Any) -> bool:
        return func in self.pure

    def is_observer(self, func: Any) -> bool:
        return func in self.observe


def resolve(path: str, source: Path) -> Any:
    """``package.module:Qualified.name`` -> the object (functions, methods, property getters)."""
    module_name, _, qualname = path.partition(":")
    if not qualname:
        raise DeclarationError(f"{source}: {path!r} should look like module:name")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            raw = obj.__dict__.get(part) if isinstance(obj, type) else getattr(obj, part)
            if raw is None:
                raise AttributeError(part)
            obj = raw.fget if isinstance(raw, property) else raw
            if isinstance(obj, staticmethod):
                obj = obj.__func__
    except (ImportError, AttributeError) as exc:
        raise DeclarationError(f"{source}: cannot find {path!r} ({exc})") from None
    return obj


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise DeclarationError(f"{path}: {exc}") from None


def load_objects(path: Path, data: dict[str, Any], objects: dict[type, ObjectSpec]) -> None:
    """Add a file's partially static structures to the shared registry (one declaration per class)."""
    for name, spec in data.get("objects", {}).items():
        cls = resolve(spec["class"], path)
        if cls in objects:
            raise DeclarationError(f"{path}: {name} ({cls.__qualname__}) is declared twice")
        declared = set(spec.get("static", [])) | set(spec.get("deep", []))
        objects[cls] = ObjectSpec(name, cls, frozenset(declared), frozenset(spec.get("deep", [])),
                                  bool(spec.get("virtual", False)))


def load_scenarios(path: Path, data: dict[str, Any], objects: dict[type, ObjectSpec],
                   groups: dict[str, list[str]], events: tuple[str, ...] = STACK_EVENTS,
                   package: str = "pystack") -> dict[str, Scenario]:
    """A file's scenarios; ``"@name"`` in a function list stands for the group ``name``
    (whose members may name groups too)."""

    def expand(names: list[str], where: str, seen: tuple[str, ...] = ()) -> list[str]:
        expanded: list[str] = []
        for item in names:
            if not item.startswith("@"):
                expanded.append(item)
                continue
            group = item[1:]
            if group not in groups:
                raise DeclarationError(f"{path}: {where}: no group {group!r}")
            if group in seen:
                raise DeclarationError(f"{path}: {where}: group {group!r} includes itself")
            expanded.extend(expand(groups[group], where, (*seen, group)))
        return expanded

    def functions(names: list[str], where: str) -> frozenset[Any]:
        return frozenset(resolve(f, path) for f in expand(names, where))

    scenarios = {}
    declared = data.get("scenario", {})
    for name, spec in declared.items():
        if "base" in spec:  # the same declarations as another scenario of the file, with its own context
            if spec["base"] not in declared or "base" in declared[spec["base"]]:
                raise DeclarationError(f"{path}: scenario {name}: base {spec['base']!r} is not a scenario of this file")
            spec = {**declared[spec["base"]], **{k: v for k, v in spec.items() if k != "base"}}
        bts = dict(spec["params"])
        bad = {p: bt for p, bt in bts.items() if bt not in ("S", "D")}
        if bad:
            raise DeclarationError(f"{path}: scenario {name}: binding times must be S or D, got {bad}")
        policies = dict(spec.get("guards", {}))
        check_policies(policies, DeclarationError, f"{path}: scenario {name}: ", events)
        scenario = Scenario(
            name=name,
            description=spec.get("description", ""),
            entry=spec["entry"],
            binding_times=bts,
            objects=objects,
            unfold=functions(spec.get("unfold", []), name),
            pure=functions(spec.get("pure", []), name),
            observe=functions(spec.get("observe", []), name),
            policies=policies,
            source=path,
            context=dict(spec.get("context", {})),
            world=spec.get("world", ""),
            events=events,
            package=package,
        )
        params = scenario.parameters(scenario.entry_function())
        missing = set(params) ^ set(bts)
        if missing:
            raise DeclarationError(f"{path}: scenario {name}: params must match {params}, differ on {sorted(missing)}")
        scenarios[name] = scenario
    return scenarios


def all_scenarios() -> dict[str, Scenario]:
    """Every scenario declared in the pystack package's ``*.spec.toml`` files."""
    return module_scenarios("pystack", STACK_EVENTS)


def declaration_files(module_name: str) -> tuple[str, list[Path]]:
    """The declaration files of a module (``mod.spec.toml`` beside it; every
    ``*.spec.toml`` under a package) and the package its figures look at."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DeclarationError(f"cannot import {module_name!r} ({exc})") from None
    where = getattr(module, "__file__", None)
    if where is None:
        raise DeclarationError(f"{module_name!r} has no source file to declare scenarios beside")
    path = Path(where)
    if hasattr(module, "__path__"):  # a package
        return module_name, sorted(path.parent.rglob("*.spec.toml"))
    beside = path.with_name(path.stem + ".spec.toml")
    package = module_name.rpartition(".")[0] or module_name
    return package, [beside] if beside.exists() else []


def module_scenarios(module_name: str, default_events: tuple[str, ...] = ()) -> dict[str, Scenario]:
    """Every scenario declared for a module (see :func:`declaration_files`).

    Object declarations, function groups and events are shared by all its files;
    ``default_events`` are the events when no file declares any (pystack's stack events).
    """
    package, paths = declaration_files(module_name)
    if not paths:
        raise DeclarationError(f"{module_name}: no declarations (a .spec.toml beside the module)")
    files = [(path, _read(path)) for path in paths]
    objects: dict[type, ObjectSpec] = {}
    groups: dict[str, list[str]] = {}
    events: list[str] = []
    for path, data in files:
        load_objects(path, data, objects)
        for name, members in data.get("groups", {}).items():
            if name in groups:
                raise DeclarationError(f"{path}: group {name!r} is declared twice")
            groups[name] = list(members)
        declared = data.get("events", [])
        if not isinstance(declared, list) or not all(isinstance(e, str) for e in declared):
            raise DeclarationError(f"{path}: events must be a list of names")
        events.extend(e for e in declared if e not in events)
    found: dict[str, Scenario] = {}
    for path, data in files:
        found.update(load_scenarios(path, data, objects, groups, tuple(events) or default_events, package))
    return found
