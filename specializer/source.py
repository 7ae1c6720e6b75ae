"""The generic code as the partial evaluator reads it: each function's AST from its
module's source (parsed once, checked against the loaded code), its signature, and
what a module's source says about its names."""

from __future__ import annotations

import ast
import inspect
import types
import weakref
from typing import Any

from pystack.tokens.facts import SpecializationError

_MODULE_FUNCTIONS: dict[str, dict[int, ast.FunctionDef]] = {}


# code object -> its checked FunctionDef (a function given new code is looked up again)
_FUNCTION_ASTS: dict[types.CodeType, ast.FunctionDef] = {}


# file -> the module-level names its functions declare ``global`` (they are variables)
_REBOUND: dict[str, frozenset[str]] = {}


def function_ast(func: types.FunctionType) -> ast.FunctionDef:
    """The AST of a function, from its module's source parsed once and indexed by line."""
    code = getattr(func, "__code__", None)
    if code is None:
        raise SpecializationError(f"{func!r} has no Python code")
    fdef = _FUNCTION_ASTS.get(code)
    if fdef is not None and _MODULE_FUNCTIONS.get(code.co_filename, {}).get(code.co_firstlineno) is fdef:
        return fdef
    index = _MODULE_FUNCTIONS.get(code.co_filename)
    if index is None:
        try:
            with open(code.co_filename, encoding="utf-8") as source:
                tree = ast.parse(source.read(), code.co_filename)
        except (OSError, SyntaxError) as exc:
            raise SpecializationError(f"no source for {func!r}") from exc
        index = {}
        rebound: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                index[first] = node
            elif isinstance(node, ast.Global):
                rebound.update(node.names)
        _MODULE_FUNCTIONS[code.co_filename] = index
        _REBOUND[code.co_filename] = frozenset(rebound)
    fdef = index.get(code.co_firstlineno)
    if fdef is None or fdef.name != code.co_name or _parameters(fdef) != code.co_varnames[: code.co_argcount]:
        # The file changed since the module was imported: the source no longer describes
        # the running code, and a residual built from it would not match. Refuse.
        raise SpecializationError(f"the source of {func.__qualname__} no longer matches the loaded code")
    _FUNCTION_ASTS[code] = fdef
    return fdef


# function -> (its code, defaults and kwdefaults when seen, its signature, its simple form)
_SIGNATURES: weakref.WeakKeyDictionary[Any, tuple[Any, Any, Any, inspect.Signature, Any]] = \
    weakref.WeakKeyDictionary()


def _signature(func: Any) -> tuple[inspect.Signature, tuple[tuple[str, ...], frozenset[str]] | None]:
    """inspect.signature(func), kept per function while its code and defaults stay the same;
    and, when every parameter is plain positional-or-keyword, (the names, the required ones)."""
    try:
        entry = _SIGNATURES.get(func)
    except TypeError:  # not weakly referenceable
        return inspect.signature(func), None
    code = getattr(func, "__code__", None)
    defaults = getattr(func, "__defaults__", None)
    kwdefaults = getattr(func, "__kwdefaults__", None)
    if entry is not None and entry[0] is code and entry[1] is defaults and entry[2] is kwdefaults:
        return entry[3], entry[4]
    signature = inspect.signature(func)
    parameters = signature.parameters.values()
    simple = None
    if all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in parameters):
        simple = (tuple(p.name for p in parameters),
                  frozenset(p.name for p in parameters if p.default is inspect.Parameter.empty))
    own = getattr(func, "__dict__", {})
    if code is not None and "__signature__" not in own and "__wrapped__" not in own:
        _SIGNATURES[func] = (code, defaults, kwdefaults, signature, simple)
    return signature, simple


def _bind_simple(simple: tuple[tuple[str, ...], frozenset[str]], args: list[Any],
                 kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """Signature.bind(...).arguments for a call that plainly fits a simple signature; None
    for anything else (then Signature.bind decides, and says what is wrong)."""
    names, required = simple
    if len(args) > len(names):
        return None
    arguments = dict(zip(names, args, strict=False))
    for key, value in kwargs.items():
        if key in arguments or key not in names:
            return None
        arguments[key] = value
    if len(arguments) < len(required) or not required.issubset(arguments):
        return None
    return arguments


def _parameters(fdef: ast.FunctionDef) -> tuple[str, ...]:
    args = fdef.args
    return tuple(a.arg for a in [*args.posonlyargs, *args.args])


_SUSPENDS = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR | inspect.CO_ITERABLE_COROUTINE


def _rebound_globals(func: Any) -> frozenset[str]:
    """Module-level names some function of ``func``'s module rebinds (``global name``):
    variables, not constants (found when :func:`function_ast` parsed the module)."""
    return _REBOUND.get(func.__code__.co_filename, frozenset())


def _suspends(func: Any) -> bool:
    """A generator or coroutine function: calling it runs none of its body."""
    code = getattr(func, "__code__", None)
    return code is not None and bool(code.co_flags & _SUSPENDS)


