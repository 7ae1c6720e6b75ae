"""How ``spec show`` prints what the evaluator did: the generic code coloured per
expression from the trace (trace.py), the residual with the generic lines each of
its lines came from, the assumptions in words, in the terminal or as one HTML page.
"""

from __future__ import annotations

import ast
import html
import linecache
import os
from typing import Any

from pystack.route import Route, RouteTable
from pystack.socket import Socket
from pystack.tokens.facts import Assumption

from .source import function_ast
from .trace import (
    SHOWN_BOTH,
    SHOWN_DEAD,
    SHOWN_DYNAMIC,
    SHOWN_REMOVED,
    SHOWN_STATIC,
    Position,
    Trace,
    position,
)

# What each colour means, in the order the legend gives them.
MEANING = {
    SHOWN_STATIC: "static: computed at specialization time",
    SHOWN_DYNAMIC: "dynamic: in the residual code",
    SHOWN_BOTH: "static in some inlinings or iterations, residual in others",
    SHOWN_REMOVED: "residualized, then taken apart (a tuple unpacked) or dropped by the clean-up as unused",
    SHOWN_DEAD: "never reached: a static test or short circuit skipped it",
}
TERMINAL = {
    SHOWN_STATIC: "\x1b[34m", SHOWN_DYNAMIC: "\x1b[1;31m", SHOWN_BOTH: "\x1b[35m",
    SHOWN_REMOVED: "\x1b[33m", SHOWN_DEAD: "\x1b[2;9m",
}
# The page's colours; tests/test_spec_show_html.py looks for the first two in a screenshot.
HTML_COLOURS = {
    SHOWN_STATIC: "#1f4fd8", SHOWN_DYNAMIC: "#d61f1f", SHOWN_BOTH: "#9b30c8",
    SHOWN_REMOVED: "#b8860b", SHOWN_DEAD: "#a0a0a0",
}
HTML_BACKGROUNDS = {SHOWN_STATIC: "#dbe6ff", SHOWN_DYNAMIC: "#ffd6d6"}
DIM, RESET = "\x1b[2m", "\x1b[0m"
# Which socket field each option sets, the other way round: the option that guards a field.
_OPTION_OF_FIELD = {
    "ttl": "IP_TTL", "tos": "IP_TOS", "pmtudisc": "IP_MTU_DISCOVER", "no_check": "SO_NO_CHECK",
    "broadcast": "SO_BROADCAST", "sndbuf": "SO_SNDBUF", "rcvbuf": "SO_RCVBUF", "adu": "SO_ADU",
    "reuseaddr": "SO_REUSEADDR", "nodelay": "TCP_NODELAY", "cork": "TCP_CORK", "user_mss": "TCP_MAXSEG",
    "mc_ttl": "IP_MULTICAST_TTL", "mc_if": "IP_MULTICAST_IF", "mc_loop": "IP_MULTICAST_LOOP",
    "keepalive": "SO_KEEPALIVE", "linger": "SO_LINGER", "user_timeout": "TCP_USER_TIMEOUT",
}
_SOCKET_EVENTS = ("connect", "bind", "shutdown", "close")
# What each guard policy does when its event comes (system.SpecializationSystem.on_event).
POLICY_MEANING = {
    "reject": "the application's call that would break it fails with EBUSY",
    "fallback": "the token runs the generic code from then on",
    "respecialize": "the next call specializes again for the new facts",
    "reinforce": "the code stays, its output steered to the new route's interface (if it cannot be, "
                 "the next call specializes again)",
}


class Painted:
    """One generic function's lines, each character with its colour (None: not coloured)."""

    def __init__(self, func: Any, trace: Trace):
        self.func = func
        self.file = func.__code__.co_filename
        fdef = function_ast(func)
        self.first = min([fdef.lineno] + [d.lineno for d in fdef.decorator_list])
        self.last = fdef.end_lineno
        self.lines = [linecache.getline(self.file, n).rstrip("\n") for n in range(self.first, self.last + 1)]
        self.colours: list[list[str | None]] = [[None] * len(line) for line in self.lines]
        spans: list[tuple[Position, str]] = []
        for stmt in _statements(fdef.body):  # what was never walked is dead
            where = position(func, stmt)
            if where not in trace.statements:
                spans.append((where, SHOWN_DEAD))
        targets = {id(sub) for node in ast.walk(fdef) if isinstance(getattr(node, "ctx", None), ast.Store | ast.Del)
                   for sub in ast.walk(node)}  # assignment targets: bound, not computed
        for node in ast.walk(fdef):
            if isinstance(node, ast.expr) and id(node) not in targets:
                where = position(func, node)
                shown = trace.shown(where)
                if shown is not None:
                    spans.append((where, shown))
                elif _inside_walked_statement(where, trace, self.file) and not _docstring(node, fdef):
                    spans.append((where, SHOWN_DEAD))  # not reached in a statement that was
        # Larger spans first: an expression's own colour wins over its enclosing one's.
        for where, shown in sorted(spans, key=lambda s: _extent(s[0]), reverse=True):
            self.paint(where, shown)

    def paint(self, where: Position, shown: str) -> None:
        _, first, col, last, end = where
        for line in range(first, last + 1):
            row = self.colours[line - self.first]
            start = col if line == first else _indent(self.lines[line - self.first])
            stop = end if line == last else len(row)
            for index in range(max(start, 0), min(stop, len(row))):
                if not self.lines[line - self.first][index].isspace() or line == first:
                    row[index] = shown

    def tag(self, index: int) -> str:
        """One line's colours as a short tag, for a terminal without colour."""
        shown = {c for c in self.colours[index] if c is not None}
        if not shown:
            return ""
        if shown == {SHOWN_DEAD}:
            return SHOWN_DEAD
        order = [SHOWN_STATIC, SHOWN_DYNAMIC, SHOWN_BOTH, SHOWN_REMOVED, SHOWN_DEAD]
        letters = "".join(dict.fromkeys("".join(c for c in order if c in shown)))
        return letters


def painted_functions(trace: Trace) -> list[Painted]:
    return [Painted(func, trace) for func in trace.functions]


def colour_source(painted: Painted, colour: bool) -> str:
    out = []
    for index, line in enumerate(painted.lines):
        number = painted.first + index
        if not colour:
            out.append(f"{number:5} {painted.tag(index):5} | {line}")
            continue
        text = "".join(f"{TERMINAL[state]}{run}{RESET}" if state else run
                       for state, run in _runs(line, painted.colours[index]))
        out.append(f"{DIM}{number:5}{RESET} | {text}")
    return "\n".join(out) + "\n"


def legend(colour: bool) -> str:
    if colour:
        return "".join(f"  {TERMINAL[k]}{k:2}{RESET} {v}\n" for k, v in MEANING.items())
    return "".join(f"  {k:2} {v}\n" for k, v in MEANING.items())


def residual_with_origins(source: str, trace: Trace) -> str:
    """The residual code, each line numbered and followed by the generic lines it came from."""
    lines = source.splitlines()
    width = max((len(line) for line in lines), default=0)
    out = []
    for number, line in enumerate(lines, start=1):
        origins = _short_origins(trace.generic_lines(number))
        suffix = f"  # <- {origins}" if origins else ""
        out.append(f"{number:4} | {line.ljust(width)}{suffix}".rstrip())
    return "\n".join(out) + "\n"


def _short_origins(pairs: list[tuple[str, int]]) -> str:
    by_file: dict[str, list[int]] = {}
    for file, line in pairs:
        by_file.setdefault(os.path.basename(file), []).append(line)
    return ", ".join(f"{name}:{_ranges(lines)}" for name, lines in by_file.items())


def _ranges(numbers: list[int]) -> str:
    numbers = sorted(set(numbers))
    parts, start = [], numbers[0]
    for prev, cur in zip(numbers, numbers[1:] + [None], strict=True):
        if cur != prev + 1 if cur is not None else True:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = cur
    return ",".join(parts)


def explain(assumption: Assumption, trace: Trace, namer: Any, policies: dict[str, str],
            declared: tuple[str, ...] | None = None) -> dict[str, Any]:
    """An assumption in words: the object, the field (or entry), the generic code that relied
    on it, and what guards it with which policy. ``declared``: a user scenario's own events,
    each of which concerns every object its code rests on (None: the stack's socket events)."""
    subject = assumption.subject
    name = namer(subject)
    kind = type(subject).__name__
    if assumption.kind == "field":
        fact = (f"the {kind} {name}: its field {assumption.field} is {_value(assumption.value, namer)} "
                "(folded into the code)")
    else:
        fact = (f"the {kind} {name}: its entry {assumption.field!r} is {_value(assumption.value, namer)} "
                "(its contents are declared invariant)")
    relied = [(os.path.basename(w[0]), w[1], _segment(w)) for w in trace.relied.get(id(assumption), [])]
    guards: list[tuple[str, str, list[str]]] = []  # (what guards it, how, the events named)
    if assumption.kind == "field":
        guards.append(("watching the field", "a write that changes it sends the next call through a check "
                                             "of every fact; broken, the token runs the generic code", []))
    by_policy: dict[str, list[str]] = {}
    for event in (_events(assumption) if declared is None else declared):
        by_policy.setdefault(policies.get(event, "fallback"), []).append(event)
    for policy, events in by_policy.items():
        option = _OPTION_OF_FIELD.get(assumption.field)
        named = [f"setsockopt({option})" if event == "setsockopt" and option else event for event in events]
        guards.append((f"the event{'s' if len(events) > 1 else ''} {', '.join(named)}",
                       f"policy {policy}: {POLICY_MEANING[policy]}", events))
    return {"fact": fact, "relied": relied, "guards": guards, "positions": trace.relied.get(id(assumption), [])}


def _events(assumption: Assumption) -> list[str]:
    """The announced events that concern this fact (system.SpecializationSystem.concerns)."""
    subject = assumption.subject
    if isinstance(subject, Route | RouteTable) or assumption.field in ("dst_cache", "dst_generation"):
        return ["route"]
    if isinstance(subject, list | dict) and not any(isinstance(v, Socket) for v in getattr(subject, "values",
                                                                                          lambda: ())()):
        return ["route"]
    events = list(_SOCKET_EVENTS)
    if assumption.field in _OPTION_OF_FIELD:
        events.insert(0, "setsockopt")
    return events


def explained_text(explanation: dict[str, Any]) -> str:
    lines = [f"  - {explanation['fact']}"]
    for file, line, text in explanation["relied"]:
        lines.append(f"      relied on at {file}:{line}: {text}")
    for label, what, _ in explanation["guards"]:
        lines.append(f"      guarded by {label}: {what}")
    return "\n".join(lines) + "\n"


def _value(value: Any, namer: Any) -> str:
    if isinstance(value, int | float | str | bytes | bool | type(None)):
        return repr(value)
    if isinstance(value, tuple) and all(isinstance(v, int | str | bytes | bool | type(None)) for v in value):
        return repr(value)
    return f"the {type(value).__name__} {namer(value)}"


def _segment(where: Position) -> str:
    file, first, col, last, end = where
    text = linecache.getline(file, first)
    if first == last:
        return text[col:end].strip()
    return text[col:].strip() + " ..."


def _statements(body: list[ast.stmt]) -> list[ast.stmt]:
    out = []
    for stmt in body:
        out.append(stmt)
        for name in ("body", "orelse", "finalbody"):
            inner = getattr(stmt, name, None)
            if isinstance(inner, list):
                out.extend(_statements(inner))
        for handler in getattr(stmt, "handlers", []):
            out.extend(_statements(handler.body))
    return out


def _inside_walked_statement(where: Position, trace: Trace, file: str) -> bool:
    """Is the expression part of a statement's own line(s) that was walked (a short-circuited operand)?"""
    for stmt in trace.statements:
        if stmt[0] == file and _contains(stmt, where):
            return True
    return False


def _contains(outer: Position, inner: Position) -> bool:
    return (outer[1], outer[2]) <= (inner[1], inner[2]) and (inner[3], inner[4]) <= (outer[3], outer[4])


def _extent(where: Position) -> tuple[int, int]:
    return (where[3] - where[1], (where[4] - where[2]) if where[1] == where[3] else 10_000)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _docstring(node: ast.expr, fdef: ast.FunctionDef) -> bool:
    first = fdef.body[0] if fdef.body else None
    return isinstance(first, ast.Expr) and first.value is node and isinstance(node, ast.Constant)


def page(title: str, painted: list[Painted], residual_source: str, trace: Trace,
         explanations: list[dict[str, Any]], policies: dict[str, str], diagnostics: list[str], figures: str) -> str:
    """One self-contained HTML page: the generic code coloured per expression beside the
    residual; a residual line (clicked, or named in the URL's fragment ``#r12``) lights the
    generic lines it came from; each assumption links to the code that relied on it."""
    esc = html.escape
    generic_rows = []
    for p in painted:
        key = _file_key(p.file)
        generic_rows.append(f'<div class="fn">{esc(p.func.__qualname__)} '
                            f'<span class="where">{esc(os.path.basename(p.file))}</span></div>')
        for index, line in enumerate(p.lines):
            number = p.first + index
            cells = "".join(f'<span class="c{state}">{esc(text)}</span>' if state else esc(text)
                            for state, text in _runs(line, p.colours[index]))
            generic_rows.append(f'<div class="g" id="g-{key}-{number}"><span class="n">{number}</span>'
                                f'{cells or "&nbsp;"}</div>')
    residual_rows = []
    for number, line in enumerate(residual_source.splitlines(), start=1):
        targets = " ".join(f"g-{_file_key(f)}-{n}" for f, n in trace.generic_lines(number))
        residual_rows.append(f'<div class="r" id="res-{number}" data-line="{number}" data-from="{targets}"><span class="n">{number}</span>'
                             f'{esc(line) or "&nbsp;"}</div>')
    items = []
    for number, ex in enumerate(explanations, start=1):
        links = " ".join(f'<a href="#g-{_file_key(w[0])}-{w[1]}" data-line="g-{_file_key(w[0])}-{w[1]}">'
                         f'{esc(os.path.basename(w[0]))}:{w[1]}</a> <code>{esc(_segment(w))}</code>'
                         for w in ex["positions"])
        guards = "; ".join(f"<b>{esc(label)}</b> ({' '.join(_event_link(e) for e in events) or 'on the data'}): "
                           f"{esc(what)}" for label, what, events in ex["guards"])
        items.append(f'<li id="a{number}">{esc(ex["fact"])}<br>relied on at {links or "(no generic line)"}'
                     f'<br>guarded by {guards}</li>')
    style = "".join(f".c{k}{{color:{v};{'background:' + HTML_BACKGROUNDS[k] + ';' if k in HTML_BACKGROUNDS else ''}}}"
                    for k, v in HTML_COLOURS.items())
    legend_html = " ".join(f'<span class="c{k}">{esc(k)}</span> {esc(v)};' for k, v in MEANING.items())
    diag = "".join(f"<li>{esc(d)}</li>" for d in diagnostics) or "<li>none</li>"
    events_html = "".join(f'<li id="ev-{esc(e)}"><b>{esc(e)}</b>: {esc(p)}, {esc(POLICY_MEANING[p])}</li>'
                          for e, p in policies.items())
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body{{font-family:sans-serif;margin:8px;background:#fff}}
.cols{{display:flex;gap:12px}} .col{{flex:1;min-width:0}}
.code{{font-family:monospace;font-size:12px;white-space:pre;overflow:auto;max-height:640px;border:1px solid #ccc}}
.n{{display:inline-block;width:3.5em;color:#999;text-align:right;margin-right:8px}}
.fn{{font-family:monospace;font-weight:bold;background:#eee;padding:2px}} .where{{color:#777;font-weight:normal}}
.r{{cursor:pointer}} .r:hover{{background:#f4f4d0}}
.lit{{background:#fff3a0 !important;outline:2px solid #e0b000}}
.sel{{background:#ffe680}}
{style}
</style></head><body>
<h2>{esc(title)}</h2>
<p>{legend_html}</p>
<div class="cols">
<div class="col"><h3>generic code, coloured per expression</h3><div class="code" id="generic">
{chr(10).join(generic_rows)}
</div></div>
<div class="col"><h3>residual code (click a line)</h3><div class="code" id="residual">
{chr(10).join(residual_rows)}
</div></div>
</div>
<h3>assumptions</h3><ol>{"".join(items)}</ol>
<h3>guard events and their policies</h3><ul>{events_html}</ul>
<h3>diagnostics</h3><ul>{diag}</ul>
<h3>figures</h3><pre>{esc(figures)}</pre>
<script>
function light(row) {{
  document.querySelectorAll('.lit').forEach(e => e.classList.remove('lit'));
  document.querySelectorAll('.sel').forEach(e => e.classList.remove('sel'));
  if (!row) return;
  row.classList.add('sel');
  let first = null;
  for (const id of (row.dataset.from || '').split(' ')) {{
    const g = document.getElementById(id);
    if (g) {{ g.classList.add('lit'); first = first || g; }}
  }}
  if (first) {{ const box = document.getElementById('generic');
    box.scrollTop = first.offsetTop - box.offsetTop - 40; }}
}}
document.querySelectorAll('.r').forEach(r => r.addEventListener('click', () => {{
  history.replaceState(null, '', '#r' + r.dataset.line); light(r); }}));
function fromHash() {{  // #r12 selects residual line 12 (no element has that id: the page stays put)
  const match = /^#r([0-9]+)$/.exec(location.hash);
  const r = match && document.getElementById('res-' + match[1]);
  if (r) {{ light(r); const box = document.getElementById('residual');
    box.scrollTop = r.offsetTop - box.offsetTop - 40; }}
}}
document.querySelectorAll('a[data-line]').forEach(a => a.addEventListener('click', () => {{
  document.querySelectorAll('.lit').forEach(e => e.classList.remove('lit'));
  const g = document.getElementById(a.dataset.line); if (g) g.classList.add('lit'); }}));
window.addEventListener('hashchange', fromHash); fromHash();
</script>
</body></html>
"""


def _runs(line: str, colours: list[str | None]) -> list[tuple[str | None, str]]:
    """A line cut where its colour changes: (colour, text) pairs."""
    runs: list[tuple[str | None, str]] = []
    for char, state in zip(line, colours, strict=True):
        if runs and runs[-1][0] == state:
            runs[-1] = (state, runs[-1][1] + char)
        else:
            runs.append((state, char))
    return runs


def _event_link(event: str) -> str:
    return f'<a href="#ev-{event}">{html.escape(event)}</a>'


def policies_text(policies: dict[str, str]) -> str:
    return "".join(f"  {event:11} {policy:12} {POLICY_MEANING[policy]}\n" for event, policy in policies.items())


def _file_key(file: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in os.path.basename(file).removesuffix(".py"))
