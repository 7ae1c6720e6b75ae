"""The specializer proper, for the token systems (pystack.tokens.system): run the partial
evaluator on a scenario and its statics, clean the residual up and compile it."""

from __future__ import annotations

import itertools
import time
from typing import Any

from pystack.tokens.scenario import Scenario
from pystack.tokens.system import Specialized

from .pe import evaluate
from .residual import cleanup, compile_residual

_COMPILED = itertools.count(1)  # residual functions get file names of their own, for tracebacks


def specialize(scenario: Scenario, statics: dict[str, Any]) -> Specialized:
    """Run the partial evaluator and compile the result (no caching)."""
    started = time.perf_counter()
    evaluator, params, body = evaluate(scenario, statics)
    names = [p.arg for p in params]
    used: set[str] = set()
    body = cleanup(body, names, used, evaluator.constants.values)
    compiled = compile_residual(f"specialized_{scenario.name}", names, body, evaluator.constants.values,
                                f"specialized {scenario.name} #{next(_COMPILED)}", used)
    latency = time.perf_counter() - started
    return Specialized((), scenario, statics, compiled, list(evaluator.assumptions.values()),
                       evaluator.stats, evaluator.diagnostics, latency, evaluator.trace)
