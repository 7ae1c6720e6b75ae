"""The evaluator's expressions: each kind folded when its operands are static, kept as
residual code otherwise, with what is known of the result (a length, a few ints);
reads of declared static fields fold with an assumption."""

from __future__ import annotations

import ast
import builtins
import copy
import inspect
import types
from typing import Any

from pystack.tokens.facts import _SIMPLE_TYPES, Assumption, _ItemAssumption
from pystack.tokens.watch import plain_type

from .control import (
    Frame,
    _CannotUnfold,
    _NeedsStatements,
)
from .facts import (
    _BINOPS,
    _COMPARE,
    _CONSTANT_NAME,
    _CONTAINERS,
    _DELETED,
    _LIST_READERS,
    _UNARY,
    MAX_VALUE_SET,
    _decided,
    _field_kind,
    _FreshList,
    _immutable,
    _known_comparison,
    _possible,
    _shape,
    _split_constant,
)
from .residual_ast import (
    _assign,
    _free_names,
    _load,
    _rename,
)
from .source import _rebound_globals
from .trace import carry
from .values import Dyn, Static, Value, Virtual


class Expressions:
    """Mixed into :class:`specializer.pe.Evaluator`."""

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
                # A display or comprehension makes a new container each time it runs: one made
                # now must not be shared by every call of the residual code (nor by its
                # callers). A new list stays static while it is only read (_FreshList); other
                # containers are made by the residual code.
                if type(value) is list:
                    value = _FreshList(value)
                if not isinstance(value, _CONTAINERS) or isinstance(value, _FreshList):
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
