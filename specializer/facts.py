"""What the partial evaluator knows about a value beyond static or dynamic: the shape
of residual bytes (their length), the few ints a residual value can be, the kind of a
field, whether a value is immutable, and how these facts join where paths meet."""

from __future__ import annotations

import ast
import builtins
import collections
import inspect
import operator
import re
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pystack.tokens.facts import _SIMPLE_TYPES, same

from .values import Dyn, Static, Value

if TYPE_CHECKING:
    from .control import Frame

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
    ast.LShift: operator.lshift, ast.RShift: operator.rshift, ast.BitOr: operator.or_,
    ast.BitAnd: operator.and_, ast.BitXor: operator.xor, ast.Div: operator.truediv,
}
_UNARY: dict[type, Callable[[Any], Any]] = {
    ast.Not: operator.not_, ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Invert: operator.invert,
}
_CONSTANT_NAME = re.compile(r"[A-Z][A-Z0-9_]*")  # a module constant, named in the residual too
_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Is: operator.is_, ast.IsNot: operator.is_not,
    ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}

class _FreshList(list):
    """The value of an empty list display (``[]``): static while the code only reads it.
    Lifted into the residual code it becomes a new ``[]`` there, once; methods that change
    it are not evaluated (they would change a value the residual code shares)."""


_LIST_READERS = frozenset({"copy", "count", "index", "__len__", "__contains__", "__getitem__", "__iter__"})


_DELETED = object()  # the value of a name after ``del name``


# Values whose contents code can change in place.
_CONTAINERS = (list, dict, set, bytearray, collections.deque)


def _immutable(value: Any) -> bool:
    """A value no code can change: plain data, and tuples and frozensets of it."""
    if isinstance(value, _SIMPLE_TYPES):
        return True
    if isinstance(value, tuple | frozenset):
        return all(_immutable(v) for v in value)
    return False


def _builtin_class(value: Any) -> bool:
    """A builtin class, written by its name (``(OSError, KeyError)`` in an except clause)."""
    return isinstance(value, type) and getattr(builtins, value.__name__, None) is value


def _cannot_raise(stmt: Any) -> bool:
    """A residual statement that cannot raise: a name bound to a constant or another name."""
    return isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) for t in stmt.targets) \
        and isinstance(stmt.value, ast.Constant | ast.Name)


def _exception_classes(value: Any) -> bool:
    """An exception class, or a tuple of them (what an ``except`` clause names)."""
    if isinstance(value, tuple):
        return bool(value) and all(_exception_classes(v) for v in value)
    return isinstance(value, type) and issubclass(value, BaseException)


def _same_value(a: Value, b: Value) -> bool:
    if isinstance(a, Static) and isinstance(b, Static):
        return same(a.value, b.value)
    if isinstance(a, Dyn) and isinstance(b, Dyn):
        return a.expr is b.expr or ast.dump(a.expr) == ast.dump(b.expr)
    return False


def _refine_length(test: ast.expr, then_f: Frame, else_f: Frame) -> None:
    """What a length test teaches each branch: where ``len(x) == N`` holds (the then
    branch of ``==``, the else branch of ``!=``), x is N bytes long from there on. So a
    send that checked its size against a committed ADU computes every size after the
    check at specialization time."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and type(test.ops[0]) in (ast.Eq, ast.NotEq)):
        return
    call, bound = test.left, test.comparators[0]
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "len"
            and len(call.args) == 1 and isinstance(call.args[0], ast.Name) and not call.keywords
            and isinstance(bound, ast.Constant) and type(bound.value) is int):
        return
    holds = then_f if isinstance(test.ops[0], ast.Eq) else else_f
    name = call.args[0].id
    for var, value in list(holds.env.items()):
        if isinstance(value, Dyn) and _is_name(value, name) and value.kind == "bytes":
            holds.env[var] = Dyn(value.expr, "bytes", bound.value, value.values)


def _shape(value: Value | None) -> tuple[str | None, int | None]:
    """(kind, length) known about a value: bytes of a length, or an int."""
    if isinstance(value, Dyn):
        return value.kind, value.length
    if isinstance(value, Static):
        if isinstance(value.value, bytes):
            return "bytes", len(value.value)
        if isinstance(value.value, int) and not isinstance(value.value, bool):
            return "int", None
    return None, None


_FIELD_KINDS: dict[tuple[type, str], str | None] = {}


def _field_kind(cls: type, attr: str) -> str | None:
    """What a dynamic field holds, from the class's annotations (``ip_id: int``); kept per
    class and field, since a class's annotations do not change."""
    key = (cls, attr)
    if key in _FIELD_KINDS:
        return _FIELD_KINDS[key]
    kind = None
    for klass in getattr(cls, "__mro__", ()):
        annotation = inspect.get_annotations(klass).get(attr)
        if annotation in ("int", int):
            kind = "int"
            break
        if annotation in ("bytes", bytes):
            kind = "bytes"
            break
    _FIELD_KINDS[key] = kind
    return kind


MAX_VALUE_SET = 16


def _known_comparison(op: ast.cmpop, left: Value, right: Value) -> bool | None:
    """Comparisons decided by what is known of a dynamic value: an int or bytes is not None,
    and a comparison over small sets of possible ints may have one outcome."""
    if isinstance(op, ast.Is | ast.IsNot):
        for a, b in ((left, right), (right, left)):
            if isinstance(b, Static) and b.value is None and isinstance(a, Dyn) and (a.kind or a.values):
                return isinstance(op, ast.IsNot)
        return None
    left_set, right_set = _possible(left), _possible(right)
    if left_set and right_set:
        outcomes = {_COMPARE[type(op)](a, b) for a in left_set for b in right_set}
        if len(outcomes) == 1:
            return outcomes.pop()
    return None


def _possible(value: Value | None) -> frozenset | None:
    """The ints a value can be, when that is a small known set."""
    if isinstance(value, Static):
        return frozenset((value.value,)) if type(value.value) is int else None
    return value.values if isinstance(value, Dyn) else None


def _decided(value: Value) -> Value:
    """A test whose every possible value has the same truth is static (bytes of a known
    length are true exactly when that length is not 0)."""
    if isinstance(value, Dyn) and value.kind == "bytes" and value.length is not None:
        return Static(value.length > 0)
    choices = _possible(value)
    if isinstance(value, Dyn) and choices:
        truths = {bool(v) for v in choices}
        if len(truths) == 1:
            return Static(truths.pop())
    return value


def _split_constant(value: Value) -> tuple[ast.expr | None, int]:
    """An int value as (dynamic part, constant part)."""
    if isinstance(value, Static):
        return None, value.value
    expr = value.expr
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add) and isinstance(expr.right, ast.Constant) \
            and isinstance(expr.right.value, int):
        return expr.left, expr.right.value
    return expr, 0


def _call_shape(func: Value, args: list[Value]) -> tuple[str | None, int | None]:
    """What a residual call returns, for the few calls whose result shape is known."""
    if isinstance(func, Static):
        f = func.value
        owner = getattr(f, "__self__", None)
        name = getattr(f, "__name__", "")
        if isinstance(owner, struct.Struct) and name == "pack":
            return "bytes", owner.size
        if f is len or f is int or (owner is int and name == "from_bytes"):
            return "int", None
        if f in (min, max) and len(args) > 1 and all(_shape(a)[0] == "int" for a in args):
            return "int", None  # the least or greatest of ints is one of them
        if f is bytes:
            return "bytes", None
        if f is bytearray:
            return "bytearray", None  # a packet buffer: never None (a writer's optional buffer folds)
    elif isinstance(func.expr, ast.Attribute) and func.expr.attr == "to_bytes" and args \
            and isinstance(args[0], Static) and isinstance(args[0].value, int):
        return "bytes", args[0].value
    return None, None


def _merge_facts(a: Value, b: Value) -> Value:
    """One residual expression reached on two paths: keep only what holds on both."""
    if not (isinstance(a, Dyn) and isinstance(b, Dyn)) or a == b:
        return a
    kind = a.kind if a.kind == b.kind else None
    length = a.length if a.length == b.length else None
    values = a.values | b.values if a.values is not None and b.values is not None else None
    if values is not None and len(values) > MAX_VALUE_SET:
        values = None
    return Dyn(a.expr, kind, length, values)


def _operand_hint(value: Value) -> str:
    """A name for an operand bound before use: a field's name (``rto_at`` for
    ``tcb.rto_at``), else ``operand``."""
    if isinstance(value, Dyn) and isinstance(value.expr, ast.Attribute):
        return value.expr.attr
    return "operand"


def _is_name(value: Value | None, name: str) -> bool:
    return isinstance(value, Dyn) and isinstance(value.expr, ast.Name) and value.expr.id == name
