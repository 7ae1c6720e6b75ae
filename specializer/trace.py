"""What the evaluator decided, recorded as it decides: the one truth for binding times.

Each generic expression the evaluator computes is noted static or dynamic, each
statement it walks is noted live, and each residual node it builds carries the
generic positions it came from (``_pe_from``; a residual statement also carries
the generic statement it was emitted for, ``_pe_at``). After the clean-up,
:meth:`Trace.settle` reads the final residual tree: an expression is shown
dynamic only if some residual node still carries it. ``spec show`` prints this
record; nothing else decides what is static.
"""

from __future__ import annotations

import ast
import types
from dataclasses import dataclass, field
from typing import Any

# (file, first line, first column, last line, end column) of a generic node
Position = tuple[str, int, int, int, int]

STATIC, DYNAMIC = 1, 2
# The colours a generic expression can have, as ``spec show`` names them.
SHOWN_STATIC = "S"  # computed at specialization time, every time it was reached
SHOWN_DYNAMIC = "D"  # residualized: some residual node comes from it
SHOWN_BOTH = "SD"  # static in some inlinings or iterations, residual in others
SHOWN_REMOVED = "R"  # residualized, then removed by the clean-up as unused
SHOWN_DEAD = "X"  # never reached: a static test or short circuit skipped it


def position(func: types.FunctionType, node: ast.AST) -> Position | None:
    """Where a generic node is; kept on the node (parsed once, reached thousands of times)."""
    attrs = node.__dict__
    where = attrs.get("_pe_pos")
    if where is None:
        lineno = attrs.get("lineno")
        if lineno is None:
            return None
        where = attrs["_pe_pos"] = (func.__code__.co_filename, lineno, node.col_offset, node.end_lineno,
                                    node.end_col_offset)
    return where


@dataclass
class Trace:
    """The evaluator's decisions for one specialization."""

    outcomes: dict[Position, int] = field(default_factory=dict)  # expression -> STATIC | DYNAMIC bits
    statements: set[Position] = field(default_factory=set)  # generic statements walked
    functions: dict[Any, None] = field(default_factory=dict)  # generic functions walked, in order
    residual: set[Position] = field(default_factory=set)  # positions some final residual node carries
    # residual line -> the generic positions its statement came from
    lines: dict[int, list[Position]] = field(default_factory=dict)
    # Each record, undoably: (position, bits before) for an expression, (position, None)
    # for a statement, (position, residual node) for a tag. An abandoned attempt (an
    # inline that failed, a probe that needed statements) takes its records back.
    journal: list[tuple[Position, Any]] = field(default_factory=list)
    # id(assumption) -> the generic expressions whose folding relied on it
    relied: dict[int, list[Position]] = field(default_factory=dict)

    def relied_on(self, assumption: Any, func: types.FunctionType, node: ast.AST) -> None:
        where = position(func, node)
        places = self.relied.setdefault(id(assumption), [])
        if where is not None and where not in places:
            places.append(where)

    def mark(self) -> int:
        return len(self.journal)

    def rollback(self, mark: int) -> None:
        """Forget what was recorded since ``mark``: that attempt's code is not what runs."""
        while len(self.journal) > mark:
            where, before = self.journal.pop()
            if before is None:
                self.statements.discard(where)
            elif isinstance(before, ast.AST):
                before._pe_from.remove(where)
            elif before:
                self.outcomes[where] = before
            else:
                del self.outcomes[where]

    def expression(self, func: types.FunctionType, node: ast.AST, dynamic: bool, result: ast.AST | None) -> None:
        # Called for every expression evaluated (tens of thousands per TCP specialization): kept flat.
        where = node.__dict__.get("_pe_pos") or position(func, node)
        if where is None:
            return
        outcomes = self.outcomes
        before = outcomes.get(where, 0)
        after = before | (DYNAMIC if dynamic else STATIC)
        if after != before:
            self.journal.append((where, before))
            outcomes[where] = after
        if result is not None:
            carried = result.__dict__.get("_pe_from")
            if carried is None:
                result._pe_from = [where]
            elif where in carried:
                return
            else:
                carried.append(where)
            self.journal.append((where, result))

    def decided(self, func: types.FunctionType, node: ast.AST) -> None:
        """A residual expression whose every possible value has one truth: the test is static."""
        where = position(func, node)
        if where is not None and self.outcomes.get(where) != STATIC:
            self.journal.append((where, self.outcomes.get(where, 0)))
            self.outcomes[where] = STATIC

    def kept_whole(self, func: types.FunctionType, node: ast.AST, copied: ast.AST | None) -> None:
        """An expression kept (or computed) whole: its parts share its fate."""
        generic = list(ast.walk(node))
        copies = list(ast.walk(copied)) if copied is not None else [None] * len(generic)
        for sub, twin in zip(generic, copies, strict=False):
            if isinstance(sub, ast.expr):
                self.expression(func, sub, copied is not None, twin)

    def statement(self, func: types.FunctionType, node: ast.AST) -> None:
        where = position(func, node)
        if where is not None and where not in self.statements:
            self.journal.append((where, None))
            self.statements.add(where)

    def settle(self, tree: ast.FunctionDef) -> None:
        """Read the final (cleaned, numbered) residual: what it still carries, line by line."""
        self.residual.clear()
        self.lines.clear()
        for node in ast.walk(tree):
            carried = getattr(node, "_pe_from", None)
            if carried:
                self.residual.update(carried)
        for stmt in ast.walk(tree):
            if isinstance(stmt, ast.stmt) and stmt is not tree:
                found: dict[Position, None] = {}
                at = getattr(stmt, "_pe_at", None)
                if at is not None:
                    found[at] = None
                references: dict[Position, None] = {}
                for node in _header_nodes(stmt):
                    # a name is a reference to a value computed elsewhere: its own tags say
                    # where the value was used, not where this line came from
                    into = references if type(node) is ast.Name or type(node) is ast.Constant else found
                    for where in getattr(node, "_pe_from", ()):
                        into[where] = None
                if not found:
                    found = references
                if found:
                    self.lines.setdefault(stmt.lineno, []).extend(found)

    def shown(self, where: Position) -> str | None:
        """How ``spec show`` colours a generic expression (None: not an expression it reached)."""
        bits = self.outcomes.get(where)
        if bits is None:
            return None
        if bits & DYNAMIC:
            if where in self.residual:
                return SHOWN_BOTH if bits & STATIC else SHOWN_DYNAMIC
            return SHOWN_STATIC if bits & STATIC else SHOWN_REMOVED
        return SHOWN_STATIC

    def generic_lines(self, residual_line: int) -> list[tuple[str, int]]:
        """The generic (file, line) pairs a residual line came from, in order."""
        out: dict[tuple[str, int], None] = {}
        for file, first, _, last, _ in self.lines.get(residual_line, ()):
            for line in range(first, last + 1):
                out[(file, line)] = None
        return list(out)


def _tag(node: ast.AST, where: Position) -> None:
    carried = node.__dict__.get("_pe_from")
    if carried is None:
        node._pe_from = [where]
    elif where not in carried:
        carried.append(where)


def carry(new: ast.AST, old: ast.AST) -> ast.AST:
    """``new`` replaces ``old`` in the residual (a copy propagated into a use): it carries what old did."""
    carried = old.__dict__.get("_pe_from")
    if carried:
        for where in carried:
            _tag(new, where)
    return new


def _header_nodes(stmt: ast.stmt) -> list[ast.AST]:
    """The nodes of a statement that are printed on its own line (not in nested blocks)."""
    out: list[ast.AST] = []
    todo: list[ast.AST] = [stmt]
    while todo:
        node = todo.pop()
        out.append(node)
        for name, value in ast.iter_fields(node):
            if name in ("body", "orelse", "handlers", "finalbody") and node is stmt:
                continue
            if isinstance(value, ast.AST):
                todo.append(value)
            elif isinstance(value, list):
                todo.extend(v for v in value if isinstance(v, ast.AST))
    return out
