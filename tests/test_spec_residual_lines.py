"""Residual code is numbered as it is printed: a traceback through it, a debugger or a
profiler names the line that ``pystack spec show`` prints, and shows its text."""

from __future__ import annotations

import ast
import traceback

import pytest

from pystack.links.virtual import VirtualNetwork
from pystack.tokens.scenario import all_scenarios
from specializer import do_specialize_send, specialized_send
from specializer.show import build_world, world_defaults
from specializer.system import specialize


def header(stmt: ast.stmt) -> str:
    """The first line ast.unparse prints for a statement (its header, for a compound one)."""
    return ast.unparse(stmt).splitlines()[0]


@pytest.mark.parametrize("name", sorted(all_scenarios()))
def test_every_statement_is_on_the_line_the_residual_text_shows_it(name):
    scenario = all_scenarios()[name]
    _stack, statics = build_world(scenario, world_defaults(scenario))
    compiled = specialize(scenario, statics).compiled
    lines = compiled.source.splitlines()
    elifs = {id(s.orelse[0]) for s in ast.walk(compiled.tree)
             if isinstance(s, ast.If) and len(s.orelse) == 1 and isinstance(s.orelse[0], ast.If)}
    checked = 0
    for stmt in ast.walk(compiled.tree):
        if isinstance(stmt, ast.stmt) and stmt is not compiled.tree:
            printed = lines[stmt.lineno - 1].strip()
            assert printed == ("el" if id(stmt) in elifs else "") + header(stmt), (stmt.lineno, printed)
            checked += 1
        elif isinstance(stmt, ast.ExceptHandler):
            assert lines[stmt.lineno - 1].strip().startswith("except"), stmt.lineno
    assert checked > 10
    code = compiled.function.__code__
    located = [line for line, *_ in code.co_positions() if line is not None]
    assert located and max(located) <= len(lines) and min(located) >= 1


def test_a_traceback_through_residual_code_shows_the_residual_line():
    net = VirtualNetwork()
    stack = net.add_stack(seed=1)
    net.attach(stack, "eth0", "198.18.0.2", 24)
    fd = stack.socket()
    stack.connect(fd, ("198.18.0.1", 9))
    token = do_specialize_send(stack, fd)
    with pytest.raises(OSError) as caught:
        specialized_send(stack, token, b"x" * 70_000)  # EMSGSIZE, raised by the residual itself
    text = "".join(traceback.format_exception(caught.value))
    assert "specialized udp_send_connected" in text
    assert "raise oserror(errno.EMSGSIZE)" in text
