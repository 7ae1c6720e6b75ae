"""``pystack spec list`` and ``pystack spec show``: what the specializer does to real code.

``show`` builds a small world (a stack on a virtual network, an interface,
a socket set up for the scenario and the given context, connected for TCP
to a peer stack that plays the handshake), specializes, then prints
(render.py) the generic source coloured per expression by what the
evaluator did (trace.py), the diagnostics, the residual source with the
generic lines each line came from, the assumptions in words with the
events that guard them, and figures comparing the generic code reachable
from the entry with the residual; optionally as one HTML page too.

With ``--module PKG.MOD`` the scenario is one declared beside a user's
module: the world is what the declaration's world hook builds for the
context, and the figures look at that module's package.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

from pystack.errors import oserror
from pystack.links.virtual import VirtualNetwork
from pystack.socket import (
    IP_MTU_DISCOVER,
    IP_TOS,
    IP_TTL,
    IPPROTO_IP,
    IPPROTO_TCP,
    SO_ADU,
    SO_BROADCAST,
    SO_NO_CHECK,
    SO_SNDBUF,
    SOCK_DGRAM,
    SOCK_STREAM,
    SOL_SOCKET,
)
from pystack.stack import Stack
from pystack.tcp import api as tcp_api
from pystack.tokens.scenario import DeclarationError, Scenario, all_scenarios

from . import render
from .pe import SpecializationError
from .residual import (
    OTHER_TRANSPORT,
    code_size,
    out_of_line_functions,
    reachable_functions,
    residual_size,
)
from .system import specialize
from .user import build_statics, check_statics, scenario_of, scenarios

ME, PEER = "198.18.0.2", "198.18.0.1"
TCP_PORT = 80
SOCKET_OPTIONS = {
    "ttl": (IPPROTO_IP, IP_TTL),
    "tos": (IPPROTO_IP, IP_TOS),
    "pmtudisc": (IPPROTO_IP, IP_MTU_DISCOVER),
    "no_check": (SOL_SOCKET, SO_NO_CHECK),
    "broadcast": (SOL_SOCKET, SO_BROADCAST),
    "sndbuf": (SOL_SOCKET, SO_SNDBUF),
    "nodelay": (IPPROTO_TCP, tcp_api.TCP_NODELAY),
    "maxseg": (IPPROTO_TCP, tcp_api.TCP_MAXSEG),
    "adu": (SOL_SOCKET, SO_ADU),
}
WORLD_KEYS = {"mtu", "address", "flags", "sack", "timestamps"}



class UsageError(Exception):
    pass


def list_scenarios(module: str | None = None) -> str:
    try:
        found = all_scenarios() if module is None else scenarios(module)
    except DeclarationError as bad:
        raise UsageError(str(bad)) from None
    lines = []
    for name, scenario in sorted(found.items()):
        lines.append(f"{name:22} {scenario.entry:34} {scenario.description}")
    return "\n".join(lines)


def parse_context(pairs: Iterable[str]) -> dict[str, Any]:
    context: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--context wants key=value, got {pair!r}")
        if key not in SOCKET_OPTIONS and key not in WORLD_KEYS:
            known = ", ".join(sorted(SOCKET_OPTIONS.keys() | WORLD_KEYS))
            raise UsageError(f"unknown context key {key!r} (known: {known})")
        if key == "address":
            host, _, port = text.rpartition(":")
            if not host or not port.isdigit() or int(port) > 0xFFFF:
                raise UsageError(f"address wants HOST:PORT with a port of 0 to 65535, got {text!r}")
            context[key] = (host, int(port))
            continue
        try:
            context[key] = int(text, 0)
        except ValueError:
            raise UsageError(f"{key} wants an integer, got {text!r}") from None
    return context


def world_defaults(scenario: Scenario) -> dict[str, Any]:
    """The scenario's own context (its TOML ``context``) for the keys that shape the world."""
    defaults = {key: value for key, value in scenario.context.items() if key in SOCKET_OPTIONS or key in WORLD_KEYS}
    if "address" in defaults:
        defaults["address"] = tuple(defaults["address"])
    return defaults


def build_world(scenario: Scenario, context: dict[str, Any]) -> tuple[Stack, dict[str, Any]]:
    """A stack with one interface and a socket ready for the scenario; returns the statics."""
    from pystack.tcp.tcb import TcpConfig

    config = TcpConfig(sack=bool(context.get("sack", 1)), timestamps=bool(context.get("timestamps", 1)))
    mtu = context.get("mtu", 1500)
    net = VirtualNetwork()
    stack = net.add_stack(seed=1, tcp_config=config)
    port = net.attach(stack, "eth0", ME, 24, mtu=mtu)
    stack.add_route("0.0.0.0", 0, "eth0", gateway=PEER)
    stream = scenario.name.startswith("tcp")
    fd = stack.socket(type=SOCK_STREAM if stream else SOCK_DGRAM)
    for key, (level, option) in SOCKET_OPTIONS.items():
        if key in context:
            try:
                stack.setsockopt(fd, level, option, context[key])
            except OSError as refused:  # the stack's own answer to a bad value, said as one line
                raise UsageError(f"{key}={context[key]}: the socket refuses it ({refused.strerror})") from None
    statics: dict[str, Any] = {"self": stack, "fd": fd, "flags": context.get("flags", 0)}
    if stream:
        # A peer stack on the link plays the handshake, then leaves: the residual code freezes
        # the interface's sink, and the figures count the stack's code, not the wire's.
        peer = net.add_stack(seed=99, tcp_config=config)
        net.link(port, net.attach(peer, "eth0", PEER, 24, mtu=mtu, direction="peer"))
        listener = peer.socket(type=SOCK_STREAM)
        peer.bind(listener, ("0.0.0.0", TCP_PORT))
        peer.listen(listener, 1)
        net.establish(stack, fd, (PEER, TCP_PORT), peer, listener)
        net.unlink(port)
        if "tcb" in scenario.binding_times:  # tcp_output: the connection, not the fd
            statics = {"stack": stack, "tcb": stack.sockfd_lookup(fd).tcb}
    elif scenario.name == "udp_sendto_fixed":
        statics["address"] = context.get("address", (PEER, 9))
        stack.bind(fd, ("0.0.0.0", 0))
    else:
        stack.connect(fd, context.get("address", (PEER, 9)))
    for name, bt in scenario.binding_times.items():
        if bt == "S" and name not in statics:
            statics[name] = scenario.context.get(name, _default(scenario, name))
    return stack, statics


def _default(scenario: Scenario, name: str) -> Any:
    import inspect

    param = inspect.signature(scenario.entry_function()).parameters[name]
    if param.default is inspect.Parameter.empty:
        raise oserror(22, f"scenario {scenario.name} needs a value for {name}")
    return param.default


def parse_user_context(pairs: Iterable[str]) -> dict[str, Any]:
    """``key=value`` pairs for a user scenario's world hook: integers where they read as
    such (``0x10`` too), text otherwise; the hook says which keys and values it takes."""
    context: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"--context wants key=value, got {pair!r}")
        try:
            context[key] = int(text, 0)
        except ValueError:
            context[key] = text
    return context


def user_world(module: str, name: str, pairs: Iterable[str]) -> tuple[Scenario, dict[str, Any]]:
    """A user scenario and the statics its declaration's world hook builds for the context."""
    try:
        scenario = scenario_of(module, name)
    except DeclarationError as bad:
        raise UsageError(str(bad)) from None
    context = {**scenario.context, **parse_user_context(pairs)}
    try:
        return scenario, check_statics(scenario, build_statics(scenario, context))
    except (DeclarationError, ValueError, TypeError) as refused:  # the hook's own answer to a bad context
        raise UsageError(f"the context makes no world for {name}: {refused}") from None


def stack_world(name: str, pairs: Iterable[str]) -> tuple[Scenario, dict[str, Any]]:
    """One of pystack's scenarios and the statics of a stack built for the context."""
    found = all_scenarios()
    if name not in found:
        raise UsageError(f"no scenario {name!r}; `pystack spec list` lists them")
    scenario = found[name]
    context = {**world_defaults(scenario), **parse_context(pairs)}
    try:
        return scenario, build_world(scenario, context)[1]
    except (OSError, ValueError) as refused:  # an interface or address the stack will not take
        raise UsageError(f"the context makes no world for {name}: {refused}") from None


def show(name: str, pairs: Iterable[str], colour: bool, module: str | None = None,
         html_file: str | None = None) -> str:
    """The terminal view; with ``html_file``, the same view also written as one HTML page."""
    scenario, statics = stack_world(name, pairs) if module is None else user_world(module, name, pairs)
    try:
        entry = specialize(scenario, statics)
    except SpecializationError as why:  # a user's code the evaluator refuses: the line is in the message
        raise UsageError(str(why)) from None
    trace = entry.trace
    trace.settle(entry.compiled.tree)
    painted = render.painted_functions(trace)
    names = {id(v): k for k, v in entry.compiled.constants.items()}
    for key, value in statics.items():
        names.setdefault(id(value), key)
    for assumption in entry.assumptions:  # an object read from a field is named by that field
        if assumption.kind == "field" and id(assumption.subject) in names:
            names.setdefault(id(assumption.value), f"{names[id(assumption.subject)]}.{assumption.field}")

    def namer(value: Any) -> str:
        return names.get(id(value)) or type(value).__name__

    declared = None if module is None else tuple(scenario.events)
    explanations = [render.explain(a, trace, namer, scenario.policies, declared) for a in entry.assumptions]
    diagnostics = [f"{d.where:16} {d.kind:22} {d.message}" for d in entry.diagnostics]
    figures = figures_table(scenario, entry)
    out = io.StringIO()
    write = out.write
    title = f"scenario {scenario.name}: {scenario.description}"
    write(f"{title}\n{'=' * min(len(title), 100)}\n")
    write(f"declared in {scenario.source.name}; entry {scenario.entry}\n")
    bts = ", ".join(f"{k}={v}" for k, v in scenario.binding_times.items())
    write(f"binding times: {bts}\ncontext: {_describe_context(statics)}\n\n")

    write("-- generic code, coloured per expression by what the evaluator did"
          + ("" if colour else " (tags per line)") + "\n")
    write(render.legend(colour))
    for p in painted:
        write(f"\n# {p.func.__qualname__}\n")
        write(render.colour_source(p, colour))
    write("\n-- diagnostics\n")
    write("".join(f"  {d}\n" for d in diagnostics) or "  none\n")
    write("\n-- residual code (each line: the generic lines it came from)\n")
    write(render.residual_with_origins(entry.compiled.source, trace))
    write("\n-- frozen references (closure constants)\n")
    for const_name, value in entry.compiled.constants.items():
        write(f"  {const_name:22} {_short(value)}\n")
    write("\n-- assumptions: what the residual code relies on, who relied on it, what guards it\n")
    for explanation in explanations:
        write(render.explained_text(explanation))
    write("\n-- guard events of this scenario and their policies\n")
    write(render.policies_text(scenario.policies))
    write("\n-- figures\n")
    write(figures)
    if html_file is not None:
        page = render.page(title, painted, entry.compiled.source, trace, explanations, scenario.policies,
                           diagnostics, figures)
        with open(html_file, "w", encoding="utf-8") as target:
            target.write(page)
    return out.getvalue()


def show_c(name: str, pairs: Iterable[str], module: str | None = None) -> str:
    """The scenario's residual translated to C (cbackend), the Python shell that drives it,
    and what stays in Python; a UsageError saying why when no path of it can be C."""
    from . import cbackend

    scenario, statics = stack_world(name, pairs) if module is None else user_world(module, name, pairs)
    try:
        compiled = specialize(scenario, statics).compiled
        program = cbackend.translate(compiled.tree, compiled.constants)
    except (SpecializationError, cbackend.CannotTranslate) as why:
        raise UsageError(f"{name} cannot be translated to C: {why}") from None
    title = f"scenario {scenario.name} in C: {scenario.description}"
    lines = [title, "=" * min(len(title), 100), f"context: {_describe_context(statics)}", "",
             "-- the C (the helpers cb_* are in specializer/cbackend/runtime.py)", program.source, "",
             "-- the Python shell: reads the fields, calls the C, does the effects of its path in order",
             cbackend.shell_source(program).rstrip(), "",
             f"-- {len(program.paths)} path(s) in C; back to Python (the whole call runs the Python residual):"]
    lines += [f"  {reason}" for reason in program.exits] or ["  nothing"]
    return "\n".join(lines) + "\n"


def figures_table(scenario: Scenario, entry: Any) -> str:
    reachable = reachable_functions(scenario.entry_function(), exclude=OTHER_TRANSPORT.get(scenario.protocol, ()),
                                    package=scenario.package)
    walked = list(entry.stats.functions)
    generic = code_size(reachable)
    unfolded = code_size(walked)
    residual = residual_size(entry.compiled)
    rows = [
        ("", "reachable generic", "unfolded generic", "residual", "reachable/residual"),
        ("functions", len(reachable), len(walked), 1, ""),
    ]
    for key, label in (("lines", "source lines"), ("ast_nodes", "AST nodes"), ("bytecode_bytes", "bytecode bytes")):
        ratio = generic[key] / residual[key] if residual[key] else 0
        rows.append((label, generic[key], unfolded[key], residual[key], f"{ratio:.1f}x"))
    widths = [max(len(str(row[i])) for row in rows) for i in range(5)]
    text = "".join("  " + "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in
                                     enumerate(zip(row, widths, strict=True))) + "\n" for row in rows)
    called, reached = out_of_line_functions(entry.compiled, scenario.package)
    if called:
        outside = code_size(reached)["bytecode_bytes"]
        both = residual["bytecode_bytes"] + outside
        names = ", ".join(sorted(f.__qualname__ for f in called))
        text += (f"  out of line: the residual still calls {len(called)} generic function(s) ({names}), "
                 f"{len(reached)} with what they reach: {outside} bytecode bytes; residual and out-of-line "
                 f"code together {both} bytes, {generic['bytecode_bytes'] / both:.1f}x smaller than the "
                 "reachable generic code\n")
    stats = entry.stats
    text += (f"  branches removed {stats.branches_removed}, calls inlined {stats.calls_inlined}, "
             f"loops unrolled {stats.loops_unrolled}, static field reads {stats.static_reads}, "
             f"assumptions {len(entry.assumptions)}\n")
    text += f"  specialization took {entry.latency * 1000:.1f} ms\n"
    return text


def _describe_context(statics: dict[str, Any]) -> str:
    parts = []
    for key, value in statics.items():
        parts.append(f"{key}={_short(value)}")
    return ", ".join(parts)


def _short(value: Any) -> str:
    if isinstance(value, int | str | bytes | tuple | type(None) | float):
        return repr(value)
    text = getattr(value, "__qualname__", None) or type(value).__name__
    return f"<{text}>"
