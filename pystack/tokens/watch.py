"""Guards on the data: the fields a live token assumes are watched where they are stored.

Completeness of the guards must not rest on every site that can change a
fact remembering to announce it (DESIGN.md, "Guards, concretely"). While a
token's code relies on ``obj.field == value``, ``obj`` gets a class of its
own: a subclass of its class, same name and layout, in which each watched
field is a data descriptor with a ``__set__`` and no ``__get__``. Reads
still find the value in the instance dictionary; writes of other fields
never meet the descriptor; a write of a watched field that changes its
value tells every token that watches it, whoever writes. Objects no token
watches keep their own class, so generic code pays nothing for them.

Fields of slotted classes (Route) are properties over the class's slot.
What cannot be watched this way (items of builtin containers, the
``deep`` fields of a declaration) is covered by the stack's announced
events, and tests/test_spec_guard_source.py checks pystack's source for it.
"""

from __future__ import annotations

import functools
import inspect
import types
import weakref
from typing import Any, Protocol

_MISSING = object()
_PLAIN_VALUES = (int, float, bool, str, bytes, type(None), tuple)


class Watcher(Protocol):
    def field_written(self, obj: Any, name: str) -> None:
        """``obj.name`` just changed: the fact the watcher relied on may no longer hold."""


# id(obj) -> id(watcher) -> (the watcher, weakly; the fields it watches). Watchers are held
# weakly and objects not at all: a stack dropped with live tokens is collected, and its
# entries go with its tokens.
_watched: dict[int, dict[int, tuple[weakref.ref[Watcher], frozenset[str]]]] = {}
# id(watcher) -> (one weak reference to it, the ids of the objects it watches): when the
# watcher is collected without unwatching, its entries are dropped in one go.
_handles: dict[int, tuple[weakref.ref[Watcher], set[int]]] = {}
_classes: dict[tuple[type, frozenset[str]], type] = {}


def plain_type(obj: Any) -> type:
    """The class an object has when nobody watches it (declarations and code are about it)."""
    cls = type(obj)
    return cls.__dict__.get("_watch_base", cls)


def _changed(obj: Any, name: str) -> None:
    watchers = _watched.get(id(obj))
    if watchers is not None:
        for ref, names in list(watchers.values()):
            watcher = ref()
            if watcher is not None and name in names:
                watcher.field_written(obj, name)


def _differs(old: Any, new: Any) -> bool:
    if old is new:
        return False
    if type(old) is type(new) and isinstance(old, _PLAIN_VALUES):
        return bool(old != new)
    return True


class _Field:
    """A watched field stored in the instance dictionary."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __set__(self, obj: Any, value: Any) -> None:
        values = obj.__dict__
        old = values.get(self.name, _MISSING)
        values[self.name] = value
        if _differs(old, value):
            _changed(obj, self.name)


def _slot_field(name: str, slot: Any) -> property:
    """A watched field stored in a slot of the class (reads go through the slot's own getter)."""

    def write(obj: Any, value: Any) -> None:
        old = slot.__get__(obj, type(obj)) if hasattr(obj, name) else _MISSING
        slot.__set__(obj, value)
        if _differs(old, value):
            _changed(obj, name)

    return property(slot.__get__, write)


def _watched_class(base: type, fields: frozenset[str]) -> type | None:
    key = (base, fields)
    cls = _classes.get(key)
    if cls is None:
        namespace: dict[str, Any] = {"__slots__": (), "_watch_base": base, "_watch_fields": fields,
                                     "__module__": base.__module__, "__qualname__": base.__qualname__}
        for name in fields:
            raw = inspect.getattr_static(base, name, None)
            if isinstance(raw, types.MemberDescriptorType):
                namespace[name] = _slot_field(name, raw)
            elif raw is None or not hasattr(raw, "__get__") or isinstance(raw, _PLAIN_VALUES):
                namespace[name] = _Field(name)  # an instance attribute (or one with a class default)
            else:
                return None  # a property or method: not a stored field
        cls = _classes[key] = type(base.__name__, (base,), namespace)
    return cls


def watch(watcher: Watcher, obj: Any, names: frozenset[str]) -> bool:
    """Tell ``watcher`` of every change to ``obj.name`` for these names; False if ``obj``
    cannot be watched (a builtin, or a class whose instances cannot change class)."""
    watched_fields = type(obj).__dict__.get("_watch_fields")
    if watched_fields is None or not names <= watched_fields:  # a class with hooks on more fields
        base = plain_type(obj)
        if base.__module__ == "builtins" or isinstance(obj, type | types.ModuleType):
            return False
        cls = _watched_class(base, names | watched_fields if watched_fields else names)
        if cls is None:
            return False
        try:
            obj.__class__ = cls
        except TypeError:
            return False
    watcher_key = id(watcher)
    handle = _handles.get(watcher_key)
    if handle is None:
        handle = _handles[watcher_key] = (weakref.ref(watcher, functools.partial(_forget, watcher_key)), set())
    key = id(obj)
    handle[1].add(key)
    watchers = _watched.setdefault(key, {})
    entry = watchers.get(watcher_key)
    watchers[watcher_key] = (handle[0], names | entry[1] if entry is not None else names)
    return True


def _forget(watcher_key: int, dead: weakref.ref[Watcher]) -> None:
    """A watcher was collected without unwatching (its stack was dropped)."""
    handle = _handles.pop(watcher_key, None)
    if handle is None or handle[0] is not dead:
        return
    for key in handle[1]:
        watchers = _watched.get(key)
        if watchers is not None and watchers.get(watcher_key, (None,))[0] is dead:
            del watchers[watcher_key]
            if not watchers:
                del _watched[key]


def unwatch(watcher: Watcher, obj: Any) -> None:
    """Forget ``watcher`` on ``obj``; with no watcher left, the object gets its class back."""
    watchers = _watched.get(id(obj))
    if watchers is None or watchers.pop(id(watcher), None) is None:
        return
    handle = _handles.get(id(watcher))
    if handle is not None:
        handle[1].discard(id(obj))
        if not handle[1]:
            del _handles[id(watcher)]
    if not watchers:
        del _watched[id(obj)]
        obj.__class__ = plain_type(obj)


def watchers_of(obj: Any) -> dict[str, list[Watcher]]:
    """Who watches which field of ``obj`` (for tests and people)."""
    fields: dict[str, list[Watcher]] = {}
    for ref, names in _watched.get(id(obj), {}).values():
        watcher = ref()
        if watcher is not None:
            for name in sorted(names):
                fields.setdefault(name, []).append(watcher)
    return fields
