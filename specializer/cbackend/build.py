"""Compile a translated residual with the system C compiler (through cffi) and load it.

Modules are cached by their source for the life of the process (in a temporary
directory removed at exit); ``fresh`` compiles anyway, under a new name (to measure
what compiling costs). No compiler, or no Python headers: CompilerUnavailable, which
the callers turn into the Python residual, said once."""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import itertools
import os
import shlex
import shutil
import sysconfig
import tempfile
import types

from .runtime import RUNTIME
from .translate import CProgram


class CompilerUnavailable(Exception):
    """No working C toolchain here (the message says what is missing)."""


class CompileFailed(Exception):
    """The compiler refused the translated C: a bug of the translation, not of the machine."""


_modules: dict[str, types.ModuleType] = {}
_fresh = itertools.count(1)
_build_dir: str | None = None


def module_source(program: CProgram) -> str:
    """The whole C module: the helpers, then the function."""
    return f"#define CB_ARENA {program.arena}\n{RUNTIME}\n{program.source}\n"


def compiler_problem() -> str | None:
    """Why C cannot be compiled here, or None. The compiler is $CC, else Python's own."""
    command = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    compiler = shlex.split(command)[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler!r} not found; set CC or install gcc)"
    if importlib.util.find_spec("setuptools") is None and importlib.util.find_spec("distutils") is None:
        return "no setuptools (cffi compiles with it since Python 3.12; pip install setuptools)"
    headers = os.path.join(sysconfig.get_paths()["include"], "Python.h")
    if not os.path.exists(headers):
        return f"no Python headers ({headers} missing; install the python3-dev package)"
    return None


def build(program: CProgram, *, fresh: bool = False) -> types.ModuleType:
    """The compiled module of ``program`` (``module.lib.<name>``, ``module.ffi``)."""
    import cffi

    source = module_source(program)
    digest = hashlib.sha256(source.encode()).hexdigest()[:20]
    if not fresh and digest in _modules:
        return _modules[digest]
    problem = compiler_problem()
    if problem is not None:
        raise CompilerUnavailable(problem)
    name = f"_pystack_c_{digest}" + (f"_{next(_fresh)}" if fresh else "")
    ffi = cffi.FFI()
    ffi.cdef(program.signature + ";")
    ffi.set_source(name, source, extra_compile_args=["-O2", "-Wno-unused-label", "-Wno-unused-variable",
                                                    "-Wno-unused-but-set-variable"])
    try:
        module = load_module(ffi, name)
    except (cffi.VerificationError, OSError) as failed:
        raise CompileFailed(f"the C of {program.name} did not compile: {failed}") from None
    if not fresh:
        _modules[digest] = module
    return module


def load_module(ffi: object, name: str) -> types.ModuleType:
    """Compile the cffi module ``name`` (its source set) in this process's build directory, import it."""
    path = ffi.compile(tmpdir=_directory(), verbose=False)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _directory() -> str:
    global _build_dir
    if _build_dir is None:
        _build_dir = tempfile.mkdtemp(prefix="pystack-cbackend-")
        atexit.register(shutil.rmtree, _build_dir, True)
    return _build_dir
