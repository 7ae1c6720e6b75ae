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
import itertools
import types
from collections.abc import Callable
from typing import Any

from pystack.tokens.facts import _SIMPLE_TYPES, Assumption, Diagnostic, SpecializationError, Stats
from pystack.tokens.scenario import Scenario

from .calls import Calls
from .control import (
    Frame,
    _CannotUnfold,
    _NeedsStatements,
)
from .expressions import Expressions
from .facts import (
    _DELETED,
    _builtin_class,
    _FreshList,
)
from .loops import Loops
from .source import _suspends, function_ast
from .statements import Statements
from .trace import Trace
from .trace import position as source_position
from .values import Constants, Dyn, Static, Value, Virtual


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


class Evaluator(Statements, Loops, Expressions, Calls):
    """One specialization of one scenario's entry function for concrete static values.

    Its responsibilities are in their own modules: statements.py (blocks, branches,
    assignments, try), loops.py (unrolling and residual loops), expressions.py (folding
    each kind of expression, reading static fields), calls.py (inlining, pure calls,
    residual calls); trace.py records what each decided, for ``spec show``."""

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
