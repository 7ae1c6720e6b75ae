"""Counter names are one table: a misspelt name is refused, not silently a new counter."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pystack.counters import DROP_REASONS, MIB, Counters

PYSTACK = Path(__file__).resolve().parent.parent / "pystack"


def test_a_name_outside_the_table_is_refused() -> None:
    counters = Counters()
    with pytest.raises(KeyError, match="InDelivered"):
        counters.ip["InDelivered"] += 1
    with pytest.raises(KeyError, match="tcp.not_a_reason"):
        counters.drop("tcp", "not_a_reason")
    assert counters.snapshot() == {}


def test_every_name_in_the_table_is_charged_and_shown() -> None:
    counters = Counters()
    for title, names in MIB.items():
        for name in names:
            counters.groups[title][name] += 1
    for layer, reasons in DROP_REASONS.items():
        for reason in reasons:
            counters.drop(layer, reason)
    snap = counters.snapshot()
    assert {title: list(values) for title, values in snap.items() if title != "Drops"} == {
        title: sorted(names) for title, names in MIB.items()}
    assert counters.total_drops() == sum(len(reasons) for reasons in DROP_REASONS.values())
    text = counters.format()
    assert "    InDelivers: 1" in text and "    tcp.paws: 1" in text


def _literals(node: ast.expr) -> list[str]:
    """The string constants an index can take: itself, or both arms of a conditional."""
    if isinstance(node, ast.IfExp):
        return _literals(node.body) + _literals(node.orelse)
    return [node.value] if isinstance(node, ast.Constant) and isinstance(node.value, str) else []


def _literal_charges() -> set[tuple[str, str]]:
    """(group, name) for every counter the stack's source charges by a literal name."""
    found: set[tuple[str, str]] = set()
    for path in PYSTACK.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) \
                    and node.value.attr in ("ip", "icmp", "udp", "tcp"):
                for name in _literals(node.slice):
                    if name[:1].isupper():
                        found.add((node.value.attr, name))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("drop", "malformed") and len(node.args) == 2 \
                    and all(isinstance(arg, ast.Constant) for arg in node.args):
                found.add(("drops", f"{node.args[0].value}.{node.args[1].value}"))
    return found


def test_every_literal_name_the_stack_charges_is_in_the_table() -> None:
    """Read off the source, so a typo fails here before any packet reaches it."""
    counters = Counters()
    groups = {**{title.lower(): group for title, group in counters.groups.items()}, "drops": counters.drops}
    charges = _literal_charges()
    assert len(charges) > 60
    missing = sorted(f"{group}[{name!r}]" for group, name in charges if name not in groups[group])
    assert missing == []
