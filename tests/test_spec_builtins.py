"""The partial evaluator on the builtins it rewrites: ``min``/``max`` of two or more
operands become comparisons, ``struct.pack`` with a static format a precompiled
``Struct.pack``, ``bytes()`` of what is already bytes disappears, and the length of
bytes asked for twice is taken once.

The toy functions below are the generic code, specialized with ``limit`` static and
``x``/``y`` dynamic. For every input, the residual must return the very value the generic
code returns (its type, and which of two equal operands: ``min(0, -0.0)`` is ``0``, a NaN
stays where it was), raise what it raises, and evaluate its operands once, in order.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from pystack.tokens.scenario import Scenario
from specializer.system import specialize


def traced(value: object, log: list) -> object:
    log.append(value)
    return value


def counted(value: object, log: list) -> object:
    """Not unfolded: a residual call with an effect, which must still run once."""
    log.append(("counted", value))
    return value


def clamps(x: object, y: object, limit: int, log: list) -> tuple:
    low = min(traced(x, log), limit)
    high = max(limit, traced(y, log))
    chain = min(y, x, limit), max(limit, x, counted(y, log))
    return low, high, min(x, y), max(x, y), max(counted(x, log), limit), *chain


def packs(x: int, y: int, limit: int, log: list) -> bytes:
    header = struct.pack("!HI", x, y)
    return bytes(header) + bytes(struct.pack("!B", limit)) + struct.pack("!H", x)


def lengths(x: bytes, y: int, limit: int, log: list) -> tuple:
    data = bytes(x)
    header = struct.pack("!H", limit & 0xFFFF) + data
    grown = bytearray(data)  # not bytes: its length changes, it must be asked again
    before = len(grown)
    grown.append(y & 0xFF)
    return len(data), len(header) + len(data), len(header), before, len(grown)


def scenario(entry: str) -> Scenario:
    return Scenario(
        name=f"toy_{entry}", description="", entry=f"tests.test_spec_builtins:{entry}",
        binding_times={"x": "D", "y": "D", "limit": "S", "log": "S"}, objects={},
        unfold=frozenset({clamps, packs, traced, lengths}), pure=frozenset(), observe=frozenset(),
        policies={}, source=Path(__file__))


def outcome(function, *args) -> tuple:
    """What a call did, precise enough to tell 0 from 0.0 and -0.0, and NaN from NaN."""
    try:
        result = function(*args)
    except Exception as exc:  # noqa: BLE001 - the comparison is the point
        return ("raised", type(exc))
    values = result if isinstance(result, tuple) else (result,)
    return ("returned", [(type(v).__name__, repr(v), math.copysign(1, v) if isinstance(v, float) else 0)
                         for v in values])


def run_both(entry: str, limit: int, pairs: list[tuple]) -> str:
    generic_log: list = []
    special_log: list = []
    spec = specialize(scenario(entry), {"limit": limit, "log": special_log})
    generic = globals()[entry]
    for x, y in pairs:
        assert outcome(spec.function, x, y) == outcome(generic, x, y, limit, generic_log), (x, y)
        assert [repr(v) for v in special_log] == [repr(v) for v in generic_log]
    return spec.compiled.source


numbers = st.one_of(st.integers(-5, 5), st.floats(-5, 5), st.sampled_from([0, 0.0, -0.0, math.nan, True, "a"]))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(limit=st.integers(-3, 3), pairs=st.lists(st.tuples(numbers, numbers), min_size=1, max_size=6))
def test_min_and_max_of_two_operands_are_comparisons_that_return_what_the_builtins_return(limit, pairs):
    source = run_both("clamps", limit, pairs)
    assert "min(" not in source and "max(" not in source


@settings(max_examples=60, deadline=None, derandomize=True)
@given(limit=st.integers(-1, 256), pairs=st.lists(st.tuples(st.integers(-2, 70000), st.integers(-2, 2**32)),
                                                  min_size=1, max_size=6))
def test_static_formats_are_parsed_once_and_bytes_of_bytes_is_gone(limit, pairs):
    source = run_both("packs", limit, pairs)
    assert "struct" not in source and "bytes(" not in source
    assert "pack_HI(" in source and "pack_H(" in source
    # a static pack is computed now; one that fails stays a call, to fail at run time
    assert ("pack_B(" in source) == (not 0 <= limit <= 255)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(limit=st.integers(0, 70000), pairs=st.lists(st.tuples(st.binary(max_size=40), st.integers(0, 300)),
                                                   min_size=1, max_size=5))
def test_the_length_of_bytes_is_taken_once_and_of_a_bytearray_each_time(limit, pairs):
    source = run_both("lengths", limit, pairs)
    assert source.count("len(data)") == 1 and source.count("len(header)") == 1
    assert source.count("len(grown)") == 2
