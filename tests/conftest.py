"""The summary of the shared packetdrill scripts, printed at the end of a pytest run.

Each case of a shared script records what it found (:func:`packetdrill_verdict`);
the summary gives, for each DUT, the counts and one line for every script
that did not simply pass, so that new scripts in the folder show up here
rather than as failures.
"""

from __future__ import annotations

from collections import Counter

import pytest

from conformance.cli import SHARED_ENV, shared_folders
from pystack.host.netns import sigterm_as_interrupt

_KEY = "packetdrill"
_COUNTED = {"passed": "passed", "known mismatch": "known mismatches", "new mismatch": "new mismatches",
            "skipped": "skipped", "fixed": "fixed (listed, but pass)",
            "regression": "regressions (known to pass, now fail)"}


def pytest_sessionstart(session):
    """A suite stopped with SIGTERM unwinds as after Ctrl-C (the namespaces of the TUN tests go)
    and runs no further test."""
    sigterm_as_interrupt(lambda: setattr(session, "shouldstop", "SIGTERM"))


@pytest.fixture
def packetdrill_verdict(record_property):
    """``verdict(dut, script, found, detail)``: what one shared script did, for the summary."""
    def verdict(dut: str, script: str, found: str, detail: str) -> None:
        record_property(_KEY, (dut, script, found, detail))
    return verdict


def pytest_terminal_summary(terminalreporter):
    verdicts = [value for reports in terminalreporter.stats.values() for report in reports
                if getattr(report, "when", None) == "call"
                for key, value in getattr(report, "user_properties", ()) if key == _KEY]
    if not verdicts:
        return
    write = terminalreporter.write_line
    terminalreporter.write_sep("=", "shared packetdrill scripts")
    write(f"folders (${SHARED_ENV}): {', '.join(str(f) for f in shared_folders())}")
    for dut in sorted({v[0] for v in verdicts}):
        mine = sorted(v[1:] for v in verdicts if v[0] == dut)
        counts = Counter(found for _, found, _ in mine)
        write(f"{dut}: {len(mine)} scripts: "
              + ", ".join(f"{counts[k]} {label}" for k, label in _COUNTED.items() if counts[k] or k not in ("fixed", "regression")))
        for script, found, detail in mine:
            if found != "passed":
                write(f"  {found:<15} {script}: {detail}")
