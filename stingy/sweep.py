"""The thesis's experiments (7.5-7.6) in simulated time: ab over concurrency, httperf's peak.

:func:`sweep` runs the closed-loop generator at each concurrency for both
variants (figures 7.7(a) and (b)); :func:`peak` searches the open-loop rate
at which the server stops answering in time (figure 7.7(c)). ``program``
picks the server: tux_like, or the second program (``thttpd_like``,
:mod:`stingy.second`: closed loop only, it has no arrivals to open a loop on). The records are
simulated figures (see :mod:`stingy.simulate` for what is simulated).
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TextIO

from . import second
from .load import Result, closed_loop, open_loop
from .second import second_layout
from .simulate import VARIANTS, document_root, tux_layout

FULL = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 2500, 5000)
QUICK = (1, 10, 100, 1000, 2500)
PROGRAMS = ("tux_like", "thttpd_like")


def sweep(concurrencies: Iterable[int], quick: bool = False, progress: TextIO | None = sys.stderr,
          peaks: bool = False, program: str = "tux_like",
          probes: list[dict] | None = None) -> tuple[list[dict], dict[str, float]]:
    """One record per (variant, concurrency); with ``peaks``, httperf's peak rate per variant,
    and each rate it tried appended to ``probes`` (offered against served: figure 7.7(c))."""
    if program not in PROGRAMS:
        raise ValueError(f"unknown program {program!r} (known: {', '.join(PROGRAMS)})")
    if peaks and program != "tux_like":
        raise ValueError("httperf's peak is measured on tux_like only (the second program has no arrivals)")
    records: list[dict] = []
    peak_rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="stingy-www-") as base:
        if program == "tux_like":
            layout = tux_layout()
            targets = document_root(Path(base))
            root = Path(base) / "www"

            def measure(variant: str, concurrency: int, requests: int) -> Result:
                return closed_loop(variant, concurrency, requests, root, targets, layout)
        else:
            layout = second_layout()

            def measure(variant: str, concurrency: int, requests: int) -> Result:
                return second.closed_loop(variant, concurrency, requests, layout)
        for concurrency in concurrencies:
            measured = max(600, concurrency)  # quick: fewer points, the same figure at each
            for variant in VARIANTS:
                result = measure(variant, concurrency, measured)
                record = {"variant": variant, "concurrency": concurrency,
                          "requests_per_second": round(result.requests_per_second, 1),
                          "l2_misses_per_request": round(result.l2_misses_per_request, 2)}
                records.append(record)
                _say(progress, f"ab      {variant:<8} c={concurrency:<5} {record['requests_per_second']:>10.0f} req/s "
                               f"{record['l2_misses_per_request']:>8.2f} L2 misses/req, misses "
                               f"{result.miss_share:>4.0%} of busy time")
        if peaks:
            for variant in VARIANTS:
                def answers(rate: float, variant: str = variant) -> bool:
                    result = open_loop(variant, rate, 600 if quick else 2000, root, targets, layout)
                    ok = result.timed_out + result.errors <= result.requests // 20
                    if probes is not None:
                        probes.append({"variant": variant, "rate": round(rate, 1), "ok": ok,
                                       "requests_per_second": round(result.requests_per_second, 1)})
                    _say(progress, f"httperf {variant:<8} rate={rate:>9.0f}/s "
                                   f"{result.timed_out + result.errors:>5} late or failed: {'ok' if ok else 'over'} "
                                   f"({result.stage_runs / result.requests:.2f} stage runs/req, "
                                   f"{result.l2_misses_per_request:.2f} L2 misses/req, misses "
                                   f"{result.miss_share:.0%} of busy time)")
                    return ok
                peak_rates[variant] = round(peak(answers, steps=5 if quick else 8), 0)
    return records, peak_rates


def peak(answers: Callable[[float], bool], low: float = 2_000.0, high: float = 1_000_000.0,
         steps: int = 8) -> float:
    """The highest rate ``answers`` accepts, by bisection on a log scale between ``low``
    (assumed served) and ``high`` (assumed not)."""
    for _ in range(steps):
        middle = (low * high) ** 0.5
        if answers(middle):
            low = middle
        else:
            high = middle
    return low


def _say(stream: TextIO | None, line: str) -> None:
    if stream is not None:
        print(line, file=stream, flush=True)


def at(records: list[dict], variant: str, concurrency: int) -> dict:
    return next(r for r in records if r["variant"] == variant and r["concurrency"] == concurrency)
