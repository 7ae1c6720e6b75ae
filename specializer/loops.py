"""The evaluator's loops: a loop over a short static sequence (or a ``while`` whose test
is static) unrolled into the worklist; any other kept as a residual loop whose
variables get one residual name each."""

from __future__ import annotations

import ast
from typing import Any

from .control import (
    Frame,
    _Bind,
    _breaks,
    _CannotUnfold,
    _IterStart,
    _LoopEnd,
    _mark_jumps,
    _Marker,
    _NeedsStatements,
    _WhileAgain,
)
from .facts import (
    _decided,
)
from .residual_ast import (
    _assign,
    _assigned_names,
    _load,
    _names_in,
    _store_target,
)
from .values import (
    Dyn,
    Static,
    Value,
)

UNROLL_LIMIT = 64


class Loops:
    """Mixed into :class:`specializer.pe.Evaluator`."""

    def unroll(self, stmt: ast.For, frame: Frame) -> list[Any] | None:
        """A loop over a short static sequence, as its iterations (None if it must stay a loop)."""
        if stmt.orelse:
            return None
        iterable = self.expr(stmt.iter, frame)
        if not isinstance(iterable, Static):
            frame.pending_iterable = iterable
            return None
        self.folds(iterable)
        try:
            items = list(iterable.value)
        except TypeError:
            frame.pending_iterable = iterable
            return None
        if len(items) > UNROLL_LIMIT:
            frame.pending_iterable = iterable
            return None
        self.stats.loops_unrolled += 1
        loop = _Marker()
        body = _mark_jumps(stmt.body, loop)
        unrolled: list[Any] = []
        for item in items:
            unrolled.append(_IterStart(loop))
            unrolled.append(_Bind(stmt.target, item))
            unrolled.extend(body)
        unrolled.append(_LoopEnd(loop))
        return unrolled

    def unroll_while(self, stmt: ast.While, frame: Frame, done: int) -> list[Any] | None:
        """One more iteration of a ``while`` whose test is static now (the fragment loop
        over a datagram of known length), or nothing if the test is statically false; None
        if the rest must stay a loop: a dynamic test, a break or continue, or the limit."""
        if stmt.orelse or done >= UNROLL_LIMIT or _breaks(stmt.body):
            return None
        probe = Frame(frame.func, frame.env, [], frame.result, frame.loop_vars, expr_only=True)
        mark = self.trace.mark()
        try:
            test = _decided(self.expr(stmt.test, probe))
        except _NeedsStatements:
            self.trace.rollback(mark)
            return None
        if not isinstance(test, Static):
            return None
        if not test.value:
            self.stats.loops_unrolled += done > 0
            return []
        return [*stmt.body, _WhileAgain(stmt, done + 1)]

    def for_loop(self, stmt: ast.For, frame: Frame) -> bool:
        """A loop that was not unrolled (see :meth:`unroll`): it stays in the residual code."""
        iterable = frame.pending_iterable or self.expr(stmt.iter, frame)
        frame.pending_iterable = None
        if stmt.orelse:
            raise _CannotUnfold("for-else")
        return self.residual_loop(stmt, frame, iterable=iterable)

    def while_loop(self, stmt: ast.While, frame: Frame) -> bool:
        if stmt.orelse:
            raise _CannotUnfold("while-else")
        test = self.expr(stmt.test, frame) if not _assigned_names(stmt.body) & _names_in(stmt.test) else None
        if isinstance(test, Static) and not test.value:
            self.stats.branches_removed += 1
            return True
        return self.residual_loop(stmt, frame)

    def residual_loop(self, stmt: ast.For | ast.While, frame: Frame, iterable: Value | None = None) -> bool:
        """A loop that stays. Each variable it assigns gets one residual name for the whole
        loop, bound before the loop to the variable's current value."""
        assigned = set(_assigned_names(stmt.body))
        if isinstance(stmt, ast.For):
            assigned |= {n.id for n in ast.walk(stmt.target) if isinstance(n, ast.Name)}
        loop_vars = dict(frame.loop_vars)
        for name in sorted(assigned):
            if name in loop_vars:
                continue
            residual = loop_vars[name] = self.fresh(name)
            current = frame.env.get(name)
            if current is not None:
                self.emit(frame, _assign(residual, self.lift(current)))
                frame.env[name] = Dyn(_load(residual))
        inner = Frame(frame.func, dict(frame.env), [], frame.result, loop_vars)
        if isinstance(stmt, ast.For):
            assert iterable is not None
            iterable = self.materialize(frame, iterable, "items")
            target = _store_target(stmt.target, loop_vars)
            for name in (n.id for n in ast.walk(stmt.target) if isinstance(n, ast.Name)):
                inner.env[name] = Dyn(_load(loop_vars[name]))
            self.block(stmt.body, inner)
            loop: ast.stmt = ast.For(target=target, iter=self.lift(iterable), body=inner.out, orelse=[],
                                     type_comment=None)
        else:
            probe = Frame(frame.func, dict(inner.env), [], frame.result, loop_vars, expr_only=True)
            try:
                test = self.expr(stmt.test, probe)
            except _NeedsStatements as exc:
                raise _CannotUnfold("loop test needs statements") from exc
            self.block(stmt.body, inner)
            loop = ast.While(test=self.lift(test), body=inner.out, orelse=[])
        for name in assigned:
            frame.env[name] = Dyn(_load(loop_vars[name]))
        self.emit(frame, loop)
        return True
