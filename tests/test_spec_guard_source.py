"""What the guards on the data cannot see, checked over the source of pystack.

Fields a token assumes are watched where they are stored (pystack/tokens/watch.py):
a write through ``obj.field = value`` reaches the token's guard whoever makes it.
Two kinds of change pass beside a field's watch, and this check keeps them
where the stack announces an event:

* writes that skip ``__setattr__`` (``vars(obj).update``, ``obj.__dict__[name] =``,
  ``object.__setattr__``): none is allowed in pystack;
* changes to the contents of a container a declaration calls ``deep`` (static
  contents: ``Stack.sockets``, ``RouteTable._by_length``...): each function that
  changes one must announce an event (``notify``, or the route table's
  ``_changed``), unless it only adds an entry nobody can have assumed yet (a new fd).

A new unannounced change fails here with its file and line.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pystack

ROOT = Path(pystack.__file__).parent
MUTATORS = frozenset({"append", "extend", "insert", "pop", "popitem", "remove", "clear", "update", "setdefault",
                      "add", "discard", "sort", "reverse", "__setitem__", "__delitem__"})
ANNOUNCERS = frozenset({"notify", "_changed"})
# Functions that only add an entry under a key no token can have assumed (a new fd).
ADD_ONLY = {("stack.py", "socket"), ("stack.py", "accept")}


def deep_fields() -> set[str]:
    fields: set[str] = set()
    for path in ROOT.rglob("*.spec.toml"):
        for spec in tomllib.loads(path.read_text()).get("objects", {}).values():
            fields.update(spec.get("deep", []))
    return fields


def _mentions(node: ast.AST, names: set[str]) -> bool:
    return any(isinstance(n, ast.Attribute) and n.attr in names for n in ast.walk(node))


def _is_bypass(node: ast.AST) -> bool:
    """A write that skips the object's ``__setattr__`` (and so a field's watch)."""
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "update" and isinstance(func.value, ast.Call) \
                and isinstance(func.value.func, ast.Name) and func.value.func.id == "vars":
            return True
        if isinstance(func, ast.Attribute) and func.attr == "__setattr__" and isinstance(func.value, ast.Name) \
                and func.value.id == "object":
            return True
    if isinstance(node, ast.Assign | ast.AugAssign | ast.Delete):
        targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
        return any(isinstance(t, ast.Subscript) and isinstance(t.value, ast.Attribute) and t.value.attr == "__dict__"
                   for t in targets)
    return False


def _container_changes(node: ast.AST, deep: set[str]) -> bool:
    if isinstance(node, ast.Assign | ast.AugAssign | ast.Delete):
        targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
        return any(isinstance(t, ast.Subscript) and _mentions(t.value, deep) for t in targets)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MUTATORS:
        return _mentions(node.func.value, deep)
    return False


def _announces(function: ast.AST) -> bool:
    for node in ast.walk(function):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ANNOUNCERS:
                return True
    return False


def findings(source: str, filename: str, deep: set[str]) -> list[str]:
    found = []
    for function in ast.walk(ast.parse(source)):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            where = f"{filename}:{getattr(node, 'lineno', '?')} ({function.name})"
            if _is_bypass(node):
                found.append(f"{where}: a write that skips __setattr__ (and the watch on assumed fields)")
            elif _container_changes(node, deep) and not _announces(function) \
                    and (filename, function.name) not in ADD_ONLY:
                found.append(f"{where}: changes a deep-static container and announces no event")
    return found


def test_pystack_changes_nothing_assumed_behind_the_guards():
    deep = deep_fields()
    assert {"sockets", "_by_length", "_lengths"} <= deep
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.parent.name == "conformance":
            continue  # the packetdrill bench around the stack: its lists of sockets are its own
        if path.parent.name == "tokens":
            continue  # the guards themselves, not the stack's state (frozen facts set their own fields)
        found += findings(path.read_text(), str(path.relative_to(ROOT)), deep)
    assert not found, "\n".join(found)


def test_the_check_finds_an_unannounced_change():
    """The check itself: each kind of change it must catch, in a module of new code."""
    source = '''
def close_quietly(stack, fd):
    del stack.sockets[fd]

def drop_route(table, prefix):
    table._by_length[24].pop(prefix)

def renew(tcb, fresh):
    vars(tcb).update(vars(fresh))

def poke(sock):
    sock.__dict__["ttl"] = 5
    object.__setattr__(sock, "tos", 1)

def close_loudly(stack, sock, fd):
    stack.notify("close", sock)
    del stack.sockets[fd]
'''
    found = findings(source, "new.py", {"sockets", "_by_length"})
    assert [line.split(" ")[0] for line in found] == ["new.py:3", "new.py:6", "new.py:9", "new.py:12", "new.py:13"]
