"""The C backend (thesis 3.2 and 4.2's compiler phase): residual code to C, compiled and loaded.

    program = translate(compiled.tree, compiled.constants)   # residual -> CProgram (C + shape)
    send = load(program, compiled)                            # compile (cffi), wrap in its shell
    send = native(compiled)                                   # both, or the Python residual if no compiler
    template = Template.compile(compiled)                     # once per scenario shape, integers as holes
    send = template.fill(other_compiled)                      # a new socket's code, no compiler

``compiled`` is what the specializer made (``specializer.residual.CompiledResidual``: the
residual's AST and its frozen values). The C computes; the Python shell does the effects
on Python objects in order; whatever the C cannot express runs the Python residual.
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Callable
from typing import Any

from ..residual import CompiledResidual
from .build import CompileFailed, CompilerUnavailable, build, compiler_problem, module_source
from .shell import OUT_CAPACITY, frozen_names, make_factory, shell_source
from .translate import CannotTranslate, CProgram, translate

__all__ = ["CannotTranslate", "CompileFailed", "CompilerUnavailable", "CProgram", "CBackendUnavailable",
           "Template", "TemplateMismatch", "compiler_problem", "load", "module_source", "native",
           "shell_source", "translate"]


class CBackendUnavailable(RuntimeWarning):
    """No C here: the specialized code stays Python."""


class TemplateMismatch(Exception):
    """The residual has another shape than the template's: compile it (or another template)."""


_said = False


def load(program: CProgram, compiled: CompiledResidual, *, fresh: bool = False) -> Callable[..., Any]:
    """Compile ``program`` (cached by source unless ``fresh``) and return the residual's
    replacement: same arguments, same results, same errors, same packets."""
    module = build(program, fresh=fresh)
    return _bind(make_factory(program), program, module, compiled, [])


def native(compiled: CompiledResidual) -> Callable[..., Any]:
    """The C of the residual, or the residual itself when this machine cannot compile C
    (said once per process, as a CBackendUnavailable warning). CannotTranslate passes."""
    global _said
    program = translate(compiled.tree, compiled.constants)
    try:
        return load(program, compiled)
    except CompilerUnavailable as why:
        if not _said:
            _said = True
            warnings.warn(f"C backend unavailable: {why}; the specialized code runs as Python",
                          CBackendUnavailable, stacklevel=2)
        return compiled.function


class Template:
    """One compiled C function for every residual of one shape: the residual's integers
    (ports, addresses, precomputed checksum parts, TTL, ...) are holes read from an array."""

    def __init__(self, program: CProgram, module: Any):
        self.program = program
        self.module = module
        self.factory = make_factory(program)

    @classmethod
    def compile(cls, compiled: CompiledResidual, *, fresh: bool = False) -> Template:
        program = translate(compiled.tree, compiled.constants, holes=True)
        return cls(program, build(program, fresh=fresh))

    def fill(self, compiled: CompiledResidual) -> Callable[..., Any]:
        """The C of ``compiled`` from this template, without the compiler: translate with
        holes, check the shape is the template's, and bind the new integers and objects."""
        program = translate(compiled.tree, compiled.constants, holes=True)
        if program.shape != self.program.shape:
            raise TemplateMismatch(f"{program.name} has another shape than the template")
        return _bind(self.factory, program, self.module, compiled, program.holes)


def _bind(factory: Callable[..., Any], program: CProgram, module: Any, compiled: CompiledResidual,
          holes: list[int]) -> Callable[..., Any]:
    """One instance of the shell: its own buffers, the hole values, the frozen objects."""
    ffi = module.ffi
    out, io = bytearray(OUT_CAPACITY), bytearray(8 * program.slots)
    objects = [compiled.constants[name] for name in frozen_names(program)]
    return factory(getattr(module.lib, program.name), io, ffi.from_buffer("int64_t[]", io),
                   struct.Struct(f"={program.slots}q").unpack_from, out, memoryview(out), ffi.from_buffer(out),
                   ffi.new("int64_t[]", holes or [0]), compiled.function, *objects)
