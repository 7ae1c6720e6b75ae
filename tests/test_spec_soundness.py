"""Ordinary Python, specialized through the internal API: exact, generic, or refused.

The rule for the partial evaluator: whatever it accepts it specializes
exactly; what it cannot, it keeps generic (a residual call) or refuses with
SpecializationError naming the source line. Never a wrong answer, never a
private exception. The functions are in tests/spec_user_module.py, a user's
module the specializer knows nothing about; each is run generic and
residual, several times (a residual function runs many times: what the first
run changes, the second sees), from the same starting state.
"""

from __future__ import annotations

import copy
import inspect
from pathlib import Path

import pytest

import tests.spec_user_module as user
from pystack.tokens.scenario import Scenario
from specializer.pe import SpecializationError
from specializer.system import specialize


def scenario(entry: str, statics: dict) -> Scenario:
    function = getattr(user, entry)
    return Scenario(
        name=f"user_{entry}", description="", entry=f"tests.spec_user_module:{entry}",
        binding_times={p: "S" if p in statics else "D" for p in inspect.signature(function).parameters},
        objects={}, unfold=frozenset({user.numbers, user.bump}), pure=frozenset(), observe=frozenset(),
        policies={}, source=Path(user.__file__))


def fresh_globals() -> None:
    user.COUNTER = 0
    user.TABLE[:] = [0, 0, 0]


def outcome(function, *args, **kwargs):
    try:
        return ("returned", function(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001 - the comparison is the point
        return ("raised", type(exc))


CASES = [
    ("sums_a_generator", {"n": 3}),  # an inlined generator made the residual itself a generator
    ("calls_a_generator", {"n": 3}),
    ("fills_a_table", {"table": [0, 0, 0]}),
    ("appends_then_counts", {"table": [5]}),  # len() after the residual's append folded the old length
    ("counts_then_appends", {"table": [5]}),  # len() before it: right once, wrong from the second run
    ("fills_the_global_table", {"n": 3}),
    ("reads_a_global_a_callee_changes", {"n": 2}),  # COUNTER was folded; bump() changes it
    ("walrus", {"n": 2}),
    ("deletes", {"n": 2}),
    ("accumulates", {"n": 3}),  # acc = []; acc.append(x) in the entry
    ("divides_by_a_static_zero", {"n": 0}),  # 10 // 0 is not folded: the residual raises it
]


@pytest.mark.parametrize("entry, statics", CASES, ids=[c[0] for c in CASES])
def test_the_residual_does_what_the_generic_code_does(entry, statics):
    function = getattr(user, entry)
    fresh_globals()
    special = specialize(scenario(entry, statics), copy.deepcopy(statics))
    assert not inspect.isgeneratorfunction(special.function)
    got = [outcome(special.function, x) for x in (5, 6, -1)]
    fresh_globals()
    generic_statics = copy.deepcopy(statics)
    expected = [outcome(function, x, **generic_statics) for x in (5, 6, -1)]
    assert got == expected
    fresh_globals()


@pytest.mark.parametrize("entry, line, why", [
    ("uses_global", "global COUNTER", "Global"),
    ("with_finally", "try:", "try-finally"),
    ("reads_after_del", "return y", "read after del"),
    ("walrus_in_a_comprehension", "_ = [(y := v)", "NamedExpr"),
])
def test_what_cannot_be_specialized_is_refused_with_its_line(entry, line, why):
    with pytest.raises(SpecializationError, match=why) as refused:
        specialize(scenario(entry, {"n": 2}), {"n": 2})
    where = str(refused.value).split(":", 2)
    source = Path(user.__file__).read_text().splitlines()
    assert where[0] == "spec_user_module.py"
    assert source[int(where[1]) - 1].strip().startswith(line)


def test_a_generator_entry_is_refused():
    with pytest.raises(SpecializationError, match="generator"):
        specialize(scenario("numbers", {}), {})


def test_a_generator_callee_stays_a_call():
    special = specialize(scenario("sums_a_generator", {"n": 3}), {"n": 3})
    assert "numbers(" in special.compiled.source
    assert any("generator" in d.message for d in special.diagnostics)


def test_a_static_computation_that_raises_stays_and_is_reported():
    special = specialize(scenario("divides_by_a_static_zero", {"n": 0}), {"n": 0})
    assert "10 // 0" in special.compiled.source
    said = [d for d in special.diagnostics if d.kind == "raises-at-run-time"]
    source = Path(user.__file__).read_text().splitlines()
    assert said and all("ZeroDivisionError" in d.message for d in said), said
    assert {source[int(d.where.split(":")[1]) - 1].strip() for d in said} == {"return x + 10 // n"}
