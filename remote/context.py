"""The static context of a scenario as plain data, and back (thesis 4.2: the context
manager on the device, the run-time layer on the server).

:func:`snapshot` walks from a scenario's static parameters along the declared static
fields of the objects it meets (``[objects.X] static``/``deep`` in the package's
``*.spec.toml``: the thesis's context dependencies), and numbers every object on the
way with the path it was reached by. Values are JSON: plain values as they are,
``{"b": base64}`` for bytes, ``{"t": [...]}`` for tuples, ``{"r": n}`` for object ``n``,
``{"g": "module:name"}`` for a function or class, ``{"M": "module"}`` for a module,
``{"a": [owner, "name"]}`` for an attribute (a bound method) of another value, and in
replies ``{"L": [...]}``/``{"D": [[k, v], ...]}`` for a list or dict the specializer made
(the device makes its own), ``{"Z": format}`` for a struct packer.
An object record is ``{"p": path, "c": "module:Class"}`` plus the values of its
declared fields (``"f"``), the items of a container (``"i"``), or the function of a
bound method (``"m"``); undeclared objects are opaque: only their class and path go.

:func:`rebuild` (the server) makes stand-ins from the records: shells of the same
classes with the declared fields set, so that the specializer reads the device's
values as if it ran there; :class:`Rebinder` (the device) turns the references of a
reply back into live objects, by path.
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import struct
import sys
import tomllib
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

PLAIN = (bool, int, float, str, type(None))
MAX_OBJECTS = 4096  # a context larger than this is not a send path's context
_NAMED = (types.FunctionType, types.BuiltinFunctionType, type)


class ContextError(Exception):
    """A context that cannot be snapshot, rebuilt or rebound (the message says which value)."""


def class_path(cls: type) -> str:
    """``module:Qualified.name`` (a watched object's class says its base's: same name)."""
    return f"{cls.__module__}:{cls.__qualname__}"


def declared_fields(package: str) -> dict[str, frozenset[str]]:
    """The static (and deep) fields of each declared class of a package, by class path:
    read from the ``[objects]`` tables of its ``*.spec.toml`` files without importing
    anything (a thin device has no specializer to read them)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ContextError(f"{package!r} is not a package")
    fields: dict[str, frozenset[str]] = {}
    for root in spec.submodule_search_locations:
        for path in sorted(Path(root).rglob("*.spec.toml")):
            for declaration in tomllib.loads(path.read_text()).get("objects", {}).values():
                names = set(declaration.get("static", [])) | set(declaration.get("deep", []))
                fields[declaration["class"]] = frozenset(names)
    return fields


def global_name(value: Any) -> str | None:
    """``module:qualname`` if that is where ``value`` (a function or class) can be found."""
    if not isinstance(value, _NAMED):
        return None
    module, qualname = getattr(value, "__module__", None), getattr(value, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        return None
    try:
        found = resolve_global(f"{module}:{qualname}")
    except ContextError:
        return None
    return f"{module}:{qualname}" if found is value else None


def resolve_global(name: str) -> Any:
    """The value ``module:qualname`` names, in a module already imported: a context or a
    reply never makes anything import."""
    module_name, _, qualname = name.partition(":")
    module = sys.modules.get(module_name)
    if module is None or not qualname:
        raise ContextError(f"{name!r}: no such module loaded")
    value: Any = module
    for part in qualname.split("."):
        value = value.__dict__.get(part) if isinstance(value, type) else getattr(value, part, None)
        if value is None:
            raise ContextError(f"{name!r}: no {part!r}")
    # A property's getter is named by the property's place (the residual calls the getter).
    return value.fget if isinstance(value, property) else value


def _plain(value: Any) -> Any:
    """The encoding of a value that needs no object table (None if there is none)."""
    if isinstance(value, PLAIN):
        return value
    if isinstance(value, bytes):
        return {"b": base64.b64encode(value).decode()}
    return None


def decode_plain(data: Any) -> Any:
    if isinstance(data, dict):
        if "b" in data:
            return base64.b64decode(data["b"])
        if "t" in data:
            return tuple(decode_plain(v) for v in data["t"])
        raise ContextError(f"not a plain value: {data!r}")
    return data


# ------------------------------------------------------------------ the device: snapshot


def snapshot(roots: dict[str, Any], fields: dict[str, frozenset[str]]) -> tuple[dict[str, Any], list[Any]]:
    """The context (JSON) of these static parameters, and the live objects by number."""
    records: list[dict[str, Any]] = []
    live: list[Any] = []
    numbers: dict[int, int] = {}
    todo: list[tuple[int, Any, list[Any]]] = []

    def encode(value: Any, path: list[Any]) -> Any:
        plain = _plain(value)
        if plain is not None or value is None:
            return plain
        if isinstance(value, tuple):
            return {"t": [encode(v, [*path, [i]]) for i, v in enumerate(value)]}
        if isinstance(value, types.ModuleType):
            return {"M": value.__name__}
        name = global_name(value)
        if name is not None:
            return {"g": name}
        number = numbers.get(id(value))
        if number is None:
            if len(live) >= MAX_OBJECTS:
                raise ContextError(f"more than {MAX_OBJECTS} objects in the context")
            number = numbers[id(value)] = len(live)
            live.append(value)
            records.append({})
            todo.append((number, value, path))
        return {"r": number}

    encoded_roots = {name: encode(value, [name]) for name, value in roots.items()}
    while todo:
        number, value, path = todo.pop(0)  # breadth first: each object by its shortest path
        record: dict[str, Any] = {"p": path, "c": class_path(type(value))}
        if type(value) is dict:
            items = []
            for key, item in value.items():
                key_data = _plain_key(key)
                items.append([key_data, encode(item, [*path, [key_data]])])
            record["i"] = items
        elif type(value) is list:
            record["i"] = [encode(item, [*path, [i]]) for i, item in enumerate(value)]
        elif type(value) in (set, frozenset):
            record["i"] = sorted((_plain_key(item) for item in value), key=repr)
        elif isinstance(value, types.MethodType):
            record["c"] = "builtins:method"
            record["m"] = global_name(value.__func__)
            record["of"] = class_path(type(value.__self__))
        else:
            declared = fields.get(record["c"])
            if declared is not None:
                record["f"] = {name: encode(getattr(value, name), [*path, name])
                               for name in sorted(declared) if hasattr(value, name)}
        records[number] = record
    return {"roots": encoded_roots, "objects": records}, live


def _plain_key(key: Any) -> Any:
    if isinstance(key, tuple):
        return {"t": [_plain_key(k) for k in key]}
    plain = _plain(key)
    if plain is None and key is not None:
        raise ContextError(f"a key or set member that is not a plain value: {key!r}")
    return plain


def follow(roots: dict[str, Any], path: list[Any]) -> Any:
    """The live object at ``path`` from the roots (attribute names, ``[key]`` items)."""
    try:
        value = roots[path[0]]
        for step in path[1:]:
            value = value[decode_plain(step[0])] if isinstance(step, list) else getattr(value, step)
    except (KeyError, IndexError, AttributeError, TypeError) as exc:
        raise ContextError(f"path {path!r} leads nowhere now ({exc!r})") from None
    return value


class Decoder:
    """Values back from their encoding. ``reference(n)`` gives object ``n``: a stand-in on
    the server, the live object on the device. The forms only a reply carries (attributes,
    lists and dicts the specializer made, struct packers) are refused in a context."""

    def __init__(self, count: int, reference: Callable[[int], Any], reply: bool):
        self.count, self.reference, self.reply = count, reference, reply

    def decode(self, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if "r" in data:
            number = data["r"]
            if not isinstance(number, int) or not 0 <= number < self.count:
                raise ContextError(f"reference to object {number!r}, which the context does not have")
            return self.reference(number)
        if "t" in data:
            return tuple(self.decode(v) for v in data["t"])
        if "g" in data:
            return resolve_global(data["g"])
        if "M" in data:
            module = sys.modules.get(data["M"])
            if module is None:
                raise ContextError(f"module {data['M']!r} is not loaded")
            return module
        if self.reply:
            if "Z" in data:
                return struct.Struct(data["Z"])
            if "L" in data:
                return [self.decode(v) for v in data["L"]]
            if "D" in data:
                return {self.decode(k): self.decode(v) for k, v in data["D"]}
            if "a" in data:
                owner, name = data["a"]
                try:
                    return getattr(self.decode(owner), name)
                except AttributeError as exc:
                    raise ContextError(str(exc)) from None
        return decode_plain(data)


class Rebinder(Decoder):
    """Decodes a reply's values on the device: references to context objects are taken
    afresh from the live roots by their paths, names from the loaded modules."""

    def __init__(self, roots: dict[str, Any], context: dict[str, Any]):
        records = context["objects"]
        super().__init__(len(records), functools.cache(lambda number: follow(roots, records[number]["p"])), True)


# ------------------------------------------------------------------ the server: stand-ins


class Opaque:
    """The stand-in for an object whose class cannot be instantiated empty: a frozen
    reference the residual code may use, never read by the specializer."""

    def __init__(self, cls: str):
        self.cls = cls

    def __call__(self, *args: Any) -> Any:
        raise ContextError(f"a stand-in for {self.cls} was called at specialization time")

    def __repr__(self) -> str:
        return f"<stand-in {self.cls}>"


def rebuild(context: Any, fields: dict[str, frozenset[str]]) -> tuple[dict[str, Any], dict[int, int]]:
    """Stand-ins for a snapshot: the roots, and each stand-in's number by its id (what the
    reply's references say). Only declared fields are set, only loaded classes made:
    the request is untrusted. ContextError for anything malformed."""
    try:
        records = context["objects"]
        roots = context["roots"]
        if not isinstance(records, list) or not isinstance(roots, dict) or len(records) > MAX_OBJECTS:
            raise ContextError("a context is roots and at most {MAX_OBJECTS} objects")
        shells = [_shell(record) for record in records]
        values = Decoder(len(shells), shells.__getitem__, False)
        for record, shell in zip(records, shells, strict=True):
            _fill(record, shell, values, fields)
        decoded = {name: values.decode(value) for name, value in roots.items()}
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise ContextError(f"malformed context ({exc!r})") from None
    return decoded, {id(shell): number for number, shell in enumerate(shells)}


def _shell(record: dict[str, Any]) -> Any:
    cls_name = record["c"]
    if cls_name == "builtins:dict":
        return {}
    if cls_name == "builtins:list":
        return []
    if cls_name in ("builtins:set", "builtins:frozenset"):
        return set()
    if cls_name == "builtins:method":
        try:
            function = resolve_global(record["m"]) if record.get("m") else None
        except ContextError:  # a class the server has not loaded (a link driver): opaque
            function = None
        owner = _instance(record["of"])
        if not isinstance(function, types.FunctionType) or isinstance(owner, Opaque):
            return Opaque(f"{record['of']} method")
        return types.MethodType(function, owner)
    return _instance(cls_name)


def _instance(cls_name: str) -> Any:
    try:
        cls = resolve_global(cls_name)
    except ContextError:
        return Opaque(cls_name)
    if not isinstance(cls, type) or cls.__module__ == "builtins":
        return Opaque(cls_name)
    try:
        return cls.__new__(cls)
    except TypeError:
        return Opaque(cls_name)


def _fill(record: dict[str, Any], shell: Any, values: Decoder, fields: dict[str, frozenset[str]]) -> None:
    if "i" in record:
        items = record["i"]
        if isinstance(shell, dict):
            for key, item in items:
                shell[decode_plain(key)] = values.decode(item)
        elif isinstance(shell, list):
            shell.extend(values.decode(item) for item in items)
        elif isinstance(shell, set):
            shell.update(decode_plain(item) for item in items)
    if "f" in record:
        declared = fields.get(record["c"], frozenset())
        unknown = set(record["f"]) - declared
        if unknown:
            raise ContextError(f"{record['c']}: fields not declared static: {sorted(unknown)}")
        for name, item in record["f"].items():
            setattr(shell, name, values.decode(item))


def encoder(numbers: dict[int, int], globals_by_id: Callable[[], dict[int, str]]) -> Callable[[Any], Any]:
    """The server's encoding of a residual's constants and assumptions: stand-ins by number,
    everything else by name (``globals_by_id``: module-level values, for struct methods
    and the like)."""

    def encode(value: Any) -> Any:
        plain = _plain(value)
        if plain is not None or value is None:
            return plain
        number = numbers.get(id(value))
        if number is not None:
            return {"r": number}
        if isinstance(value, tuple):
            return {"t": [encode(v) for v in value]}
        if isinstance(value, types.ModuleType):
            return {"M": value.__name__}
        name = global_name(value) or globals_by_id().get(id(value))
        if name is not None:
            return {"g": name}
        owner = getattr(value, "__self__", None)
        if owner is not None and not isinstance(owner, types.ModuleType) and hasattr(value, "__name__"):
            return {"a": [encode(owner), value.__name__]}
        if type(value) is struct.Struct:  # a packer the specializer made for a static format
            return {"Z": value.format}
        if type(value) is list:  # made by the specializer (a literal folded): the device makes its own
            return {"L": [encode(v) for v in value]}
        if type(value) is dict:
            return {"D": [[encode(k), encode(v)] for k, v in value.items()]}
        raise ContextError(f"cannot name {value!r} for the device")

    return encode
