"""Residual Python (the specializer's AST and frozen values) to one C function.

The C function computes; it changes nothing. It takes the residual's byte-string
parameters, the dynamic fields the code reads (loaded by the Python shell before the
call, see shell.py), and returns which of the code's paths it took, with the values that
path writes, adds or passes on in ``io`` slots and the bytes it hands to Python calls in
``out``. The shell then performs that path's effects in the residual's order. So every
statement the translation cannot express (a raise, a call with Python objects, a loop,
an integer past 64 bits at run time) is simply a ``goto python``: that call runs the
Python residual instead, from the start, which is exact because nothing was changed yet.

Kinds of values: ``int`` and ``bool`` (int64_t), ``bytes``, ``bytearray`` and
``memoryview`` (of bytes only: a pointer and a length), and ``big``: ``int.from_bytes(b, 'big') + k``, kept symbolic because only
its remainder and its comparison with an integer are ever needed (the checksum).
"""

from __future__ import annotations

import ast
import builtins
import inspect
import struct
import types
from dataclasses import dataclass, field
from typing import Any

INT, BOOL, BYTES, BYTEARRAY, MEMORYVIEW, BIG, NONE = "int", "bool", "bytes", "bytearray", "memoryview", "big", "None"
BUFFERS = (BYTES, BYTEARRAY, MEMORYVIEW)
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
MAX_EFFECTS = 62  # one bit each in the path mask
MAX_PATHS = 64
STRUCT_CODES = {"B": (1, False), "b": (1, True), "H": (2, False), "h": (2, True),
                "I": (4, False), "i": (4, True), "Q": (8, False), "q": (8, True)}
BINOPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.BitAnd: "&", ast.BitOr: "|",
          ast.BitXor: "^", ast.LShift: "cb_lshift", ast.RShift: "cb_rshift", ast.Mod: "cb_mod",
          ast.FloorDiv: "cb_floordiv"}
COMPARE = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}


class CannotTranslate(Exception):
    """The residual (or a scenario) has no path that C can run: the message says why."""


class _Untranslatable(Exception):
    """This statement stays in Python (its path goes back to the Python residual)."""


@dataclass
class Value:
    kind: str
    c: str  # an int64 expression, a cb_buf variable, or for ``big`` the cb_buf variable
    addend: str = "0"  # ``big`` only: the integer added to the bytes' value


@dataclass
class Effect:
    """One change the residual makes to Python objects, done by the shell in order."""

    index: int
    kind: str  # "set" (obj.name = v), "add" (obj.name += v), "item_add" (obj[name] += v), "call" (obj(*args))
    obj: str  # the frozen reference (closure constant) it acts on
    name: str
    args: list[tuple[str, int]]  # (kind, first io slot) per value; bytes take two slots (offset, length)
    line: int


@dataclass
class Path:
    effects: tuple[int, ...]
    result: str  # its kind, in io[0] (NONE: the residual returns None)


@dataclass
class CProgram:
    """What the translation made: the C, and what the shell needs to drive it."""

    name: str  # the C function's name (the residual's)
    source: str  # the C function (the runtime helpers not included)
    params: list[str]  # the residual's parameters, each made bytes by its first statements
    prologue: list[tuple[str, str]]  # (variable, parameter): ``variable = bytes(parameter)``
    inputs: list[tuple[str, str]]  # (frozen reference, field): arguments, read before the call
    effects: list[Effect]
    paths: list[Path]
    slots: int  # io[0] is the result, if any
    holes: list[int]  # the integers of the residual, in order (the template's holes)
    exits: list[str]  # what goes back to Python, one line each
    arena: int  # allocations in the worst path (the arena's size)

    @property
    def shape(self) -> tuple:
        """All of the program but its integers (its holes): what a template must match. The C
        alone is not enough: it does not say which field or counter an effect goes to."""
        return (self.source, tuple(self.params), tuple(self.prologue), tuple(self.inputs),
                tuple((e.kind, e.obj, e.name, tuple(e.args)) for e in self.effects),
                tuple((p.effects, p.result) for p in self.paths), self.slots, self.arena)

    @property
    def signature(self) -> str:
        args = "".join(f"const char *p_{v}, int64_t n_{v}, " for v, _ in self.prologue)
        args += "".join(f"int64_t in{i}, " for i in range(len(self.inputs)))
        return f"int64_t {self.name}({args}int64_t *io, char *out, int64_t out_cap, const int64_t *K)"


def translate(tree: ast.FunctionDef, constants: dict[str, Any], *, holes: bool = False) -> CProgram:
    """The C of a residual function. ``holes``: every integer of the residual is read from
    ``K`` instead of written in the code, so that one compiled function serves every
    residual of the same shape (a template); otherwise ``K`` is unused."""
    return _Translator(tree, constants, holes).run()


@dataclass
class _Translator:
    tree: ast.FunctionDef
    constants: dict[str, Any]
    holes_mode: bool
    kinds: dict[str, str] = field(default_factory=dict)  # the residual's local names (py_NAME in the C)
    temps_declared: dict[str, str] = field(default_factory=dict)  # the C's own temporaries: their declarations
    inputs: list[tuple[str, str]] = field(default_factory=list)
    effects: list[Effect] = field(default_factory=list)
    holes: list[int] = field(default_factory=list)
    exits: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    slots: int = 1  # io[0]: the result
    fields: list[tuple[str, str]] = field(default_factory=list)  # every field read or written
    temps: int = 0
    allocs: int = 0
    lines: list[str] = field(default_factory=list)
    after_call: bool = False  # a Python call happened on the way here: fields may have changed
    escaped: set[str] = field(default_factory=set)  # bytearrays handed to Python: it may hold them
    first_names: dict[int, str] = field(default_factory=dict)  # id of a frozen value -> its first name

    def __post_init__(self) -> None:
        for name, value in reversed(self.constants.items()):
            self.first_names[id(value)] = name

    def run(self) -> CProgram:
        params = [a.arg for a in self.tree.args.args]
        body = list(self.tree.body)
        prologue = []
        while body and (conv := self._conversion(body[0], params)) is not None:
            prologue.append(conv)
            self.kinds[conv[0]] = BYTES
            body.pop(0)
        if sorted(p for _, p in prologue) != sorted(params):
            raise CannotTranslate("the C backend takes residuals whose parameters are byte strings "
                                  "(each made bytes by the first statements)")
        self._close(self._block(body, [()], 1), NONE, 1)  # falling off the end returns None
        if not self.paths:
            raise CannotTranslate("no path of the residual runs in C: " + "; ".join(self.exits))
        if len(self.effects) > MAX_EFFECTS:
            raise CannotTranslate(f"more than {MAX_EFFECTS} effects on Python objects")
        name = self.tree.name
        decls = [f"    cb_buf bigb_{var}; int64_t bigk_{var};" if kind == BIG else f"    {self._ctype(kind)} py_{var};"
                 for var, kind in self.kinds.items() if var not in dict(prologue)]
        decls += [f"    {declaration}" for declaration in self.temps_declared.values()]
        loads = [f"    int64_t {self._field_var(obj, f)} = "
                 + (f"in{self.inputs.index((obj, f))};  /* {obj}.{f} */" if (obj, f) in self.inputs else "0;")
                 for obj, f in self.fields]
        head = [f"    cb_buf py_{v} = {{(uint8_t *)(uintptr_t)p_{v}, n_{v}}};" for v, _ in prologue]
        program = CProgram(name, "", params, prologue, self.inputs, self.effects, self.paths, self.slots,
                           self.holes, self.exits, max(self.allocs, 1))
        source = "\n".join([
            f"{program.signature} {{",
            "    cb_arena arena = {{0}, 0};",
            "    int64_t mask = 0, result = -1, out_used = 0;",
            *head, *loads, *decls,
            "    (void)K; (void)out; (void)out_cap; (void)out_used;",
            *self.lines,
            "python:",
            "    result = -1;",
            "done:",
            "    cb_free(&arena);",
            "    return result;",
            "}",
        ])
        program.source = source
        return program

    # -- statements ---------------------------------------------------------------------

    def _conversion(self, stmt: ast.stmt, params: list[str]) -> tuple[str, str] | None:
        if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
                and isinstance(stmt.value, ast.Call) and isinstance(stmt.value.func, ast.Name)
                and stmt.value.func.id == "bytes" and "bytes" not in self.constants and not stmt.value.keywords
                and len(stmt.value.args) == 1 and isinstance(stmt.value.args[0], ast.Name)
                and stmt.value.args[0].id in params):
            return stmt.targets[0].id, stmt.value.args[0].id
        return None

    def _block(self, stmts: list[ast.stmt], paths: list[tuple[int, ...]], depth: int) -> list[tuple[int, ...]]:
        """Translate a block reached by ``paths`` (each the effects so far); the paths that reach its end."""
        for stmt in stmts:
            if not paths:
                break  # after a return or an exit on every path: nothing reaches this
            paths = self._statement(stmt, paths, depth)
        return paths

    def _statement(self, stmt: ast.stmt, paths: list[tuple[int, ...]], depth: int) -> list[tuple[int, ...]]:
        """One statement's C, or, if it cannot be C, a ``goto python`` and what it changed undone
        (a name is bound only by a statement that succeeds: the names need no undoing)."""
        pad = "    " * depth
        marks = (len(self.lines), len(self.inputs), len(self.fields), len(self.effects), len(self.holes),
                 len(self.paths), self.slots, self.allocs, self.after_call)
        where = self._where(stmt)
        self.lines.append(f"{pad}/* {where} */")
        try:
            return self._translate(stmt, paths, depth)
        except _Untranslatable as why:
            for kept, mark in zip((self.lines, self.inputs, self.fields, self.effects, self.holes, self.paths), marks,
                                  strict=False):
                del kept[mark:]
            self.slots, self.allocs, self.after_call = marks[6:]
            self.exits.append(f"{where} ({why})")
            self.lines += [f"{pad}/* back to Python: {where} ({why}) */", f"{pad}goto python;"]
            return []

    def _where(self, stmt: ast.stmt) -> str:
        """The residual line a piece of C comes from: with its text, unless the integers are
        holes (a template's C must not depend on them, comments included)."""
        if self.holes_mode:
            return f"line {_line_of(stmt)}"
        return f"line {_line_of(stmt)}: {_first_line(stmt)}"

    def _translate(self, stmt: ast.stmt, paths: list[tuple[int, ...]], depth: int) -> list[tuple[int, ...]]:
        pad = "    " * depth
        if isinstance(stmt, ast.Pass):
            return paths
        if isinstance(stmt, ast.Raise):
            raise _Untranslatable("an exception")
        if isinstance(stmt, ast.If):
            test = self._truth(self._expr(stmt.test, depth), depth)
            self.lines.append(f"{pad}if ({test}) {{")
            after = self.after_call
            taken = self._block(stmt.body, paths, depth + 1)
            after_taken, self.after_call = self.after_call, after
            if stmt.orelse:
                self.lines.append(f"{pad}}} else {{")
            other = self._block(stmt.orelse, paths, depth + 1)
            self.lines.append(f"{pad}}}")
            self.after_call = self.after_call or after_taken
            merged = taken + [p for p in other if p not in taken]
            if len(merged) > MAX_PATHS:
                raise CannotTranslate(f"more than {MAX_PATHS} paths through the effects")
            return merged
        if isinstance(stmt, ast.Return):
            kind = NONE
            if stmt.value is not None:
                value = self._expr(stmt.value, depth)
                if value.kind not in (INT, BOOL):
                    raise _Untranslatable(f"returns a {value.kind}")
                self.lines.append(f"{pad}io[0] = {value.c};")
                kind = value.kind
            self._close(paths, kind, depth)
            return []
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            return self._assign(stmt.targets[0], stmt.value, paths, depth)
        if isinstance(stmt, ast.AugAssign):
            return self._augassign(stmt, paths, depth)
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
            return self._call_statement(stmt.value, paths, depth)
        raise _Untranslatable(f"a {type(stmt).__name__} statement")

    def _close(self, paths: list[tuple[int, ...]], kind: str, depth: int) -> None:
        """These paths end here: the C returns their mask (each effect sets its bit as it happens)."""
        if not paths:
            return
        for effects in paths:
            known = next((p for p in self.paths if p.effects == effects), None)
            if known is not None and known.result != kind:
                raise _Untranslatable("two returns of different kinds after the same effects")
            if known is None:
                self.paths.append(Path(effects, kind))
        if len(self.paths) > MAX_PATHS:
            raise CannotTranslate(f"more than {MAX_PATHS} paths through the effects")
        self.lines += ["    " * depth + "result = mask;", "    " * depth + "goto done;"]

    def _assign(self, target: ast.expr, value_node: ast.expr, paths: list, depth: int) -> list:
        pad = "    " * depth
        if isinstance(target, ast.Name):
            if self._is_constant_name(target.id):
                raise _Untranslatable("assigns a frozen name")
            if isinstance(value_node, ast.Name) and self.kinds.get(value_node.id) == BYTEARRAY:
                raise _Untranslatable("a second name for a bytearray")
            value = self._expr(value_node, depth)
            self._bind(target.id, value.kind)
            if value.kind == BIG:  # the bytes and the integer added to their value
                self.lines.append(f"{pad}bigb_{target.id} = {value.c}; bigk_{target.id} = {value.addend};")
            else:
                self.lines.append(f"{pad}py_{target.id} = {value.c};")
            return paths
        obj = self._object_name(target.value) if isinstance(target, ast.Attribute) else None
        if obj is not None:
            value = self._int_value(value_node, depth)
            slot = self._slot()
            self._field(obj, target.attr)
            self.lines += [f"{pad}io[{slot}] = {value.c};", f"{pad}{self._field_var(obj, target.attr)} = io[{slot}];"]
            return self._effect("set", obj, target.attr, [(value.kind, slot)], target, paths, depth)
        if (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
                and self.kinds.get(target.value.id) == BYTEARRAY and isinstance(target.slice, ast.Slice)
                and target.slice.step is None):
            self._not_escaped(target.value.id)
            return self._slice_assign(f"py_{target.value.id}", target.slice, value_node, paths, depth)
        raise _Untranslatable("an assignment to something other than a name or a field")

    def _slice_assign(self, var: str, bounds: ast.Slice, value_node: ast.expr, paths: list, depth: int) -> list:
        """``var[lo:hi] = value``: the bytearray becomes var[:lo] + value + var[hi:], resized
        when the lengths differ (as Python does; the bounds adjusted as Python adjusts them)."""
        pad = "    " * depth
        start, stop = self._bounds(var, bounds, depth)
        value = self._expr(value_node, depth)
        if value.kind not in BUFFERS:
            raise _Untranslatable("a slice assigned from something other than bytes")
        size, grown = self._int_temp(), self._temp()
        self.allocs += 1
        self.lines += [
            f"{pad}{size} = {start} + {value.c}.n + ({var}.n - {stop});",
            f"{pad}if ({size} != {var}.n) {{  /* Python resizes the bytearray */",
            f"{pad}    uint8_t *{grown}_p = cb_alloc(&arena, {size});",
            f"{pad}    if (!{grown}_p) goto python;",
            f"{pad}    memcpy({grown}_p, {var}.p, (size_t){start});",
            f"{pad}    memcpy({grown}_p + {start}, {value.c}.p, (size_t){value.c}.n);",
            f"{pad}    memcpy({grown}_p + {start} + {value.c}.n, {var}.p + {stop}, (size_t)({var}.n - {stop}));",
            f"{pad}    {var}.p = {grown}_p;",
            f"{pad}    {var}.n = {size};",
            f"{pad}}} else {{",
            f"{pad}    memmove({var}.p + {start}, {value.c}.p, (size_t){value.c}.n);",
            f"{pad}}}",
        ]
        return paths

    def _bounds(self, var: str, bounds: ast.Slice, depth: int) -> tuple[str, str]:
        """C variables holding Python's adjusted ``start`` and ``stop`` of ``var[lower:upper]``."""
        lower = self._int_value(bounds.lower, depth).c if bounds.lower is not None else "0"
        upper = self._int_value(bounds.upper, depth).c if bounds.upper is not None else "0"
        start, stop = self._int_temp(), self._int_temp()
        self.lines.append(f"{'    ' * depth}cb_bounds({var}.n, {int(bounds.lower is not None)}, {lower}, "
                          f"{int(bounds.upper is not None)}, {upper}, &{start}, &{stop});")
        return start, stop

    def _subscript(self, node: ast.Subscript, depth: int) -> Value:
        """A slice of bytes or of a memoryview is a view; of a bytearray, a new bytearray."""
        value = self._expr(node.value, depth)
        if value.kind not in BUFFERS or not isinstance(node.slice, ast.Slice) or node.slice.step is not None:
            raise _Untranslatable("a subscript other than a slice of bytes")
        pad = "    " * depth
        start, stop = self._bounds(value.c, node.slice, depth)
        var = self._temp()
        self._declare_temp(var, "cb_buf")
        self.lines.append(f"{pad}{var}.n = {stop} - {start};")
        if value.kind != BYTEARRAY:
            self.lines.append(f"{pad}{var}.p = {value.c}.p + {start};")
            return Value(value.kind, var)
        self.allocs += 1
        self.lines += [f"{pad}if (!({var}.p = cb_alloc(&arena, {var}.n))) goto python;",
                       f"{pad}memcpy({var}.p, {value.c}.p + {start}, (size_t){var}.n);"]
        return Value(BYTEARRAY, var)

    def _augassign(self, stmt: ast.AugAssign, paths: list, depth: int) -> list:
        pad = "    " * depth
        target = stmt.target
        if isinstance(target, ast.Name):
            if self.kinds.get(target.id) == BYTEARRAY:
                raise _Untranslatable("+= on a bytearray (changes it in place)")
            load = ast.Name(id=target.id, ctx=ast.Load())
            return self._assign(ast.Name(id=target.id, ctx=ast.Store()),
                                ast.BinOp(left=load, op=stmt.op, right=stmt.value), paths, depth)
        if not isinstance(stmt.op, ast.Add):
            raise _Untranslatable("an augmented assignment other than += on a Python object")
        if isinstance(target, ast.Attribute) and (obj := self._object_name(target.value)) is not None:
            if self.after_call:
                raise _Untranslatable("changes a field after a call into Python")
            self._input(obj, target.attr)
            var = self._field_var(obj, target.attr)
            value = self._int_value(stmt.value, depth)
            slot = self._slot()
            self.lines += [f"{pad}io[{slot}] = {value.c};",
                           f"{pad}if (__builtin_add_overflow({var}, io[{slot}], &{var})) goto python;"]
            return self._effect("add", obj, target.attr, [(value.kind, slot)], target, paths, depth)
        if (isinstance(target, ast.Subscript) and (obj := self._object_name(target.value)) is not None
                and isinstance(target.slice, ast.Constant) and isinstance(target.slice.value, str)):
            value = self._int_value(stmt.value, depth)
            slot = self._slot()
            self.lines.append(f"{pad}io[{slot}] = {value.c};")
            return self._effect("item_add", obj, target.slice.value, [(value.kind, slot)], target, paths, depth)
        raise _Untranslatable("an augmented assignment to something other than a name, field or counter")

    def _call_statement(self, call: ast.Call, paths: list, depth: int) -> list:
        pad = "    " * depth
        if call.keywords or any(isinstance(a, ast.Starred) for a in call.args):
            raise _Untranslatable("a call with keywords or *args")
        func = self._frozen(call.func)
        if _struct_method(func, "pack_into"):
            return self._pack_into(func.__self__, call.args, paths, depth)
        name = self._object_name(call.func)
        if name is None or not callable(func) or _builtin(func):
            raise _Untranslatable("a call the C cannot make")
        objects = [a.id for a in call.args if self._object_name(a) is not None]
        if objects:
            raise _Untranslatable(f"a call with Python objects as arguments ({', '.join(objects)})")
        args = []
        for arg in call.args:
            value = self._expr(arg, depth)
            if value.kind in (INT, BOOL):
                slot = self._slot()
                self.lines.append(f"{pad}io[{slot}] = {value.c};")
            elif value.kind in (BYTES, BYTEARRAY):  # (a memoryview would come back as another type)
                if value.kind == BYTEARRAY and isinstance(arg, ast.Name):
                    self.escaped.add(arg.id)
                slot = self._slot()
                self._slot()
                self.lines += [
                    f"{pad}if ({value.c}.n > out_cap - out_used) goto python;",
                    f"{pad}memcpy(out + out_used, {value.c}.p, (size_t){value.c}.n);",
                    f"{pad}io[{slot}] = out_used;",
                    f"{pad}io[{slot + 1}] = {value.c}.n;",
                    f"{pad}out_used += {value.c}.n;",
                ]
            else:
                raise _Untranslatable(f"passes a {value.kind} to Python")
            args.append((value.kind, slot))
        paths = self._effect("call", name, "", args, call, paths, depth)
        self.after_call = True
        return paths

    def _pack_into(self, packer: struct.Struct, args: list[ast.expr], paths: list, depth: int) -> list:
        pad = "    " * depth
        fields = _struct_fields(packer.format)
        if len(args) != 2 + len(fields) or not isinstance(args[0], ast.Name) or \
                self.kinds.get(args[0].id) != BYTEARRAY:
            raise _Untranslatable("pack_into other than into a bytearray variable")
        self._not_escaped(args[0].id)
        buf = f"py_{args[0].id}"
        offset = self._temp()
        self._declare_temp(offset, "int64_t")
        self.lines += [
            f"{pad}{offset} = {self._int_value(args[1], depth).c};",
            f"{pad}if ({offset} < 0) {offset} += {buf}.n;",
            f"{pad}if ({offset} < 0 || {offset} > {buf}.n - {packer.size}) goto python;",
        ]
        self._pack_fields(f"{buf}.p + {offset}", fields, args[2:], depth)
        return paths

    def _pack_fields(self, where: str, fields: list[tuple[int, int, bool]], args: list[ast.expr], depth: int) -> None:
        pad = "    " * depth
        values = [self._int_value(a, depth).c for a in args]
        for (_, size, signed), value in zip(fields, values, strict=True):
            self.lines.append(f"{pad}if (!cb_fits({value}, {size}, {int(signed)})) goto python;")
        for (offset, size, _), value in zip(fields, values, strict=True):
            self.lines.append(f"{pad}cb_put({where} + {offset}, {size}, (uint64_t){value});")

    def _effect(self, kind: str, obj: str, name: str, args: list[tuple[str, int]], node: ast.AST,
                paths: list, depth: int) -> list:
        effect = Effect(len(self.effects), kind, obj, name, args, _line_of(node))
        self.effects.append(effect)
        self.lines.append("    " * depth + f"mask |= (int64_t)1 << {effect.index};")
        return [p + (effect.index,) for p in paths]

    # -- expressions --------------------------------------------------------------------

    def _int_value(self, node: ast.expr, depth: int) -> Value:
        value = self._expr(node, depth)
        if value.kind not in (INT, BOOL):
            raise _Untranslatable(f"a {value.kind} where an integer is needed")
        return value

    def _expr(self, node: ast.expr, depth: int) -> Value:
        """C computing ``node`` (its statements appended to the current lines), and its value."""
        if isinstance(node, ast.Constant):
            return self._constant(node.value)
        translator = _EXPRESSIONS.get(type(node))
        if translator is None:
            raise _Untranslatable(f"a {type(node).__name__} expression")
        return translator(self, node, depth)

    def _name(self, node: ast.Name, depth: int) -> Value:
        if self.kinds.get(node.id) == BIG:
            return Value(BIG, f"bigb_{node.id}", f"bigk_{node.id}")
        if node.id in self.kinds:
            return Value(self.kinds[node.id], f"py_{node.id}")
        if node.id in self.constants:
            return self._constant(self.constants[node.id])
        raise _Untranslatable(f"the name {node.id}")

    def _attribute(self, node: ast.Attribute, depth: int) -> Value:
        obj = self._object_name(node.value)
        if obj is not None:
            if self.after_call:
                raise _Untranslatable("reads a field after a call into Python")
            self._input(obj, node.attr)
            return Value(INT, self._field_var(obj, node.attr))
        if isinstance(node.value, ast.Name) and isinstance(self.constants.get(node.value.id), types.ModuleType):
            return self._constant(getattr(self.constants[node.value.id], node.attr))
        raise _Untranslatable("an attribute of something not frozen")

    def _unary(self, node: ast.UnaryOp, depth: int) -> Value:
        operand = self._expr(node.operand, depth)
        if isinstance(node.op, ast.Not):
            return Value(BOOL, f"!({self._truth(operand, depth)})")
        if operand.kind not in (INT, BOOL):
            raise _Untranslatable(f"a unary operator on a {operand.kind}")
        if isinstance(node.op, ast.Invert):
            return self._let(INT, f"~{operand.c}", depth)
        if isinstance(node.op, ast.USub):
            t = Value(INT, self._int_temp())
            self.lines.append(f"{'    ' * depth}if (__builtin_sub_overflow((int64_t)0, {operand.c}, &{t.c}))"
                              " goto python;")
            return t
        return Value(INT, operand.c)

    def _ifexp(self, node: ast.IfExp, depth: int) -> Value:
        pad = "    " * depth
        test = self._truth(self._expr(node.test, depth), depth)
        result = self._int_temp()
        self.lines.append(f"{pad}if ({test}) {{")
        body = self._expr(node.body, depth + 1)
        self.lines += [f"{pad}    {result} = {body.c};", f"{pad}}} else {{"]
        orelse = self._expr(node.orelse, depth + 1)
        self.lines += [f"{pad}    {result} = {orelse.c};", f"{pad}}}"]
        if body.kind != orelse.kind or body.kind not in (INT, BOOL):
            raise _Untranslatable("a conditional expression of mixed or non-integer kinds")
        return Value(body.kind, result)

    def _constant(self, value: Any) -> Value:
        if isinstance(value, bool):
            return Value(BOOL, "1" if value else "0")
        if isinstance(value, int):
            if not INT64_MIN <= value <= INT64_MAX:
                raise _Untranslatable("an integer past 64 bits")
            if self.holes_mode:
                self.holes.append(value)
                return Value(INT, f"K[{len(self.holes) - 1}]")
            return Value(INT, f"INT64_C({value})" if value >= 0 else f"(-INT64_C({-value - 1}) - 1)")
        if isinstance(value, bytes):
            var = self._temp()  # initialized where it is declared
            literal = "".join(f"\\x{b:02x}" for b in value)
            self.temps_declared[var] = f"cb_buf {var} = {{(uint8_t *)\"{literal}\", {len(value)}}};"
            return Value(BYTES, var)
        raise _Untranslatable(f"a constant of type {type(value).__name__}")

    def _binop(self, node: ast.BinOp, depth: int) -> Value:
        pad = "    " * depth
        left, right = self._expr(node.left, depth), self._expr(node.right, depth)
        op = BINOPS.get(type(node.op))
        if op is None:
            raise _Untranslatable(f"the operator {type(node.op).__name__}")
        if left.kind in (BYTES, BYTEARRAY) and right.kind in BUFFERS and op == "add":
            var = self._temp()
            self._declare_temp(var, "cb_buf")
            self.allocs += 1
            self.lines.append(f"{pad}if (!cb_concat(&arena, {left.c}, {right.c}, &{var})) goto python;")
            return Value(left.kind, var)
        if op == "add" and {left.kind, right.kind} & {BIG} and {left.kind, right.kind} <= {BIG, INT, BOOL}:
            big, other = (left, right) if left.kind == BIG else (right, left)
            if other.kind == BIG:
                raise _Untranslatable("two big integers added")
            t = Value(INT, self._int_temp())
            self.lines.append(f"{pad}if (__builtin_add_overflow({big.addend}, {other.c}, &{t.c})) goto python;")
            return Value(BIG, big.c, t.c)
        if op == "cb_mod" and left.kind == BIG and right.kind in (INT, BOOL):
            t = Value(INT, self._int_temp())
            k = self._temp()
            self._declare_temp(k, "int64_t")
            self.lines += [
                f"{pad}if (!cb_be_mod({left.c}.p, {left.c}.n, {right.c}, &{t.c})) goto python;",
                f"{pad}if (!cb_mod({left.addend}, {right.c}, &{k})) goto python;",
                f"{pad}{t.c} = ({t.c} + {k}) % {right.c};",
            ]
            return t
        if left.kind not in (INT, BOOL) or right.kind not in (INT, BOOL):
            raise _Untranslatable(f"{type(node.op).__name__} on {left.kind} and {right.kind}")
        t = Value(INT, self._int_temp())
        if op in ("&", "|", "^"):
            kind = BOOL if left.kind == right.kind == BOOL else INT
            self.lines.append(f"{pad}{t.c} = {left.c} {op} {right.c};")
            return Value(kind, t.c)
        if op in ("add", "sub", "mul"):
            self.lines.append(f"{pad}if (__builtin_{op}_overflow({left.c}, {right.c}, &{t.c})) goto python;")
        else:
            self.lines.append(f"{pad}if (!{op}({left.c}, {right.c}, &{t.c})) goto python;")
        return t

    def _compare(self, node: ast.Compare, depth: int) -> Value:
        if len(node.ops) != 1:
            raise _Untranslatable("a chained comparison")
        op, right_node = node.ops[0], node.comparators[0]
        left = self._expr(node.left, depth)
        if isinstance(op, ast.In | ast.NotIn):
            if left.kind not in (INT, BOOL) or not isinstance(right_node, ast.Tuple):
                raise _Untranslatable("membership other than an integer in a tuple")
            items = [self._int_value(e, depth).c for e in right_node.elts]
            test = " || ".join(f"{left.c} == {item}" for item in items) or "0"
            return Value(BOOL, f"({test})" if isinstance(op, ast.In) else f"!({test})")
        right = self._expr(right_node, depth)
        symbol = COMPARE.get(type(op))
        if symbol is None:
            raise _Untranslatable(f"the comparison {type(op).__name__}")
        if BIG in (left.kind, right.kind):
            big, other = (left, right) if left.kind == BIG else (right, left)
            if symbol not in ("==", "!=") or other.kind not in (INT, BOOL):
                raise _Untranslatable("a big integer compared other than for equality with an integer")
            target = Value(INT, self._int_temp())
            self.lines.append(f"{'    ' * depth}if (__builtin_sub_overflow({other.c}, {big.addend}, &{target.c}))"
                              " goto python;")
            test = f"cb_be_eq({big.c}.p, {big.c}.n, {target.c})"
            return Value(BOOL, test if symbol == "==" else f"!{test}")
        if left.kind not in (INT, BOOL) or right.kind not in (INT, BOOL):
            raise _Untranslatable(f"a comparison of {left.kind} and {right.kind}")
        return Value(BOOL, f"({left.c} {symbol} {right.c})")

    def _boolop(self, node: ast.BoolOp, depth: int) -> Value:
        """``a or b`` / ``a and b`` with Python's value: the first operand that decides."""
        pad = "    " * depth
        values = node.values
        first = self._expr(values[0], depth)
        if first.kind not in (INT, BOOL):
            raise _Untranslatable(f"and/or on a {first.kind}")
        result = self._temp()
        self._declare_temp(result, "int64_t")
        self.lines.append(f"{pad}{result} = {first.c};")
        closing = 0
        for value_node in values[1:]:
            test = result if isinstance(node.op, ast.And) else f"!{result}"
            self.lines.append(f"{pad}{'    ' * closing}if ({test}) {{")
            closing += 1
            value = self._expr(value_node, depth + closing)
            if value.kind != first.kind:
                raise _Untranslatable("and/or on operands of different kinds")
            self.lines.append(f"{pad}{'    ' * closing}{result} = {value.c};")
        for level in range(closing - 1, -1, -1):
            self.lines.append(f"{pad}{'    ' * level}}}")
        return Value(first.kind, result)

    def _call(self, node: ast.Call, depth: int) -> Value:
        pad = "    " * depth
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise _Untranslatable("a call with keywords or *args")
        if isinstance(node.func, ast.Name) and node.func.id in ("len", "bytearray", "memoryview") \
                and node.func.id not in self.constants and node.func.id not in self.kinds and len(node.args) == 1:
            arg = self._expr(node.args[0], depth)
            if node.func.id == "len":
                if arg.kind not in BUFFERS:
                    raise _Untranslatable(f"len of a {arg.kind}")
                return Value(INT, f"{arg.c}.n")
            if node.func.id == "memoryview":
                if arg.kind not in (BYTES, MEMORYVIEW):  # a view of a bytearray would pin its size
                    raise _Untranslatable(f"a memoryview of a {arg.kind}")
                return Value(MEMORYVIEW, arg.c)
            if arg.kind != INT:
                raise _Untranslatable("bytearray of something other than a size")
            var = self._temp()
            self._declare_temp(var, "cb_buf")
            self.allocs += 1
            self.lines += [
                f"{pad}{var}.n = {arg.c};",
                f"{pad}if (!({var}.p = cb_alloc(&arena, {var}.n))) goto python;",
                f"{pad}memset({var}.p, 0, (size_t){var}.n);",
            ]
            return Value(BYTEARRAY, var)
        func = self._frozen(node.func)
        if getattr(func, "__self__", None) is int and func.__name__ == "from_bytes" and len(node.args) == 2 and isinstance(node.args[1], ast.Constant) \
                and node.args[1].value == "big":
            arg = self._expr(node.args[0], depth)
            if arg.kind not in BUFFERS:
                raise _Untranslatable("int.from_bytes of something other than bytes")
            return Value(BIG, arg.c, "0")
        if _struct_method(func, "pack"):
            fields = _struct_fields(func.__self__.format)
            if len(node.args) != len(fields):
                raise _Untranslatable("struct.pack with the wrong number of values")
            var = self._temp()
            self._declare_temp(var, "cb_buf")
            self.allocs += 1
            self.lines += [f"{pad}{var}.n = {func.__self__.size};",
                           f"{pad}if (!({var}.p = cb_alloc(&arena, {var}.n))) goto python;"]
            self._pack_fields(f"{var}.p", fields, node.args, depth)
            return Value(BYTES, var)
        raise _Untranslatable("a call the C cannot make")

    # -- small helpers ------------------------------------------------------------------

    def _truth(self, value: Value, depth: int) -> str:
        if value.kind == BOOL:
            return value.c
        if value.kind == INT:
            return f"{value.c} != 0"
        if value.kind in BUFFERS:
            return f"{value.c}.n != 0"
        if value.kind == BIG:
            target = Value(INT, self._int_temp())
            self.lines.append(f"{'    ' * depth}if (__builtin_sub_overflow((int64_t)0, {value.addend}, &{target.c}))"
                              " goto python;")
            return f"!cb_be_eq({value.c}.p, {value.c}.n, {target.c})"
        raise _Untranslatable(f"the truth of a {value.kind}")

    def _int_temp(self) -> str:
        var = self._temp()
        self._declare_temp(var, "int64_t")
        return var

    def _let(self, kind: str, expression: str, depth: int) -> Value:
        var = self._temp()
        self._declare_temp(var, "int64_t")
        self.lines.append(f"{'    ' * depth}{var} = {expression};")
        return Value(kind, var)

    def _temp(self) -> str:
        self.temps += 1
        return f"t{self.temps}"

    def _declare_temp(self, var: str, ctype: str) -> None:
        self.temps_declared[var] = f"{ctype} {var};"

    def _bind(self, name: str, kind: str) -> None:
        known = self.kinds.get(name)
        if known is not None and known != kind:
            raise _Untranslatable(f"{name} holds a {known} and a {kind}")
        self.kinds[name] = kind

    def _not_escaped(self, name: str) -> None:
        """Python got a copy of this bytearray, the residual the object itself: changing it now
        would change what Python holds there and not here."""
        if name in self.escaped:
            raise _Untranslatable(f"changes the bytearray {name} after handing it to Python")

    def _slot(self) -> int:
        self.slots += 1
        return self.slots - 1

    def _input(self, obj: str, name: str) -> None:
        """A field the code reads: loaded by the shell before the call, which is the same only
        if reading it changes nothing and runs no code: a stored field, not a computed one."""
        if (obj, name) not in self.inputs:
            cls = type(self.constants[obj])
            found = inspect.getattr_static(cls, name, None)
            if (cls.__getattribute__ is not object.__getattribute__ or hasattr(cls, "__getattr__")
                    or cls.__setattr__ is not object.__setattr__  # a write might store something else
                    or (hasattr(type(found), "__get__") and not isinstance(found, types.MemberDescriptorType))):
                raise _Untranslatable(f"{obj}.{name} is computed when read")
            self.inputs.append((obj, name))
        self._field(obj, name)

    def _field(self, obj: str, name: str) -> None:
        if (obj, name) not in self.fields:
            self.fields.append((obj, name))

    def _field_var(self, obj: str, name: str) -> str:
        """The C variable of a field (numbered: ``a_b.c`` and ``a.b_c`` must not meet)."""
        return f"f{self.fields.index((obj, name))}_{obj}_{name}"

    @staticmethod
    def _ctype(kind: str) -> str:
        return "cb_buf" if kind in BUFFERS else "int64_t"

    def _is_constant_name(self, name: str) -> bool:
        return name in self.constants

    def _frozen(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Name) and node.id in self.constants:
            return self.constants[node.id]
        raise _Untranslatable("a call of something not frozen")

    def _object_name(self, node: ast.expr) -> str | None:
        """The name of a frozen Python object whose dynamic fields the code reads or writes:
        its first name, if it has several (a field written under one is read under another)."""
        if not isinstance(node, ast.Name) or node.id not in self.constants:
            return None
        value = self.constants[node.id]
        if isinstance(value, int | str | bytes | float | tuple | types.ModuleType | type) or value is None:
            return None
        return self.first_names[id(value)]


_EXPRESSIONS = {ast.Name: _Translator._name, ast.Attribute: _Translator._attribute, ast.BinOp: _Translator._binop,
                ast.UnaryOp: _Translator._unary, ast.Compare: _Translator._compare, ast.BoolOp: _Translator._boolop,
                ast.IfExp: _Translator._ifexp, ast.Call: _Translator._call, ast.Subscript: _Translator._subscript}


def _struct_method(func: Any, name: str) -> bool:
    return isinstance(getattr(func, "__self__", None), struct.Struct) and getattr(func, "__name__", "") == name


def _struct_fields(fmt: str) -> list[tuple[int, int, bool]]:
    """(offset, size, signed) per field of a big-endian struct format without padding."""
    if not fmt or fmt[0] not in "!>":
        raise _Untranslatable(f"struct format {fmt!r} (only big-endian)")
    fields, offset, count = [], 0, ""
    for char in fmt[1:]:
        if char.isdigit():
            count += char
            continue
        if char not in STRUCT_CODES:
            raise _Untranslatable(f"struct code {char!r}")
        size, signed = STRUCT_CODES[char]
        for _ in range(int(count or 1)):
            fields.append((offset, size, signed))
            offset += size
        count = ""
    return fields


def _builtin(func: Any) -> bool:
    return any(func is getattr(builtins, n) for n in ("print", "len", "bytes", "bytearray", "int"))


def _line_of(node: ast.AST) -> int:
    return getattr(node, "lineno", 0)


def _first_line(node: ast.AST) -> str:
    text = ast.unparse(node).split("\n")[0]
    return (text[:70] + "...") if len(text) > 73 else text.replace("*/", "* /")
