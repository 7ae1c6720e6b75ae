"""From residual statements to a function: clean-up passes, compilation, size figures.

Clean-up runs to a fixpoint: assignments whose variable is never read are
removed when their value has no effect, and single-assignment copies
(``a = b``) are propagated. The function is compiled inside a factory so
that every frozen object reference is a closure constant of the result.
"""

from __future__ import annotations

import ast
import dis
import struct
import types
from collections import Counter
from typing import Any

from pystack.tokens.system import CompiledResidual, factory, load_function

from .trace import carry

# Calls that have no effect and may be dropped when their result is unused.
SIDE_EFFECT_FREE_CALLS = frozenset({"len", "bytes", "int", "min", "max", "isinstance", "tuple"})


def cleanup(body: list[ast.stmt], params: list[str], names: set[str] | None = None,
            constants: dict[str, Any] | None = None) -> list[ast.stmt]:
    """Lengths of bytes taken once (see _share_lengths; ``constants``: the frozen
    references, which tell which calls make bytes), then dead-assignment removal and
    copy propagation, repeated until nothing changes.

    The name counts are taken once and then kept up to date by each pass (a pass
    decides on the counts from its start, as if they had been taken afresh), so
    an iteration does not walk the whole tree again. ``names``, if given, receives
    the names the cleaned body uses (what compile_residual would find in it).
    """
    reads, writes = _count_names(body)
    _share_lengths(body, reads, writes, constants or {})  # then the copies it leaves (n = x_len) go too
    first = True
    while True:
        changed = _forward_single_use(body, reads, writes)
        if not changed:
            changed = _propagate_copies(body, params, reads, writes)
        if not changed:
            changed = _remove_dead(body, reads, writes)
        if changed or first:  # only the first fill and a removal can leave a body empty
            _fill_empty(body)
        first = False
        if not changed:
            if names is not None:
                names.update(name for name, count in reads.items() if count > 0)
                names.update(name for name, count in writes.items() if count > 0)
            return body


def _share_lengths(body: list[ast.stmt], reads: Counter[str], writes: Counter[str],
                   constants: dict[str, Any]) -> bool:
    """``len(x)`` taken twice or more, of an ``x`` assigned once to bytes: taken once, right
    after the assignment, into ``x_len``. Bytes do not change, so every later ``len(x)`` is
    that number; the generic code asks again in each function it passes ``x`` to (the
    datagram's length in UDP, in IP, in the buffer allocation). The counts are kept up to
    date. Whether it changed anything."""
    if writes["len"] or "len" in constants:
        return False  # ``len`` is not the builtin here
    bytes_names: set[str] = set()
    definitions: dict[str, tuple[list[ast.stmt], ast.Assign]] = {}
    for stmts, stmt in _statements_with_lists(body):
        if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
                and writes[stmt.targets[0].id] == 1 and _makes_bytes(stmt.value, bytes_names, constants, writes)):
            bytes_names.add(stmt.targets[0].id)
            definitions[stmt.targets[0].id] = (stmts, stmt)
    if not bytes_names:
        return False
    calls: dict[str, list[tuple[ast.AST, str, int | None]]] = {}  # name -> (parent, field, index)
    todo: list[ast.AST] = list(body)
    pop, push = todo.pop, todo.append
    seen: set[int] = set()
    call_cls, ast_cls, fields_of = ast.Call, ast.AST, _CHILD_FIELDS
    shared = False
    while todo:
        node = pop()
        if id(node) in seen:
            shared = True  # a node in two places: one replacement serves both, the counts are redone
            continue
        seen.add(id(node))
        cls = type(node)
        fields = fields_of.get(cls)
        if fields is None:
            fields = _child_fields(cls)
        for field_name in fields:
            value = getattr(node, field_name, None)
            if type(value) is list:
                for index, item in enumerate(value):
                    if type(item) is call_cls and (name := _len_of_name(item)) in bytes_names:
                        calls.setdefault(name, []).append((node, field_name, index))
                    elif isinstance(item, ast_cls):
                        push(item)
            elif type(value) is call_cls and (name := _len_of_name(value)) in bytes_names:
                calls.setdefault(name, []).append((node, field_name, None))
            elif isinstance(value, ast_cls):
                push(value)
    changed = False
    for name, sites in calls.items():
        if len(sites) < 2:
            continue
        length = f"{name}_len"
        while reads[length] or writes[length] or length in constants:
            length += "_"
        for parent, field_name, index in sites:
            load = ast.Name(id=length, ctx=ast.Load())
            if index is None:
                setattr(parent, field_name, carry(load, getattr(parent, field_name)))
            else:
                getattr(parent, field_name)[index] = carry(load, getattr(parent, field_name)[index])
        stmts, definition = definitions[name]
        stmts.insert(stmts.index(definition) + 1, ast.Assign(
            targets=[ast.Name(id=length, ctx=ast.Store())],
            value=ast.Call(func=ast.Name(id="len", ctx=ast.Load()), args=[ast.Name(id=name, ctx=ast.Load())],
                           keywords=[])))
        changed = True
        if not shared:  # k calls len(x) became one, and x_len is read where they were
            reads["len"] -= len(sites) - 1
            reads[name] -= len(sites) - 1
            reads[length] += len(sites)
            writes[length] += 1
    if changed and shared:
        reads.clear()
        writes.clear()
        _count_into(body, reads, writes)
    return changed


def _len_of_name(node: object) -> str | None:
    """``x`` if node is ``len(x)``."""
    if (type(node) is ast.Call and type(node.func) is ast.Name and node.func.id == "len" and len(node.args) == 1
            and type(node.args[0]) is ast.Name and not node.keywords):
        return node.args[0].id
    return None


def _makes_bytes(expr: ast.expr, bytes_names: set[str], constants: dict[str, Any], writes: Counter[str]) -> bool:
    """Whether an expression's value is a ``bytes`` object, whatever its operands hold:
    ``bytes(...)``, a ``Struct.pack`` call, a bytes constant, a slice of bytes, or bytes
    plus anything (``bytes.__add__`` makes bytes)."""
    if isinstance(expr, ast.Constant):
        return type(expr.value) is bytes
    if isinstance(expr, ast.Name):
        return expr.id in bytes_names
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
        return _makes_bytes(expr.left, bytes_names, constants, writes)
    if isinstance(expr, ast.Subscript) and isinstance(expr.slice, ast.Slice):
        return _makes_bytes(expr.value, bytes_names, constants, writes)
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name):
        name = expr.func.id
        if name == "bytes" and name not in constants and not writes[name]:
            return True
        func = constants.get(name)
        return isinstance(getattr(func, "__self__", None), struct.Struct) and getattr(func, "__name__", "") == "pack"
    return False


def _statements_with_lists(body: list[ast.stmt]) -> list[tuple[list[ast.stmt], ast.stmt]]:
    """Every statement, in order, with the list that holds it (a ``try``'s except
    clauses count as statements, whose bodies are searched too)."""
    found: list[tuple[list[ast.stmt], ast.stmt]] = []

    def collect(stmts: list[ast.stmt]) -> None:
        for stmt in stmts:
            found.append((stmts, stmt))
            for inner in _inner_blocks(stmt):
                collect(inner)

    collect(body)
    return found


# Fields that never hold a node with a name or a location in it (contexts, operators,
# strings, flags): the walks below skip them.
_LEAF_FIELDS = frozenset({"ctx", "op", "ops", "id", "attr", "arg", "type_comment", "kind", "conversion",
                          "is_async", "level", "module"})
_CHILD_FIELDS: dict[type, tuple[str, ...]] = {}


def _child_fields(cls: type) -> tuple[str, ...]:
    """The fields of a node class that may hold child nodes (in ``_fields`` order)."""
    fields = _CHILD_FIELDS.get(cls)
    if fields is None:
        if cls is ast.Constant or cls is ast.Name or not issubclass(cls, ast.AST):
            fields = ()
        else:
            fields = tuple(f for f in cls._fields if f not in _LEAF_FIELDS)
        _CHILD_FIELDS[cls] = fields
    return fields


def _count_names(body: list[Any]) -> tuple[Counter[str], Counter[str]]:
    """How often each name is read and assigned, in one walk (a node reached twice counts twice)."""
    reads: Counter[str] = Counter()
    writes: Counter[str] = Counter()
    _count_into(body, reads, writes)
    return reads, writes


def _count_into(nodes: list[Any], reads: Counter[str], writes: Counter[str], sign: int = 1) -> None:
    todo: list[Any] = list(nodes)
    pop, push, extend = todo.pop, todo.append, todo.extend
    name_cls, load_cls, ast_cls = ast.Name, ast.Load, ast.AST
    fields_of = _CHILD_FIELDS
    while todo:
        node = pop()
        cls = type(node)
        if cls is name_cls:
            if isinstance(node.ctx, load_cls):
                reads[node.id] += sign
            else:
                writes[node.id] += sign
            continue
        fields = fields_of.get(cls)
        if fields is None:
            fields = _child_fields(cls)
        for name in fields:
            value = getattr(node, name, None)
            if type(value) is list:
                extend(value)
            elif isinstance(value, ast_cls):
                push(value)


_IMPURE = (ast.Await, ast.Yield, ast.YieldFrom, ast.NamedExpr)


def _pure(node: ast.expr) -> bool:
    """No effect to keep: only calls to side-effect-free builtins or marked removable."""
    todo: list[Any] = [node]
    pop, push, extend = todo.pop, todo.append, todo.extend
    call_cls, name_cls, ast_cls = ast.Call, ast.Name, ast.AST
    fields_of = _CHILD_FIELDS
    while todo:
        sub = pop()
        cls = type(sub)
        if cls is call_cls:
            if not getattr(sub, "removable", False) and not (
                    isinstance(sub.func, name_cls) and sub.func.id in SIDE_EFFECT_FREE_CALLS):
                return False
        elif cls is name_cls:
            continue
        elif isinstance(sub, _IMPURE):
            return False
        fields = fields_of.get(cls)
        if fields is None:
            fields = _child_fields(cls)
        for name in fields:
            value = getattr(sub, name, None)
            if type(value) is list:
                extend(value)
            elif isinstance(value, ast_cls):
                push(value)
    return True


def _remove_dead(body: list[ast.stmt], reads: Counter[str], writes: Counter[str]) -> bool:
    """Drop unread pure assignments and empty pure ifs; the counts lose what was dropped
    (after the sweep, which decides on the counts from its start)."""
    removed: list[ast.stmt] = []

    def sweep(stmts: list[ast.stmt]) -> None:
        kept = []
        for stmt in stmts:
            if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
                    and reads[stmt.targets[0].id] == 0 and _pure(stmt.value)):
                removed.append(stmt)
                continue
            if isinstance(stmt, ast.If) and _is_pass(stmt.body) and _is_pass(stmt.orelse) and _pure(stmt.test):
                removed.append(stmt)
                continue
            for inner in _inner_blocks(stmt):
                sweep(inner)
            kept.append(stmt)
        if len(kept) != len(stmts):
            stmts[:] = kept

    sweep(body)
    if removed:
        _count_into(removed, reads, writes, -1)
    return bool(removed)


def _is_pass(stmts: list[ast.stmt]) -> bool:
    return all(isinstance(s, ast.Pass) for s in stmts)


def _forward_single_use(body: list[ast.stmt], reads: Counter[str], writes: Counter[str]) -> bool:
    """``a = E`` directly followed by ``b = a``, with ``a`` assigned and read once: ``b = E``.

    A fold only changes the counts of ``a`` (to zero), which no later fold of the sweep
    looks at again: the counts are updated as it goes."""
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
                name = first.targets[0].id
                second.value = carry(first.value, second.value)
                del stmts[index]
                writes[name] -= 1
                reads[name] -= 1
                changed = True
                continue
            index += 1
        for stmt in stmts:
            for inner in _inner_blocks(stmt):
                sweep(inner)

    sweep(body)
    return changed


def _propagate_copies(body: list[ast.stmt], params: list[str], reads: Counter[str], writes: Counter[str]) -> bool:
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
    if not copies or not any(reads[name] for name in copies):
        return False  # nothing reads a copy: no substitution to make

    def resolve(name: str) -> ast.expr:
        seen = set()
        value: ast.expr = ast.Name(id=name, ctx=ast.Load())
        while isinstance(value, ast.Name) and value.id in copies and value.id not in seen:
            seen.add(value.id)
            value = copies[value.id]
        return value

    substituted = 0
    moved: Counter[str] = Counter()  # read counts the substitutions move
    visited: set[int] = set()
    shared = False  # a node reached twice: a substitution in it shows at both places
    name_cls, load_cls, ast_cls = ast.Name, ast.Load, ast.AST
    fields_of = _CHILD_FIELDS

    def replace(name: ast.Name) -> ast.expr:
        nonlocal substituted
        substituted += 1
        new = carry(ast.copy_location(_clone(resolve(name.id)), name), name)
        moved[name.id] -= 1
        if type(new) is name_cls:
            moved[new.id] += 1
        return new

    def substitute(node: ast.AST) -> None:
        """Every loaded copy under ``node`` replaced, in the order ast.NodeTransformer visits."""
        nonlocal shared
        if id(node) in visited:
            shared = True
        visited.add(id(node))
        fields = fields_of.get(type(node))
        if fields is None:
            fields = _child_fields(type(node))
        for field_name in fields:
            value = getattr(node, field_name, None)
            if type(value) is list:
                for index, item in enumerate(value):
                    if type(item) is name_cls:
                        if isinstance(item.ctx, load_cls) and item.id in copies:
                            value[index] = replace(item)
                    elif isinstance(item, ast_cls):
                        substitute(item)
            elif type(value) is name_cls:
                if isinstance(value.ctx, load_cls) and value.id in copies:
                    setattr(node, field_name, replace(value))
            elif isinstance(value, ast_cls):
                substitute(value)

    for stmt in body:
        substitute(stmt)
    if shared:  # the moves above miss the second sight of a shared node: count afresh
        reads.clear()
        writes.clear()
        _count_into(body, reads, writes)
    else:
        reads.update(moved)
    return substituted > 0


def _clone(node: ast.expr) -> ast.expr:
    if isinstance(node, ast.Name):
        return ast.Name(id=node.id, ctx=ast.Load())
    return ast.Constant(node.value) if isinstance(node, ast.Constant) else node


def _all_statements(body: list[ast.stmt]) -> list[ast.stmt]:
    return [stmt for _, stmt in _statements_with_lists(body)]


def _fill_empty(body: list[ast.stmt]) -> None:
    for stmt in body:
        for attr in _BLOCK_FIELDS[type(stmt)]:
            inner = getattr(stmt, attr, None)
            if isinstance(inner, list):
                if attr == "body" and not inner:  # every statement with a body needs one
                    inner.append(ast.Pass())
                _fill_empty(inner)


class _BlockFields(dict):
    """statement class -> which of ``body``, ``handlers`` (a ``try``'s except clauses, each
    with a body) and ``orelse`` it has: the nested statement lists the passes look into;
    () for the rest, which is most statements."""

    def __missing__(self, cls: type) -> tuple[str, ...]:
        if issubclass(cls, ast.AST):
            fields = tuple(attr for attr in ("body", "handlers", "orelse") if attr in cls._fields)
        else:
            fields = ("body", "orelse")
        self[cls] = fields
        return fields


_BLOCK_FIELDS: dict[type, tuple[str, ...]] = _BlockFields()


def _inner_blocks(stmt: ast.AST) -> list[list[Any]]:
    """The statement lists nested in a statement (a ``try``'s except clauses are a list of
    handlers, each with its own body)."""
    return [inner for attr in _BLOCK_FIELDS[type(stmt)] if isinstance(inner := getattr(stmt, attr, None), list)]


def compile_residual(name: str, params: list[str], body: list[ast.stmt], constants: dict[str, Any],
                     filename: str, used: set[str] | None = None) -> CompiledResidual:
    """Compile ``def name(params): body`` with ``constants`` as closure variables.

    ``used``: the names the body uses, if known (from cleanup), else found here."""
    fdef = ast.FunctionDef(
        name=name,
        args=ast.arguments(posonlyargs=[], args=[ast.arg(arg=p) for p in params], vararg=None,
                           kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[]),
        body=body or [ast.Pass()], decorator_list=[], returns=None, type_params=[],
    )
    if used is None:
        used = _names_used(fdef.body)
    closure = {k: v for k, v in constants.items() if k in used}
    module = factory(fdef, list(closure))
    module.body[0].lineno = fdef.lineno = 1
    _number_lines(fdef.body, 2)
    try:
        _fix_missing_locations(module, 1, 0, 1, _WHOLE_LINE)
    except _OddLocation:  # what is fixed already is what the generic walk would have set
        ast.fix_missing_locations(module)
    # A traceback through the residual code shows its lines: linecache asks the module's
    # loader for the source (unparsed only then) under a file name that is not <...>.
    function = load_function(module, name, closure, filename, _ResidualSource(fdef))
    return CompiledResidual(function, fdef, closure)


class _ResidualSource:
    """The residual's source text for linecache, made when a traceback first needs it."""

    def __init__(self, tree: ast.FunctionDef):
        self.tree = tree

    def get_source(self, name: str) -> str:
        return ast.unparse(self.tree) + "\n"


_WHOLE_LINE = 1 << 12  # an end column past any line's end: a traceback marks no part of it


def _number_lines(stmts: list[Any], line: int) -> int:
    """Give each statement the line ``ast.unparse`` prints it on (``elif`` chains, ``else:``
    and ``except`` lines included), so that the compiled code's line numbers are those of
    the residual text; returns the next line. What the statements hold is located at
    their line by _fix_missing_locations."""
    for stmt in stmts:
        stmt.lineno, stmt.col_offset = line, 0
        line += 1
        chain = [stmt]
        if isinstance(stmt, ast.If):
            line = _number_lines(stmt.body, line)
            node = stmt
            while len(node.orelse) == 1 and isinstance(node.orelse[0], ast.If):  # printed as elif
                node = node.orelse[0]
                node.lineno, node.col_offset = line, 0
                chain.append(node)
                line = _number_lines(node.body, line + 1)
            if node.orelse:
                line = _number_lines(node.orelse, line + 1)
        elif isinstance(stmt, ast.Try):
            line = _number_lines(stmt.body, line)
            for handler in stmt.handlers:
                handler.lineno, handler.col_offset = line, 0
                line = _number_lines(handler.body, line + 1)
                handler.end_lineno, handler.end_col_offset = line - 1, _WHOLE_LINE
            for block in (stmt.orelse, stmt.finalbody):
                if block:
                    line = _number_lines(block, line + 1)
        else:
            for attr in _BLOCK_FIELDS[type(stmt)]:  # loops (and their else), with
                block = getattr(stmt, attr, None)
                if block:
                    line = _number_lines(block, line + (attr == "orelse"))
        for node in chain:
            node.end_lineno, node.end_col_offset = line - 1, _WHOLE_LINE
    return line


def _names_used(body: list[ast.stmt]) -> set[str]:
    reads, writes = _count_names(body)
    return set(reads) | set(writes)


class _OddLocation(Exception):
    pass


_LOCATED: dict[type, bool] = {}  # node class -> has the four location attributes
_LOCATION = ("lineno", "col_offset", "end_lineno", "end_col_offset")


def _fix_missing_locations(node: ast.AST, lineno: int, col_offset: int, end_lineno: int | None,
                           end_col_offset: int | None) -> None:
    """What ast.fix_missing_locations does (same walk, same values), without its generic
    iteration: it is most of the time of compiling a residual function."""
    cls = type(node)
    located = _LOCATED.get(cls)
    if located is None:
        attributes = getattr(cls, "_attributes", ())
        located = _LOCATED[cls] = sorted(attributes) == sorted(_LOCATION)
        if not located and any(attr in attributes for attr in _LOCATION):
            del _LOCATED[cls]
            raise _OddLocation(cls)  # part of a location (no such class in CPython 3.11-3.13)
    if located:
        own = node.__dict__
        if "lineno" in own:
            lineno = own["lineno"]
        else:
            node.lineno = lineno
        if own.get("end_lineno") is None:
            node.end_lineno = end_lineno
        else:
            end_lineno = own["end_lineno"]
        if "col_offset" in own:
            col_offset = own["col_offset"]
        else:
            node.col_offset = col_offset
        if own.get("end_col_offset") is None:
            node.end_col_offset = end_col_offset
        else:
            end_col_offset = own["end_col_offset"]
    fields = _CHILD_FIELDS.get(cls)
    if fields is None:
        fields = _child_fields(cls)
    for field_name in fields:
        value = getattr(node, field_name, None)
        if type(value) is list:
            for item in value:
                if type(item) is ast.Name or type(item) is ast.Constant:
                    _fix_leaf(item, lineno, col_offset, end_lineno, end_col_offset)
                elif isinstance(item, ast.AST):
                    _fix_missing_locations(item, lineno, col_offset, end_lineno, end_col_offset)
        elif type(value) is ast.Name or type(value) is ast.Constant:
            _fix_leaf(value, lineno, col_offset, end_lineno, end_col_offset)
        elif isinstance(value, ast.AST):
            _fix_missing_locations(value, lineno, col_offset, end_lineno, end_col_offset)


def _fix_leaf(node: ast.expr, lineno: int, col_offset: int, end_lineno: int | None,
              end_col_offset: int | None) -> None:
    """_fix_missing_locations for a name or a constant (no child has a location)."""
    own = node.__dict__
    if "lineno" not in own:
        node.lineno = lineno
    if own.get("end_lineno") is None:
        node.end_lineno = end_lineno
    if "col_offset" not in own:
        node.col_offset = col_offset
    if own.get("end_col_offset") is None:
        node.end_col_offset = end_col_offset


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


# Where a name the generic code calls may resolve: the stack's own modules, not the ways it is
# run (drivers, trio, the host's TUN and namespaces, the CLI) nor the tools around it.
_NOT_THE_STACK = ("pystack.cli", "pystack.driver", "pystack.trio_", "pystack.services", "pystack.links",
                  "pystack.host")
_NOT_THE_CODE = {"pystack": _NOT_THE_STACK}  # per package: its modules that are not the code a scenario runs
# A socket of one transport never runs the other's code: a scenario's defensible baseline
# leaves it out (Stack.send dispatches on the socket's type, and a UDP socket's never goes to TCP).
OTHER_TRANSPORT = {"udp": ("pystack.tcp",), "tcp": ("pystack.udp",)}


def package_modules(package: str = "pystack", exclude: tuple[str, ...] = ()) -> dict[str, types.ModuleType]:
    """A package's modules by name (a plain module: itself), every one imported: a fixed
    set, whatever else is imported."""
    import importlib
    import pkgutil

    root = importlib.import_module(package)
    if not hasattr(root, "__path__"):
        return {package: root}
    skip = _NOT_THE_CODE.get(package, ()) + exclude
    names = sorted(info.name for info in pkgutil.walk_packages(root.__path__, package + ".")
                   if not info.name.startswith(skip))
    return {name: importlib.import_module(name) for name in [package, *names]}


def reachable_functions(entry: Any, limit: int = 400, exclude: tuple[str, ...] = (),
                        package: str = "pystack") -> list[Any]:
    """Every function of ``package`` (the stack by default; a user scenario's own package)
    the entry can reach through the names it calls (a static call graph over
    :func:`package_modules`, so the same whatever happens to be imported); ``exclude``
    leaves out module prefixes (the other transport: :data:`OTHER_TRANSPORT`)."""
    import inspect

    modules = package_modules(package, exclude)
    seen: dict[int, Any] = {}
    todo = [entry]
    while todo and len(seen) < limit:
        func = todo.pop()
        code = getattr(func, "__code__", None)
        if code is None or id(code) in seen or func.__module__ not in modules:
            continue
        seen[id(code)] = func
        names = set(code.co_names) | {n for c in code.co_consts if isinstance(c, types.CodeType) for n in c.co_names}
        for name in sorted(names):
            for candidate in _candidates(func, name, modules):
                if inspect.isfunction(candidate) and candidate.__module__ in modules:
                    todo.append(candidate)
    return list(seen.values())


def out_of_line_functions(compiled: CompiledResidual, package: str = "pystack") -> tuple[list[Any], list[Any]]:
    """The functions of ``package`` the residual code still calls (its frozen references:
    rare paths left out of line, such as ip_fragment, and callees not unfolded), and
    everything those reach: (called, called and reached)."""
    called = []
    for value in compiled.constants.values():
        func = getattr(value, "__func__", value)
        if isinstance(func, types.FunctionType) and (func.__module__ == package
                                                     or func.__module__.startswith(package + ".")):
            called.append(func)
    reached: dict[int, Any] = {}
    for func in called:
        for found in reachable_functions(func, package=package):
            reached.setdefault(id(found.__code__), found)
    return called, list(reached.values())


def _candidates(func: Any, name: str, modules: dict[str, types.ModuleType]) -> list[Any]:
    """Functions a name in ``func`` may refer to: a global, or a method of a class of ``modules``."""
    found = []
    glob = func.__globals__.get(name)
    if glob is not None:
        found.append(glob.fget if isinstance(glob, property) else glob)
        if isinstance(glob, types.ModuleType):
            return found
    for module in func.__globals__.values():  # ``udp.udp_sendmsg``: an attribute of an imported module
        if isinstance(module, types.ModuleType) and module.__name__ in modules:
            value = getattr(module, name, None)
            if isinstance(value, types.FunctionType):
                found.append(value)
    for module_name, module in modules.items():
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


__all__ = ["OTHER_TRANSPORT", "cleanup", "compile_residual", "code_size", "residual_size", "reachable_functions",
           "out_of_line_functions", "dis"]
