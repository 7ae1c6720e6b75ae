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

DEFAULT_TARGETS = ["tux_like"]
# The socket layers and drivers a server runs on are not its stages (in C they were the kernel).
DEFAULT_EXCLUDE = ["tux_like.memnet", "tux_like.backends", "tux_like.driver", "tux_like.cli"]


class StingyUsageError(Exception):
    """A bad argument or input: one line, exit status 2."""


def add_parser(commands: argparse._SubParsersAction) -> None:
    stingy = commands.add_parser("stingy", help="memwalk / stingygen: the Stingy allocator's tools")
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


def main(args: argparse.Namespace) -> int:
    from .memwalk import MemwalkError, format_report, memwalk
    from .memwalk import to_dot as scg_dot

    exclude = DEFAULT_EXCLUDE if args.exclude is None else args.exclude
    try:
        report = memwalk(args.targets, entry=args.entry, exclude=exclude)
    except (MemwalkError, SyntaxError, OSError) as bad:
        raise StingyUsageError(str(bad)) from None
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


def _pictures(args: argparse.Namespace, dot: str) -> None:
    if args.dot:
        Path(args.dot).write_text(dot)
    if args.png:
        if shutil.which("dot") is None:
            raise StingyUsageError("--png needs graphviz's dot (apt-get install graphviz); --dot writes the source")
        subprocess.run(["dot", "-Tpng", "-o", args.png], input=dot, text=True, check=True)
