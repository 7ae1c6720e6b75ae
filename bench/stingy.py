"""Stingy on tux_like (thesis 7.5-7.6, figure 7.7): the original server against the Stingy one.

Both run the real tux_like HTTP code in simulated memory and simulated time
(:mod:`stingy.simulate`: traced buffers, request fields, sends and frames fed
to a Pentium III cache model; each stage run charged a fixed instruction
estimate). ab's closed loop over concurrency gives figures 7.7(a) requests
per simulated second and (b) L2 misses per request; httperf's open loop, by
bisection on the rate, the peak, and figure 7.7(c) the requests served at
each rate the bisection tried. The pictures go to docs/.
Simulated figures: they do not depend on the machine, one run.
"""

from __future__ import annotations

from pathlib import Path

from stingy.sweep import FULL, QUICK, at, sweep

from .common import Settings, Table, note

NAME = "stingy"
NEEDS_ROOT = False
GOAL_CONCURRENCY = 2500
GOALS = {"l2_misses": -75.0, "throughput": 40.0, "peak": 21.0}  # thesis 7.6, at about 2,500
THESIS = ("thesis 7.6 (TUX, ab at ~2,500 concurrent requests): L2 misses down by up to 75%, requests "
          "served up by up to 40%; httperf: peak load before the failure zone up by about 21%")
DOCS = Path(__file__).resolve().parent.parent / "docs"


def run(settings: Settings) -> Table:
    points = QUICK if settings.quick else FULL
    note(f"ab sweep over {','.join(map(str, points))} and httperf's peak, both variants (simulated time)")
    probes: list[dict] = []
    records, peaks = sweep(points, quick=settings.quick, peaks=True, probes=probes)
    table = Table(NAME, "tux_like in simulated memory: original (kmalloc-style heap, TUX scheduler) vs Stingy "
                  "(ab closed loop; requests per simulated second, L2 misses per request)",
                  ["concurrency", "original req/s", "stingy req/s", "throughput change %",
                   "original L2 miss/req", "stingy L2 miss/req", "L2 miss change %"])
    for concurrency in points:
        original, stingy = at(records, "original", concurrency), at(records, "stingy", concurrency)
        table.add(concurrency, original["requests_per_second"], stingy["requests_per_second"],
                  _change(stingy["requests_per_second"], original["requests_per_second"]),
                  original["l2_misses_per_request"], stingy["l2_misses_per_request"],
                  _change(stingy["l2_misses_per_request"], original["l2_misses_per_request"]))
    original, stingy = at(records, "original", GOAL_CONCURRENCY), at(records, "stingy", GOAL_CONCURRENCY)
    achieved = {
        "l2_misses": _change(stingy["l2_misses_per_request"], original["l2_misses_per_request"]),
        "throughput": _change(stingy["requests_per_second"], original["requests_per_second"]),
        "peak": _change(peaks["stingy"], peaks["original"]),
    }
    met = {"l2_misses": achieved["l2_misses"] <= GOALS["l2_misses"],
           "throughput": achieved["throughput"] >= GOALS["throughput"],
           "peak": achieved["peak"] >= GOALS["peak"]}
    table.notes.append(f"at concurrency {GOAL_CONCURRENCY}: L2 misses {achieved['l2_misses']:+.0f}% (goal <= -75%: "
                       f"{'met' if met['l2_misses'] else 'NOT met'}), throughput {achieved['throughput']:+.0f}% "
                       f"(goal >= +40%: {'met' if met['throughput'] else 'NOT met'})")
    table.notes.append(f"httperf peak: original {peaks['original']:,.0f}/s, stingy {peaks['stingy']:,.0f}/s, "
                       f"{achieved['peak']:+.0f}% (goal >= +21%: {'met' if met['peak'] else 'NOT met'})"
                       + (" (--quick: a 5-step bisection, its last two rates 21% apart: only the full "
                          "run's 8 steps measure the goal)" if settings.quick else ""))
    table.notes.append(THESIS)
    pictures = _pictures(records, peaks, probes, points)
    table.notes.append("pictures: " + ", ".join(str(p.relative_to(DOCS.parent)) for p in pictures))
    table.data = {"records": records, "peaks": peaks, "probes": probes, "achieved": achieved, "met": met,
                  "goals": GOALS}
    return table


def _change(new: float, old: float) -> float:
    return (new - old) / old * 100.0 if old else 0.0


def _pictures(records: list[dict], peaks: dict[str, float], probes: list[dict],
              points: tuple[int, ...]) -> list[Path]:
    """Figures 7.7 (a), (b) and (c) as PNGs in docs/."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for key, label, name in (("requests_per_second", "requests per simulated second", "stingy_7_7a_requests.png"),
                             ("l2_misses_per_request", "L2 misses per request", "stingy_7_7b_l2_misses.png")):
        figure, axes = plt.subplots(figsize=(6, 4))
        for variant, style in (("original", "o-"), ("stingy", "s-")):
            axes.plot(points, [at(records, variant, c)[key] for c in points], style, label=variant)
        axes.set_xscale("log")
        axes.set_xlabel("concurrency (ab -c)")
        axes.set_ylabel(label)
        axes.axvline(GOAL_CONCURRENCY, color="grey", linestyle=":", linewidth=1)
        axes.legend()
        axes.set_title("tux_like, simulated Pentium III (ab)")
        figure.tight_layout()
        path = DOCS / name
        figure.savefig(path, dpi=90)
        plt.close(figure)
        written.append(path)
    # (c) as the thesis draws it: requests served against requests offered, each rate the
    # bisection tried; the peak is the last rate before more than 5% are late.
    figure, axes = plt.subplots(figsize=(6, 4))
    for variant, style, colour in (("original", "o-", "tab:blue"), ("stingy", "s-", "tab:orange")):
        tried = sorted((p["rate"], p["requests_per_second"]) for p in probes if p["variant"] == variant)
        axes.plot([r for r, _ in tried], [s for _, s in tried], style, color=colour, label=variant)
        axes.axvline(peaks[variant], color=colour, linestyle=":", linewidth=1)
    axes.set_xscale("log")
    axes.set_xlabel("requests offered per simulated second (httperf --rate)")
    axes.set_ylabel("requests served per simulated second")
    axes.set_title("tux_like, httperf (dotted: each variant's peak)")
    axes.legend()
    figure.tight_layout()
    path = DOCS / "stingy_7_7c_peak.png"
    figure.savefig(path, dpi=90)
    plt.close(figure)
    written.append(path)
    return written
