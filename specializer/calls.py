"""The evaluator's calls: the scenario's unfoldable functions inlined across layers,
pure functions called now on static arguments, value objects kept field by field,
and every other call left in the residual code."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import struct
import types
from collections.abc import Callable
from typing import Any

from pystack.tokens.facts import _SIMPLE_TYPES, Diagnostic, _LookupAssumption, same

from .control import (
    Frame,
    _CannotUnfold,
    _NoReturn,
    _replace_markers,
    _Return,
)
from .facts import (
    _LIST_READERS,
    MAX_VALUE_SET,
    _call_shape,
    _operand_hint,
    _possible,
    _shape,
)
from .residual_ast import (
    _has_call,
)
from .source import _bind_simple, _signature, _suspends
from .values import Dyn, Static, Value, Virtual

INLINE_DEPTH_LIMIT = 24

# Builtins that compute a value from their arguments and nothing else.
PURE_BUILTINS = frozenset({
    len, min, max, abs, int, bool, str, float, tuple, frozenset, isinstance, hasattr, range,
    divmod, hash, ord, chr, round, any, all, sum, sorted, type, bytes,
})


class Calls:
    """Mixed into :class:`specializer.pe.Evaluator`."""

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
