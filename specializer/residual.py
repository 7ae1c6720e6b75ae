"""From residual statements to a function: clean-up passes, compilation, size figures.

Clean-up runs to a fixpoint: assignments whose variable is never read are
removed when their value has no effect, and single-assignment copies
(``a = b``) are propagated. The function is compiled inside a factory so
that every frozen object reference is a closure constant of the result.
"""

from __future__ import annotations

import ast
import builtins
import dis
import types
from collections import Counter
from dataclasses import dataclass
from typing import Any

# Calls that have no effect and may be dropped when their result is unused.
SIDE_EFFECT_FREE_CALLS = frozenset({"len", "bytes", "int", "min", "max", "isinstance", "tuple"})


def cleanup(body: list[ast.stmt], params: list[str]) -> list[ast.stmt]:
    """Dead-assignment removal and copy propagation, repeated until nothing changes."""
    while True:
        reads, writes = _count_names(body)
        changed = _forward_single_use(body, reads, writes)
        if not changed:
            changed = _propagate_copies(body, params, writes)
        if not changed:
            changed = _remove_dead(body, reads)
        _fill_empty(body)
        if not changed:
            return body


def _count_names(body: list[ast.stmt]) -> tuple[Counter[str], Counter[str]]:
    """How often each name is read and assigned, in one walk."""
    reads: Counter[str] = Counter()
    writes: Counter[str] = Counter()
    todo: list[ast.AST] = list(body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Name):
            (reads if isinstance(node.ctx, ast.Load) else writes)[node.id] += 1
            continue
        todo.extend(ast.iter_child_nodes(node))
    return reads, writes


def _pure(node: ast.expr) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            if getattr(sub, "removable", False):
                continue
            if not (isinstance(sub.func, ast.Name) and sub.func.id in SIDE_EFFECT_FREE_CALLS):
                return False
        elif isinstance(sub, ast.Await | ast.Yield | ast.YieldFrom | ast.NamedExpr):
            return False
    return True


def _remove_dead(body: list[ast.stmt], reads: Counter[str]) -> bool:
    changed = False

    def sweep(stmts: list[ast.stmt]) -> None:
        nonlocal changed
        kept = []
        for stmt in stmts:
            if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
                    and reads[stmt.targets[0].id] == 0 and _pure(stmt.value)):
                changed = True
                continue
            if isinstance(stmt, ast.If) and _is_pass(stmt.body) and _is_pass(stmt.orelse) and _pure(stmt.test):
                changed = True
                continue
            for attr in ("body", "orelse"):
                inner = getattr(stmt, attr, None)
                if isinstance(inner, list):
                    sweep(inner)
            kept.append(stmt)
        stmts[:] = kept

    sweep(body)
    return changed


def _is_pass(stmts: list[ast.stmt]) -> bool:
    return all(isinstance(s, ast.Pass) for s in stmts)


def _forward_single_use(body: list[ast.stmt], reads: Counter[str], writes: Counter[str]) -> bool:
    """``a = E`` directly followed by ``b = a``, with ``a`` assigned and read once: ``b = E``."""
    changed = False

    def sweep(stmts: list[ast.stmt]) -> None:
        nonlocal changed
        index = 0
        while index < len(stmts) - 1:
            first, second = stmts[index], stmts[index + 1]
            if (isinstance(first, ast.Assign) and len(first.targets) == 1 and isinstance(first.targets[0], ast.Name)
                    and isinstance(second, ast.Assign) and isinstance(second.value, ast.Name)
                    and second.value.id == first.targets[0].id
                    and writes[first.targets[0].id] == 1 and reads[first.targets[0].id] == 1):
                second.value = first.value
                del stmts[index]
                changed = True
                continue
            index += 1
        for stmt in stmts:
            for attr in ("body", "orelse"):
                inner = getattr(stmt, attr, None)
                if isinstance(inner, list):
                    sweep(inner)

    sweep(body)
    return changed


def _propagate_copies(body: list[ast.stmt], params: list[str], writes: Counter[str]) -> bool:
    """Replace ``a`` by ``b`` after ``a = b`` when each is assigned once (or b is an untouched parameter)."""
    copies: dict[str, ast.expr] = {}
    for stmt in _all_statements(body):
        if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
                and writes[stmt.targets[0].id] == 1):
            value = stmt.value
            if isinstance(value, ast.Name) and (writes[value.id] == 1 or (value.id in params and writes[value.id] == 0)):
                copies[stmt.targets[0].id] = value
            elif isinstance(value, ast.Constant):
                copies[stmt.targets[0].id] = value
    if not copies:
        return False

    def resolve(name: str) -> ast.expr:
        seen = set()
        value: ast.expr = ast.Name(id=name, ctx=ast.Load())
        while isinstance(value, ast.Name) and value.id in copies and value.id not in seen:
            seen.add(value.id)
            value = copies[value.id]
        return value

    substituted = 0

    class Substitute(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.expr:
            nonlocal substituted
            if isinstance(node.ctx, ast.Load) and node.id in copies:
                substituted += 1
                return ast.copy_location(_clone(resolve(node.id)), node)
            return node

    for index, stmt in enumerate(body):
        body[index] = Substitute().visit(stmt)
    return substituted > 0


def _clone(node: ast.expr) -> ast.expr:
    if isinstance(node, ast.Name):
        return ast.Name(id=node.id, ctx=ast.Load())
    return ast.Constant(node.value) if isinstance(node, ast.Constant) else node


def _all_statements(body: list[ast.stmt]) -> list[ast.stmt]:
    found = []
    for stmt in body:
        found.append(stmt)
        for attr in ("body", "orelse"):
            inner = getattr(stmt, attr, None)
            if isinstance(inner, list):
                found.extend(_all_statements(inner))
    return found


def _fill_empty(body: list[ast.stmt]) -> None:
    for stmt in _all_statements(body):
        if isinstance(stmt, ast.If | ast.For | ast.While) and not stmt.body:
            stmt.body.append(ast.Pass())


@dataclass
class CompiledResidual:
    function: types.FunctionType
    tree: ast.FunctionDef
    constants: dict[str, Any]

    @property
    def source(self) -> str:
        """The residual code as Python text, made when someone asks (a third of compile time)."""
        return ast.unparse(self.tree)


def compile_residual(name: str, params: list[str], body: list[ast.stmt], constants: dict[str, Any],
                     filename: str) -> CompiledResidual:
    """Compile ``def name(params): body`` with ``constants`` as closure variables."""
    fdef = ast.FunctionDef(
        name=name,
        args=ast.arguments(posonlyargs=[], args=[ast.arg(arg=p) for p in params], vararg=None,
                           kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[]),
        body=body or [ast.Pass()], decorator_list=[], returns=None, type_params=[],
    )
    used = {n.id for n in ast.walk(fdef) if isinstance(n, ast.Name)}
    closure = {k: v for k, v in constants.items() if k in used}
    factory = ast.FunctionDef(
        name="_factory",
        args=ast.arguments(posonlyargs=[], args=[ast.arg(arg=k) for k in closure], vararg=None,
                           kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[]),
        body=[fdef, ast.Return(value=ast.Name(id=name, ctx=ast.Load()))],
        decorator_list=[], returns=None, type_params=[],
    )
    module = ast.fix_missing_locations(ast.Module(body=[factory], type_ignores=[]))
    namespace: dict[str, Any] = {"__builtins__": builtins}
    exec(compile(module, filename, "exec"), namespace)  # noqa: S102 - our own generated code
    function = namespace["_factory"](*closure.values())
    return CompiledResidual(function, fdef, closure)


# ---------------------------------------------------------------- figures


def code_size(functions: list[Any]) -> dict[str, int]:
    """Source lines, AST nodes and bytecode bytes of a set of functions (nested code included)."""
    import inspect

    lines = nodes = bytecode = 0
    for func in functions:
        code = getattr(func, "__code__", None)
        if code is None:
            continue
        try:
            source = inspect.getsource(func)
        except (OSError, TypeError):
            continue
        lines += sum(1 for line in source.splitlines() if line.strip() and not line.strip().startswith("#"))
        nodes += sum(1 for _ in ast.walk(ast.parse(_dedent(source))))
        bytecode += _bytecode_bytes(code)
    return {"lines": lines, "ast_nodes": nodes, "bytecode_bytes": bytecode}


def residual_size(compiled: CompiledResidual) -> dict[str, int]:
    source = compiled.source
    return {
        "lines": sum(1 for line in source.splitlines() if line.strip()),
        "ast_nodes": sum(1 for _ in ast.walk(compiled.tree)),
        "bytecode_bytes": _bytecode_bytes(compiled.function.__code__),
    }


def _bytecode_bytes(code: types.CodeType) -> int:
    total = len(code.co_code)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            total += _bytecode_bytes(const)
    return total


def reachable_functions(entry: Any, limit: int = 400) -> list[Any]:
    """Every pystack function the entry can reach through the names it calls (a static call graph)."""
    import inspect

    seen: dict[int, Any] = {}
    todo = [entry]
    while todo and len(seen) < limit:
        func = todo.pop()
        code = getattr(func, "__code__", None)
        if code is None or id(code) in seen or not func.__module__.startswith("pystack"):
            continue
        seen[id(code)] = func
        names = set(code.co_names) | {n for c in code.co_consts if isinstance(c, types.CodeType) for n in c.co_names}
        for name in names:
            for candidate in _candidates(func, name):
                if inspect.isfunction(candidate) and candidate.__module__.startswith("pystack"):
                    todo.append(candidate)
    return list(seen.values())


def _candidates(func: Any, name: str) -> list[Any]:
    """Functions a name in ``func`` may refer to: a global, or a method of a pystack class."""
    import sys

    found = []
    glob = func.__globals__.get(name)
    if glob is not None:
        found.append(glob.fget if isinstance(glob, property) else glob)
        if isinstance(glob, types.ModuleType):
            return found
    for module in func.__globals__.values():  # ``udp.udp_sendmsg``: an attribute of an imported module
        if isinstance(module, types.ModuleType) and module.__name__.startswith("pystack"):
            value = getattr(module, name, None)
            if isinstance(value, types.FunctionType):
                found.append(value)
    for module_name, module in list(sys.modules.items()):
        if not module_name.startswith("pystack") or module is None:
            continue
        for value in vars(module).values():
            if isinstance(value, type) and value.__module__ == module_name:
                raw = value.__dict__.get(name)
                if isinstance(raw, property):
                    raw = raw.fget
                if isinstance(raw, staticmethod):
                    raw = raw.__func__
                if isinstance(raw, types.FunctionType):
                    found.append(raw)
    return found


def _dedent(source: str) -> str:
    lines = source.splitlines()
    indent = min((len(line) - len(line.lstrip()) for line in lines if line.strip()), default=0)
    return "\n".join(line[indent:] for line in lines)


__all__ = ["cleanup", "compile_residual", "code_size", "residual_size", "reachable_functions", "dis"]
