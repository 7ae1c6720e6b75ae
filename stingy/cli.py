"""``pystack stingy ...``: memwalk and stingygen on an event-driven server's source.

The server analysed by default is tux_like (its stages, not its socket
layer nor its driver); any importable module, package or .py file can be
named instead.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

from .sweep import FULL, PROGRAMS, QUICK

DEFAULT_TARGETS = ["tux_like"]
# The socket layers and drivers a server runs on are not its stages (in C they were the kernel).
DEFAULT_EXCLUDE = ["tux_like.memnet", "tux_like.backends", "tux_like.driver", "tux_like.cli"]


class StingyUsageError(Exception):
    """A bad argument or input: one line, exit status 2."""


def add_parser(commands: argparse._SubParsersAction) -> None:
    stingy = commands.add_parser("stingy", help="memwalk / stingygen / stingify / sweep: the Stingy allocator's tools")
    tools = stingy.add_subparsers(dest="stingy_command", required=True, parser_class=type(stingy))
    for name, help_text in (("memwalk", "stages, scheduler, per-request objects, cycles and stack of a server"),
                            ("stingygen", "instance limits (integer program) and the cache-slab memory map")):
        tool = tools.add_parser(name, help=help_text)
        tool.add_argument("targets", nargs="*", default=DEFAULT_TARGETS,
                          help="modules, packages or .py files (default: tux_like)")
        tool.add_argument("--exclude", action="append", default=None, metavar="MODULE",
                          help="leave out modules starting with MODULE (default: tux_like's socket layer and driver)")
        tool.add_argument("--entry", help="start the exploration at this function")
        tool.add_argument("--dot", metavar="FILE", help="write the picture as graphviz source")
        tool.add_argument("--png", metavar="FILE", help="render the picture to PNG (needs graphviz's dot)")
        if name == "stingygen":
            tool.add_argument("--cache-kb", type=int, default=1024, help="L2 size in KB (default: the thesis's 1 MB)")
            tool.add_argument("--tau-kb", type=int, help="cache KB for per-task state (default: the cache less "
                              "the stack and the final globals)")
    rewrite = tools.add_parser("stingify", help="rewrite the Malloc/Free sites to StingyAlloc/StingyFree "
                               "(shows the diff)")
    rewrite.add_argument("targets", nargs="*", default=DEFAULT_TARGETS, help="a package or module (default: tux_like)")
    rewrite.add_argument("--exclude", action="append", default=None, metavar="MODULE",
                         help="leave out modules starting with MODULE (default: tux_like's socket layer and driver)")
    rewrite.add_argument("--out", metavar="DIR", help="write the rewritten package (all of it) under DIR")
    sweep = tools.add_parser("sweep", help="ab-style concurrency sweep of tux_like in simulated memory and time "
                             "(original vs Stingy)")
    sweep.add_argument("--quick", action="store_true", help=f"fewer points and requests (default points: "
                       f"{','.join(map(str, FULL))}; quick: {','.join(map(str, QUICK))})")
    sweep.add_argument("--concurrency", type=_concurrencies, help="the points, as N,N,...")
    sweep.add_argument("--json", metavar="FILE", required=True, help="write the records here")
    sweep.add_argument("--httperf", action="store_true", help="also search each variant's peak rate (open loop, "
                       "tux_like only)")
    sweep.add_argument("--program", choices=PROGRAMS, default="tux_like",
                       help="the server: tux_like (default) or the second program, demos/thttpd_like.py")


def _concurrencies(text: str) -> list[int]:
    try:
        points = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not points or min(points) < 1:
        raise argparse.ArgumentTypeError("concurrencies are positive numbers")
    return points


def main(args: argparse.Namespace) -> int:
    if args.stingy_command == "sweep":
        return _sweep(args)
    from .memwalk import MemwalkError, format_report, memwalk
    from .memwalk import to_dot as scg_dot

    exclude = DEFAULT_EXCLUDE if args.exclude is None else args.exclude
    try:
        report = memwalk(args.targets, entry=getattr(args, "entry", None), exclude=exclude)
    except (MemwalkError, SyntaxError, OSError) as bad:
        raise StingyUsageError(str(bad)) from None
    if args.stingy_command == "stingify":
        return _stingify(args, report, exclude)
    if args.stingy_command == "memwalk":
        print(format_report(report), end="")
        _pictures(args, scg_dot(report))
        return 0
    return _stingygen(args, report)


def _stingygen(args: argparse.Namespace, report) -> int:
    from .stingygen import Infeasible, fixed_regions, memory_map, problem_from, solve
    from .stingygen import to_dot as map_dot

    if args.cache_kb <= 0 or (args.tau_kb is not None and args.tau_kb <= 0):
        raise StingyUsageError("--cache-kb and --tau-kb take a positive number of KB")
    cache = args.cache_kb * 1024
    stack, finals = fixed_regions(report)
    tau = args.tau_kb * 1024 if args.tau_kb is not None else cache - stack - finals
    try:
        solution = solve(problem_from(report, tau))
        memory = memory_map(report, solution.counts, cache)
    except Infeasible as bad:
        raise StingyUsageError(str(bad)) from None
    print(f"tau = {tau} bytes for per-task state (cache {cache}, stack {stack}, final globals {finals})")
    print(f"instance limits ({solution.status}): " + ", ".join(f"{o}={n}" for o, n in sorted(solution.counts.items())))
    print(f"instruction-fetch work per task M_w = {solution.objective:.3f}")
    print(memory.format(), end="")
    _pictures(args, map_dot(memory))
    return 0


def _stingify(args: argparse.Namespace, report, exclude: list[str]) -> int:
    from .memwalk import module_files
    from .stingify import StingifyError, stingify, write

    try:
        rewrites = stingify(report, args.targets, exclude)
    except StingifyError as bad:
        raise StingyUsageError(str(bad)) from None
    top = module_files(args.targets, exclude)[0][1].parent
    package = top if (top / "__init__.py").exists() else None
    while package is not None and (package.parent / "__init__.py").exists():
        package = package.parent  # the outermost package: what --out copies
    base = package.parent if package else top
    for rewrite in rewrites:
        print(rewrite.diff(base), end="")
    total = [sum(getattr(r, k) for r in rewrites) for k in ("allocs", "frees", "guards")]
    print(f"# {len(rewrites)} modules: {total[0]} StingyAlloc, {total[1]} StingyFree, {total[2]} size guards")
    if args.out:
        if package is None:
            raise StingyUsageError("--out needs a package to copy")
        try:
            written = write(rewrites, Path(args.out), package)
        except OSError as bad:
            raise StingyUsageError(f"--out {args.out}: {bad.strerror or bad}") from None
        print(f"# written: {', '.join(str(p) for p in written)}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    import json

    from .sweep import sweep

    points = args.concurrency or (QUICK if args.quick else FULL)
    if args.httperf and args.program != "tux_like":
        raise StingyUsageError("--httperf needs the tux_like program (the second program has no arrivals)")
    try:
        out = open(args.json, "w")  # opened first: a bad path fails before the sweep, not after it
    except OSError as bad:
        raise StingyUsageError(f"--json {args.json}: {bad.strerror or bad}") from None
    with out:
        records, peaks = sweep(points, quick=args.quick, peaks=args.httperf, program=args.program)
        out.write(json.dumps(records, indent=1) + "\n")
    for variant, rate in peaks.items():
        print(f"httperf peak {variant}: {rate:.0f} requests/s")
    print(f"{len(records)} records written to {args.json}")
    return 0


def _pictures(args: argparse.Namespace, dot: str) -> None:
    if args.dot:
        try:
            Path(args.dot).write_text(dot)
        except OSError as bad:
            raise StingyUsageError(f"--dot {args.dot}: {bad.strerror or bad}") from None
    if args.png:
        if shutil.which("dot") is None:
            raise StingyUsageError("--png needs graphviz's dot (apt-get install graphviz); --dot writes the source")
        done = subprocess.run(["dot", "-Tpng", "-o", args.png], input=dot, text=True, capture_output=True)
        if done.returncode:
            lines = done.stderr.strip().splitlines() or ["dot failed"]
            raise StingyUsageError(f"--png {args.png}: {lines[-1]}")
