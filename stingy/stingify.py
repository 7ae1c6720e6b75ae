"""stingify (thesis 6.2.4, 7.4.4): the server's allocation and free sites rewritten for Stingy.

Source to source, keeping the server's formatting: only the spans of the
calls memwalk matched are spliced (by their AST positions), nothing else of
a file changes.

- ``Malloc(ti, SITE)`` of an object memwalk manages becomes
  ``StingyAlloc(ti, SITE)``: the site constant is the site's identifier
  (the map knows its object by the site's name);
- where the size is only an estimate (``x: stingy_size(N) = Malloc(ti, SITE)``),
  the size guard of figure 6.5: ``(StingyAlloc(ti, SITE) if SITE.size <= N else
  Malloc(ti, SITE))``, so that an instance larger than its region's slot comes
  from the original allocator;
- ``Free(ti, obj)`` becomes ``StingyFree(ti, obj)`` (the object's address
  says where it came from: no guard);
- allocations memwalk leaves unmanaged (a dynamic size without an estimate,
  a stage cycle without ``stingy_count``) stay as they are.

The Stingy calls take a context (what holds the allocator: ``ti``) and the
site or object, as the server's ``Malloc(ti, SITE)`` / ``Free(ti, obj)`` do:
such a call only changes its name. Where the server's function takes more
(``alloc(heap, SITE)`` keeping a count, ``release(heap, obj, SITE)``), its
callers expect more than the allocator's memory: the programmer declares a
user wrapper (figure 7.5, ``@stingy_user_wrapper("alloc")``) and the call
becomes ``wrapper(StingyAlloc(heap, SITE), heap, SITE)``: the Stingy call on
the context (the arguments before the site or object) and the role's
argument, the wrapper on its result and the original arguments. A call of
another shape without a wrapper is an error that says what to declare. The
structure built around the memory is each site's ``make`` (the Stingy
allocator hands its slot to the site's maker).
"""

from __future__ import annotations

import ast
import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .memwalk import Function, Report, module_files


@dataclass
class Rewrite:
    module: str
    path: Path
    original: str
    rewritten: str
    allocs: int
    frees: int
    guards: int

    def diff(self, root: Path | None = None) -> str:
        name = str(self.path.relative_to(root)) if root else str(self.path)
        return "".join(difflib.unified_diff(self.original.splitlines(keepends=True),
                                            self.rewritten.splitlines(keepends=True),
                                            f"a/{name}", f"b/{name}"))


class StingifyError(ValueError):
    """A call stingify cannot rewrite (the message says where and what to declare)."""


def stingify(report: Report, targets: list[str], exclude: Iterable[str] = ()) -> list[Rewrite]:
    """The rewritten modules (only those with a site to rewrite)."""
    managed: dict[tuple[str, int], int | None] = {}  # (module, line) -> stingy_size estimate
    for allocation in report.allocations:
        if report.objects[allocation.site.name].kind != "unmanaged":
            managed[(report.functions[allocation.function].module, allocation.line)] = allocation.size_estimate
    marked = {f.short: f for f in report.functions.values() if f.interface and f.interface[0] in ("Malloc", "Free")}
    files = module_files(targets, exclude)
    wrappers = _user_wrappers(files)
    rewrites = []
    for module, path in files:
        source = path.read_bytes()  # AST columns count UTF-8 bytes
        edits: list[tuple[int, int, bytes]] = []
        counts = {"alloc": 0, "free": 0, "guard": 0}
        imports: set[str] = set()
        span = _spans(source)
        for node in ast.walk(ast.parse(source, str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in marked):
                continue
            function = marked[node.func.id]
            is_malloc = function.interface[0] == "Malloc"
            if is_malloc and (module, node.lineno) not in managed:
                continue
            stingy = b"StingyAlloc" if is_malloc else b"StingyFree"
            wrapper = wrappers.get(function.short)
            call = span(node)
            text = source[call[0]:call[1]]
            if wrapper is None and _stingy_shaped(function):
                new = stingy + text[span(node.func)[1] - call[0]:]
            else:
                new = _wrapped(node, function, wrapper, stingy, source, span, f"{path}:{node.lineno}")
                if wrapper[1] != module:
                    imports.add(f"from {wrapper[1]} import {wrapper[0]}\n")
            estimate = managed.get((module, node.lineno)) if is_malloc else None
            if estimate is not None:
                site = ast.unparse(node.args[function.role_position("size")]).encode()
                new = b"(" + new + b" if " + site + b".size <= " + str(estimate).encode() + b" else " + text + b")"
            edits.append((*call, new))
            counts["guard" if estimate is not None else "alloc" if is_malloc else "free"] += 1
        if not edits:
            continue
        for start, end, new in sorted(edits, reverse=True):
            source = source[:start] + new + source[end:]
        original = path.read_text()
        names = [n for n, used in (("StingyAlloc", counts["alloc"] + counts["guard"]), ("StingyFree", counts["free"]))
                 if used]
        header = f"from stingy.allocator import {', '.join(names)}\n" + "".join(sorted(imports))
        rewritten = _add_import(source.decode(), header)
        rewrites.append(Rewrite(module, path, original, rewritten, counts["alloc"], counts["free"], counts["guard"]))
    return rewrites


def _spans(source: bytes) -> Callable[[ast.AST], tuple[int, int]]:
    """A node's (start, end) byte offsets in ``source``."""
    starts = [0]
    for line in source.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    return lambda node: (starts[node.lineno - 1] + node.col_offset, starts[node.end_lineno - 1] + node.end_col_offset)


def _stingy_shaped(function: Function) -> bool:
    """The function takes what the Stingy call takes: at most a context, then the site or object."""
    role = "size" if function.interface[0] == "Malloc" else "O"
    position = function.role_position(role)
    return position is not None and position == len(_params(function)) - 1 <= 1


def _wrapped(node: ast.Call, function: Function, wrapper: tuple[str, str] | None, stingy: bytes, source: bytes,
             span: Callable[[ast.AST], tuple[int, int]], where: str) -> bytes:
    """``wrapper(Stingy(context, role argument), original arguments)`` (figure 7.5)."""
    if wrapper is None:
        raise StingifyError(f"{where}: {function.short}() takes {', '.join(_params(function))}, more than a context "
                            f"and the {'site' if stingy == b'StingyAlloc' else 'object'}: declare its user wrapper "
                            f"(@stingy_user_wrapper({function.short!r}), thesis figure 7.5)")
    position = function.role_position("size" if stingy == b"StingyAlloc" else "O")
    if node.keywords or any(isinstance(a, ast.Starred) for a in node.args) or not position < len(node.args) \
            or position > 1:
        raise StingifyError(f"{where}: {function.short}() called with keywords, * or a context of more than one "
                            f"argument: stingify rewrites positional calls only")
    args = [source[slice(*span(a))] for a in node.args]
    return (wrapper[0].encode() + b"(" + stingy + b"(" + b", ".join(args[:position] + [args[position]]) + b"), "
            + b", ".join(args) + b")")


def _params(function: Function) -> list[str]:
    params = [a.arg for a in function.node.args.args]
    return params[1:] if params and params[0] in ("self", "cls") else params


def _user_wrappers(files: list[tuple[str, Path]]) -> dict[str, tuple[str, str]]:
    """The Malloc/Free function's name -> (its user wrapper's name, the wrapper's module)."""
    found: dict[str, tuple[str, str]] = {}
    for module, path in files:
        for node in ast.parse(path.read_bytes(), str(path)).body:
            if not isinstance(node, ast.FunctionDef):
                continue
            for decorator in node.decorator_list:
                if (isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Name | ast.Attribute)
                        and ast.unparse(decorator.func).rsplit(".", 1)[-1] == "stingy_user_wrapper"
                        and decorator.args and isinstance(decorator.args[0], ast.Constant)):
                    found[str(decorator.args[0].value)] = (node.name, module)
    return found


def _add_import(source: str, line: str) -> str:
    """The runtime's import, after the module's docstring and its leading imports."""
    tree = ast.parse(source)
    after = 0
    for index, node in enumerate(tree.body):
        if (index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) \
                or isinstance(node, ast.Import | ast.ImportFrom):
            after = node.end_lineno
        else:
            break
    lines = source.splitlines(keepends=True)
    return "".join(lines[:after]) + line + "".join(lines[after:])


def write(rewrites: list[Rewrite], out: Path, package_root: Path) -> list[Path]:
    """Copy the package under ``out`` with the rewritten modules in place of the originals."""
    import shutil

    destination = out / package_root.name
    shutil.copytree(package_root, destination, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    written = []
    for rewrite in rewrites:
        target = destination / rewrite.path.relative_to(package_root)
        target.write_text(rewrite.rewritten)
        written.append(target)
    return written
