"""Small builders and readers of the residual code's AST (names, assignments, tests,
the names an expression or a block uses or assigns, renaming)."""

from __future__ import annotations

import ast
import copy

from .control import _CannotUnfold
from .trace import carry


def _load(name: str) -> ast.Name:
    return ast.Name(id=name, ctx=ast.Load())


def _assign(name: str, value: ast.expr) -> ast.Assign:
    return ast.Assign(targets=[ast.Name(id=name, ctx=ast.Store())], value=value)


def _if(test: ast.expr, body: list, orelse: list) -> ast.If:
    return ast.If(test=_as_test(test), body=body, orelse=orelse)


def _as_test(test: ast.expr) -> ast.expr:
    """In a test only truth matters: ``x or False`` is ``x``, ``x and True`` is ``x``."""
    if isinstance(test, ast.BoolOp):
        neutral = isinstance(test.op, ast.And)
        values = [v for v in test.values
                  if not (isinstance(v, ast.Constant) and bool(v.value) is neutral)] or test.values[-1:]
        if len(values) == 1:
            return carry(values[0], test)
        return carry(ast.BoolOp(op=test.op, values=values), test)
    return test


def _store_target(target: ast.expr, names: dict[str, str]) -> ast.expr:
    if isinstance(target, ast.Name):
        return ast.Name(id=names[target.id], ctx=ast.Store())
    if isinstance(target, ast.Tuple):
        return ast.Tuple(elts=[_store_target(e, names) for e in target.elts], ctx=ast.Store())
    raise _CannotUnfold("complex for target")


# id(source statement list) -> (the list, the names it assigns): loop bodies come from the
# parsed modules, which nothing modifies; the list is kept so that its id stays its own.
_ASSIGNED: dict[int, tuple[list, frozenset[str]]] = {}


def _assigned_names(stmts: list[ast.stmt]) -> frozenset[str]:
    cached = _ASSIGNED.get(id(stmts))
    if cached is not None and cached[0] is stmts:
        return cached[1]
    names = _walk_assigned_names(stmts)
    _ASSIGNED[id(stmts)] = (stmts, names)
    return names


def _walk_assigned_names(stmts: list[ast.stmt]) -> frozenset[str]:
    names = set()
    for stmt in stmts:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return frozenset(names)


def _names_in(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _free_names(node: ast.expr) -> list[str]:
    bound = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.comprehension):
            bound |= {n.id for n in ast.walk(sub.target) if isinstance(n, ast.Name)}
        elif isinstance(sub, ast.Lambda):
            bound |= {a.arg for a in sub.args.args}
    seen: list[str] = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load) and sub.id not in bound and sub.id not in seen:
            seen.append(sub.id)
    return seen


def _has_call(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) for n in ast.walk(node))


def _rename(node: ast.expr, mapping: dict[str, ast.expr]) -> ast.expr:
    class Renamer(ast.NodeTransformer):
        def visit_Name(self, name: ast.Name) -> ast.expr:
            if isinstance(name.ctx, ast.Load) and name.id in mapping:
                return copy.deepcopy(mapping[name.id])
            return name

    return Renamer().visit(node)
