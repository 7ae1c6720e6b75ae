"""The evaluator's statements: a block as a worklist (static branches chosen, the rest
the continuation), dynamic branches joined, assignments into static or residual
state, ``del``, augmented assignments, ``try``."""

from __future__ import annotations

import ast
from typing import Any

from pystack.tokens.facts import Diagnostic

from .control import (
    Frame,
    _Bind,
    _CannotUnfold,
    _IterStart,
    _Jump,
    _jump_target,
    _jumps,
    _LoopEnd,
    _NoReturn,
    _Return,
    _WhileAgain,
)
from .facts import (
    _DELETED,
    MAX_VALUE_SET,
    _cannot_raise,
    _decided,
    _exception_classes,
    _is_name,
    _merge_facts,
    _possible,
    _refine_length,
    _same_value,
    _shape,
)
from .residual_ast import (
    _assign,
    _assigned_names,
    _if,
    _load,
)
from .trace import position as source_position
from .values import Dyn, Static, Value, Virtual


class Statements:
    """Mixed into :class:`specializer.pe.Evaluator`."""

    def block(self, stmts: list[Any], frame: Frame) -> bool:
        """Specialize statements into ``frame.out``; False if every path left the block."""
        try:
            return self._block(stmts, frame)
        except _NoReturn:
            return False  # a statement called a function that always raises: the rest is dead
        except _CannotUnfold as why:
            if why.where is None and self._at is not None:
                why.where = self.where(*self._at)  # the innermost statement: where it stopped
            raise

    def _block(self, stmts: list[Any], frame: Frame) -> bool:
        """The statements of :meth:`block`.

        The statement list is a worklist: a static ``if`` is replaced by its
        chosen branch and a loop over a static sequence by its unrolled
        iterations, so that the rest of the list is always the whole
        continuation (what a dynamic branch that returns must skip, and
        where a static ``break`` or ``continue`` jumps to).
        """
        stmts = list(stmts)
        index = 0
        while index < len(stmts):
            stmt = stmts[index]
            self._at = (frame, stmt)
            if isinstance(stmt, ast.stmt):
                self.trace.statement(frame.func, stmt)
            if isinstance(stmt, _Bind):
                self.assign(stmt.target, Static(stmt.value), frame)
            elif isinstance(stmt, _Jump):
                index = _jump_target(stmts, index, stmt)
                continue
            elif isinstance(stmt, _IterStart | _LoopEnd):
                pass
            elif isinstance(stmt, ast.If):
                computed = self.expr(stmt.test, frame)
                test = _decided(computed)
                if isinstance(test, Static):
                    if test is not computed:  # its possible values all have one truth
                        self.trace.decided(frame.func, stmt.test)
                    self.folds(test)
                    self.stats.branches_removed += 1
                    stmts[index : index + 1] = stmt.body if test.value else stmt.orelse
                    continue
                return self.dynamic_if(test, stmt, stmts[index + 1 :], frame)
            elif isinstance(stmt, ast.For):
                unrolled = self.unroll(stmt, frame)
                if unrolled is not None:
                    stmts[index : index + 1] = unrolled
                    continue
                if not self.statement(stmt, frame):
                    return False
            elif isinstance(stmt, ast.While | _WhileAgain):
                loop, done = (stmt, 0) if isinstance(stmt, ast.While) else (stmt.loop, stmt.done)
                unrolled = self.unroll_while(loop, frame, done)
                if unrolled is not None:
                    stmts[index : index + 1] = unrolled
                    continue
                if not self.statement(loop, frame):
                    return False
            elif not self.statement(stmt, frame):
                return False
            index += 1
        return True

    def dynamic_if(self, test: Dyn, stmt: ast.If, rest: list[Any], frame: Frame) -> bool:
        """Both branches stay. The rest of the block is joined after them when both fall
        through; otherwise it continues inside each branch that does. A branch that jumps
        (a static break or continue of an unrolled loop) takes the rest with it, since the
        jump's target is in there."""
        then_f, else_f = frame.branch(), frame.branch()
        _refine_length(test.expr, then_f, else_f)
        if rest and (_jumps(stmt.body) or _jumps(stmt.orelse)):
            then_live = self.block([*stmt.body, *rest], then_f)
            else_live = self.block([*stmt.orelse, *rest], else_f)
        else:
            then_live = self.block(stmt.body, then_f)
            else_live = self.block(stmt.orelse, else_f)
            if then_live and else_live and rest:
                self.join(frame, then_f, else_f)
                frame.out.append(self.came_from_if(stmt, frame, _if(test.expr, then_f.out, else_f.out)))
                return self.block(rest, frame)
            if rest:
                then_live = then_live and self.block(rest, then_f)
                else_live = else_live and self.block(rest, else_f)
        live = [sub for sub, alive in ((then_f, then_live), (else_f, else_live)) if alive]
        if len(live) == 2:
            self.join(frame, then_f, else_f)
        elif live:
            frame.env = live[0].env
        frame.out.append(self.came_from_if(stmt, frame, _if(test.expr, then_f.out, else_f.out)))
        return bool(live)

    def came_from_if(self, generic: ast.If, frame: Frame, residual: ast.If) -> ast.If:
        residual._pe_at = source_position(frame.func, generic.test)  # the test's line(s), not the branches
        return residual

    def join(self, target: Frame, *paths: Frame) -> None:
        """Make ``target.env`` the join of the paths: where they disagree, a fresh residual
        variable is assigned at the end of each path."""
        env: dict[str, Value] = {}
        # in order: the residual text is the same in every process
        for name in dict.fromkeys(name for path in paths for name in path.env):
            values = [path.env.get(name) for path in paths]
            first = values[0]
            if all(v is not None and _same_value(first, v) for v in values):
                merged = first
                for value in values[1:]:
                    merged = _merge_facts(merged, value)  # same value; what is known of it may differ
                env[name] = merged
                continue
            common = target.loop_vars.get(name) or self.fresh(name)
            for side, value in zip(paths, values, strict=True):
                if value is not None and not _is_name(value, common):
                    side.out.append(_assign(common, self.lift(value)))
            shapes = {_shape(v) for v in values}
            kind, length = shapes.pop() if len(shapes) == 1 else (None, None)
            sets = [_possible(v) for v in values]
            choices = frozenset().union(*sets) if all(sets) else None
            if choices is not None and len(choices) > MAX_VALUE_SET:
                choices = None
            env[name] = Dyn(_load(common), kind, length, choices)
        target.env = env

    def statement(self, stmt: ast.stmt, frame: Frame) -> bool:
        if isinstance(stmt, ast.Expr):
            if isinstance(stmt.value, ast.Constant):
                return True  # docstring
            value = self.expr(stmt.value, frame)
            if isinstance(value, Dyn) and not isinstance(value.expr, ast.Name | ast.Constant):
                self.emit(frame, ast.Expr(value=value.expr))
            return True
        if isinstance(stmt, ast.Assign):
            value = self.expr(stmt.value, frame)
            for target in stmt.targets:
                self.assign(target, value, frame)
            return True
        if isinstance(stmt, ast.AnnAssign):
            if stmt.value is not None:
                self.assign(stmt.target, self.expr(stmt.value, frame), frame)
            return True
        if isinstance(stmt, ast.AugAssign):
            return self.aug_assign(stmt, frame)
        if isinstance(stmt, ast.Return):
            value = self.expr(stmt.value, frame) if stmt.value is not None else Static(None)
            if frame.result is None:
                self.emit(frame, ast.Return(value=self.lift(value)))
            else:
                if frame.loop_vars:
                    raise _CannotUnfold("return inside a residual loop")
                marker = _Return(value)
                frame.result.append(marker)
                frame.out.append(marker)
            return False
        if isinstance(stmt, ast.Raise):
            exc = self.expr(stmt.exc, frame) if stmt.exc is not None else None
            cause = self.expr(stmt.cause, frame) if stmt.cause is not None else None
            self.emit(frame, ast.Raise(exc=self.lift(exc) if exc else None,
                                       cause=self.lift(cause) if cause else None))
            return False
        if isinstance(stmt, ast.Pass):
            return True
        if isinstance(stmt, ast.Delete):
            for target in stmt.targets:
                self.delete(target, frame)
            return True
        if isinstance(stmt, ast.For):
            return self.for_loop(stmt, frame)
        if isinstance(stmt, ast.While):
            return self.while_loop(stmt, frame)
        if isinstance(stmt, ast.Break | ast.Continue):
            if not frame.loop_vars:
                raise _CannotUnfold("break/continue outside a residual loop")
            self.emit(frame, type(stmt)())
            return False
        if isinstance(stmt, ast.Try):
            return self.try_statement(stmt, frame)
        if isinstance(stmt, ast.Assert):
            test = self.expr(stmt.test, frame)
            if isinstance(test, Dyn):
                self.emit(frame, ast.Assert(test=test.expr, msg=None))
            elif not test.value:
                self.emit(frame, ast.Raise(exc=ast.Call(ast.Name("AssertionError", ast.Load()), [], []), cause=None))
                return False
            return True
        raise _CannotUnfold(f"unsupported statement {type(stmt).__name__}")

    def try_statement(self, stmt: ast.Try, frame: Frame) -> bool:
        """``try``/``except``/``else`` stays, each part specialized. An exception may leave the
        body at any point, so each variable the body assigns gets one residual name for the
        whole statement (bound before it, as in a residual loop): a handler sees whatever
        value the body had got to. The paths (body then ``else``, each handler) join after it."""
        if stmt.finalbody:
            raise _CannotUnfold("try-finally")
        parts = [*stmt.body, *stmt.orelse, *(s for h in stmt.handlers for s in h.body)]
        if any(isinstance(n, ast.Return | ast.Break | ast.Continue) for s in parts for n in ast.walk(s)):
            raise _CannotUnfold("return, break or continue inside try")
        classes = []
        for handler in stmt.handlers:
            kind = self.expr(handler.type, frame) if handler.type is not None else None
            if kind is not None and not (isinstance(kind, Static) and _exception_classes(kind.value)):
                raise _CannotUnfold("an except clause whose exception class is not static")
            classes.append(kind)
        loop_vars = dict(frame.loop_vars)
        entry_env = dict(frame.env)
        for name in sorted(_assigned_names(stmt.body)):
            residual = loop_vars.get(name)
            if residual is None:
                residual = loop_vars[name] = self.fresh(name)
                if name in frame.env:
                    self.emit(frame, _assign(residual, self.lift(frame.env[name])))
            entry_env[name] = Dyn(_load(residual))
        body = Frame(frame.func, dict(entry_env), [], frame.result, loop_vars)
        body_live = self.block(stmt.body, body)
        if all(_cannot_raise(s) for s in body.out):  # the handlers are dead code
            self.stats.branches_removed += len(stmt.handlers)
            frame.out.extend(body.out)
            frame.env = body.env
            return body_live and self.block(stmt.orelse, frame)
        orelse = Frame(frame.func, body.env, [], frame.result, frame.loop_vars)
        live = [orelse] if body_live and self.block(stmt.orelse, orelse) else []
        handlers = []
        for handler, kind in zip(stmt.handlers, classes, strict=True):
            sub = Frame(frame.func, dict(entry_env), [], frame.result, frame.loop_vars)
            name = None
            if handler.name is not None:
                name = self.fresh(handler.name)
                sub.env[handler.name] = Dyn(_load(name))
            if self.block(handler.body, sub):
                sub.env.pop(handler.name, None)  # Python unbinds it when the handler ends
                live.append(sub)
            handlers.append((kind, name, sub))
        if len(live) > 1:
            self.join(frame, *live)
        elif live:
            frame.env = live[0].env
        frame.out.append(ast.Try(
            body=body.out,
            handlers=[ast.ExceptHandler(type=self.lift(kind) if kind is not None else None, name=name,
                                        body=sub.out or [ast.Pass()])
                      for kind, name, sub in handlers],
            orelse=orelse.out, finalbody=[]))
        return bool(live)

    def assign(self, target: ast.expr, value: Value, frame: Frame) -> None:
        if isinstance(target, ast.Name):
            name = target.id
            if name in frame.loop_vars:
                residual = frame.loop_vars[name]
            elif isinstance(value, Static):
                frame.env[name] = value
                self.hint(value.value, name)
                return
            else:
                residual = self.fresh(name)  # never reuse: another variable may share the old name
            if not _is_name(value, residual):
                self.emit(frame, _assign(residual, self.lift(value)))
            frame.env[name] = value.renamed(_load(residual)) if isinstance(value, Dyn) else Dyn(_load(residual))
            return
        if isinstance(target, ast.Tuple | ast.List):
            if isinstance(value, Static):
                self.folds(value)
                items = list(value.value)
                if len(items) != len(target.elts):
                    raise _CannotUnfold("unpacking length mismatch")
                for elt, item in zip(target.elts, items, strict=True):
                    self.assign(elt, Static(item), frame)
                return
            if isinstance(value.expr, ast.Tuple) and len(value.expr.elts) == len(target.elts):
                # a, b.x = b.x, 0: every element is read before anything is assigned
                items = [self.materialize(frame, Dyn(e), "item") if not isinstance(e, ast.Constant) else Static(e.value)
                         for e in value.expr.elts]
                for elt, item in zip(target.elts, items, strict=True):
                    self.assign(elt, item, frame)
                return
            value = self.materialize(frame, value, "values")
            names = []
            for elt in target.elts:
                if not isinstance(elt, ast.Name):
                    raise _CannotUnfold("nested unpacking target")
                names.append(frame.loop_vars.get(elt.id) or self.fresh(elt.id))
            self.emit(frame, ast.Assign(
                targets=[ast.Tuple(elts=[ast.Name(id=n, ctx=ast.Store()) for n in names], ctx=ast.Store())],
                value=value.expr))
            for elt, name in zip(target.elts, names, strict=True):
                frame.env[elt.id] = Dyn(ast.Name(id=name, ctx=ast.Load()))
            return
        if isinstance(target, ast.Attribute):
            base = self.expr(target.value, frame)
            if isinstance(base, Static) and isinstance(base.value, Virtual):
                raise _CannotUnfold(f"assigns {base.value.cls.__name__}.{target.attr} of a value object")
            if isinstance(base, Static):
                self._note_mutation(base.value, target.attr, frame, target)
            self.emit(frame, ast.Assign(
                targets=[ast.Attribute(value=self.lift(base), attr=target.attr, ctx=ast.Store())],
                value=self.lift(value)))
            return
        if isinstance(target, ast.Subscript):
            base = self.expr(target.value, frame)
            index = self.expr(target.slice, frame)
            self.changes(base)
            self.emit(frame, ast.Assign(
                targets=[ast.Subscript(value=self.lift(base), slice=self.lift_index(index), ctx=ast.Store())],
                value=self.lift(value)))
            return
        raise _CannotUnfold(f"unsupported assignment target {type(target).__name__}")

    def delete(self, target: ast.expr, frame: Frame) -> None:
        """``del name`` unbinds it (a later read is refused: the generic code raises there);
        ``del obj.attr`` and ``del container[key]`` stay in the residual code."""
        if isinstance(target, ast.Name):
            if target.id not in frame.env or target.id in frame.loop_vars:
                raise _CannotUnfold(f"del {target.id} of a name bound outside the evaluator's view")
            frame.env[target.id] = Static(_DELETED)
            return
        if isinstance(target, ast.Attribute):
            base = self.expr(target.value, frame)
            if isinstance(base, Static):
                if isinstance(base.value, Virtual):
                    raise _CannotUnfold(f"deletes {base.value.cls.__name__}.{target.attr} of a value object")
                self._note_mutation(base.value, target.attr, frame, target)
            self.emit(frame, ast.Delete(targets=[ast.Attribute(value=self.lift(base), attr=target.attr,
                                                               ctx=ast.Del())]))
            return
        if isinstance(target, ast.Subscript):
            base = self.expr(target.value, frame)
            index = self.expr(target.slice, frame)
            self.changes(base)
            self.emit(frame, ast.Delete(targets=[ast.Subscript(value=self.lift(base), slice=self.lift_index(index),
                                                               ctx=ast.Del())]))
            return
        raise _CannotUnfold(f"unsupported del target {type(target).__name__}")

    def _note_mutation(self, obj: Any, attr: str, frame: Frame, node: ast.AST) -> None:
        spec = self.scenario.object_spec(obj)
        if spec is not None and attr in spec.static_fields:
            self.mutated.add((id(obj), attr))
            self.diagnostics.append(Diagnostic(
                "static-mutated",
                f"residual code assigns static field {type(obj).__name__}.{attr}; later reads stay dynamic",
                self.where(frame, node)))

    def aug_assign(self, stmt: ast.AugAssign, frame: Frame) -> bool:
        target = stmt.target
        if isinstance(target, ast.Name):
            current = self.expr(ast.Name(id=target.id, ctx=ast.Load()), frame)
            value = self.binop(type(stmt.op), current, self.expr(stmt.value, frame))
            self.assign(ast.Name(id=target.id, ctx=ast.Store()), value, frame)
            return True
        if isinstance(target, ast.Attribute):
            base = self.expr(target.value, frame)
            if isinstance(base, Static):
                self._note_mutation(base.value, target.attr, frame, target)
            new_target = ast.Attribute(value=self.lift(base), attr=target.attr, ctx=ast.Store())
        elif isinstance(target, ast.Subscript):
            base = self.expr(target.value, frame)
            index = self.expr(target.slice, frame)
            self.changes(base)
            new_target = ast.Subscript(value=self.lift(base), slice=self.lift_index(index), ctx=ast.Store())
        else:
            raise _CannotUnfold("unsupported augmented assignment")
        value = self.expr(stmt.value, frame)
        self.emit(frame, ast.AugAssign(target=new_target, op=stmt.op, value=self.lift(value)))
        return True
