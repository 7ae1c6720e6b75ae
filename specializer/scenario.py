"""Scenario declarations, Tempo-style, read from ``*.spec.toml`` files beside the code.

A declaration file names the partially static objects (for each class,
which fields are static, and which static containers have invariant
contents) and the scenarios: an entry function, a binding time ``S`` or
``D`` for each parameter, the callees to unfold, the external functions
that are pure (evaluated at specialization time when their arguments are
static), and the guard policy for each event that can break the
scenario's assumptions.
"""

from __future__ import annotations

import importlib
import inspect
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pystack

POLICIES = ("reject", "fallback", "respecialize", "reinforce")
EVENTS = ("setsockopt", "fcntl", "bind", "connect", "shutdown", "close", "route", "mss")


class DeclarationError(Exception):
    """A declaration file is wrong: the message says where."""


@dataclass(frozen=True)
class ObjectSpec:
    name: str
    cls: type
    static_fields: frozenset[str]
    deep_fields: frozenset[str] = frozenset()

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

    def entry_function(self) -> Any:
        return resolve(self.entry, self.source)

    def parameters(self, func: Any) -> list[str]:
        return list(inspect.signature(func).parameters)

    def static_parameters(self) -> list[str]:
        return [name for name, bt in self.binding_times.items() if bt == "S"]

    def object_spec(self, obj: Any) -> ObjectSpec | None:
        return self.objects.get(type(obj))

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


def load(path: Path) -> dict[str, Scenario]:
    """Read one declaration file into its scenarios."""
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise DeclarationError(f"{path}: {exc}") from None
    objects: dict[type, ObjectSpec] = {}
    for name, spec in data.get("objects", {}).items():
        cls = resolve(spec["class"], path)
        declared = set(spec.get("static", [])) | set(spec.get("deep", []))
        objects[cls] = ObjectSpec(name, cls, frozenset(declared), frozenset(spec.get("deep", [])))
    scenarios = {}
    for name, spec in data.get("scenario", {}).items():
        bts = dict(spec["params"])
        bad = {p: bt for p, bt in bts.items() if bt not in ("S", "D")}
        if bad:
            raise DeclarationError(f"{path}: scenario {name}: binding times must be S or D, got {bad}")
        policies = dict(spec.get("guards", {}))
        for event, policy in policies.items():
            if event not in EVENTS or policy not in POLICIES:
                raise DeclarationError(f"{path}: scenario {name}: bad guard {event} = {policy!r}")
        scenario = Scenario(
            name=name,
            description=spec.get("description", ""),
            entry=spec["entry"],
            binding_times=bts,
            objects=objects,
            unfold=frozenset(resolve(f, path) for f in spec.get("unfold", [])),
            pure=frozenset(resolve(f, path) for f in spec.get("pure", [])),
            observe=frozenset(resolve(f, path) for f in spec.get("observe", [])),
            policies=policies,
            source=path,
            context=dict(spec.get("context", {})),
        )
        params = scenario.parameters(scenario.entry_function())
        missing = set(params) ^ set(bts)
        if missing:
            raise DeclarationError(f"{path}: scenario {name}: params must match {params}, differ on {sorted(missing)}")
        scenarios[name] = scenario
    return scenarios


def all_scenarios() -> dict[str, Scenario]:
    """Every scenario declared in the pystack package's ``*.spec.toml`` files."""
    root = Path(pystack.__file__).parent
    found: dict[str, Scenario] = {}
    for path in sorted(root.rglob("*.spec.toml")):
        found.update(load(path))
    return found
