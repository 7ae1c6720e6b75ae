"""What the partial evaluator computes with: static values, residual expressions, value
objects, and the frozen references the residual code uses. The facts it relies on
(assumptions) and what a specialization reports are in pystack.tokens.facts: the
run-time layer checks them without the specializer."""

from __future__ import annotations

import ast
import builtins
import itertools
import keyword
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


# Values are never changed once made. They are not frozen dataclasses only because a frozen
# one takes six times as long to build, and a specialization builds thousands.
@dataclass(slots=True, unsafe_hash=True)
class Static:
    value: Any
    # How the generic code named this int (or tuple of them), for the residual to name it
    # the same way: ("attr", module, "EPIPE") for errno.EPIPE, ("global", module,
    # "ESTABLISHED"), ("tuple", (each item's name or None, ...)). Not part of the value.
    named: tuple | None = field(default=None, compare=False)


@dataclass(slots=True, unsafe_hash=True)
class Dyn:
    """A residual expression, with what is known statically about its value: partially
    static data such as bytes of a known length (a packed header) or an int."""

    expr: ast.expr
    kind: str | None = None  # "bytes", "bytearray" or "int" when known
    length: int | None = None  # for bytes, when known
    values: frozenset | None = None  # the few ints it can be, when known (segment flags)

    def renamed(self, expr: ast.expr) -> Dyn:
        return Dyn(expr, self.kind, self.length, self.values)


Value = Static | Dyn


class Virtual:
    """A value object the evaluator holds field by field instead of allocating it."""

    def __init__(self, cls: type, fields: dict[str, Value]):
        self.cls = cls
        self.fields = fields


class Constants:
    """Frozen references the residual code uses, with readable names."""

    def __init__(self) -> None:
        self.by_id: dict[int, str] = {}
        self.hints: dict[int, str] = {}
        self.values: dict[str, Any] = {}
        self._counts: dict[str, itertools.count] = {}
        # Names the residual code uses for its variables: a constant must not shadow one.
        self.reserved: Callable[[str], bool] = lambda name: False

    def name(self, value: Any, hint: str | None = None) -> str:
        key = self.key(value)
        if key in self.by_id:
            return self.by_id[key]
        base = _identifier(hint or self.hints.get(id(value)) or self.default_hint(value))
        return self._bind(key, base, value)

    def named(self, name: str, value: int) -> str:
        """A module's named int constant (``ESTABLISHED``), under its own name when free."""
        key = ("named", name, value)
        return self.by_id[key] if key in self.by_id else self._bind(key, name, value)

    def _bind(self, key: object, base: str, value: object) -> str:
        """Give ``value`` the first free name of ``base``, ``base_1``, ... and remember it by ``key``."""
        counter = self._counts.setdefault(base, itertools.count())
        index = next(counter)
        name = base if index == 0 else f"{base}_{index}"
        while name in self.values or self.reserved(name):
            name = f"{base}_{next(counter)}"
        self.by_id[key] = name
        self.values[name] = value
        return name

    @staticmethod
    def key(value: Any) -> Any:
        """Bound methods are made afresh on each attribute access: key them by owner and name."""
        owner = getattr(value, "__self__", None)
        if owner is not None and not isinstance(value, types.ModuleType) and not isinstance(owner, types.ModuleType):
            return ("method", id(owner), getattr(value, "__name__", ""))
        return id(value)

    def default_hint(self, value: Any) -> str:
        owner = getattr(value, "__self__", None)
        if owner is not None and not isinstance(owner, types.ModuleType):
            prefix = self.hints.get(id(owner)) or getattr(owner, "__name__", None) or type(owner).__name__.lower()
            return f"{prefix.strip('_')}_{value.__name__}"
        if isinstance(value, types.ModuleType):
            return value.__name__.rsplit(".", 1)[-1]
        return getattr(value, "__name__", None) or type(value).__name__.lower()


def _identifier(text: str) -> str:
    """A readable, valid Python name for a frozen reference."""
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in text).strip("_") or "ref"
    if name[0].isdigit() or keyword.iskeyword(name) or hasattr(builtins, name):
        name = "k_" + name
    return name
