"""``pystack conformance DIR...``: every packetdrill script in the DIRs against Linux and pystack, as a table.

Each script runs on a fresh DUT: Linux in its own namespace in real time
(one after another, so that timing is not disturbed), pystack in virtual
time. The table has one row per script: the Linux result, the pystack
result, and the first mismatch (pystack's, or Linux's when Linux fails).
The totals, over all the folders, give the two figures of
docs/CONFORMANCE.md: the share of scripts that pass on Linux (which shows
the runner is right), and the share of those that pass on pystack.

Without a DIR the command runs the shared scripts: the folders of
``$PYSTACK_PACKETDRILL`` (:func:`shared_folders`, which the tests read too).
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the runner pulls in scapy: imported only when the command runs
    from .runner import Outcome

SHARED_ENV = "PYSTACK_PACKETDRILL"
SHARED_DEFAULT = Path(__file__).parents[2] / "shared" / "packetdrill"


def shared_folders() -> list[Path]:
    """The folders of real packetdrill scripts: $PYSTACK_PACKETDRILL (separated by os.pathsep), else
    ``shared/packetdrill`` beside the checkout. The one place the tests and the command learn it."""
    value = os.environ.get(SHARED_ENV, "")
    return [Path(p) for p in value.split(os.pathsep) if p] or [SHARED_DEFAULT]


DUT_KINDS = ("linux", "pystack")
PASS, SKIP = "pass", "skip"


def add_parser(commands: argparse._SubParsersAction) -> None:
    sub = commands.add_parser(
        "conformance", help="run packetdrill scripts against Linux (in a namespace) and pystack",
        description="Run every .pkt script under the DIRs against the Linux kernel (needs root) and "
                    "pystack, and print one table of the results and the totals over all of them.")
    sub.add_argument("dirs", metavar="DIR", nargs="*",
                     help=f"directory searched (recursively) for .pkt scripts; default: the folders in "
                          f"${SHARED_ENV} (separated by {os.pathsep!r}), else {SHARED_DEFAULT}")
    sub.add_argument("--dut", choices=[*DUT_KINDS, "both"], default="both", help="which DUT(s) to run")
    sub.add_argument("--only", metavar="NAME", action="append",
                     help="only scripts whose path contains NAME (or matches it as a glob); repeatable")
    sub.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    sub.add_argument("-v", "--verbose", action="store_true",
                     help="after a failure, print the packets and calls the runner saw")


@dataclass
class Row:
    name: str
    results: dict[str, Outcome]

    def first_mismatch(self) -> str:
        for kind in ("pystack", "linux"):
            outcome = self.results.get(kind)
            if outcome is not None and outcome.status != PASS:
                text = outcome.brief()
                return f"{kind}: {text}" if kind == "linux" else text
        return ""


def find_scripts(directory: Path, only: list[str] | None = None) -> list[Path]:
    """The .pkt scripts under ``directory``, sorted; with ``only``, those whose path below it matches."""
    scripts = sorted(p for p in directory.rglob("*.pkt") if p.is_file())
    if only:
        def wanted(path: Path) -> bool:
            rel = str(path.relative_to(directory))
            return any(pattern in rel or fnmatch.fnmatch(rel, pattern) for pattern in only)
        scripts = [p for p in scripts if wanted(p)]
    return scripts


def select(directories: list[Path], only: list[str] | None) -> list[tuple[str, Path]]:
    """(row name, path) of the scripts: the name is the path below its directory, and begins with
    the directory too when there are several."""
    return [(str(path.relative_to(d) if len(directories) == 1 else path), path)
            for d in directories for path in find_scripts(d, only)]


def run_table(scripts: list[tuple[str, Path]], kinds: list[str],
              run_file: Callable[[Path, str], Outcome], progress: bool = False) -> list[Row]:
    rows = []
    for name, path in scripts:
        rows.append(Row(name, {kind: run_file(path, kind) for kind in kinds}))
        if progress:
            print(".", end="", file=sys.stderr, flush=True)
    if progress and rows:
        print(file=sys.stderr)
    return rows


def totals(rows: list[Row]) -> dict[str, object]:
    """The figures: Linux passes over all scripts; pystack passes over those that pass on Linux."""
    total = len(rows)
    linux_pass = [r for r in rows if "linux" in r.results and r.results["linux"].status == PASS]
    figures: dict[str, object] = {"scripts": total}
    if any("linux" in r.results for r in rows):
        figures["linux_pass"] = len(linux_pass)
        figures["linux_rate"] = len(linux_pass) / total if total else 0.0
    if any("pystack" in r.results for r in rows):
        figures["pystack_pass"] = sum(r.results["pystack"].status == PASS for r in rows)
        if "linux_pass" in figures:
            both = sum(r.results["pystack"].status == PASS for r in linux_pass)
            figures["pystack_on_linux_pass"] = both
            figures["pystack_rate"] = both / len(linux_pass) if linux_pass else 0.0
    return figures


def format_table(rows: list[Row], kinds: list[str], markdown: bool = False) -> str:
    header = ["script", *kinds, "first mismatch"]
    body = [[row.name, *(_cell(row.results[k]) for k in kinds), row.first_mismatch()] for row in rows]
    if markdown:
        def escape(text: str) -> str:
            return text.replace("|", "\\|")
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(escape(c) for c in line) + " |" for line in body]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header) - 1)]
    lines = []
    for line in [header, *body]:
        cells = [c.ljust(w) for c, w in zip(line, widths, strict=False)]
        lines.append("  ".join([*cells, line[-1]]).rstrip())
    return "\n".join(lines)


def _cell(outcome: Outcome) -> str:
    return outcome.status.upper() if outcome.status != PASS else "pass"


def format_totals(figures: dict[str, object]) -> str:
    parts = [f"{figures['scripts']} scripts"]
    if "linux_pass" in figures:
        parts.append(f"Linux passes {figures['linux_pass']} ({figures['linux_rate']:.0%}, goal >= 90%)")
    if "pystack_on_linux_pass" in figures:
        parts.append(f"pystack passes {figures['pystack_on_linux_pass']} of those "
                     f"({figures['pystack_rate']:.0%}, goal >= 95%)")
    elif "pystack_pass" in figures:
        parts.append(f"pystack passes {figures['pystack_pass']}")
    return "; ".join(parts)


def main(args: argparse.Namespace) -> int:
    from pystack.cli import UsageError

    from .dut import linux_unavailable

    directories = [Path(d) for d in args.dirs] or shared_folders()
    for directory in directories:
        if not directory.is_dir():
            raise UsageError(f"conformance: no such directory {str(directory)!r}"
                             + ("" if args.dirs else f" (from ${SHARED_ENV}, or its default)"))
    scripts = select(directories, args.only)
    if not scripts:
        raise UsageError(f"conformance: no .pkt scripts under {', '.join(repr(str(d)) for d in directories)}"
                         + (f" matching {', '.join(args.only)}" if args.only else ""))
    try:
        from .runner import run_file
    except ModuleNotFoundError as missing:
        if (missing.name or "").partition(".")[0] != "scapy":
            raise
        print("pystack: conformance: needs scapy, which is not installed "
              "(pip install 'pystack-spec[conformance]')", file=sys.stderr)
        return 1
    kinds = list(DUT_KINDS) if args.dut == "both" else [args.dut]
    if "linux" in kinds:
        reason = linux_unavailable()
        if reason is not None:
            if kinds == ["linux"]:
                print(f"pystack: conformance: cannot run the Linux DUT: {reason}", file=sys.stderr)
                return 1
            print(f"pystack: conformance: Linux DUT skipped ({reason}); running pystack only",
                  file=sys.stderr)
            kinds = ["pystack"]
    started = time.monotonic()
    rows = run_table(scripts, kinds, run_file, progress=os.isatty(2))
    print(format_table(rows, kinds, args.markdown))
    print()
    print(format_totals(totals(rows)) + f" ({time.monotonic() - started:.1f} s)")
    if args.verbose:
        for row in rows:
            for kind, outcome in row.results.items():
                if outcome.status not in (PASS, SKIP):
                    print(f"\n== {row.name} on {kind}: {outcome.status}\n{outcome.message}")
                    print("\n".join(outcome.trace))
    failed = any(o.status not in (PASS, SKIP) for r in rows for o in r.results.values())
    return 1 if failed else 0
