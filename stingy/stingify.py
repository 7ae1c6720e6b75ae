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

The user wrappers of figure 7.5 (initializing the structure the server
expects around the raw memory) are, in Python, each site's ``make``: the
Stingy allocator hands its slot to the site's maker, which builds the
object the server expects, so no wrapper is generated.
"""

from __future__ import annotations

import ast
import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .memwalk import Report, module_files


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


def stingify(report: Report, targets: list[str], exclude: Iterable[str] = ()) -> list[Rewrite]:
    """The rewritten modules (only those with a site to rewrite)."""
    managed: dict[tuple[str, int], int | None] = {}  # (module, line) -> stingy_size estimate
    for allocation in report.allocations:
        if report.objects[allocation.site.name].kind != "unmanaged":
            managed[(report.functions[allocation.function].module, allocation.line)] = allocation.size_estimate
    marked = {kind: {(f.short, f.module) for f in report.functions.values() if f.interface and f.interface[0] == kind}
              for kind in ("Malloc", "Free")}
    mallocs = {short for short, _ in marked["Malloc"]}
    frees = {short for short, _ in marked["Free"]}
    rewrites = []
    for module, path in module_files(targets, exclude):
        source = path.read_bytes()  # AST columns count UTF-8 bytes
        edits: list[tuple[int, int, bytes]] = []
        counts = {"alloc": 0, "free": 0, "guard": 0}
        starts = [0]
        for line in source.splitlines(keepends=True):
            starts.append(starts[-1] + len(line))
        for node in ast.walk(ast.parse(source, str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            name = node.func.id
            func = (starts[node.func.lineno - 1] + node.func.col_offset,
                    starts[node.func.end_lineno - 1] + node.func.end_col_offset)
            if name in mallocs and (module, node.lineno) in managed:
                estimate = managed[(module, node.lineno)]
                if estimate is None:
                    edits.append((*func, b"StingyAlloc"))
                    counts["alloc"] += 1
                    continue
                call = (starts[node.lineno - 1] + node.col_offset, starts[node.end_lineno - 1] + node.end_col_offset)
                text, site = source[call[0]:call[1]], ast.unparse(node.args[-1]).encode()
                stingy = b"StingyAlloc" + text[func[1] - call[0]:]
                edits.append((*call, b"(" + stingy + b" if " + site + b".size <= " + str(estimate).encode()
                              + b" else " + text + b")"))
                counts["guard"] += 1
            elif name in frees:
                edits.append((*func, b"StingyFree"))
                counts["free"] += 1
        if not edits:
            continue
        for start, end, new in sorted(edits, reverse=True):
            source = source[:start] + new + source[end:]
        original = path.read_text()
        names = [n for n, used in (("StingyAlloc", counts["alloc"] + counts["guard"]), ("StingyFree", counts["free"]))
                 if used]
        rewritten = _add_import(source.decode(), f"from stingy.allocator import {', '.join(names)}\n")
        rewrites.append(Rewrite(module, path, original, rewritten, counts["alloc"], counts["free"], counts["guard"]))
    return rewrites


def _add_import(source: str, line: str) -> str:
    """The runtime's import, after the module's docstring and ``from __future__`` lines."""
    tree = ast.parse(source)
    after = 0
    for node in tree.body:
        if (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and after == 0
                and node is tree.body[0]) or (isinstance(node, ast.ImportFrom) and node.module == "__future__"):
            after = node.end_lineno
        else:
            break
    lines = source.splitlines(keepends=True)
    return "".join(lines[:after]) + ("\n" if after else "") + line + "".join(lines[after:])


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
