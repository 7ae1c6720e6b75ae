"""The facts specialized code relies on (assumptions), and what a specialization reports.

Shared by the specializer, which finds the facts, and the run-time layer, which
checks them (on a device without the specializer too: remote specialization).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_SIMPLE_TYPES = (int, float, bool, str, bytes, type(None))


class SpecializationError(Exception):
    """The scenario cannot be specialized (bad declaration or unsupported code); the
    message names the source line the evaluator stopped at."""


@dataclass(frozen=True)
class Assumption:
    """A static fact the residual code relies on: ``subject.field`` (or ``subject[key]``) is ``value``."""

    subject: Any
    field: str
    value: Any
    kind: str = "field"  # "field" or "item"

    def holds(self) -> bool:
        try:
            if self.kind == "field":
                current = getattr(self.subject, self.field)
            else:
                current = self.subject[self.value_key]
        except (AttributeError, KeyError):
            return False
        return same(current, self.value)

    @property
    def value_key(self) -> Any:
        return self.field

    def describe(self, namer: Callable[[Any], str]) -> str:
        subject = namer(self.subject)
        if self.kind == "item":
            return f"{subject}[{self.field!r}] is {namer(self.value)}"
        return f"{subject}.{self.field} == {describe_value(self.value, namer)}"


def same(a: Any, b: Any) -> bool:
    if isinstance(a, _SIMPLE_TYPES) and isinstance(b, _SIMPLE_TYPES):
        return type(a) is type(b) and a == b
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a is b


def describe_value(value: Any, namer: Callable[[Any], str]) -> str:
    if isinstance(value, _SIMPLE_TYPES):
        return repr(value)
    if isinstance(value, tuple) and all(isinstance(v, _SIMPLE_TYPES) for v in value):
        return repr(value)
    return namer(value)


@dataclass
class Stats:
    branches_removed: int = 0
    calls_inlined: int = 0
    loops_unrolled: int = 0
    static_reads: int = 0
    residual_calls: int = 0
    functions: set[Any] = field(default_factory=set)  # generic functions the evaluator walked


@dataclass
class Diagnostic:
    kind: str  # "under-specialization", "not-unfolded", "static-mutated"
    message: str
    where: str  # "file:line"


class _ItemAssumption(Assumption):
    def __init__(self, container: Any, key: Any, value: Any):
        super().__init__(container, key, value, "item")

    def holds(self) -> bool:
        try:
            return same(self.subject[self.field], self.value)
        except (KeyError, IndexError, TypeError):
            return False


class _LookupAssumption(_ItemAssumption):
    """``container.get(key)`` (or ``__getitem__``, ``__contains__``) gives ``value``."""

    def __init__(self, container: Any, method: str, key: Any, value: Any):
        super().__init__(container, key, value)
        object.__setattr__(self, "method", method)

    def holds(self) -> bool:
        try:
            return same(getattr(self.subject, self.method)(self.field), self.value)
        except Exception:  # noqa: BLE001 - a lookup that fails now is a broken fact
            return False
