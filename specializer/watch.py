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


# id(obj) -> field -> its watchers. Watchers are held weakly and objects not at all: a stack
# dropped with live tokens is collected, and its entries go with its tokens.
_watched: dict[int, dict[str, list[weakref.ref[Watcher]]]] = {}
_classes: dict[tuple[type, frozenset[str]], type] = {}


def plain_type(obj: Any) -> type:
    """The class an object has when nobody watches it (declarations and code are about it)."""
    cls = type(obj)
    return cls.__dict__.get("_watch_base", cls)


def _changed(obj: Any, name: str) -> None:
    fields = _watched.get(id(obj))
    if fields is not None:
        for ref in list(fields.get(name, ())):
            watcher = ref()
            if watcher is not None:
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
        namespace: dict[str, Any] = {"__slots__": (), "_watch_base": base, "__module__": base.__module__,
                                     "__qualname__": base.__qualname__}
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


def watch(watcher: Watcher, obj: Any, names: set[str]) -> bool:
    """Tell ``watcher`` of every change to ``obj.name`` for these names; False if ``obj``
    cannot be watched (a builtin, or a class whose instances cannot change class)."""
    base = plain_type(obj)
    if base.__module__ == "builtins" or isinstance(obj, type | types.ModuleType):
        return False
    key = id(obj)
    fields = _watched.get(key, {})
    cls = _watched_class(base, frozenset(set(names) | set(fields)))
    if cls is None:
        return False
    if type(obj) is not cls:
        try:
            obj.__class__ = cls
        except TypeError:
            return False
    _watched[key] = fields
    for name in names:
        refs = fields.setdefault(name, [])
        if not any(ref() is watcher for ref in refs):
            refs.append(weakref.ref(watcher, functools.partial(_forget, key, name)))
    return True


def _forget(key: int, name: str, dead: weakref.ref[Watcher]) -> None:
    """A watcher was collected without unwatching (its stack was dropped)."""
    fields = _watched.get(key)
    if fields is not None and dead in fields.get(name, ()):
        fields[name].remove(dead)
        if not fields[name]:
            del fields[name]
        if not fields:
            del _watched[key]


def unwatch(watcher: Watcher, obj: Any) -> None:
    """Forget ``watcher`` on ``obj``; with no watcher left, the object gets its class back."""
    fields = _watched.get(id(obj))
    if fields is None:
        return
    for name in list(fields):
        fields[name] = [ref for ref in fields[name] if ref() is not watcher]
        if not fields[name]:
            del fields[name]
    if not fields:
        del _watched[id(obj)]
        obj.__class__ = plain_type(obj)


def watchers_of(obj: Any) -> dict[str, list[Watcher]]:
    """Who watches which field of ``obj`` (for tests and people)."""
    fields = _watched.get(id(obj), {})
    return {name: [w for ref in refs if (w := ref()) is not None] for name, refs in fields.items()}
