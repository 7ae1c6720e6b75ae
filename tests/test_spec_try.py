"""The partial evaluator on ``try``/``except``: small generic functions, specialized and
run against themselves.

The toy functions below are the generic code; a scenario made here unfolds
them with ``limit`` static and ``x`` dynamic. For every input the residual
must return what the generic code returns, raise what it raises, and leave
the same trace of effects (``log``), as the stack's own ``send_segment``
must when its ``except OSError`` catches an EMSGSIZE from ``ip_output``.
"""

from __future__ import annotations

import ast
import errno
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pystack.tokens.scenario import Scenario
from specializer.system import specialize


def risky(x: int, limit: int, log: list) -> int:
    if x > limit:
        log.append("too big")
        raise OSError(errno.EMSGSIZE, "too big")
    if x < 0:
        raise ValueError("negative")
    return x * limit


def caught(x: int, limit: int, log: list) -> int:
    total = limit
    try:
        total = x + 1  # then risky may raise: the handler sees x + 1, what the body got to
        total = risky(total, limit, log) * 2
        total += 1
    except OSError as exc:
        log.append(exc.errno)
        total = -total
    else:
        log.append("ok")
    return total + limit


def nested(x: int, limit: int, log: list) -> int:
    try:
        try:
            return_value = risky(x, limit, log)
        except ValueError:
            log.append("inner")
            return_value = risky(-x, limit, log)  # may raise OSError for the outer handler
    except (OSError, KeyError):
        log.append("outer")
        return_value = 0
    return return_value


def nothing_can_raise(x: int, limit: int, log: list) -> int:
    try:
        width = limit * 2  # static: the body leaves no code, the handler is dead
    except ArithmeticError:
        width = 0
    return x + width


def with_finally(x: int, limit: int, log: list) -> int:
    try:
        return risky(x, limit, log)
    finally:
        log.append("finally")


def calls_finally(x: int, limit: int, log: list) -> int:
    return with_finally(x, limit, log) + 1


def scenario(entry: str) -> Scenario:
    here = Path(__file__)
    return Scenario(
        name=f"toy_{entry}", description="", entry=f"tests.test_spec_try:{entry}",
        binding_times={"x": "D", "limit": "S", "log": "S"}, objects={},
        unfold=frozenset({risky, caught, nested, nothing_can_raise, with_finally}),
        pure=frozenset(), observe=frozenset(), policies={}, source=here)


def outcome(function, *args) -> tuple:
    try:
        return ("returned", function(*args))
    except Exception as exc:  # noqa: BLE001 - the comparison is the point
        return ("raised", type(exc), exc.args)


def run_both(entry: str, limit: int, xs: list[int]) -> str:
    generic_log: list = []
    special_log: list = []
    spec = specialize(scenario(entry), {"limit": limit, "log": special_log})
    generic = globals()[entry]
    for x in xs:
        assert outcome(spec.function, x) == outcome(generic, x, limit, generic_log), x
        assert special_log == generic_log
    return spec.compiled.source


@settings(max_examples=60, deadline=None, derandomize=True)
@given(limit=st.integers(-3, 50), xs=st.lists(st.integers(-60, 60), min_size=1, max_size=8))
@pytest.mark.parametrize("entry", ["caught", "nested", "nothing_can_raise"])
def test_try_residuals_behave_as_the_generic_code(entry: str, limit: int, xs: list[int]) -> None:
    run_both(entry, limit, xs)


def test_the_handler_sees_what_the_body_had_assigned() -> None:
    source = run_both("caught", 10, [3, 11, 10, 9, -1, -2])
    tree = ast.parse(source)
    (statement,) = [n for n in ast.walk(tree) if isinstance(n, ast.Try)]
    assert [ast.unparse(h.type) for h in statement.handlers] == ["OSError"]
    assert statement.orelse, "the else clause stays an else clause (outside the handlers' reach)"
    # risky is inlined: its static parts are gone, its tests on x stay, inside the try body.
    assert "risky(" not in source and "> 10" in ast.unparse(statement.body)


def test_a_body_that_cannot_raise_loses_its_handlers() -> None:
    source = run_both("nothing_can_raise", 7, [0, 5])
    assert "try" not in source and "x + 14" in source


def test_try_finally_is_not_unfolded_but_stays_correct() -> None:
    spec = specialize(scenario("calls_finally"), {"limit": 4, "log": []})
    assert any("try-finally" in d.message for d in spec.diagnostics)
    source = run_both("calls_finally", 4, [1, 5, -2])
    assert "with_finally(" in source  # left as a call to the generic function
