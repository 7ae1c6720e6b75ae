"""memwalk (thesis 6.2.1-6.2.2): the stages, the scheduler and the memory of an event-driven server.

Reads the server's source (AST), never runs it:

1. The **Stage Call Graph**: a node per function, *call edges* for calls and
   *event edges* for the stage argument of every ``QueueStage``-marked
   function (``@stingy_interface("QueueStage", req="T", stage="S")``), whose
   target may be a function held in a variable or a table: an alias analysis
   collapses it into the set of functions it may be.
2. **Stages**: the call-connected components entered by an event edge. A
   function reached both by an event edge and by a call is duplicated: its
   event-entered copy starts a stage, its called copy belongs to the caller's.
   The **scheduler** is what the ``Scheduler``-marked function reaches by calls.
3. **Objects**: one per ``Malloc`` site (its ``Site`` constant, the size read
   from the ``Site(...)`` definition, or a ``stingy_size`` annotation when it
   is dynamic); ``Free`` calls are matched to sites through the variable or
   field the object was stored in. A forward liveness over the stage graph
   gives the objects live in each stage; objects live at a terminal stage are
   global (*final* below a size threshold, *temporary* above); objects that are
   never live together may share a region (a colouring of the dependency graph).
4. **Cycles** in the stage graph and **recursion** in the call graph (Tarjan's
   strongly connected components): an object allocated in a cycle and still
   live when the cycle comes back to its allocation has an unbounded count
   per task unless annotated with ``stingy_count``.
5. **Stack** estimates per stage: the deepest call path of frames (locals and
   arguments at 8 bytes each, plus the call's own cost).
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx

WORD = 8
CALL_COST = 32  # return address, saved registers, the frame's bookkeeping: a C call's price
GLOBAL_THRESHOLD = 4096  # a global object at most this big is final (kept in the cache)


class MemwalkError(ValueError):
    """The program does not follow the interface memwalk reads (the message says where)."""


@dataclass
class Function:
    name: str  # module.qualname
    module: str
    node: ast.FunctionDef
    path: Path
    interface: tuple[str, dict[str, str]] | None = None  # (kind, roles) from @stingy_interface

    @property
    def short(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    def role_position(self, role: str) -> int | None:
        """The positional index of the parameter playing ``role`` (``self`` not counted)."""
        if self.interface is None:
            return None
        params = [a.arg for a in self.node.args.args]
        if params and params[0] in ("self", "cls"):
            params = params[1:]
        for param, given in self.interface[1].items():
            if given == role and param in params:
                return params.index(param)
        return None


@dataclass
class SiteInfo:
    """One allocation site: the Site constant the program allocates from."""

    name: str  # the constant's name in the source (RECV_BUFFER)
    label: str  # the Site's own name ("recv_buffer")
    size: int | None  # None: dynamic, known only from a stingy_size annotation
    where: str  # module:line of the Site definition


@dataclass
class Allocation:
    site: SiteInfo
    function: str
    line: int
    stored_in: str | None  # "var:buf" or "attr:recv_buf"
    size_estimate: int | None = None  # stingy_size
    count: int | None = None  # stingy_count


@dataclass
class Release:
    function: str
    line: int
    sites: set[str]  # site constant names this Free may release


@dataclass
class Stage:
    entry: str
    functions: set[str]
    stack: int  # estimated bytes
    root: bool = False  # queues stages without being queued itself (the server's start)
    successors: set[str] = field(default_factory=set)
    allocates: set[str] = field(default_factory=set)
    frees: set[str] = field(default_factory=set)
    live_in: set[str] = field(default_factory=set)
    live_out: set[str] = field(default_factory=set)


@dataclass
class ObjectInfo:
    site: SiteInfo
    size: int | None
    count: int | None  # per task: 1, an annotation, or None (unbounded: allocated in a cycle)
    allocated_in: set[str]
    freed_in: set[str]
    live_in: set[str]
    kind: str  # "per-task", "global-final", "global-temporary", "unmanaged"
    region: int = -1


@dataclass
class Report:
    functions: dict[str, Function]
    graph: nx.MultiDiGraph  # the SCG: edges carry kind="call" or "event"
    stages: dict[str, Stage]
    scheduler: set[str]
    scheduler_stack: int
    objects: dict[str, ObjectInfo]
    stage_cycles: list[list[str]]
    recursion: list[list[str]]
    unmatched_frees: list[Release]
    notes: list[str]
    allocations: list[Allocation] = field(default_factory=list)  # every Malloc site, where it is

    def stage_graph(self) -> nx.DiGraph:
        graph = nx.DiGraph()
        for name, stage in self.stages.items():
            graph.add_node(name)
            for succ in stage.successors:
                graph.add_edge(name, succ)
        return graph


# ---------------------------------------------------------------- reading the program


def module_files(targets: Iterable[str], exclude: Iterable[str] = ()) -> list[tuple[str, Path]]:
    """(module name, path) for each target: a package or module name, or a .py path; modules
    whose name starts with one of ``exclude`` are left out (the socket layer, the driver)."""
    found: list[tuple[str, Path]] = []
    for target in targets:
        path = Path(target)
        if path.suffix == ".py" and path.exists():
            found.append((path.stem, path))
            continue
        try:
            spec = importlib.util.find_spec(target)
        except (ImportError, ValueError):
            spec = None
        if spec is None or spec.origin is None:
            raise MemwalkError(f"no module or file {target!r}")
        if spec.submodule_search_locations:
            for location in spec.submodule_search_locations:
                for file in sorted(Path(location).rglob("*.py")):
                    relative = file.relative_to(location).with_suffix("")
                    parts = [p for p in relative.parts if p != "__init__"]
                    found.append((".".join([target, *parts]), file))
        else:
            found.append((target, Path(spec.origin)))
    skip = tuple(exclude)
    return [(module, path) for module, path in found if not (skip and module.startswith(skip))]


class _Program:
    """Every function of the modules, with the module-level names each module can see."""

    def __init__(self, files: list[tuple[str, Path]]):
        self.functions: dict[str, Function] = {}
        self.scopes: dict[str, dict[str, str]] = {}  # module -> local name -> function or "module:M"
        self.sites: dict[tuple[str, str], SiteInfo] = {}  # (module, constant) -> site
        self.trees: dict[str, ast.Module] = {}
        self.paths: dict[str, Path] = {}
        for module, path in files:
            tree = ast.parse(path.read_text(), str(path))
            self.trees[module], self.paths[module] = tree, path
        for module, tree in self.trees.items():
            self._collect(module, tree)
        self._qualify_clashing_sites()
        for module, tree in self.trees.items():
            self._imports(module, tree)

    def _qualify_clashing_sites(self) -> None:
        """A site is known by its constant's name (RECV_BUFFER), by ``module.NAME`` where two
        modules define the same name (http's and ftp's LISTING_BUFFER are two objects)."""
        modules_of: dict[str, set[str]] = {}
        for module, name in self.sites:
            modules_of.setdefault(name, set()).add(module)
        for (module, name), site in self.sites.items():
            if len(modules_of[name]) > 1:
                site.name = f"{module}.{name}"

    def _collect(self, module: str, tree: ast.Module) -> None:
        scope = self.scopes.setdefault(module, {})
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                self._add(module, node, node.name)
                scope[node.name] = f"{module}.{node.name}"
            elif isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef):
                        self._add(module, item, f"{node.name}.{item.name}")
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                self._site(module, node)

    def _add(self, module: str, node: ast.FunctionDef, qualname: str) -> None:
        name = f"{module}.{qualname}"
        self.functions[name] = Function(name, module, node, self.paths[module], _interface_of(node))

    def _site(self, module: str, node: ast.Assign | ast.AnnAssign) -> None:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        value = node.value
        if not (isinstance(value, ast.Call) and _called_name(value) == "Site" and value.args):
            return
        label = value.args[0].value if isinstance(value.args[0], ast.Constant) else "?"
        size_node = value.args[1] if len(value.args) > 1 else None
        size = _constant_int(size_node, self.trees[module]) if size_node is not None else None
        for target in targets:
            if isinstance(target, ast.Name):
                self.sites[(module, target.id)] = SiteInfo(target.id, str(label), size,
                                                           f"{module}:{node.lineno}")

    def _imports(self, module: str, tree: ast.Module) -> None:
        scope = self.scopes[module]
        package = module.rsplit(".", 1)[0] if "." in module else ""
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                base = _absolute(node.module or "", node.level, package if self._is_module(module) else module)
                for alias in node.names:
                    local = alias.asname or alias.name
                    if f"{base}.{alias.name}" in self.trees:
                        scope[local] = f"module:{base}.{alias.name}"
                    elif f"{base}.{alias.name}" in self.functions:
                        scope[local] = f"{base}.{alias.name}"
                    elif (base, alias.name) in self.sites:
                        self.sites[(module, local)] = self.sites[(base, alias.name)]
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in self.trees:
                        scope[alias.asname or alias.name] = f"module:{alias.name}"

    def _is_module(self, module: str) -> bool:
        return not self.paths[module].name == "__init__.py"

    def methods_named(self, attr: str) -> list[str]:
        return [name for name, f in self.functions.items()
                if name.count(".") >= 2 and f.short == attr and _is_method(f, self)]


def _is_method(function: Function, program: _Program) -> bool:
    return function.name[len(function.module) + 1:].count(".") == 1


def _absolute(module: str, level: int, package: str) -> str:
    if level == 0:
        return module
    parts = package.split(".")
    base = ".".join(parts[: len(parts) - (level - 1)]) if level > 1 else package
    return f"{base}.{module}" if module else base


def _interface_of(node: ast.FunctionDef) -> tuple[str, dict[str, str]] | None:
    for decorator in node.decorator_list:
        if isinstance(decorator, ast.Call) and _called_name(decorator) == "stingy_interface" and decorator.args:
            kind = decorator.args[0]
            if isinstance(kind, ast.Constant):
                roles = {k.arg: k.value.value for k in decorator.keywords
                         if k.arg and isinstance(k.value, ast.Constant)}
                return str(kind.value), roles
    return None


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _constant_int(node: ast.expr, tree: ast.Module) -> int | None:
    """An integer literal, a product/sum of them, or a module constant bound to one."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult | ast.Add | ast.LShift):
        left, right = _constant_int(node.left, tree), _constant_int(node.right, tree)
        if left is None or right is None:
            return None
        if isinstance(node.op, ast.Mult):
            return left * right
        return left + right if isinstance(node.op, ast.Add) else left << right
    if isinstance(node, ast.Name):
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == node.id for t in stmt.targets):
                return _constant_int(stmt.value, tree)
    return None


# ---------------------------------------------------------------- one function's body


class _Body(ast.NodeVisitor):
    """Calls, queued stages, allocations and frees of one function, with local aliases."""

    def __init__(self, program: _Program, function: Function):
        self.program, self.function = program, function
        self.scope = program.scopes.get(function.module, {})
        self.aliases: dict[str, set[str]] = {}
        self.calls: set[str] = set()
        self.events: set[str] = set()
        self.allocations: list[Allocation] = []
        self.frees: list[tuple[int, ast.expr]] = []
        self.copies: list[tuple[str, str]] = []  # (target, source) storage keys of plain copies
        self.locals: set[str] = {a.arg for a in function.node.args.args}
        self._alias_pass(function.node)
        for stmt in function.node.body:
            self.visit(stmt)

    # aliases: a flow-insensitive set of functions each local name may hold
    def _alias_pass(self, node: ast.FunctionDef) -> None:
        for _ in range(3):  # names copied from names: a few rounds reach the fixpoint
            for sub in ast.walk(node):
                if isinstance(sub, ast.Assign):
                    found = self.functions_of(sub.value)
                    for target in sub.targets:
                        if isinstance(target, ast.Name):
                            self.locals.add(target.id)
                            if found:
                                self.aliases.setdefault(target.id, set()).update(found)
                elif isinstance(sub, ast.AnnAssign | ast.AugAssign | ast.For) and isinstance(sub.target, ast.Name):
                    self.locals.add(sub.target.id)

    def functions_of(self, expr: ast.expr | None) -> set[str]:
        """Every function an expression may evaluate to (the alias analysis)."""
        if expr is None:
            return set()
        if isinstance(expr, ast.Name):
            if expr.id in self.aliases:
                return set(self.aliases[expr.id])
            target = self.scope.get(expr.id)
            if target and not target.startswith("module:"):
                return {target}
            table = self._module_table(self.function.module, expr.id)
            return table
        if isinstance(expr, ast.Attribute):
            if isinstance(expr.value, ast.Name):
                target = self.scope.get(expr.value.id, "")
                if target.startswith("module:"):
                    module = target[len("module:"):]
                    name = f"{module}.{expr.attr}"
                    if name in self.program.functions:
                        return {name}
                    return self._module_table(module, expr.attr)
            return set()
        if isinstance(expr, ast.IfExp):
            return self.functions_of(expr.body) | self.functions_of(expr.orelse)
        if isinstance(expr, ast.BoolOp):
            return set().union(*(self.functions_of(v) for v in expr.values))
        if isinstance(expr, ast.Subscript):  # a stage looked up in a table
            return self.functions_of(expr.value)
        if isinstance(expr, ast.Dict):
            return set().union(set(), *(self.functions_of(v) for v in expr.values))
        if isinstance(expr, ast.Tuple | ast.List | ast.Set):
            return set().union(set(), *(self.functions_of(v) for v in expr.elts))
        if isinstance(expr, ast.Call) and _called_name(expr) == "get" and isinstance(expr.func, ast.Attribute):
            return self.functions_of(expr.func.value) | set().union(set(), *(self.functions_of(a) for a in expr.args[1:]))
        return set()

    def _module_table(self, module: str, name: str) -> set[str]:
        """Functions held by a module-level table or alias (HANDLERS = {"GET": do_get, ...})."""
        tree = self.program.trees.get(module)
        if tree is None:
            return set()
        for stmt in tree.body:
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(stmt, ast.AnnAssign) else []
            if any(isinstance(t, ast.Name) and t.id == name for t in targets) and stmt.value is not None:
                body = _Body.__new__(_Body)
                body.program, body.function = self.program, self.function
                body.scope, body.aliases = self.program.scopes.get(module, {}), {}
                return body.functions_of(stmt.value)
        return set()

    def resolve_call(self, call: ast.Call) -> set[str]:
        """The functions a call may reach. ``obj.method()`` on an object of unknown class (C's
        call through a function pointer in a struct) resolves by name only to the interface's
        marked methods (``ti.wait``), and ``self.method()`` to the enclosing class's method."""
        found = self.functions_of(call.func)
        if found or not isinstance(call.func, ast.Attribute):
            return found
        candidates = self.program.methods_named(call.func.attr)
        receiver = call.func.value
        if isinstance(receiver, ast.Name) and receiver.id == "self":
            own_class = self.function.name.rsplit(".", 1)[0]
            return {c for c in candidates if c.rsplit(".", 1)[0] == own_class}
        return {c for c in candidates if self.program.functions[c].interface is not None}

    def visit_Call(self, call: ast.Call) -> None:
        for callee in self.resolve_call(call):
            function = self.program.functions[callee]
            kind = function.interface[0] if function.interface else None
            if kind == "QueueStage":
                position = function.role_position("S")
                if position is not None and position < len(call.args):
                    self.events |= self.functions_of(call.args[position])
            elif kind == "Malloc":
                self._malloc(call, function)
            elif kind == "Free":
                position = function.role_position("O")
                if position is not None and position < len(call.args):
                    self.frees.append((call.lineno, call.args[position]))
            if kind is None or kind == "Scheduler":
                self.calls.add(callee)
        self.generic_visit(call)

    def _malloc(self, call: ast.Call, malloc: Function) -> None:
        position = malloc.role_position("size")
        if position is None or position >= len(call.args):
            raise MemwalkError(f"{self.function.path}:{call.lineno}: Malloc without its size/site argument")
        site_expr = call.args[position]
        site = None
        if isinstance(site_expr, ast.Name):
            site = self.program.sites.get((self.function.module, site_expr.id))
        elif isinstance(site_expr, ast.Attribute) and isinstance(site_expr.value, ast.Name):
            target = self.scope.get(site_expr.value.id, "")
            if target.startswith("module:"):
                site = self.program.sites.get((target[len("module:"):], site_expr.attr))
        if site is None:
            label = ast.unparse(site_expr)
            site = SiteInfo(f"{self.function.short}:{call.lineno}", label, None,
                            f"{self.function.module}:{call.lineno}")
        self.allocations.append(Allocation(site, self.function.name, call.lineno, None))
        self._pending_malloc = self.allocations[-1]

    def visit_Assign(self, node: ast.Assign) -> None:
        self._pending_malloc = None
        source = _storage(node.value)
        if source is not None:  # x.field = buf: the object moves, the analysis follows it
            self.copies.extend((key, source) for t in node.targets if (key := _storage(t)) is not None)
        self.generic_visit(node)
        if self._pending_malloc is not None and isinstance(node.value, ast.Call):
            # ``out = proto.out = Malloc(...)``: kept in every target; the later ones are copies.
            keys = [key for target in node.targets if (key := _storage(target)) is not None]
            self._pending_malloc.stored_in = keys[0] if keys else None
            self.copies.extend((key, keys[0]) for key in keys[1:])

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._pending_malloc = None
        if node.value is not None:
            self.visit(node.value)
        allocation = self._pending_malloc
        if allocation is not None:
            allocation.stored_in = _storage(node.target)
            annotation = node.annotation
            if isinstance(annotation, ast.Call) and annotation.args and isinstance(annotation.args[0], ast.Constant):
                value = annotation.args[0].value
                if _called_name(annotation) == "stingy_size":
                    allocation.size_estimate = int(value)
                elif _called_name(annotation) == "stingy_count":
                    allocation.count = int(value)

    _pending_malloc: Allocation | None = None


def _storage(target: ast.expr) -> str | None:
    if isinstance(target, ast.Name):
        return f"var:{target.id}"
    if isinstance(target, ast.Attribute):
        return f"attr:{target.attr}"
    return None


def _frame(function: Function, locals_: set[str]) -> int:
    return CALL_COST + WORD * len(locals_)


# ---------------------------------------------------------------- the analysis


def memwalk(targets: Iterable[str], entry: str | None = None, exclude: Iterable[str] = (),
            global_threshold: int = GLOBAL_THRESHOLD) -> Report:
    """Analyse the modules named by ``targets`` (packages, modules or .py files).

    ``entry``, a function's name (its short name is enough), limits the
    analysis to the stages reachable from it (the thesis's starting node).
    """
    program = _Program(module_files(targets, exclude))
    bodies = {name: _Body(program, f) for name, f in program.functions.items() if f.interface is None
              or f.interface[0] == "Scheduler"}
    graph = nx.MultiDiGraph()
    for name, body in bodies.items():
        graph.add_node(name)
        for callee in body.calls:
            if callee in bodies:
                graph.add_edge(name, callee, kind="call")
        for stage in body.events:
            if stage in bodies:
                graph.add_edge(name, stage, kind="event")
    calls = nx.DiGraph([(u, v) for u, v, k in graph.edges(data="kind") if k == "call"])
    calls.add_nodes_from(bodies)
    entries = {v for _, v, k in graph.edges(data="kind") if k == "event"}
    in_stages = set().union(set(), *(_stage_members(calls, e, entries) for e in entries))
    # A function that queues stages but is no stage's part starts the graph (listen, start):
    # a root stage, so that what it allocates is live in the stages it queues.
    roots = {u for u, _, k in graph.edges(data="kind") if k == "event" and u not in in_stages
             and not any(c in in_stages for c in nx.ancestors(calls, u))}
    entries |= roots
    if entry is not None:
        entries = _entries_from(graph, calls, entries, _find(program, entry))
    notes: list[str] = []
    stages: dict[str, Stage] = {}
    for stage_entry in sorted(entries):
        members = _stage_members(calls, stage_entry, entries)
        stages[stage_entry] = Stage(stage_entry, members, _stack(calls, stage_entry, members, bodies),
                                    root=stage_entry in roots)
    for stage in stages.values():
        for member in stage.functions:
            stage.successors |= {t for t in bodies[member].events if t in stages}
            stage.allocates |= {a.site.name for a in bodies[member].allocations}
    allocations = [a for body in bodies.values() for a in body.allocations]
    releases, unmatched = _match_frees(bodies, allocations)
    for release in releases:
        for stage in stages.values():
            if release.function in stage.functions:
                stage.frees |= release.sites
    _liveness(stages)
    scheduler_roots = [n for n, f in program.functions.items() if f.interface and f.interface[0] == "Scheduler"]
    scheduler: set[str] = set()
    for root in scheduler_roots:
        scheduler |= _stage_members(calls, root, entries)
    scheduler_stack = max((_stack(calls, root, scheduler, bodies) for root in scheduler_roots), default=0)
    if not scheduler_roots:
        notes.append("no function is marked Scheduler")
    stage_graph = nx.DiGraph()
    stage_graph.add_nodes_from(stages)
    stage_graph.add_edges_from((n, s) for n, st in stages.items() for s in st.successors)
    cycles = [sorted(c) for c in nx.strongly_connected_components(stage_graph)
              if len(c) > 1 or any(stage_graph.has_edge(n, n) for n in c)]
    recursion = [sorted(c) for c in nx.strongly_connected_components(calls)
                 if len(c) > 1 or any(calls.has_edge(n, n) for n in c)]
    objects = _objects(stages, allocations, cycles, global_threshold, notes)
    return Report(program.functions, graph, stages, scheduler, scheduler_stack, objects, cycles, recursion,
                  unmatched, notes, allocations)


def _find(program: _Program, name: str) -> str:
    matches = [n for n in program.functions if n == name or n.endswith("." + name)]
    if len(matches) != 1:
        raise MemwalkError(f"entry {name!r} names {len(matches)} functions" + (f": {matches}" if matches else ""))
    return matches[0]


def _entries_from(graph: nx.MultiDiGraph, calls: nx.DiGraph, entries: set[str], start: str) -> set[str]:
    """The stage entries reachable from ``start`` through calls and events."""
    reached = nx.descendants(graph, start) | {start}
    return {e for e in entries if e in reached} | ({start} if start not in entries else set())


def _stage_members(calls: nx.DiGraph, entry: str, entries: set[str]) -> set[str]:
    """What ``entry`` reaches by calls. A stage entry it calls joins this stage too: the
    function is duplicated, its called copy here, its event-entered copy a stage of its own."""
    members = {entry}
    todo = [entry]
    while todo:
        node = todo.pop()
        for callee in calls.successors(node):
            if callee not in members:
                members.add(callee)  # a called function is part of the caller's stage, entry or not
                todo.append(callee)
    return members


def _stack(calls: nx.DiGraph, root: str, members: set[str], bodies: dict[str, _Body]) -> int:
    """The deepest path of frames from ``root`` within ``members`` (recursion counted once)."""
    sub = calls.subgraph(members)
    condensed = nx.condensation(sub)
    weight = {c: sum(_frame(bodies[n].function, bodies[n].locals) for n in data["members"])
              for c, data in condensed.nodes(data=True)}
    start = condensed.graph["mapping"][root]
    best: dict[int, int] = {}
    for node in reversed(list(nx.topological_sort(condensed))):
        below = max((best[s] for s in condensed.successors(node)), default=0)
        best[node] = weight[node] + below
    return best[start]


def _match_frees(bodies: dict[str, _Body], allocations: list[Allocation]) -> tuple[list[Release], list[Release]]:
    """Each Free call against the sites whose objects were stored where it frees from."""
    # Where an object is kept, per module (``http`` and ``ftp`` both keep theirs in
    # ``req.proto``), and over the whole program for a Free in another module (core.finish).
    module_of = {name: body.function.module for name, body in bodies.items()}
    stored: dict[tuple[str, str], set[str]] = {}
    for allocation in allocations:
        if allocation.stored_in:
            for scope in (module_of[allocation.function], ""):
                stored.setdefault((scope, allocation.stored_in), set()).add(allocation.site.name)
    copies = [((module_of[name], target), (module_of[name], source))
              for name, body in bodies.items() for target, source in body.copies]
    for _ in range(len(copies) + 1):  # an object moved from a variable to a field, and on
        grew = False
        for target, source in copies:
            new = stored.get(source, set()) - stored.get(target, set())
            if new:
                stored.setdefault(target, set()).update(new)
                grew = True
        if not grew:
            break
    matched, unmatched = [], []
    for name, body in bodies.items():
        for line, expr in body.frees:
            key = _storage(expr)
            sites = (stored.get((module_of[name], key)) or stored.get(("", key), set())) if key else set()
            release = Release(name, line, set(sites))
            (matched if sites else unmatched).append(release)
    return matched, unmatched


def _liveness(stages: dict[str, Stage]) -> None:
    """Forward may-liveness: live_out = (live_in | allocated) - freed, to a fixpoint."""
    preds: dict[str, set[str]] = {name: set() for name in stages}
    for name, stage in stages.items():
        for succ in stage.successors:
            preds[succ].add(name)
    changed = True
    while changed:
        changed = False
        for name, stage in stages.items():
            live_in = set().union(set(), *(stages[p].live_out for p in preds[name]))
            live_out = (live_in | stage.allocates) - stage.frees
            if live_in != stage.live_in or live_out != stage.live_out:
                stage.live_in, stage.live_out = live_in, live_out
                changed = True


def _objects(stages: dict[str, Stage], allocations: list[Allocation], cycles: list[list[str]],
             threshold: int, notes: list[str]) -> dict[str, ObjectInfo]:
    in_cycle = {s for cycle in cycles for s in cycle}
    terminal = {n for n, s in stages.items() if not s.successors}
    objects: dict[str, ObjectInfo] = {}
    for allocation in allocations:
        site = allocation.site
        info = objects.get(site.name)
        if info is None:
            size = site.size if site.size is not None else allocation.size_estimate
            info = objects[site.name] = ObjectInfo(site, size, 1, set(), set(), set(), "per-task")
        elif info.size is None and allocation.size_estimate is not None:
            info.size = allocation.size_estimate
        stage_names = {n for n, s in stages.items() if allocation.function in s.functions}
        info.allocated_in |= stage_names
        # In a cycle, a task may pile instances up, unless none survives to its allocating
        # stage again (not live on entry there: freed before the cycle comes back).
        around = {n for n in stage_names & in_cycle if site.name in stages[n].live_in}
        if allocation.count is not None:
            info.count = allocation.count
        elif around:
            info.count = None  # unbounded unless annotated
    for name, stage in stages.items():
        for site in stage.frees:
            if site in objects:
                objects[site].freed_in.add(name)
        for site in stage.live_in | stage.allocates:
            if site in objects:
                objects[site].live_in.add(name)
    for info in objects.values():
        info.kind = _kind(info, any(info.site.name in stages[t].live_out for t in terminal), threshold, notes)
    _colour(stages, objects)
    return objects


def _kind(info: ObjectInfo, live_at_end: bool, threshold: int, notes: list[str]) -> str:
    """Unmanaged when its size or count is unknown; global when live at a terminal stage."""
    if info.size is None or info.count is None:
        why = ("dynamic size without stingy_size" if info.size is None
               else "allocated in a stage cycle without stingy_count")
        notes.append(f"{info.site.label}: left to the original allocator ({why})")
        return "unmanaged"
    if live_at_end:
        return "global-final" if info.size <= threshold else "global-temporary"
    return "per-task"


def _colour(stages: dict[str, Stage], objects: dict[str, ObjectInfo]) -> None:
    """Regions: per-task objects never live in one stage together may share one."""
    dependency = nx.Graph()
    dependency.add_nodes_from(n for n, o in objects.items() if o.kind == "per-task")
    for stage in stages.values():
        together = sorted(s for s in stage.live_in | stage.allocates if s in dependency)
        dependency.add_edges_from((a, b) for i, a in enumerate(together) for b in together[i + 1:])
    for site, colour in nx.greedy_color(dependency, strategy="largest_first").items():
        objects[site].region = colour


# ---------------------------------------------------------------- output


def format_report(report: Report) -> str:
    """The collapsed SCG's stages (figure 6.4's nf and sc) and the per-request objects (figure 7.3(b))."""
    out = [f"stages ({len(report.stages)}); scheduler: {len(report.scheduler)} function(s), "
           f"stack {report.scheduler_stack} bytes"]
    for name, stage in sorted(report.stages.items()):
        successors = ", ".join(sorted(_short(s) for s in stage.successors)) or "(terminal)"
        out.append(f"  {_short(name):<28} nf={len(stage.functions):<3} sc={stage.stack:<5} -> {successors}")
        if stage.allocates or stage.frees:
            out.append(f"  {'':<28} allocates {sorted(stage.allocates) or '-'}, frees {sorted(stage.frees) or '-'}")
    out.append("objects (per allocation site)")
    out.append(f"  {'object':<18} {'size':>7} {'count':>6} {'kind':<17} {'region':>6}  allocated in / freed in")
    for info in sorted(report.objects.values(), key=lambda o: o.site.label):
        size = "dyn" if info.size is None else str(info.size)
        count = "inf" if info.count is None else str(info.count)
        region = "-" if info.region < 0 else str(info.region)
        out.append(f"  {info.site.label:<18} {size:>7} {count:>6} {info.kind:<17} {region:>6}  "
                   f"{', '.join(sorted(map(_short, info.allocated_in)))} / "
                   f"{', '.join(sorted(map(_short, info.freed_in))) or '-'}")
    for cycle in report.stage_cycles:
        out.append(f"stage cycle: {' -> '.join(map(_short, cycle))}")
    for cycle in report.recursion:
        out.append(f"recursion: {' -> '.join(map(_short, cycle))}")
    for release in report.unmatched_frees:
        out.append(f"Free at {_short(release.function)}:{release.line} matches no allocation site")
    out.extend(f"note: {note}" for note in report.notes)
    return "\n".join(out) + "\n"


def to_dot(report: Report) -> str:
    """The collapsed SCG in graphviz's language: a box per stage, event edges between them."""
    lines = ["digraph scg {", '  rankdir=TB; node [shape=box, fontname="Helvetica"];']
    for name, stage in sorted(report.stages.items()):
        lines.append(f'  "{_short(name)}" [label="{_short(name)}\\nnf={len(stage.functions)} sc={stage.stack}"];')
    lines.append('  "scheduler" [shape=ellipse];')
    for name, stage in sorted(report.stages.items()):
        for succ in sorted(stage.successors):
            lines.append(f'  "{_short(name)}" -> "{_short(succ)}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]
