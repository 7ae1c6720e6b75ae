"""Control flow inside the partial evaluator: the markers of a statement worklist (an
unrolled loop's iterations, static jumps), the placeholders of an inlined function's
returns, and the exceptions that end a walk (what cannot be unfolded, an expression
that needs statements, a call that never returns)."""

from __future__ import annotations

import ast
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .values import Value


class _Return:
    """Placeholder for a ``return`` inside an inlined function, resolved when the call ends."""

    def __init__(self, value: Value):
        self.value = value


class _Marker:
    """A point in a statement worklist (an unrolled loop's identity, iteration starts, end)."""


class _IterStart:
    def __init__(self, loop: _Marker):
        self.loop = loop


class _LoopEnd:
    def __init__(self, loop: _Marker):
        self.loop = loop


class _WhileAgain:
    """After an unrolled iteration of a while loop: test it again."""

    def __init__(self, loop: ast.While, done: int):
        self.loop = loop
        self.done = done


def _breaks(stmts: list[Any]) -> bool:
    """Whether a loop body breaks or continues (nested loops and functions aside)."""
    for stmt in stmts:
        if isinstance(stmt, ast.Break | ast.Continue):
            return True
        if isinstance(stmt, ast.If | ast.With | ast.Try) and any(
                _breaks(getattr(stmt, part, [])) for part in ("body", "orelse", "finalbody")):
            return True
        if isinstance(stmt, ast.Try) and any(_breaks(h.body) for h in stmt.handlers):
            return True
    return False


class _Bind:
    """Bind an unrolled loop's target to the iteration's static value."""

    def __init__(self, target: ast.expr, value: Any):
        self.target = target
        self.value = value


class _Jump:
    """A break or continue of an unrolled loop: a jump within the worklist."""

    def __init__(self, kind: str, loop: _Marker):
        self.kind = kind
        self.loop = loop


def _mark_jumps(stmts: list[ast.stmt], loop: _Marker) -> list[Any]:
    """A copy of a loop body whose own break/continue statements are jump markers."""
    out: list[Any] = []
    for stmt in stmts:
        if isinstance(stmt, ast.Break):
            out.append(_Jump("break", loop))
        elif isinstance(stmt, ast.Continue):
            out.append(_Jump("continue", loop))
        elif isinstance(stmt, ast.If):
            out.append(ast.If(test=stmt.test, body=_mark_jumps(stmt.body, loop), orelse=_mark_jumps(stmt.orelse, loop)))
        else:
            out.append(stmt)  # inner loops keep their own break/continue
    return out


def _jumps(stmts: list[Any]) -> bool:
    for stmt in stmts:
        if isinstance(stmt, _Jump):
            return True
        if isinstance(stmt, ast.If) and (_jumps(stmt.body) or _jumps(stmt.orelse)):
            return True
    return False


def _jump_target(stmts: list[Any], index: int, jump: _Jump) -> int:
    for position in range(index + 1, len(stmts)):
        marker = stmts[position]
        if isinstance(marker, _LoopEnd) and marker.loop is jump.loop:
            return position + 1
        if jump.kind == "continue" and isinstance(marker, _IterStart) and marker.loop is jump.loop:
            return position
    raise _CannotUnfold("a jump whose loop is not in the continuation")


class _CannotUnfold(Exception):
    where: str | None = None  # file:line of the statement, set as it leaves the block


class _NeedsStatements(Exception):
    pass


class _NoReturn(Exception):
    """An inlined call whose every path raised: the rest of the caller's block is dead."""


def _replace_markers(stmts: list, replace: Callable[[_Return], list]) -> None:
    """Replace the return markers in ``stmts`` (and the statement lists nested in them), in
    order, and give every empty ``body`` a ``pass``.

    A statement with nested lists is marked once this has gone through it: its lists are
    complete when it is emitted (a branch or loop body is built before its statement), and
    the markers in them belonged to the inlined call that was resolved then, so a later
    resolution (of an enclosing call) has nothing left to do in it."""
    index = 0
    while index < len(stmts):
        stmt = stmts[index]
        if isinstance(stmt, _Return):
            replacement = replace(stmt)
            stmts[index : index + 1] = replacement
            index += len(replacement)
            continue
        nested = _NESTED[type(stmt)]
        if nested and not getattr(stmt, "_markers_done", False):
            for attr in nested:
                inner = getattr(stmt, attr, None)
                if isinstance(inner, list):
                    _replace_markers(inner, replace)
                    if attr == "body" and not inner:
                        inner.append(ast.Pass())
            stmt._markers_done = True
        index += 1


class _NestedFields(dict):
    """statement class -> which of ``body`` and ``orelse`` it may have."""

    def __missing__(self, cls: type) -> tuple[str, ...]:
        fields = ("body", "orelse")
        if issubclass(cls, ast.AST):
            fields = tuple(attr for attr in fields if attr in cls._fields)
        self[cls] = fields
        return fields


_NESTED: dict[type, tuple[str, ...]] = _NestedFields()


@dataclass
class Frame:
    func: types.FunctionType
    env: dict[str, Value]
    out: list
    result: list[_Return] | None = None  # None for the entry function
    # Variables assigned inside the enclosing residual loops -> their one residual name.
    loop_vars: dict[str, str] = field(default_factory=dict)
    expr_only: bool = False
    pending_iterable: Value | None = None  # the iterable evaluated by a failed unroll

    def branch(self) -> Frame:
        return Frame(self.func, dict(self.env), [], self.result, self.loop_vars)

    @property
    def globals(self) -> dict[str, Any]:
        return self.func.__globals__
