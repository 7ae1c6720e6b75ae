"""One truth for binding times: ``spec show`` colours what the evaluator did.

For every scenario, in its own world and in contexts drawn by hypothesis: each
generic expression shown dynamic is carried by a node of the final residual tree
(found by walking the compiled tree, not through the trace's own summary), and the
residual line that node is on maps back to that expression's generic lines; nothing
the residual carries is shown static, dead or removed. And the disagreements the
old analysis (bta.py) had are gone.
"""

from __future__ import annotations

import ast
import linecache
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pystack.tokens.scenario import all_scenarios
from specializer import render
from specializer.show import build_world, world_defaults
from specializer.system import specialize
from specializer.trace import SHOWN_BOTH, SHOWN_DEAD, SHOWN_DYNAMIC, SHOWN_STATIC

SCENARIOS = sorted(all_scenarios())


def specialized(name: str, context: dict | None = None):
    scenario = all_scenarios()[name]
    _stack, statics = build_world(scenario, {**world_defaults(scenario), **(context or {})})
    entry = specialize(scenario, statics)
    entry.trace.settle(entry.compiled.tree)
    return entry


def check_one_truth(entry) -> int:
    trace = entry.trace
    carried: dict[tuple, list[int]] = {}  # generic position -> residual lines carrying it
    for stmt in ast.walk(entry.compiled.tree):
        if not isinstance(stmt, ast.stmt) or stmt is entry.compiled.tree:
            continue
        for node in render_header(stmt):
            for where in node.__dict__.get("_pe_from", ()):
                carried.setdefault(where, []).append((stmt.lineno, type(node) is ast.Name))
    checked = 0
    for where in trace.outcomes:
        shown = trace.shown(where)
        if shown in (SHOWN_DYNAMIC, SHOWN_BOTH):
            assert where in carried, f"shown dynamic but not in the residual: {_text(where)}"
            lines = {(where[0], n) for n in range(where[1], where[3] + 1)}
            # Somewhere it is more than a reference to a value computed elsewhere, its
            # residual line maps back to the expression's own generic line(s).
            own = [line for line, is_name in carried[where] if not is_name]
            if own:
                assert any(lines & set(trace.generic_lines(line)) for line in own), (
                    f"{_text(where)} is on residual line(s) {own}, which map elsewhere")
            checked += 1
    for where in carried:
        assert trace.shown(where) in (SHOWN_DYNAMIC, SHOWN_BOTH), (
            f"in the residual but shown {trace.shown(where)}: {_text(where)}")
    return checked


def render_header(stmt: ast.stmt) -> list[ast.AST]:
    nested = {id(s) for name in ("body", "orelse", "finalbody", "handlers")
              for s in getattr(stmt, name, []) or []}
    out, todo = [], [stmt]
    while todo:
        node = todo.pop()
        out.append(node)
        todo.extend(child for child in ast.iter_child_nodes(node) if id(child) not in nested)
    return out


def _text(where) -> str:
    file, line, col, end_line, end = where
    text = linecache.getline(file, line)
    return f"{os.path.basename(file)}:{line} {text[col:end] if line == end_line else text[col:].strip()!r}"


@pytest.mark.parametrize("name", SCENARIOS)
def test_what_is_shown_dynamic_is_in_the_residual_and_nothing_else_is(name):
    assert check_one_truth(specialized(name)) > 10


UDP_CONTEXTS = st.fixed_dictionaries({}, optional={
    "ttl": st.integers(1, 255), "tos": st.integers(0, 255), "no_check": st.integers(0, 1),
    "mtu": st.sampled_from([576, 1280, 1500, 9000]), "pmtudisc": st.integers(0, 3),
    "broadcast": st.integers(0, 1), "adu": st.sampled_from([1, 100, 1472, 4000, 8000]),
})
TCP_CONTEXTS = st.fixed_dictionaries({}, optional={
    "nodelay": st.integers(0, 1), "maxseg": st.sampled_from([536, 1000, 1460]),
    "sack": st.integers(0, 1), "timestamps": st.integers(0, 1), "mtu": st.sampled_from([576, 1500, 9000]),
})


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(SCENARIOS), data=st.data())
def test_one_truth_in_drawn_contexts(name, data):
    context = data.draw(TCP_CONTEXTS if name.startswith("tcp") else UDP_CONTEXTS)
    if name == "udp_send_adu":
        context.setdefault("adu", 1000)
    elif name != "udp_send_adu":
        context.pop("adu", None)
    check_one_truth(specialized(name, context))


def shown_at(entry, func_name: str, text: str) -> set[str]:
    """The colours of the generic expression ``text`` in the function ``func_name``."""
    found = set()
    for func in entry.trace.functions:
        if func.__name__ != func_name:
            continue
        painted = render.Painted(func, entry.trace)
        for index, line in enumerate(painted.lines):
            col = line.find(text)
            if col >= 0:
                found |= {c for c in painted.colours[index][col:col + len(text)] if c}
    assert found, f"{text!r} not in {func_name}"
    return found


def test_the_old_disagreements_are_gone():
    entry = specialized("udp_send_connected")  # no SO_ADU: sock.adu is 0
    # bta.py showed ``len(data) != sock.adu`` dynamic; the evaluator never computes it.
    assert shown_at(entry, "udp_sendmsg", "len(data) != sock.adu") == {SHOWN_DEAD}
    assert shown_at(entry, "udp_sendmsg", "sock.adu and") >= {SHOWN_STATIC}
    # The branch on the address of a send on a connected socket: its test is static, its body dead.
    assert shown_at(entry, "udp_sendmsg", "address is not None") == {SHOWN_STATIC}
    assert shown_at(entry, "udp_sendmsg", "daddr, dport = address") == {SHOWN_DEAD}
    # Docstrings are not coloured.
    painted = render.Painted(entry.trace.functions and next(iter(entry.trace.functions)), entry.trace)
    for index, line in enumerate(painted.lines):
        if '"""' in line:
            assert not any(painted.colours[index]), line


def test_a_statement_over_several_lines_is_coloured_on_each_line():
    entry = specialized("tcp_send")
    for func in entry.trace.functions:
        fdef_lines = render.Painted(func, entry.trace)
        source = "\n".join(fdef_lines.lines)
        tree = ast.parse(_dedented(source))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and node.end_lineno > node.lineno + 1:
                inner = range(node.lineno, node.end_lineno)  # relative to the function's first line
                if all(any(fdef_lines.colours[i]) for i in inner):
                    return
    pytest.fail("no call over several lines is coloured on each of its lines")


def _dedented(source: str) -> str:
    import textwrap

    return textwrap.dedent(source)


def test_the_terminal_view_maps_each_residual_line_to_its_generic_lines():
    from specializer.show import show

    text = show("udp_send_connected", [], colour=False)
    residual = text.split("-- residual code")[1].split("-- frozen references")[0]
    mapped = [line for line in residual.splitlines() if "# <- " in line]
    assert len(mapped) > 20
    import pystack.udp

    emsgsize = next(n for n, source in enumerate(open(pystack.udp.__file__, encoding="utf-8"), start=1)
                    if "raise oserror(errno.EMSGSIZE)" in source)
    assert any("raise oserror(" in line and f"udp.py:{emsgsize}" in line for line in mapped)
    assert "bta" not in text


def test_assumptions_are_explained_with_object_field_line_event_and_policy():
    from specializer.show import show

    text = show("udp_send_connected", ["ttl=7"], colour=False)
    assumptions = text.split("-- assumptions")[1].split("-- figures")[0]
    ttl = assumptions.split("- the Socket sock: its field ttl is 7")[1].split("\n  - ")[0]
    import pystack.udp

    line = next(n for n, text in enumerate(open(pystack.udp.__file__, encoding="utf-8"), start=1)
                if "ttl = sock.ttl if" in text)
    assert f"relied on at udp.py:{line}: sock.ttl" in ttl  # the generic line that folded it
    assert "setsockopt(IP_TTL): policy reject: the application's call" in ttl  # the scenario's policy, said
    assert "watching the field" in ttl
    assert "the RouteTable stack.routes: its field generation is" in assumptions
    assert "the event route: policy reinforce" in assumptions
    assert "dict[3] is" not in assumptions and "== RouteTable" not in assumptions


def test_the_residual_names_the_constants_the_generic_code_named():
    udp = specialized("udp_send_connected").compiled.source
    assert "raise oserror(errno.EMSGSIZE)" in udp and "oserror(90)" not in udp
    tcp = specialized("tcp_send").compiled.source
    assert "tcb.state in (SYN_SENT, SYN_RECEIVED)" in tcp and "raise oserror(errno.EPIPE)" in tcp
