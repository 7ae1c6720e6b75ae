"""The Python side of a translated residual: load the fields the C reads, call it, then do
the effects of the path it took, in the residual's order (or run the Python residual when
the C says "back to Python"). Generated per program shape, as a factory of closures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .translate import BOOL, BYTEARRAY, BYTES, NONE, CProgram, Effect

OUT_CAPACITY = 65536 + 64  # the largest packet and then some: bigger ones go back to Python


def shell_source(program: CProgram) -> str:
    """``_cb_factory(...)``: returns a function with the residual's signature."""
    objects = frozen_names(program)
    converted = ", ".join(v for v, _ in program.prologue)
    lines = ["def _cb_factory(_cb_f, _cb_in, _cb_io, _cb_out, _cb_outmv, _cb_outp, _cb_K, _cb_python"
             + "".join(f", {name}" for name in objects) + "):",
             f"    def {program.name}({', '.join(program.params)}):"]
    lines += [f"        {var} = bytes({param})" for var, param in program.prologue]
    if program.inputs:
        lines.append("        try:")
        lines += [f"            _cb_i{i} = {obj}.{name}" for i, (obj, name) in enumerate(program.inputs)]
        exact = " and ".join(f"type(_cb_i{i}) is int" for i in range(len(program.inputs)))
        lines.append(f"            _cb_ok = {exact}  # a bool or anything else: the Python residual")
        lines.append("            if _cb_ok:")
        lines += [f"                _cb_in[{i}] = _cb_i{i}" for i in range(len(program.inputs))]
        lines += ["        except (AttributeError, OverflowError):", "            _cb_ok = False",
                  "        if not _cb_ok:", f"            return _cb_python({converted})"]
    args = "".join(f"{v}, len({v}), " for v, _ in program.prologue)
    lines.append(f"        _cb_mask = _cb_f({args}_cb_in, _cb_io, _cb_outp, {OUT_CAPACITY}, _cb_K)")
    effects = {e.index: e for e in program.effects}
    for path in program.paths:
        mask = sum(1 << i for i in path.effects)
        lines.append(f"        if _cb_mask == {mask}:")
        slots = sorted({slot + k for i in path.effects for kind, slot in effects[i].args
                        for k in range(2 if kind in (BYTES, BYTEARRAY) else 1)})
        if path.result != NONE:
            slots.insert(0, 0)
        if slots:  # read before any effect: a call may re-enter the same code
            lines.append(f"            {', '.join(f'_cb_v{s}' for s in slots)}, = "
                         f"{', '.join(f'_cb_io[{s}]' for s in slots)},")
        lines += [f"            {_effect(effects[i])}  # residual line {effects[i].line}" for i in path.effects]
        result = {NONE: "None", BOOL: "bool(_cb_v0)"}.get(path.result, "_cb_v0")
        lines.append(f"            return {result}")
    lines += ["        if _cb_mask < 0:", f"            return _cb_python({converted})",
              f"        raise AssertionError(f'the C of {program.name} took no known path: mask {{_cb_mask}}')",
              f"    return {program.name}"]
    return "\n".join(lines) + "\n"


def frozen_names(program: CProgram) -> list[str]:
    """The frozen references the shell touches, in a fixed order."""
    names = [obj for obj, _ in program.inputs] + [e.obj for e in program.effects]
    return list(dict.fromkeys(names))


def _value(kind: str, slot: int) -> str:
    if kind == BYTEARRAY:
        return f"_cb_out[_cb_v{slot}:_cb_v{slot} + _cb_v{slot + 1}]"
    if kind == BYTES:
        return f"bytes(_cb_outmv[_cb_v{slot}:_cb_v{slot} + _cb_v{slot + 1}])"
    return f"bool(_cb_v{slot})" if kind == BOOL else f"_cb_v{slot}"


def _effect(effect: Effect) -> str:
    values = [_value(kind, slot) for kind, slot in effect.args]
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
