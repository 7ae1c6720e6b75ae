"""``python -m bench``: run the benchmarks side by side, print a table each.

    python -m bench                      everything, 5 repeats each (a few minutes)
    python -m bench --quick              1 repeat of shorter loops (well under a minute)
    python -m bench --only icmp_rtt      one benchmark (repeat --only, or a,b, for more)
    python -m bench --json out.json      also write every figure and every run as JSON

The TUN benchmarks need root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and
/dev/net/tun; without them one line says so and only the others run.
Figures and the commands that produced them go into docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

from pystack.host.netns import sigterm_as_interrupt

from . import (
    common,
    frag_flood,
    icmp_rtt,
    ofo_flood,
    spec_c,
    spec_code_size,
    spec_latency,
    spec_remote,
    spec_send_path,
    spec_tcp_send,
    spec_tcp_stream,
    spec_udp_stream,
    stingy,
    tcp_stream,
    tux,
    udp_send_path,
    udp_stream,
)

BENCHMARKS = {module.NAME: module for module in (icmp_rtt, udp_send_path, udp_stream, tcp_stream, spec_send_path,
                                                 spec_tcp_send, spec_tcp_stream, spec_code_size, spec_latency, spec_remote,
                                                 spec_udp_stream,
                                                 ofo_flood, frag_flood, stingy, tux, spec_c)}


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise UsageError(message)


def build_parser() -> Parser:
    parser = Parser(prog="python -m bench", description="Run pystack's benchmarks side by side; print a table each, with ratios.")
    parser.add_argument("--quick", action="store_true", help="one short run of each (< 1 minute)")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help=f"run only these ({', '.join(BENCHMARKS)}); repeatable or comma-separated")
    parser.add_argument("--json", metavar="FILE", help="write all figures and raw runs to FILE")
    parser.add_argument("--repeats", type=int, metavar="N",
                        help="runs per measurement, the median is reported (default 5, --quick 1)")
    return parser


def selected(only: list[str] | None) -> list[str]:
    if not only:
        return list(BENCHMARKS)
    names = [name.strip() for item in only for name in item.split(",") if name.strip()]
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        raise UsageError(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    return [name for name in BENCHMARKS if name in names]


def check(args: argparse.Namespace) -> None:
    if args.repeats is not None and not 1 <= args.repeats <= 50:
        raise UsageError(f"--repeats must be between 1 and 50, got {args.repeats}")
    if args.json is not None:
        folder = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(folder):
            raise UsageError(f"--json: no such directory {folder!r}")


def header(info: dict[str, Any], settings: common.Settings) -> str:
    mode = "quick" if settings.quick else "full"
    return (f"pystack benchmarks ({mode}, {settings.repeats} repeat(s), median reported) -- "
            f"{info['date']}; {info['nproc']} x {info['cpu']}; {info['implementation']} "
            f"{info['python']}; Linux {info['kernel']}; trio {info['trio']}; "
            f"load average {info['loadavg']}; pystack at {info['pystack_tree']}")


def run(args: argparse.Namespace) -> int:
    names = selected(args.only)
    settings = common.Settings.make(args.quick, args.repeats)
    reason = common.root_reason()
    if reason is not None:
        skipped = [name for name in names if BENCHMARKS[name].NEEDS_ROOT]
        if skipped:
            others = [name for name in names if name not in skipped]
            print(f"bench: skipping {', '.join(skipped)} (TUN): {reason}; running only "
                  f"{', '.join(others) if others else 'nothing'}", flush=True)
            names = others
    if not names:
        return 1

    info = common.machine()
    print(header(info, settings), flush=True)
    report: dict[str, Any] = {
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "machine": info,
        "settings": {"quick": settings.quick, "repeats": settings.repeats},
        "benchmarks": {},
    }
    failed = []
    started = time.perf_counter()
    for name in names:
        print(flush=True)
        began = time.perf_counter()
        try:
            table = BENCHMARKS[name].run(settings)
        except Exception as exc:  # noqa: BLE001 - one benchmark's failure does not hide the others' figures
            failed.append(name)
            print(f"bench: {name} failed: {type(exc).__name__}: {exc}", flush=True)
            traceback.print_exc(file=sys.stderr)
            report["benchmarks"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        common.print_table(table)
        elapsed = time.perf_counter() - began
        print(f"  ({name}: {elapsed:.1f} s)", flush=True)
        report["benchmarks"][name] = {**table.as_json(), "seconds": elapsed}
    total = time.perf_counter() - started
    report["seconds"] = total
    report["machine"]["loadavg_after"] = common.loadavg()
    print(f"\ndone in {total:.1f} s; load average now {report['machine']['loadavg_after']}", flush=True)
    if args.json is not None:
        with open(args.json, "w") as out:
            json.dump(report, out, indent=1, default=str)
            out.write("\n")
        print(f"figures written to {args.json}", flush=True)
    return 1 if failed else 0




def interrupted(exc: BaseException) -> bool:
    """Ctrl-C, alone or inside the exception group of a trio nursery."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(KeyboardInterrupt) is not None
    return isinstance(exc, KeyboardInterrupt)


def main(argv: Sequence[str] | None = None) -> int:
    sigterm_as_interrupt()
    try:
        args = build_parser().parse_args(argv)
        check(args)
        return run(args)
    except UsageError as bad:
        print(f"bench: {bad}", file=sys.stderr)
        return 2
    except BaseException as exc:
        if not interrupted(exc):
            raise
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        removed = common.cleanup_leftovers()
        if removed:
            print(f"bench: removed leftover namespaces {', '.join(removed)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
