"""A user's module of ordinary Python, specialized through the internal API by
tests/test_spec_soundness.py: each function is a construct the partial evaluator
must either specialize exactly, keep generic, or refuse with a clear error."""

from __future__ import annotations

COUNTER = 0


def numbers(n: int):
    for i in range(n):
        yield i * i


def sums_a_generator(x: int, n: int) -> int:
    return x + sum(numbers(n))


def calls_a_generator(x: int, n: int) -> list:
    return [x, *numbers(n)]


def fills_a_table(x: int, table: list) -> list:
    for i in range(len(table)):
        table[i] = i + 1
    return [table[0], table[1], table[2]]


def appends_then_counts(x: int, table: list) -> int:
    table.append(x)
    return len(table)


def counts_then_appends(x: int, table: list) -> int:
    size = len(table)
    table.append(x)
    return size + x


def walrus(x: int, n: int) -> int:
    if (y := x + n) > 3:
        return y
    return -y


def deletes(x: int, n: int) -> int:
    y = x + n
    del y
    return x


def uses_global(x: int, n: int) -> int:
    global COUNTER
    COUNTER += n
    return x + COUNTER


def with_finally(x: int, n: int) -> int:
    try:
        return x // n
    finally:
        x += 1


def accumulates(x: int, n: int) -> list:
    acc = []
    for i in range(n):
        acc.append(x + i)
    return acc


TABLE = [0, 0, 0]


def fills_the_global_table(x: int, n: int) -> tuple:
    for i in range(n):
        TABLE[i] = x + i
    return tuple(TABLE)


def bump(n: int) -> None:
    global COUNTER
    COUNTER += n


def reads_a_global_a_callee_changes(x: int, n: int) -> int:
    bump(n)
    return x + COUNTER


def reads_after_del(x: int, n: int) -> int:
    y = x + n
    del y
    return y  # noqa: F821 - UnboundLocalError in the generic code: refused, not guessed


def walrus_in_a_comprehension(x: int, n: int) -> int:
    y = n
    _ = [(y := v) for v in range(x)]
    return y


def divides_by_a_static_zero(x: int, n: int) -> int:
    if x < 0:
        return 0
    return x + 10 // n
