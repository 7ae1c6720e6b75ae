"""Binding-time analysis: which parts of the generic code are static, before any value is known.

It reads the same declarations as the partial evaluator and annotates
every expression of every function the scenario unfolds with ``S``
(computable at specialization time) or ``D`` (left in the residual code).
The analysis is

* flow-sensitive: a variable is static after one assignment and dynamic
  after another, and a variable assigned under a dynamic condition is
  dynamic after the join;
* polyvariant: each callee is analysed once per call context (the binding
  times of its arguments), and each context keeps its own annotations;
* return-sensitive: a call's result can be static while the callee still
  has dynamic effects (counters, residual writes).

Being offline it is conservative where the (online) evaluator can do
better: a test that depends on a field value (``route.expires is None``)
is static here, but a value returned under a dynamic test is dynamic,
even if at specialization time only one path survives. Diagnostics report
declared-static values that turn dynamic, callees that cannot be unfolded,
and static fields the residual code would assign.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import sys
import types
from dataclasses import dataclass, field
from typing import Any

from .pe import PURE_BUILTINS, Diagnostic, function_ast
from .scenario import Scenario
from .watch import plain_type

S = "S"
D = "D"


@dataclass(frozen=True)
class BT:
    """An abstract value: its binding time, and what is known of it statically."""

    time: str  # S or D
    cls: type | None = None  # for static references to objects of a known class
    value: Any = None  # for static values known without the context: functions, modules, constants
    known: bool = False

    @property
    def static(self) -> bool:
        return self.time == S


DYN = BT(D)
STAT = BT(S)


def known(value: Any) -> BT:
    return BT(S, plain_type(value) if not isinstance(value, type | types.ModuleType | types.FunctionType) else None,
              value, True)


@dataclass
class Context:
    """One annotated copy of a function: its argument binding times and its annotations."""

    func: Any
    signature: tuple[str, ...]
    annotations: dict[int, str] = field(default_factory=dict)  # id(node) -> S/D
    nodes: dict[int, ast.AST] = field(default_factory=dict)
    result: BT = DYN

    @property
    def name(self) -> str:
        args = ",".join(self.signature)
        return f"{self.func.__qualname__}({args})"


class Analysis:
    def __init__(self, scenario: Scenario):
        self.scenario = scenario
        self.contexts: dict[tuple[Any, tuple[str, ...]], Context] = {}
        self.order: list[Context] = []
        self.diagnostics: list[Diagnostic] = []
        self._active: set[tuple[Any, tuple[str, ...]]] = set()

    # ------------------------------------------------------------ entry

    def run(self) -> Analysis:
        entry = self.scenario.entry_function()
        params = list(inspect.signature(entry).parameters)
        owner = _owner_class(entry)
        args = []
        for name in params:
            if self.scenario.binding_times.get(name) == S:
                cls = owner if name == "self" else _annotation_class(entry, name)
                args.append(BT(S, cls))
            else:
                args.append(DYN)
        self.analyse(entry, args)
        return self

    def analyse(self, func: Any, args: list[BT]) -> BT:
        signature = tuple(a.time for a in args)
        key = (func, signature)
        context = self.contexts.get(key)
        if context is not None:
            return context.result
        if key in self._active:
            return DYN  # recursion: be conservative
        context = Context(func, signature)
        self.contexts[key] = context
        self.order.append(context)
        self._active.add(key)
        try:
            fdef = function_ast(func)
            env = dict(zip(inspect.signature(func).parameters, args, strict=False))
            walker = _Walker(self, context, env)
            walker.block(fdef.body)
            context.result = walker.result()
        finally:
            self._active.discard(key)
        return context.result


class _Walker:
    """Abstract interpretation of one function body in one context."""

    def __init__(self, analysis: Analysis, context: Context, env: dict[str, BT]):
        self.analysis = analysis
        self.scenario = analysis.scenario
        self.context = context
        self.env = env
        self.returns: list[tuple[BT, bool]] = []  # (value, under dynamic control)
        self.dynamic_depth = 0
        self.reported: set[str] = set()

    def mark(self, node: ast.AST, bt: BT) -> BT:
        self.context.annotations[id(node)] = bt.time
        self.context.nodes[id(node)] = node
        return bt

    def where(self, node: ast.AST) -> str:
        filename = self.context.func.__code__.co_filename.rsplit("/", 1)[-1]
        return f"{filename}:{getattr(node, 'lineno', '?')}"

    def result(self) -> BT:
        if not self.returns:
            return STAT
        values = [value for value, _ in self.returns]
        if len(values) > 1 and any(dynamic for _, dynamic in self.returns):
            return DYN
        joined = values[0]
        for value in values[1:]:
            joined = join(joined, value)
        return joined

    # ------------------------------------------------------------ statements

    def block(self, stmts: list[ast.stmt]) -> None:
        for stmt in stmts:
            self.statement(stmt)

    def statement(self, stmt: ast.stmt) -> None:
        if isinstance(stmt, ast.Expr):
            self.expr(stmt.value)
        elif isinstance(stmt, ast.Assign):
            value = self.expr(stmt.value)
            for target in stmt.targets:
                self.assign(target, value)
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            self.assign(stmt.target, self.expr(stmt.value))
        elif isinstance(stmt, ast.AugAssign):
            current = self.expr(stmt.target) if not isinstance(stmt.target, ast.Name) else self.env.get(stmt.target.id, DYN)
            value = self.expr(stmt.value)
            self.assign(stmt.target, join(current, value) if isinstance(stmt.target, ast.Name) else value)
        elif isinstance(stmt, ast.Return):
            value = self.expr(stmt.value) if stmt.value is not None else STAT
            self.returns.append((value, self.dynamic_depth > 0))
        elif isinstance(stmt, ast.Raise):
            if stmt.exc is not None:
                self.expr(stmt.exc)
        elif isinstance(stmt, ast.If):
            test = self.expr(stmt.test)
            self.branches(test, [stmt.body, stmt.orelse], stmt)
        elif isinstance(stmt, ast.For):
            iterable = self.expr(stmt.iter)
            self.loop(iterable, stmt.body, stmt, target=stmt.target)
        elif isinstance(stmt, ast.While):
            test = self.expr(stmt.test)
            self.loop(test, stmt.body, stmt)
        elif isinstance(stmt, ast.Assert):
            self.expr(stmt.test)
        elif isinstance(stmt, ast.Try) and not stmt.finalbody:
            # An exception is a dynamic branch: from any point of the body to a handler.
            for handler in stmt.handlers:
                if handler.type is not None:
                    self.expr(handler.type)
                if handler.name is not None:
                    self.env[handler.name] = DYN
            self.branches(DYN, [[*stmt.body, *stmt.orelse], *(h.body for h in stmt.handlers)], stmt)
        elif isinstance(stmt, ast.Try | ast.With | ast.FunctionDef | ast.ClassDef):
            self.unfoldable(stmt, f"{type(stmt).__name__.lower()} statement")

    def unfoldable(self, node: ast.AST, why: str) -> None:
        if why not in self.reported:
            self.reported.add(why)
            self.analysis.diagnostics.append(Diagnostic(
                "not-unfolded", f"{self.context.func.__qualname__} cannot be unfolded: {why}", self.where(node)))

    def branches(self, test: BT, bodies: list[list[ast.stmt]], node: ast.AST) -> None:
        before = dict(self.env)
        outcomes = []
        if not test.static:
            self.dynamic_depth += 1
        for body in bodies:
            self.env = dict(before)
            self.block(body)
            outcomes.append(self.env)
        if not test.static:
            self.dynamic_depth -= 1
        merged: dict[str, BT] = {}
        for name in set().union(*outcomes):
            values = [env.get(name, DYN) for env in outcomes]
            value = values[0]
            for other in values[1:]:
                value = join(value, other)
            changed = any(env.get(name) != before.get(name) for env in outcomes)
            if not test.static and changed:
                self.turned_dynamic(name, before.get(name) or value, node)
                value = DYN
            merged[name] = value
        self.env = merged

    def loop(self, control: BT, body: list[ast.stmt], node: ast.AST, target: ast.expr | None = None) -> None:
        """Two passes reach the fixpoint: what the body assigns may flow around the loop."""
        if not control.static:
            self.dynamic_depth += 1
            if any(isinstance(n, ast.Return) for s in body for n in ast.walk(s)):
                self.unfoldable(node, "return inside a loop the residual code keeps")
        for _ in range(2):
            before = dict(self.env)
            if target is not None:
                self.assign(target, STAT if control.static else DYN)
            self.block(body)
            for name, value in list(self.env.items()):
                old = before.get(name)
                if old is not None and old.time != value.time:
                    self.env[name] = join(old, value)
        if not control.static:
            self.dynamic_depth -= 1
            for name in _assigned(body):
                if self.env.get(name, DYN).static:
                    self.turned_dynamic(name, self.env[name], node)
                self.env[name] = DYN

    def turned_dynamic(self, name: str, before: BT, node: ast.AST) -> None:
        if before.static and before.cls is not None and name not in self.reported:
            self.reported.add(name)
            self.analysis.diagnostics.append(Diagnostic(
                "under-specialization",
                f"{self.context.func.__qualname__}: static `{name}` turns dynamic: assigned under a dynamic "
                f"condition (line {getattr(node, 'lineno', '?')})", self.where(node)))

    def assign(self, target: ast.expr, value: BT) -> None:
        if isinstance(target, ast.Name):
            self.env[target.id] = value if self.dynamic_depth == 0 or not value.static else value
            self.mark(target, value)
        elif isinstance(target, ast.Tuple | ast.List):
            for elt in target.elts:
                self.assign(elt, value if not value.static else STAT)
        elif isinstance(target, ast.Attribute):
            base = self.expr(target.value)
            spec = self.scenario.objects.get(base.cls) if base.cls is not None else None
            if base.static and spec is not None and target.attr in spec.static_fields:
                self.analysis.diagnostics.append(Diagnostic(
                    "static-mutated",
                    f"{self.context.func.__qualname__}: assigns the static field {spec.name}.{target.attr}",
                    self.where(target)))
            self.mark(target, DYN)
        elif isinstance(target, ast.Subscript):
            self.expr(target.value)
            self.expr(target.slice)
            self.mark(target, DYN)

    # ------------------------------------------------------------ expressions

    def expr(self, node: ast.expr | None) -> BT:
        if node is None:
            return STAT
        return self.mark(node, self._expr(node))

    def _expr(self, node: ast.expr) -> BT:
        if isinstance(node, ast.Constant):
            return known(node.value)
        if isinstance(node, ast.Name):
            if node.id in self.env:
                return self.env[node.id]
            glob = self.context.func.__globals__
            if node.id in glob:
                return known(glob[node.id])
            if hasattr(builtins, node.id):
                return known(getattr(builtins, node.id))
            return DYN
        if isinstance(node, ast.Attribute):
            return self.attribute(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.BoolOp | ast.BinOp | ast.Compare | ast.UnaryOp | ast.IfExp | ast.Tuple | ast.List
                      | ast.Subscript | ast.Slice | ast.JoinedStr | ast.FormattedValue):
            parts = [self.expr(child) for child in ast.iter_child_nodes(node) if isinstance(child, ast.expr)]
            if isinstance(node, ast.Subscript):
                base, index = parts[0], parts[1]
                if base.static and index.static and self._deep(node.value):
                    return STAT
                return DYN if not (base.static and index.static and base.known) else STAT
            return STAT if all(p.static for p in parts) else DYN
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self.expr(child)
        return DYN

    def _deep(self, node: ast.expr) -> bool:
        """Is this expression a declared deep-static container (``stack.sockets``, route tables)?"""
        if isinstance(node, ast.Attribute):
            base = self.env.get(node.value.id) if isinstance(node.value, ast.Name) else None
            if base is not None and base.cls is not None:
                spec = self.scenario.objects.get(base.cls)
                return spec is not None and node.attr in spec.deep_fields
        return isinstance(node, ast.Subscript) and self._deep(node.value)

    def attribute(self, node: ast.Attribute) -> BT:
        base = self.expr(node.value)
        if not base.static:
            return DYN
        if base.known and isinstance(base.value, types.ModuleType | type):
            try:
                return known(getattr(base.value, node.attr))
            except AttributeError:
                return DYN
        if self._deep(node.value):
            return BT(S, None, ("container-method", _element_class(node.value, self)), True)
        cls = base.cls
        if cls is None:
            return STAT if base.known else DYN
        raw = inspect.getattr_static(cls, node.attr, None)
        if isinstance(raw, property):
            return self.analysis.analyse(raw.fget, [base])
        if isinstance(raw, types.FunctionType | staticmethod):
            return BT(S, None, ("method", cls, node.attr, raw), True)
        spec = self.scenario.objects.get(cls)
        if spec is not None and node.attr in spec.static_fields:
            return BT(S, _field_class(cls, node.attr))
        return DYN

    def call(self, node: ast.Call) -> BT:
        func = self.expr(node.func)
        args = [self.expr(a.value if isinstance(a, ast.Starred) else a) for a in node.args]
        kwargs = {k.arg: self.expr(k.value) for k in node.keywords}
        target, bound = self._callee(func, node)
        if isinstance(target, tuple) and target[0] == "container":
            all_static = all(a.static for a in args)
            return BT(S, target[1]) if all_static else DYN
        if target is not None and self.scenario.unfolds(target):
            call_args = ([bound] if bound is not None else []) + args
            params = list(inspect.signature(target).parameters)
            ordered = call_args + [DYN] * 0
            for name in params[len(call_args):]:
                if name in kwargs:
                    ordered.append(kwargs[name])
                else:
                    default = inspect.signature(target).parameters[name].default
                    ordered.append(known(default) if default is not inspect.Parameter.empty else DYN)
            return self.analysis.analyse(target, ordered[: len(params)])
        all_static = all(a.static for a in args) and all(v.static for v in kwargs.values())
        if target is not None and all_static and (target in PURE_BUILTINS or self.scenario.is_pure(target)):
            return BT(S, _return_class(target))
        return DYN

    def _callee(self, func: BT, node: ast.Call) -> tuple[Any, BT | None]:
        if not func.static or not func.known:
            return None, None
        value = func.value
        if isinstance(value, tuple) and value and value[0] == "container-method":
            return ("container", value[1]), None
        if isinstance(value, tuple) and value and value[0] == "method":
            _, cls, name, raw = value
            target = raw.__func__ if isinstance(raw, staticmethod) else raw
            base = self.env.get(node.func.value.id) if isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name) else None
            bound = None if isinstance(raw, staticmethod) else (base or BT(S, cls))
            return target, bound
        if isinstance(value, types.FunctionType | types.BuiltinFunctionType | type):
            return value, None
        return None, None


def _element_class(node: ast.expr, walker: _Walker) -> type | None:
    """The class of a deep container's elements, from its annotation (``dict[int, Socket]``)."""
    if not isinstance(node, ast.Attribute) or not isinstance(node.value, ast.Name):
        return None
    base = walker.env.get(node.value.id)
    if base is None or base.cls is None:
        return None
    annotation = _field_annotation(base.cls, node.attr)
    if not annotation or "[" not in annotation:
        return None
    inner = annotation[annotation.index("[") + 1 : annotation.rindex("]")]
    return _resolve_annotation(inner.split(",")[-1].strip(), base.cls.__module__)


def join(a: BT, b: BT) -> BT:
    if a == b:
        return a
    if a.static and b.static:
        if a.known and b.known and a.value is b.value:
            return a
        return BT(S, a.cls if a.cls is b.cls else None)
    return DYN


def _assigned(stmts: list[ast.stmt]) -> set[str]:
    return {n.id for s in stmts for n in ast.walk(s) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}


def _owner_class(func: Any) -> type | None:
    parts = func.__qualname__.split(".")
    if len(parts) < 2:
        return None
    owner = sys.modules[func.__module__]
    for part in parts[:-1]:
        owner = getattr(owner, part, None)
    return owner if isinstance(owner, type) else None


def _resolve_annotation(text: Any, module: str) -> type | None:
    """A class named by an annotation such as ``"Route | None"``, found among pystack's classes."""
    if isinstance(text, type):
        return text
    if not isinstance(text, str):
        return None
    names = [part.strip() for part in text.split("|") if part.strip() != "None"]
    if len(names) != 1:
        return None
    name = names[0]
    candidates = [sys.modules.get(module)] + [m for n, m in sys.modules.items() if n.startswith("pystack")]
    for mod in candidates:
        value = getattr(mod, name, None) if mod is not None else None
        if isinstance(value, type):
            return value
    return None


def _annotation_class(func: Any, param: str) -> type | None:
    return _resolve_annotation(inspect.get_annotations(func).get(param), func.__module__)


def _return_class(func: Any) -> type | None:
    try:
        return _resolve_annotation(inspect.get_annotations(func).get("return"), func.__module__)
    except TypeError:
        return None


def _field_annotation(cls: type, attr: str) -> str | None:
    """A field's annotation text: class-level, or on ``self.attr: T = ...`` in __init__."""
    for klass in cls.__mro__:
        annotation = inspect.get_annotations(klass).get(attr)
        if annotation is not None:
            return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", None)
    init = cls.__dict__.get("__init__")
    if isinstance(init, types.FunctionType):
        for node in ast.walk(function_ast(init)):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Attribute) and node.target.attr == attr:
                return ast.unparse(node.annotation)
    return None


def _field_class(cls: type, attr: str) -> type | None:
    for klass in cls.__mro__:
        annotation = inspect.get_annotations(klass).get(attr)
        if annotation is not None:
            return _resolve_annotation(annotation, klass.__module__)
    init = cls.__dict__.get("__init__")
    if isinstance(init, types.FunctionType):
        # ``self.routes = RouteTable()``-style attributes: the class of what __init__ assigns
        for node in ast.walk(function_ast(init)):
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Attribute) and t.attr == attr and isinstance(t.value, ast.Name) and t.value.id == "self"
                for t in node.targets
            ):
                if isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name):
                    return _resolve_annotation(node.value.func.id, cls.__module__)
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Attribute) and node.target.attr == attr:
                return _resolve_annotation(ast.unparse(node.annotation), cls.__module__)
    return None


def analyse(scenario: Scenario) -> Analysis:
    return Analysis(scenario).run()
