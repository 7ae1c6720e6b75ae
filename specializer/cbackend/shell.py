"""The Python side of a translated residual: read the fields the C reads, call it, then do
the effects of the path it took, in the residual's order (or run the Python residual when
the C says "back to Python"). Generated per program shape, as a factory of closures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .translate import BOOL, BYTEARRAY, BYTES, NONE, CProgram, Effect

OUT_CAPACITY = 65536 + 64  # the largest packet and then some: bigger ones go back to Python


def shell_source(program: CProgram) -> str:
    """``_cb_factory(...)``: returns a function with the residual's signature. The io slots
    come back as one tuple (``_cb_unpack``) and the bytes are copied out of the buffer, both
    before any effect: a call into Python may re-enter the same code. One thread at a time
    per instance (the buffers are the instance's), as for the stack itself."""
    objects = frozen_names(program)
    converted = ", ".join(v for v, _ in program.prologue)
    back = f"return _cb_python({converted})"
    inputs = [f"_cb_i{i}" for i in range(len(program.inputs))]
    lines = ["def _cb_factory(_cb_f, _cb_io, _cb_iop, _cb_unpack, _cb_out, _cb_outmv, _cb_outp, _cb_K, _cb_python"
             + "".join(f", {name}" for name in objects) + "):",
             f"    def {program.name}({', '.join(program.params)}):"]
    lines += [f"        {var} = bytes({param})" for var, param in program.prologue]
    if inputs:
        lines.append("        try:")
        lines += [f"            {var} = {obj}.{name}" for var, (obj, name) in zip(inputs, program.inputs, strict=True)]
        lines += ["        except AttributeError:", f"            {back}"]
        exact = " or ".join(f"type({var}) is not int" for var in inputs)
        lines += [f"        if {exact}:  # a bool, or not an integer: the Python residual", f"            {back}"]
    args = "".join(f"{v}, len({v}), " for v, _ in program.prologue) + "".join(f"{var}, " for var in inputs)
    lines += ["        try:", f"            _cb_mask = _cb_f({args}_cb_iop, _cb_outp, {OUT_CAPACITY}, _cb_K)",
              "        except OverflowError:  # a field past 64 bits", f"            {back}"]
    effects = {e.index: e for e in program.effects}
    for path in program.paths:
        lines.append(f"        if _cb_mask == {sum(1 << i for i in path.effects)}:")
        if program.slots > 1 or path.result != NONE:
            lines.append("            _cb_v = _cb_unpack(_cb_io)")
        buffers = [(kind, slot) for i in path.effects for kind, slot in effects[i].args if kind in (BYTES, BYTEARRAY)]
        lines += [f"            _cb_b{slot} = {_value(kind, slot)}" for kind, slot in buffers]
        lines += [f"            {_effect(effects[i])}  # residual line {effects[i].line}" for i in path.effects]
        lines.append(f"            return {_value(path.result, 0) if path.result != NONE else 'None'}")
    lines += ["        if _cb_mask < 0:", f"            {back}",
              f"        raise AssertionError(f'the C of {program.name} took no known path: mask {{_cb_mask}}')",
              f"    return {program.name}"]
    return "\n".join(lines) + "\n"


def frozen_names(program: CProgram) -> list[str]:
    """The frozen references the shell touches, in a fixed order."""
    names = [obj for obj, _ in program.inputs] + [e.obj for e in program.effects]
    return list(dict.fromkeys(names))


def _value(kind: str, slot: int) -> str:
    if kind == BYTEARRAY:
        return f"_cb_out[_cb_v[{slot}]:_cb_v[{slot}] + _cb_v[{slot + 1}]]"
    if kind == BYTES:
        return f"bytes(_cb_outmv[_cb_v[{slot}]:_cb_v[{slot}] + _cb_v[{slot + 1}]])"
    return f"bool(_cb_v[{slot}])" if kind == BOOL else f"_cb_v[{slot}]"


def _effect(effect: Effect) -> str:
    """The effect in Python; its bytes were copied out of the buffer before the first effect."""
    values = [f"_cb_b{slot}" if kind in (BYTES, BYTEARRAY) else _value(kind, slot) for kind, slot in effect.args]
    if effect.kind == "set":
        return f"{effect.obj}.{effect.name} = {values[0]}"
    if effect.kind == "add":
        return f"{effect.obj}.{effect.name} += {values[0]}"
    if effect.kind == "item_add":
        return f"{effect.obj}[{effect.name!r}] += {values[0]}"
    return f"{effect.obj}({', '.join(values)})"


def make_factory(program: CProgram) -> Callable[..., Callable[..., Any]]:
    namespace: dict[str, Any] = {}
    exec(compile(shell_source(program), f"<C shell of {program.name}>", "exec"), namespace)
    return namespace["_cb_factory"]
