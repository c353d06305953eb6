"""Config sections as dataclasses: one rule for building them from YAML dicts, and errors that name
the file, the line and the key.

- :func:`load_yaml` reads a YAML mapping (``yaml.safe_load`` semantics) and records the line of
  every key (:class:`Locations`); a syntax error is a one-line :class:`ConfigError`
  ``"configs/x.yaml:7: YAML syntax error: ..."``.
- :func:`from_section` builds a config dataclass from one section: unknown keys, values of the
  wrong type and the dataclass's own ``__post_init__`` checks all become a :class:`ConfigError`
  whose ``path`` is the key, e.g. ``("min_oks",)``.
- :func:`locate` turns such an error into ``"configs/x.yaml:12: track.min_oks: must be in [0, 1],
  got 1.5"``.

Type rules of :func:`from_section` (from the dataclass's field annotations): ``bool`` is not an
``int`` or a ``float``; an ``int`` is a ``float``; an integral float (``3.0``) is accepted for an
``int`` and converted; a string that spells a number (``"1e-4"``, which YAML 1.1 reads as a string)
is accepted for a ``float`` and converted; ``None`` only where the annotation allows it; a list
is accepted for a ``tuple`` (and a tuple for a ``list``); a ``str`` field also takes an
``os.PathLike``. Annotations the checker does not know (classes other than the builtins above,
``Callable``, ``Any``, ...) accept any value.
"""
from __future__ import annotations

import dataclasses
import functools
import numbers
import os
import re
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path

import yaml

__all__ = ["ConfigError", "Locations", "from_section", "load_yaml", "locate"]


class ConfigError(ValueError):
    """A configuration problem.

    Attributes:
        path: key path of the offending value, e.g. ``("track", "min_oks")``; ``()`` when the
            problem is not one key's. :func:`from_section` gives paths relative to its section.
        detail: the message without the key, for :func:`locate` (``"must be in [0, 1], got 1.5"``);
            ``str(error)`` is the full message.
    """

    def __init__(self, message: str, path=(), detail: str | None = None) -> None:
        super().__init__(message)
        self.path = tuple(path)
        self.detail = message if detail is None else detail

    def under(self, *prefix) -> "ConfigError":
        """The same error with ``prefix`` put in front of its path (a section's name)."""
        return ConfigError(str(self), tuple(prefix) + self.path, self.detail)


class Locations(dict):
    """``{key path tuple: 1-based line}`` of a YAML file: mapping keys (the line of the key) and
    sequence items (the line of the item); ``()`` is the top-level mapping."""

    def line(self, path) -> int | None:
        """Line of ``path``, or of its longest prefix that the file has (a key the file does not
        set is reported at its section); None when not even the first key is known."""
        path = tuple(path)
        while path:
            if path in self:
                return self[path]
            path = path[:-1]
        return self.get(())


def locate(error: BaseException, locations: Mapping | None, file, prefix=()) -> str:
    """One line for an error found in a config file: ``"{file}:{line}: {key.path}: {detail}"``.

    Args:
        error: usually a :class:`ConfigError` (its ``path`` and ``detail`` are used); any other
            exception is reported with its message at the top of the file.
        locations: from :func:`load_yaml` (a plain ``{path: line}`` mapping works too); None: no line.
        file: the file's name as the user should see it.
        prefix: key path of the section ``error.path`` is relative to (``("track",)`` when the
            error comes from ``from_section`` of the ``track`` section).
    """
    path = tuple(prefix) + tuple(getattr(error, "path", ()) or ())
    detail = getattr(error, "detail", None) or str(error)
    line = None
    if locations is not None:
        locs = locations if isinstance(locations, Locations) else Locations(locations)
        line = locs.line(path)
    where = f"{file}:{line}" if line is not None else f"{file}"
    key = ".".join(str(p) for p in path)
    return f"{where}: {key}: {detail}" if key else f"{where}: {detail}"


# --------------------------------------------------------------------------------------- YAML

def _yaml_error(file, e: yaml.YAMLError) -> ConfigError:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    if mark is None:
        return ConfigError(f"{file}: YAML error: {' '.join(str(e).split())}")
    problem = " ".join(str(getattr(e, "problem", None) or "").split())
    context = " ".join(str(getattr(e, "context", None) or "").split())
    cmark = getattr(e, "context_mark", None)
    if not problem:
        problem, context = context or "invalid YAML", ""
    if context and problem.startswith("but "):      # "expected a single document..., but found another"
        problem, context = f"{context}, {problem}", ""
    note = f"column {mark.column + 1}"
    if context:
        note += f"; {context}"
        if cmark is not None and cmark.line != mark.line:
            note += f" at line {cmark.line + 1}"
    return ConfigError(f"{file}:{mark.line + 1}: YAML syntax error: {problem} ({note})")


def _locations(loader: yaml.SafeLoader, root: yaml.Node) -> Locations:
    locs = Locations()
    locs[()] = root.start_mark.line + 1
    seen: set[int] = set()  # aliases: each node once (no cycles, no blow-up)

    def walk(node, path):
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                try:
                    key = loader.construct_object(k, deep=True)
                    hash(key)
                except Exception:  # noqa: BLE001 - a key safe_load accepted; just do not locate it
                    continue
                locs[path + (key,)] = k.start_mark.line + 1
                walk(v, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                locs[path + (i,)] = item.start_mark.line + 1
                walk(item, path + (i,))

    walk(root, ())
    return locs


def load_yaml(path) -> tuple[dict, Locations]:
    """Read a YAML file whose top level is a mapping, with the line of every key.

    Values are what ``yaml.safe_load`` gives; an empty file is ``{}``.

    Returns:
        ``(data, locations)``: :class:`Locations` maps key paths (``("track", "min_oks")``; list items
        by index) to 1-based lines.

    Raises:
        ConfigError: one line naming the file: missing, a directory, unreadable, a YAML error
            (``"x.yaml:7: YAML syntax error: <problem> (column 3)"``) or a top level that is not a mapping.
    """
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{path}: config file not found")
    if p.is_dir():
        raise ConfigError(f"{path}: is a directory, not a config file")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        loader = yaml.SafeLoader(raw)
    except yaml.YAMLError as e:
        raise _yaml_error(path, e) from None
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
        locs = _locations(loader, root) if root is not None else Locations()
    except yaml.YAMLError as e:
        raise _yaml_error(path, e) from None
    finally:
        loader.dispose()
    if data is None:
        return {}, locs
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:{locs.get((), 1)}: the top level must be a mapping of keys, "
                          f"got {_a(type(data).__name__)}")
    return data, locs


# ------------------------------------------------------------------------------- type checks

class _Any:
    """An annotation the checker does not know: any value is accepted."""


_NONE = type(None)
_FLOAT_STR = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_SIMPLE = {"int": int, "float": float, "str": str, "bool": bool, "dict": dict, "list": list, "tuple": tuple,
           "None": _NONE, "NoneType": _NONE, "Any": _Any, "typing.Any": _Any}


class _Mismatch(Exception):
    pass


def _a(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def _parse(s: str):
    """A small parser for string annotations when they cannot be evaluated: unions (``|``,
    ``Optional[...]``), the builtins and ``tuple[...]`` / ``list[...]``; anything else is ``_Any``."""
    s = s.strip()
    parts, depth, cur = [], 0, ""
    for ch in s:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "|" and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    if len(parts) > 1:
        return typing.Union[tuple(_parse(p) for p in parts)]  # noqa: UP007
    m = re.fullmatch(r"([\w.]+)\s*\[(.*)\]", s)
    if m is None:
        return _SIMPLE.get(s, _Any)
    name, inner = m.group(1).split(".")[-1], m.group(2)
    args, depth, cur = [], 0, ""
    for ch in inner:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            args.append(cur)
            cur = ""
        else:
            cur += ch
    args.append(cur)
    args = [a.strip() for a in args]
    if name == "Optional" and len(args) == 1:
        return typing.Optional[_parse(args[0])]  # noqa: UP007
    if name == "Union":
        return typing.Union[tuple(_parse(a) for a in args)]  # noqa: UP007
    if name in ("tuple", "Tuple"):
        if len(args) == 2 and args[1] == "...":
            return tuple[_parse(args[0]), ...]
        return tuple[tuple(_parse(a) for a in args)] if args != [""] else tuple
    if name in ("list", "List") and len(args) == 1:
        return list[_parse(args[0])]
    if name in ("dict", "Dict"):
        return dict
    return _Any


@functools.lru_cache(maxsize=None)
def _field_types(cls) -> dict:
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - a name that cannot be resolved: field by field below
        hints = {}
    out = {}
    module_globals = getattr(sys.modules.get(cls.__module__), "__dict__", {})
    for f in dataclasses.fields(cls):
        if f.name in hints:
            out[f.name] = hints[f.name]
        elif isinstance(f.type, str):
            try:
                out[f.name] = eval(f.type, dict(module_globals), dict(vars(cls)))  # noqa: S307 - annotations
            except Exception:  # noqa: BLE001
                out[f.name] = _parse(f.type)
        else:
            out[f.name] = f.type
    return out


def _union_args(t):
    origin = typing.get_origin(t)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(t)
    return None


def _describe(t) -> str:
    alts = _union_args(t)
    if alts is not None:
        return " or ".join(_describe(a) for a in alts)
    if t is _NONE:
        return "null"
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin in (tuple, list) and args:
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            kinds = {_describe_plural(a) for a in args}
            return f"a list of {len(args)} {kinds.pop()}" if len(kinds) == 1 else f"a list of {len(args)} items"
        return f"a list of {_describe_plural(args[0])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a mapping",
            list: "a list", tuple: "a list"}.get(origin or t, _a(getattr(t, "__name__", str(t))))


def _describe_plural(t) -> str:
    return {int: "integers", float: "numbers", str: "strings", bool: "booleans", dict: "mappings"}.get(t, "items")


def _check(value, t):
    """``value`` converted for type ``t`` (usually unchanged); raises :class:`_Mismatch`."""
    if t is _Any or t is typing.Any or t is object:
        return value
    alts = _union_args(t)
    if alts is not None:
        for a in alts:
            try:
                return _check(value, a)
            except _Mismatch:
                pass
        raise _Mismatch
    if t is _NONE or t is None:
        if value is None:
            return value
        raise _Mismatch
    origin, args = typing.get_origin(t), typing.get_args(t)
    base = origin or t
    if base is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if base is int:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, numbers.Integral):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _Mismatch
    if base is float:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, numbers.Real):
            return value
        if isinstance(value, str) and _FLOAT_STR.fullmatch(value.strip()):
            return float(value)
        raise _Mismatch
    if base is str:
        if isinstance(value, str) or isinstance(value, os.PathLike):
            return value
        raise _Mismatch
    if base is dict:
        if isinstance(value, Mapping):
            return value
        raise _Mismatch
    if base in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if not args:
            return value
        if base is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise _Mismatch
            items = [_check(v, a) for v, a in zip(value, args)]
        else:
            items = [_check(v, args[0]) for v in value]
        return type(value)(items)
    if isinstance(base, type) and base.__module__ == "builtins" and base not in (object, type):
        if isinstance(value, base):   # another builtin (set, bytes, complex): isinstance
            return value
        raise _Mismatch
    return value   # anything else (classes, Callable, Literal, ...): not checked


def _show(value) -> str:
    r = repr(value)
    return r if len(r) <= 60 else r[:57] + "..."


def _field_of(message: str, names) -> str | None:
    """The field a ``__post_init__`` message is about: the longest field name it starts with."""
    for name in sorted(names, key=len, reverse=True):
        if message.startswith(name) and not message[len(name):len(name) + 1].isidentifier() \
                and not message[len(name):len(name) + 1].isdigit():
            return name
    return None


_VERBS = {"must", "is", "are", "should", "cannot", "can't", "needs", "has", "not"}


def _without_name(message: str, name: str) -> str:
    """``"min_oks must be in [0, 1]"`` -> ``"must be in [0, 1]"`` (the key is shown next to it); the
    whole message when what follows the name does not read on its own (``"a and b must ..."``)."""
    rest = message[len(name):]
    if rest.startswith(":"):
        return rest[1:].strip() or message
    rest = rest.strip()
    return rest if rest.split(" ", 1)[0] in _VERBS else message


def from_section(cls, d: dict | None, noun: str):
    """Build dataclass ``cls`` from a config section, checking keys and value types.

    Raises:
        ConfigError: (a ``ValueError``) with ``path = (key,)``:
            an unknown key (``unknown {noun} 'key'; known: ...``),
            a value of the wrong type (``{noun} key: expected a number, got 'high' (str)``),
            or a ``ValueError`` of the dataclass's own validation (message unchanged; attributed to
            the field it starts with, ``path = ()`` when none).
    """
    if d is not None and not isinstance(d, Mapping):
        raise ConfigError(f"expected a mapping of {noun}s, got {_show(d)} ({type(d).__name__})",
                          detail=f"expected a mapping of {noun}s, got {_show(d)} ({type(d).__name__})")
    d = dict(d or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known, key=str)
    if unknown:
        raise ConfigError(f"unknown {noun} {unknown[0]!r}; known: {', '.join(sorted(known))}", (unknown[0],))
    hints = _field_types(cls)
    for key, value in d.items():
        t = hints.get(key, _Any)
        try:
            d[key] = _check(value, t)
        except _Mismatch:
            detail = f"expected {_describe(t)}, got {_show(value)} ({type(value).__name__})"
            raise ConfigError(f"{noun} {key}: {detail}", (key,), detail) from None
    try:
        return cls(**d)
    except ConfigError:
        raise
    except ValueError as e:
        msg = str(e)
        name = _field_of(msg, known)
        if name is None:
            raise ConfigError(msg) from e
        raise ConfigError(msg, (name,), _without_name(msg, name)) from e
