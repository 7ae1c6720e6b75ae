"""The partial evaluator: generic Python source + static values -> residual Python AST.

It walks the AST of the entry function with an environment in which each
variable is either :class:`Static` (its value is known now) or
:class:`Dyn` (a residual expression, always a name or a constant-free
simple expression). Static expressions are folded, branches on static
tests disappear, loops over static sequences unroll, calls to the
scenario's unfoldable functions are inlined across layers, and what
remains is emitted as residual statements.

Objects the scenario declares partially static are the bridge to the
running system: reading one of their static fields folds the field's
current value into the code and records an :class:`Assumption`; reading
a dynamic field emits a read through a frozen reference to the object.
"""

from __future__ import annotations

import ast
import builtins
import copy
import dataclasses
import inspect
import itertools
import operator
import re
import struct
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .control import (
    _Bind,
    _breaks,
    _CannotUnfold,
    _IterStart,
    _Jump,
    _jump_target,
    _jumps,
    _LoopEnd,
    _mark_jumps,
    _Marker,
    _NeedsStatements,
    _NoReturn,
    _replace_markers,
    _Return,
    _WhileAgain,
)
from .facts import (
    _COMPARE,
    _CONTAINERS,
    _DELETED,
    _LIST_READERS,
    MAX_VALUE_SET,
    _builtin_class,
    _call_shape,
    _cannot_raise,
    _decided,
    _exception_classes,
    _field_kind,
    _FreshList,
    _immutable,
    _is_name,
    _known_comparison,
    _merge_facts,
    _operand_hint,
    _possible,
    _refine_length,
    _same_value,
    _shape,
    _split_constant,
)
from .residual_ast import (
    _assign,
    _assigned_names,
    _free_names,
    _has_call,
    _if,
    _load,
    _names_in,
    _rename,
    _store_target,
)
from .scenario import Scenario
from .source import _bind_simple, _rebound_globals, _signature, _suspends, function_ast
from .trace import Trace, carry
from .trace import position as source_position
from .values import (
    _SIMPLE_TYPES,
    Assumption,
    Constants,
    Diagnostic,
    Dyn,
    SpecializationError,
    Static,
    Stats,
    Value,
    Virtual,
    _ItemAssumption,
    _LookupAssumption,
    same,
)
from .watch import plain_type

UNROLL_LIMIT = 64
INLINE_DEPTH_LIMIT = 24

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
    ast.LShift: operator.lshift, ast.RShift: operator.rshift, ast.BitOr: operator.or_,
    ast.BitAnd: operator.and_, ast.BitXor: operator.xor, ast.Div: operator.truediv,
}
_UNARY: dict[type, Callable[[Any], Any]] = {
    ast.Not: operator.not_, ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Invert: operator.invert,
}
# Builtins that compute a value from their arguments and nothing else.
PURE_BUILTINS = frozenset({
    len, min, max, abs, int, bool, str, float, tuple, frozenset, isinstance, hasattr, range,
    divmod, hash, ord, chr, round, any, all, sum, sorted, type, bytes,
})
_CONSTANT_NAME = re.compile(r"[A-Z][A-Z0-9_]*")  # a module constant, named in the residual too






















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








def evaluate(scenario: Scenario, statics: dict[str, Any]) -> tuple[Evaluator, list[ast.arg], list[ast.stmt]]:
    """Specialize the scenario's entry, in passes: when the residual code changes a static
    container (``table.append(x)``, ``table[i] = v``) whose contents a pass folded (``len(table)``,
    a loop over it), the next pass reads that container when the code runs."""
    dynamic: frozenset[int] = frozenset()
    while True:
        evaluator = Evaluator(scenario, statics, dynamic)
        params, body = evaluator.run()
        unsound = evaluator.changed_ids & evaluator.folded_ids
        if not unsound:
            evaluator.trace.journal.clear()  # nothing is taken back after the run
            return evaluator, params, body
        dynamic |= unsound  # grows each pass: containers are finitely many


class Evaluator:
    """One specialization of one scenario's entry function for concrete static values."""

    def __init__(self, scenario: Scenario, statics: dict[str, Any], dynamic_ids: frozenset[int] = frozenset()):
        self.scenario = scenario
        self.statics = statics
        # Static containers the residual code changes and whose contents were folded: a
        # second pass reads them at run time (see :func:`evaluate`).
        self.dynamic_ids = dynamic_ids
        self.folded_ids: set[int] = set()
        self.changed_ids: set[int] = set()
        self.constants = Constants()
        self.assumptions: dict[tuple[int, str, str], Assumption] = {}
        self.stats = Stats()
        self.diagnostics: list[Diagnostic] = []
        self.mutated: set[tuple[int, str]] = set()
        self.deep_ids: set[int] = set()  # static containers whose contents are invariant too
        self._names: dict[str, itertools.count] = {}
        self._used_names: set[str] = set()
        self.constants.reserved = lambda name: name in self._used_names
        self.checked_classes: set[type] = set()
        self.depth = 0
        self.inlining: list[Any] = []  # the functions being inlined, innermost last
        self.escaped_lists: list[_FreshList] = []  # new lists lifted into the residual code
        # node type -> the expr_* method for it (None: opaque), looked up once per evaluator
        self._dispatch: dict[type, Callable[..., Value] | None] = {}
        self._packers: dict[str | bytes, Callable[..., bytes]] = {}  # struct formats, parsed once
        self._at: tuple[Frame, Any] | None = None  # the statement being specialized, for messages
        self.trace = Trace()  # what was static, what was residualized, where each residual node came from

    # ------------------------------------------------------------ entry

    def run(self) -> tuple[list[ast.arg], list[ast.stmt]]:
        """Specialize the entry; SpecializationError, naming the line, for what cannot be."""
        entry = self.scenario.entry_function()
        if _suspends(entry):
            raise SpecializationError(f"{entry.__qualname__} is a generator or coroutine: its body runs "
                                      "at each resumption, not at the call")
        try:
            return self._run(entry)
        except _CannotUnfold as why:
            raise SpecializationError(f"{why.where or entry.__qualname__}: cannot specialize "
                                      f"{entry.__qualname__}: {why}") from None

    def _run(self, entry: Any) -> tuple[list[ast.arg], list[ast.stmt]]:
        fdef = self.function_ast(entry)
        env: dict[str, Value] = {}
        params = []
        for name in self.scenario.parameters(entry):
            if name in self.statics:
                env[name] = Static(self.statics[name])
                self.hint(self.statics[name], "stack" if name == "self" else name)
            else:
                params.append(ast.arg(arg=name))
                self._used_names.add(name)
                env[name] = Dyn(ast.Name(id=name, ctx=ast.Load()))
        self.stats.functions.add(entry)
        self.trace.functions[entry] = None
        frame = Frame(entry, env, [])
        self.block(fdef.body, frame)
        return params, frame.out

    # ------------------------------------------------------------ helpers

    def function_ast(self, func: types.FunctionType) -> ast.FunctionDef:
        return function_ast(func)

    def hint(self, value: Any, name: str) -> None:
        """Remember a readable name for a frozen reference (the variable or field it came from)."""
        if not isinstance(value, _SIMPLE_TYPES + (tuple,)):
            self.constants.hints.setdefault(id(value), name)

    def fresh(self, base: str) -> str:
        base = base.strip("_") or "v"
        counter = self._names.setdefault(base, itertools.count())
        while True:
            index = next(counter)
            name = base if index == 0 else f"{base}_{index}"
            if name not in self._used_names and name not in self.constants.values:
                self._used_names.add(name)
                return name

    def lift(self, value: Value) -> ast.expr:
        if isinstance(value, Dyn):
            return value.expr
        if value.named is not None:
            return self.lift_named(value.named, value.value)
        v = value.value
        if v is _DELETED:
            raise _CannotUnfold("a name deleted on one path only")
        if isinstance(v, _FreshList):
            # It escapes into the residual code, which may change it: a new list there (as
            # the generic code makes one), and from now on the evaluator may not read it.
            if v or any(v is seen for seen in self.escaped_lists):
                raise _CannotUnfold("a new list reaches the residual code twice")
            self.escaped_lists.append(v)
            return ast.List(elts=[], ctx=ast.Load())
        if isinstance(v, Virtual):  # it escapes: build it where it is used
            return ast.Call(func=self.lift(Static(v.cls)), args=[],
                            keywords=[ast.keyword(arg=k, value=self.lift(f)) for k, f in v.fields.items()])
        if isinstance(v, _SIMPLE_TYPES) and not (isinstance(v, float) and v != v):
            if isinstance(v, int) and not isinstance(v, bool) and v < 0:
                return ast.UnaryOp(op=ast.USub(), operand=ast.Constant(-v))
            return ast.Constant(v)
        if isinstance(v, tuple) and all(isinstance(x, _SIMPLE_TYPES) or _builtin_class(x) for x in v):
            return ast.Tuple(elts=[self.lift(Static(x)) for x in v], ctx=ast.Load())
        if v is getattr(builtins, getattr(v, "__name__", ""), None):
            return ast.Name(id=v.__name__, ctx=ast.Load())
        return ast.Name(id=self.constants.name(v), ctx=ast.Load())

    def assume(self, key: tuple[int, str, str], assumption: Assumption, frame: Frame, node: ast.AST) -> None:
        """The residual code relies on this fact; the trace notes which generic code did."""
        kept = self.assumptions.setdefault(key, assumption)
        self.trace.relied_on(kept, frame.func, node)

    def lift_named(self, named: tuple, value: Any) -> ast.expr:
        """A constant as the generic code named it: ``errno.EPIPE`` (through the frozen module),
        ``ESTABLISHED`` (a frozen reference of that name), a tuple of them."""
        kind = named[0]
        if kind == "attr":
            return ast.Attribute(value=self.lift(Static(named[1])), attr=named[2], ctx=ast.Load())
        if kind == "global":
            return ast.Name(id=self.constants.named(named[1], value), ctx=ast.Load())
        return ast.Tuple(elts=[self.lift(Static(v, n)) for v, n in zip(value, named[1], strict=True)],
                         ctx=ast.Load())

    def kept_for_run_time(self, exc: Exception, what: str) -> None:
        """A computation on static values raised: it stays in the residual code, which raises
        when it runs, as the generic code does. Said, since it is rarely what the code meant."""
        where = self.where(*self._at) if self._at is not None else "?"
        self.diagnostics.append(Diagnostic("raises-at-run-time", f"{what} raised {type(exc).__name__}: {exc}; "
                                           "kept for run time", where))

    def where(self, frame: Frame, node: ast.AST) -> str:
        code = frame.func.__code__
        return f"{code.co_filename.rsplit('/', 1)[-1]}:{getattr(node, 'lineno', '?')}"

    def emit(self, frame: Frame, stmt: Any) -> None:
        if frame.expr_only:
            raise _NeedsStatements()
        self.came_from(stmt)
        frame.out.append(stmt)

    def came_from(self, stmt: ast.stmt) -> ast.stmt:
        """Note on a residual statement the generic statement being specialized."""
        if self._at is not None and "_pe_at" not in stmt.__dict__:
            at_frame, at = self._at
            stmt._pe_at = source_position(at_frame.func, at)
        return stmt

    def materialize(self, frame: Frame, value: Value, hint: str) -> Value:
        """Bind a non-trivial dynamic expression to a fresh name (so it is evaluated once, now)."""
        if isinstance(value, Static) or isinstance(value.expr, ast.Name | ast.Constant):
            return value
        name = self.fresh(hint)
        self.emit(frame, ast.Assign(targets=[ast.Name(id=name, ctx=ast.Store())], value=value.expr))
        return value.renamed(ast.Name(id=name, ctx=ast.Load()))

    # ------------------------------------------------------------ statements

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

    # ------------------------------------------------------------ expressions

    def expr(self, node: ast.expr | None, frame: Frame) -> Value:
        if node is None:
            return Static(None)
        try:
            method = self._dispatch[type(node)]
        except KeyError:
            method = self._dispatch[type(node)] = getattr(type(self), "expr_" + type(node).__name__, None)
        if method is None:
            value = self.opaque(node, frame)
            self.trace.expression(frame.func, node, type(value) is Dyn, getattr(value, "expr", None))
            return value
        value = method(self, node, frame)
        if self.dynamic_ids and type(value) is Static and id(value.value) in self.dynamic_ids:
            value = Dyn(self.lift(value))  # its contents are read when the code runs
        if type(value) is Static:
            self.trace.expression(frame.func, node, False, None)
        else:
            self.trace.expression(frame.func, node, True, value.expr)
        return value

    def folds(self, *values: Value) -> None:
        """The evaluator is about to compute with these static values: note the containers."""
        for value in values:
            if isinstance(value, Static) and isinstance(value.value, _CONTAINERS):
                self.folded_ids.add(id(value.value))

    def changes(self, *values: Value) -> None:
        """The residual code may change these (static) values when it runs."""
        for value in values:
            if isinstance(value, Static) and isinstance(value.value, _CONTAINERS) \
                    and not isinstance(value.value, _FreshList):
                self.changed_ids.add(id(value.value))

    def expr_Constant(self, node: ast.Constant, frame: Frame) -> Value:
        return Static(node.value)

    def expr_NamedExpr(self, node: ast.NamedExpr, frame: Frame) -> Value:
        """``(y := value)``: an assignment, then the name's value."""
        self.assign(node.target, self.expr(node.value, frame), frame)
        return self.expr(ast.Name(id=node.target.id, ctx=ast.Load()), frame)

    def expr_Name(self, node: ast.Name, frame: Frame) -> Value:
        if node.id in frame.env:
            value = frame.env[node.id]
            if isinstance(value, Static) and value.value is _DELETED:
                raise _CannotUnfold(f"{node.id} is read after del")
            if isinstance(value, Static) and isinstance(value.value, _FreshList) \
                    and any(value.value is seen for seen in self.escaped_lists):
                raise _CannotUnfold(f"{node.id} is a new list the residual code may have changed")
            return value
        if node.id in frame.globals:
            if node.id in _rebound_globals(frame.func):  # a variable of its module: read it at run time
                return Dyn(ast.Subscript(value=self.lift(Static(frame.globals)), slice=ast.Constant(node.id),
                                         ctx=ast.Load()))
            value = frame.globals[node.id]
            module = frame.func.__module__.rsplit(".", 1)[-1]
            self.hint(value, f"{module}{node.id}" if node.id.startswith("_") else node.id)
            if type(value) is int and _CONSTANT_NAME.fullmatch(node.id):
                return Static(value, ("global", node.id))
            return Static(value)
        if hasattr(builtins, node.id):
            return Static(getattr(builtins, node.id))
        raise _CannotUnfold(f"unbound name {node.id!r}")

    def expr_Attribute(self, node: ast.Attribute, frame: Frame) -> Value:
        base = self.expr(node.value, frame)
        if isinstance(base, Static) and isinstance(base.value, _FreshList) and node.attr not in _LIST_READERS \
                and isinstance(node.value, ast.Name) and node.value.id not in frame.loop_vars:
            base = self.new_list(node.value.id, base, frame)
        if isinstance(base, Dyn):
            return Dyn(ast.Attribute(value=base.expr, attr=node.attr, ctx=ast.Load()))
        return self.static_attribute(base.value, node.attr, frame, node)

    def new_list(self, name: str, value: Static, frame: Frame) -> Value:
        """``acc = []`` then ``acc.append(x)``: the list is made in the residual code where it
        is first changed; every read before that saw it empty, as each run of the generic
        code does. Not inside a residual loop (it would be made again at each iteration)."""
        if frame.loop_vars:
            raise _CannotUnfold(f"{name} is a new list changed inside a residual loop")
        residual = self.fresh(name)
        self.emit(frame, _assign(residual, self.lift(value)))
        frame.env[name] = Dyn(_load(residual))
        return frame.env[name]

    def static_attribute(self, obj: Any, attr: str, frame: Frame, node: ast.AST) -> Value:
        if isinstance(obj, types.ModuleType | type):
            value = getattr(obj, attr)
            if type(value) is int and isinstance(obj, types.ModuleType) and _CONSTANT_NAME.fullmatch(attr):
                return Static(value, ("attr", obj, attr))
            return Static(value)
        if isinstance(obj, Virtual):
            if attr in obj.fields:
                return obj.fields[attr]
            raw = inspect.getattr_static(obj.cls, attr, None)
            if isinstance(raw, property):
                return self.call_function(raw.fget, [Static(obj)], {}, frame, node, force_unfold=True)
            raise _CannotUnfold(f"{obj.cls.__name__}.{attr} of a value object")
        if isinstance(obj, _FreshList) and attr not in _LIST_READERS:
            raise _CannotUnfold(f"list.{attr} of a new list")  # it would change a frozen value
        in_instance = attr in getattr(obj, "__dict__", ())
        raw = None if in_instance else inspect.getattr_static(plain_type(obj), attr, None)
        if isinstance(raw, property):
            return self.call_function(raw.fget, [Static(obj)], {}, frame, node, force_unfold=True)
        if isinstance(raw, types.FunctionType) or callable(raw) and not isinstance(obj, _SIMPLE_TYPES + (tuple,)):
            bound = getattr(obj, attr)
            if isinstance(raw, types.FunctionType | types.BuiltinFunctionType | types.MethodDescriptorType | staticmethod | classmethod):
                return Static(bound)
        spec = self.scenario.object_spec(obj)
        if spec is not None and spec.cls not in self.checked_classes:
            spec.check(obj)
            self.checked_classes.add(spec.cls)
        if isinstance(obj, _SIMPLE_TYPES + (tuple,)):
            return Static(getattr(obj, attr))
        if spec is not None and attr in spec.static_fields and (id(obj), attr) not in self.mutated:
            value = getattr(obj, attr)
            if attr in spec.deep_fields:
                self.deep_ids.add(id(value))
            self.hint(value, attr)
            self.stats.static_reads += 1
            self.assume((id(obj), attr, "field"), Assumption(obj, attr, value), frame, node)
            return Static(value)
        return Dyn(ast.Attribute(value=self.lift(Static(obj)), attr=attr, ctx=ast.Load()), _field_kind(plain_type(obj), attr))

    def expr_Subscript(self, node: ast.Subscript, frame: Frame) -> Value:
        base = self.expr(node.value, frame)
        index = self.expr(node.slice, frame)
        if isinstance(base, Static) and isinstance(index, Static):
            container = base.value
            if isinstance(container, _SIMPLE_TYPES + (tuple,)):
                try:
                    return Static(container[index.value])
                except Exception as exc:  # noqa: BLE001 - whatever it raises, the residual code raises at run time
                    self.kept_for_run_time(exc, "indexing a static value")
            elif id(container) in self.deep_ids:
                value = container[index.value]
                if isinstance(value, dict | list | set | frozenset | tuple):
                    self.deep_ids.add(id(value))  # the contents of invariant contents are invariant
                self.assume((id(container), repr(index.value), "item"),
                            _ItemAssumption(container, index.value, value), frame, node)
                return Static(value)
        kind, length = _shape(base)
        if kind == "bytes" and isinstance(index, Static):
            if isinstance(index.value, slice):
                sliced = len(range(length)[index.value]) if length is not None else None
                return Dyn(ast.Subscript(self.lift(base), self.lift_index(index), ast.Load()), "bytes", sliced)
            return Dyn(ast.Subscript(self.lift(base), self.lift_index(index), ast.Load()), "int")
        return Dyn(ast.Subscript(value=self.lift(base), slice=self.lift_index(index), ctx=ast.Load()))

    def lift_index(self, index: Value) -> ast.expr:
        if isinstance(index, Static) and isinstance(index.value, slice):
            parts = (index.value.start, index.value.stop, index.value.step)
            if all(isinstance(p, _SIMPLE_TYPES) for p in parts):
                lower, upper, step = (None if p is None else self.lift(Static(p)) for p in parts)
                return ast.Slice(lower=lower, upper=upper, step=step)
        return self.lift(index)

    def expr_Slice(self, node: ast.Slice, frame: Frame) -> Value:
        parts = [self.expr(p, frame) if p is not None else Static(None) for p in (node.lower, node.upper, node.step)]
        if all(isinstance(p, Static) for p in parts):
            return Static(slice(*(p.value for p in parts)))
        lower, upper, step = (self.lift(p) if not (isinstance(p, Static) and p.value is None) else None for p in parts)
        return Dyn(ast.Slice(lower=lower, upper=upper, step=step))

    def expr_Tuple(self, node: ast.Tuple, frame: Frame) -> Value:
        items = [self.expr(e, frame) for e in node.elts]
        if all(isinstance(i, Static) and not isinstance(i.value, Virtual) for i in items):
            named = ("tuple", tuple(i.named for i in items)) if any(i.named for i in items) else None
            return Static(tuple(i.value for i in items), named)
        return Dyn(ast.Tuple(elts=[self.lift(i) for i in items], ctx=ast.Load()))

    def expr_List(self, node: ast.List, frame: Frame) -> Value:
        # A list display makes a new list each time it runs. An empty one is static while it
        # is only read (``for ... in ancdata``); see :class:`_FreshList` for when it escapes.
        items = [self.expr(e, frame) for e in node.elts]
        return Dyn(ast.List(elts=[self.lift(i) for i in items], ctx=ast.Load())) if items else Static(_FreshList())

    def expr_BinOp(self, node: ast.BinOp, frame: Frame) -> Value:
        left, right = self.in_order([node.left, node.right], frame)
        return self.binop(type(node.op), left, right)

    def binop(self, op: type, left: Value, right: Value) -> Value:
        if isinstance(left, Static) and isinstance(right, Static):
            self.folds(left, right)
            try:
                return Static(_BINOPS[op](left.value, right.value))
            except Exception as exc:  # noqa: BLE001 - whatever it raises, the residual code raises at run time
                self.kept_for_run_time(exc, f"{op.__name__} of static operands")
        left_set, right_set = _possible(left), _possible(right)
        if left_set and right_set and op in _BINOPS:
            try:
                results = frozenset(_BINOPS[op](a, b) for a in left_set for b in right_set)
            except Exception as exc:  # noqa: BLE001 - some possible operands raise: the residual decides
                if not (isinstance(left, Static) and isinstance(right, Static)):  # those are said above
                    self.kept_for_run_time(exc, f"{op.__name__} over the operands' possible values")
                results = None
            if results is not None and len(results) == 1:
                return Static(next(iter(results)))
            if results is not None and len(results) <= MAX_VALUE_SET and all(type(r) is int for r in results):
                return Dyn(ast.BinOp(self.lift(left), op(), self.lift(right)), "int", None, results)
        lk, ll = _shape(left)
        rk, rl = _shape(right)
        if op is ast.Add and lk == rk == "bytes":
            if isinstance(right, Static) and right.value == b"":
                return left
            if isinstance(left, Static) and left.value == b"":
                return right
            return Dyn(ast.BinOp(self.lift(left), ast.Add(), self.lift(right)), "bytes",
                       ll + rl if ll is not None and rl is not None else None)
        if lk == rk == "int":
            if op in (ast.Add, ast.Sub, ast.BitOr, ast.BitXor) and isinstance(right, Static) and right.value == 0:
                return left
            if op in (ast.Add, ast.BitOr, ast.BitXor) and isinstance(left, Static) and left.value == 0:
                return right
            if op is ast.Add:
                return self.add_ints(left, right)
            if op is ast.Sub and isinstance(right, Static) and type(right.value) is int:
                return self.add_ints(left, Static(-right.value))  # (w + 128) - 1 is w + 127
            kind = "int" if op in (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Mod, ast.LShift, ast.RShift,
                                   ast.BitOr, ast.BitAnd, ast.BitXor) else None
            return Dyn(ast.BinOp(self.lift(left), op(), self.lift(right)), kind)
        return Dyn(ast.BinOp(left=self.lift(left), op=op(), right=self.lift(right)))

    def add_ints(self, left: Value, right: Value) -> Value:
        """Integer sums are kept as ``dynamic + constant``: static terms fold wherever they
        appear (Python ints do not overflow, so reassociating them is exact)."""
        left_dyn, left_k = _split_constant(left)
        right_dyn, right_k = _split_constant(right)
        dynamic = [d for d in (left_dyn, right_dyn) if d is not None]
        constant = left_k + right_k
        if not dynamic:
            return Static(constant)
        expr = dynamic[0] if len(dynamic) == 1 else ast.BinOp(dynamic[0], ast.Add(), dynamic[1])
        if constant:
            expr = ast.BinOp(expr, ast.Add(), self.lift(Static(constant)))
        for operand, kept in ((left, left_dyn), (right, right_dyn)):
            if isinstance(operand, Dyn) and operand.expr is not kept:
                carry(expr, operand.expr)  # a sum taken apart lives on in the new one
        return Dyn(expr, "int")

    def expr_UnaryOp(self, node: ast.UnaryOp, frame: Frame) -> Value:
        operand = self.expr(node.operand, frame)
        if isinstance(node.op, ast.Not):
            operand = _decided(operand)  # ``not data`` of bytes whose length is known
        if isinstance(operand, Static):
            self.folds(operand)
            return Static(_UNARY[type(node.op)](operand.value))
        return Dyn(ast.UnaryOp(op=node.op, operand=operand.expr))

    def expr_Compare(self, node: ast.Compare, frame: Frame) -> Value:
        left = self.expr(node.left, frame)
        values = [left]
        result: Value | None = None
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = self.expr(comparator, frame)
            values.append(right)
            if isinstance(left, Static) and isinstance(right, Static):
                self.folds(left, right)
                outcome = _COMPARE[type(op)](left.value, right.value)
                if not outcome:
                    return Static(False)
                left = right
                continue
            known = _known_comparison(op, left, right)
            if known is not None:
                if not known:
                    return Static(False)
                left = right
                continue
            part = Dyn(ast.Compare(left=self.lift(left), ops=[op], comparators=[self.lift(right)]))
            result = part if result is None else Dyn(ast.BoolOp(op=ast.And(), values=[result.expr, part.expr]))
            left = right
        return result if result is not None else Static(True)

    def expr_BoolOp(self, node: ast.BoolOp, frame: Frame) -> Value:
        is_and = isinstance(node.op, ast.And)
        residual: list[ast.expr] = []
        for index, operand_node in enumerate(node.values):
            if residual:
                operand = self.expression_only(operand_node, frame)
            else:
                operand = self.expr(operand_node, frame)
            last = index == len(node.values) - 1
            if isinstance(operand, Static):
                self.folds(operand)
                if bool(operand.value) != is_and:  # and: falsy stops; or: truthy stops
                    if not residual:
                        return operand
                    residual.append(self.lift(operand))
                    break
                if last:
                    if not residual:
                        return operand
                    residual.append(self.lift(operand))
                continue
            residual.append(operand.expr)
        if len(residual) == 1:
            return Dyn(residual[0])
        return Dyn(ast.BoolOp(op=node.op, values=residual))

    def expr_IfExp(self, node: ast.IfExp, frame: Frame) -> Value:
        test = _decided(self.expr(node.test, frame))
        if isinstance(test, Static):
            self.folds(test)
            self.stats.branches_removed += 1
            return self.expr(node.body if test.value else node.orelse, frame)
        body = self.expression_only(node.body, frame)
        orelse = self.expression_only(node.orelse, frame)
        choices = _possible(body) | _possible(orelse) if _possible(body) and _possible(orelse) else None
        shapes = {_shape(body), _shape(orelse)}
        kind, length = shapes.pop() if len(shapes) == 1 else (None, None)
        return Dyn(ast.IfExp(test=test.expr, body=self.lift(body), orelse=self.lift(orelse)),
                   "int" if choices else kind, length if not choices else None, choices)

    def expression_only(self, node: ast.expr, frame: Frame) -> Value:
        """Specialize a conditionally evaluated operand: nothing may be emitted for it."""
        sub = Frame(frame.func, dict(frame.env), [], frame.result, frame.loop_vars, expr_only=True)
        mark = self.trace.mark()
        try:
            return self.expr(node, sub)
        except _NeedsStatements:
            self.trace.rollback(mark)
            return self.opaque(node, frame)

    def expr_JoinedStr(self, node: ast.JoinedStr, frame: Frame) -> Value:
        """An f-string: its parts are specialized like any expression (a static field in an
        error message folds, with its assumption); formatted now if every part is static."""
        parts: list[Any] = []
        for part in node.values:
            if isinstance(part, ast.Constant):
                parts.append(part.value)
                continue
            if not isinstance(part, ast.FormattedValue) or part.format_spec is not None:
                return self.opaque(node, frame)
            value = self.expr(part.value, frame)
            if isinstance(value, Static) and _immutable(value.value):
                convert = {-1: format, 115: str, 114: repr, 97: ascii}[part.conversion]
                parts.append(convert(value.value))
            else:
                parts.append(ast.FormattedValue(value=self.lift(value), conversion=part.conversion, format_spec=None))
        if all(isinstance(p, str) for p in parts):
            return Static("".join(parts))
        return Dyn(ast.JoinedStr(values=[ast.Constant(p) if isinstance(p, str) else p for p in parts]))

    def opaque(self, node: ast.expr, frame: Frame) -> Value:
        """An expression the evaluator does not take apart: evaluate if static, else keep it whole."""
        for sub in ast.walk(node):
            if isinstance(sub, ast.NamedExpr | ast.Yield | ast.YieldFrom | ast.Await):
                raise _CannotUnfold(f"{type(sub).__name__} inside an expression kept whole")
        free = _free_names(node)
        values = {name: self.expr(ast.Name(id=name, ctx=ast.Load()), frame) for name in free}
        called = {call.func.id for call in ast.walk(node) if isinstance(call, ast.Call) and isinstance(call.func, ast.Name)}
        # Evaluated now only over values that cannot change: a static object's dynamic
        # fields (``sum(len(d) for _, d in tcb.out_of_order)``) are read when the code runs.
        if all(isinstance(v, Static) and (name in called or _immutable(v.value)) for name, v in values.items()) \
                and self._calls_only_pure(node, values):
            namespace = {name: v.value for name, v in values.items()}
            try:
                value = eval(compile(ast.Expression(body=node), "<static>", "eval"), {"__builtins__": builtins}, namespace)
            except Exception as exc:  # noqa: BLE001 - whatever it raises, the residual code raises at run time
                self.kept_for_run_time(exc, "an expression kept whole")
            else:
                self.trace.kept_whole(frame.func, node, None)
                return Static(value)
        copied = copy.deepcopy(node)
        for sub in ast.walk(copied):  # located where the residual puts it, not in the generic file
            for attr in ("lineno", "col_offset", "end_lineno", "end_col_offset"):
                sub.__dict__.pop(attr, None)
        # Its parts are residual as they are, except the free names that were static (they
        # become constants): the trace says so before the names are replaced.
        static_names = {name for name, v in values.items() if isinstance(v, Static)}
        for sub, twin in zip(ast.walk(node), ast.walk(copied), strict=True):
            if isinstance(sub, ast.expr):
                static = type(sub) is ast.Name and sub.id in static_names
                self.trace.expression(frame.func, sub, not static, None if static else twin)
        return Dyn(_rename(copied, {name: self.lift(v) for name, v in values.items()}))

    def _calls_only_pure(self, node: ast.expr, values: dict[str, Value]) -> bool:
        """Every call in ``node`` is to a pure function named directly (``bytes(v)``)."""
        for call in (n for n in ast.walk(node) if isinstance(n, ast.Call)):
            if not isinstance(call.func, ast.Name):
                return False
            func = values.get(call.func.id)
            if func is None:
                func = Static(getattr(builtins, call.func.id, None))
            if not isinstance(func, Static) or not self.is_pure(func.value, func.value):
                return False
        return True

    # ------------------------------------------------------------ calls

    def expr_Call(self, node: ast.Call, frame: Frame) -> Value:
        func = self.expr(node.func, frame)
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            return self.opaque(node, frame)
        values = self.in_order([*node.args, *(k.value for k in node.keywords)], frame)
        args = values[: len(node.args)]
        kwargs = {k.arg: v for k, v in zip(node.keywords, values[len(node.args):], strict=True) if k.arg}
        if isinstance(func, Dyn):
            return self.residual_call(func, args, kwargs, frame)
        return self.call_function(func.value, args, kwargs, frame, node)

    def in_order(self, nodes: list[ast.expr], frame: Frame) -> list[Value]:
        """Evaluate operands left to right. When one needs statements (an inlined call), the
        earlier operands that call something are bound first, so effects keep their order."""
        values: list[Value] = []
        for node in nodes:
            if type(node) is ast.Name or type(node) is ast.Constant:  # no statements, no calls
                values.append(self.expr(node, frame))
                continue
            sub = Frame(frame.func, frame.env, [], frame.result, frame.loop_vars, frame.expr_only)
            try:
                value = self.expr(node, sub)
            except _NoReturn:
                # The earlier operands are evaluated before the call that raises.
                for v in values:
                    if isinstance(v, Dyn) and _has_call(v.expr):
                        self.materialize(frame, v, "arg")
                frame.out.extend(sub.out)
                raise
            if sub.out:
                values = [self.materialize(frame, v, "arg") if isinstance(v, Dyn) and _has_call(v.expr) else v
                          for v in values]
                frame.out.extend(sub.out)
            values.append(value)
        return values

    def call_function(self, func: Any, args: list[Value], kwargs: dict[str, Value], frame: Frame,
                      node: ast.AST, force_unfold: bool = False) -> Value:
        target, bound_self = func, None
        if isinstance(func, types.MethodType):
            target, bound_self = func.__func__, func.__self__
        if isinstance(target, staticmethod):
            target = target.__func__
        all_static = all(isinstance(a, Static) for a in args) and all(isinstance(v, Static) for v in kwargs.values())
        if (force_unfold or self.scenario.unfolds(target)) and not frame.expr_only:
            call_args = ([Static(bound_self)] if bound_self is not None else []) + args
            try:
                return self.inline(target, call_args, kwargs, frame, node)
            except _CannotUnfold as why:
                self.diagnostics.append(Diagnostic("not-unfolded", f"{target.__qualname__}: {why}", self.where(frame, node)))
        spec = self.scenario.objects.get(func) if isinstance(func, type) else None
        if spec is not None and spec.virtual and dataclasses.is_dataclass(func) and not frame.expr_only:
            return Static(self.construct(func, args, kwargs, frame))
        if func is len and len(args) == 1 and _shape(args[0])[1] is not None:
            return Static(_shape(args[0])[1])
        if func is bytes and len(args) == 1 and not kwargs and isinstance(args[0], Dyn) and args[0].kind == "bytes":
            return args[0]  # bytes(b) is b itself for bytes
        if all_static and self.is_pure(func, target):
            self.folds(*args, *kwargs.values(), Static(getattr(func, "__self__", None)))
            try:
                result = func(*[a.value for a in args], **{k: v.value for k, v in kwargs.items()})
                owner = getattr(func, "__self__", None)
                if owner is not None and id(owner) in self.deep_ids:
                    if isinstance(result, dict | list | tuple):
                        self.deep_ids.add(id(result))
                    name = getattr(func, "__name__", "")
                    if name in ("get", "__getitem__", "__contains__") and len(args) == 1 and not kwargs:
                        # a lookup in an invariant container is a fact too (stack.sockets.get(fd))
                        key = args[0].value
                        self.assume((id(owner), repr(key), "item"),
                                    _LookupAssumption(owner, name, key, result), frame, node)
                return Static(result)
            except Exception as exc:  # noqa: BLE001 - whatever it raises, the residual code raises at run time
                self.kept_for_run_time(exc, f"the pure call {getattr(func, '__qualname__', func)!r}")
        if func is struct.pack and args and isinstance(args[0], Static) and isinstance(args[0].value, str | bytes):
            packer = self.packer(args[0].value)
            if packer is not None:
                if all(isinstance(a, Static) for a in args) and not kwargs:
                    try:
                        return Static(packer(*[a.value for a in args[1:]]))
                    except struct.error:
                        pass  # raises at run time, as in the generic code
                return self.residual_call(Static(packer), args[1:], kwargs, frame)
        if (func is min or func is max) and len(args) >= 2 and not kwargs and not frame.expr_only \
                and all(isinstance(a, Dyn) or isinstance(a.value, _SIMPLE_TYPES) for a in args):
            return self.min_max(func, args, frame)
        return self.residual_call(Static(func), args, kwargs, frame)

    def packer(self, fmt: str | bytes) -> Callable[..., bytes] | None:
        """``struct.pack(fmt, ...)`` with a static format as ``Struct(fmt).pack(...)``: the
        format is parsed now, once, not looked up on every call (None: a bad format, which
        the residual code raises on as the generic code does)."""
        packer = self._packers.get(fmt)
        if packer is None:
            try:
                packer = self._packers[fmt] = struct.Struct(fmt).pack
            except struct.error:
                return None
            text = fmt.decode() if isinstance(fmt, bytes) else fmt
            self.hint(packer, "pack_" + ("".join(c for c in text if c.isalnum()) or "empty"))
        return packer

    def min_max(self, func: Any, args: list[Value], frame: Frame) -> Value:
        """``min(a, b)`` as ``b if b < a else a`` (``>`` for max), and more operands as a
        chain of those: exactly what the builtin does (it keeps what it has unless the next
        operand compares strictly less, by the same ``<``), without the call, which costs
        CPython about what three comparisons cost. Each operand is bound to a name first,
        so that it is still evaluated once, in order."""
        operands = [self.materialize(frame, arg, _operand_hint(arg)) for arg in args]
        result = operands[0]
        for index, operand in enumerate(operands[1:]):
            if index:
                result = self.materialize(frame, result, "least" if func is min else "greatest")
            ints = _shape(result)[0] == _shape(operand)[0] == "int"
            if isinstance(operand, Static) and ints:  # the constant on the right: ``0 if x < 0 else x``
                test = ast.Compare(left=self.lift(result), ops=[ast.Gt() if func is min else ast.Lt()],
                                   comparators=[self.lift(operand)])
            else:
                test = ast.Compare(left=self.lift(operand), ops=[ast.Lt() if func is min else ast.Gt()],
                                   comparators=[self.lift(result)])
            before, this = _possible(result), _possible(operand)
            choices = frozenset(func(x, y) for x in before for y in this) if before and this else None
            if choices is not None and len(choices) > MAX_VALUE_SET:
                choices = None
            result = Dyn(ast.IfExp(test=test, body=self.lift(operand), orelse=self.lift(result)),
                         "int" if ints else None, None, choices)
        return result

    def construct(self, cls: type, args: list[Value], kwargs: dict[str, Value], frame: Frame) -> Virtual:
        """A value object: its fields from the arguments and the dataclass defaults (a
        computed field is bound to a name, so that each read does not compute it again)."""
        bound = inspect.signature(cls).bind(*args, **kwargs)
        fields: dict[str, Value] = {}
        for f in dataclasses.fields(cls):
            if f.name in bound.arguments:
                fields[f.name] = self.materialize(frame, bound.arguments[f.name], f.name)
            elif f.default is not dataclasses.MISSING:
                fields[f.name] = Static(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                fields[f.name] = Static(f.default_factory())
            else:
                raise _CannotUnfold(f"{cls.__name__} needs {f.name}")
        return Virtual(cls, fields)

    def is_pure(self, func: Any, target: Any) -> bool:
        if target in PURE_BUILTINS or self.scenario.is_pure(target):
            return True
        owner = getattr(func, "__self__", None)
        if owner is not None and id(owner) in self.deep_ids:
            return getattr(func, "__name__", "") in ("get", "__getitem__", "__contains__", "keys", "values", "items")
        return isinstance(owner, _SIMPLE_TYPES + (tuple,)) and not isinstance(owner, type(None))

    def residual_call(self, func: Value, args: list[Value], kwargs: dict[str, Value], frame: Frame) -> Value:
        self.stats.residual_calls += 1
        if isinstance(func, Static):
            owner = getattr(func.value, "__self__", None)
            if getattr(func.value, "__name__", "") not in _LIST_READERS:
                self.changes(Static(owner))  # table.append(x)
        self.changes(*args, *kwargs.values())  # the callee may change what it is given
        call = ast.Call(func=self.lift(func), args=[self.lift(a) for a in args],
                        keywords=[ast.keyword(arg=k, value=self.lift(v)) for k, v in kwargs.items()])
        if isinstance(func, Static):
            target = getattr(func.value, "__func__", func.value)
            call.removable = self.scenario.is_observer(target) or self.is_pure(func.value, target)
        return Dyn(call, *_call_shape(func, args))

    def inline(self, func: types.FunctionType, args: list[Value], kwargs: dict[str, Value],
               frame: Frame, node: ast.AST) -> Value:
        if self.depth >= INLINE_DEPTH_LIMIT:
            raise _CannotUnfold("inlining too deep")
        if _suspends(func):
            raise _CannotUnfold("a generator or coroutine: its body runs at each resumption, not at the call")
        if func in self.inlining:
            # A recursive call typically follows an effect on the static state that the
            # evaluator cannot see (RouteTable.lookup after dropping an expired route):
            # unfolding it would fold the state from before the effect.
            raise _CannotUnfold("recursive call")
        fdef = self.function_ast(func)
        signature, simple = _signature(func)
        arguments = _bind_simple(simple, args, kwargs) if simple is not None else None
        if arguments is None:
            try:
                arguments = signature.bind(*args, **kwargs).arguments
            except TypeError as exc:
                raise _CannotUnfold(f"call does not match the signature: {exc}") from exc
        env: dict[str, Value] = {}
        for name, param in signature.parameters.items():
            if name in arguments:
                env[name] = self.materialize(frame, arguments[name], name)
            elif param.default is not inspect.Parameter.empty:
                env[name] = Static(param.default)
            else:
                raise _CannotUnfold(f"missing argument {name}")
        saved_out, saved_used, saved_trace = len(frame.out), set(self._used_names), self.trace.mark()
        returns: list[_Return] = []
        sub = Frame(func, env, [], returns, {})
        self.depth += 1
        self.inlining.append(func)
        self.trace.functions.setdefault(func, None)
        try:
            live = self.block(fdef.body, sub)
        except _CannotUnfold:
            self._used_names = saved_used
            del frame.out[saved_out:]
            self.trace.rollback(saved_trace)  # the call stays: the callee runs generic
            raise
        finally:
            self.depth -= 1
            self.inlining.pop()
        if live:
            marker = _Return(Static(None))
            returns.append(marker)
            sub.out.append(marker)
        self.stats.calls_inlined += 1
        self.stats.functions.add(func)
        if not returns:
            # Every path raised: the call never returns, and what follows it is dead code
            # (evaluating it could fold values the generic code never computes, e.g. an
            # attribute of the None that sockfd_lookup refused).
            for stmt in sub.out:
                self.emit(frame, stmt)
            raise _NoReturn()
        result = self.resolve_returns(func, returns, sub.out)
        for stmt in sub.out:
            self.emit(frame, stmt)
        return result

    def resolve_returns(self, func: types.FunctionType, returns: list[_Return], out: list) -> Value:
        statics = [r.value for r in returns if isinstance(r.value, Static)]
        if returns and len(statics) == len(returns) and all(same(s.value, statics[0].value) for s in statics):
            _replace_markers(out, lambda marker: [])
            return statics[0]
        if not returns:
            return Static(None)  # every path raised
        name = self.fresh(func.__name__.lstrip("_") + "_result")
        _replace_markers(out, lambda marker: [ast.Assign(targets=[ast.Name(id=name, ctx=ast.Store())],
                                                          value=self.lift(marker.value))])
        shapes = {_shape(r.value) for r in returns}
        kind, length = shapes.pop() if len(shapes) == 1 else (None, None)
        return Dyn(ast.Name(id=name, ctx=ast.Load()), kind, length)






















































































































