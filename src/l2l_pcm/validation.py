"""Typed parsing of configuration data at every boundary: JSON config files, ``--hardware`` and ``--device``
files, ``export --set`` and checkpoint metadata all become config dataclasses through :func:`parse`.

Built on msgspec (https://jcristharif.com/msgspec/): it converts plain data into the *standard* frozen
dataclasses this library already uses, so a config stays hashable (a static argument of jitted code)
and needs no base class, checking every field against its type annotation in strict mode (``"1"`` is not
1, ``true`` is not a number, ``8.0`` is not an int) and naming the failing field by its path. It is one
small wheel with no dependencies, which keeps the core at JAX + optax + small pieces. Range rules stay in
each class's ``__post_init__``, so a config built in Python obeys the same rules as one read from a file.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import typing
from collections.abc import Mapping

import msgspec

from l2l_pcm.errors import ConfigError


@functools.cache
def _field_types(cls: type) -> dict[str, object]:
    return typing.get_type_hints(cls)


def _dataclass_in(hint: object) -> type | None:
    """The dataclass a field's annotation names (also inside ``X | None``), if any."""
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return hint
    for arg in typing.get_args(hint):
        if dataclasses.is_dataclass(arg) and isinstance(arg, type):
            return arg
    return None


def refuse_unknown_fields(cls: type, data: Mapping, path: str) -> None:
    """Refuse keys that are not fields of ``cls``, at every level of nested config dataclasses (msgspec
    ignores unknown keys of a dataclass, and a misspelt setting must never be silently dropped)."""
    names = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        close = [match for name in unknown for match in difflib.get_close_matches(str(name), names, 1)]
        hint = f" (did you mean {close}?)" if close else ""
        raise ConfigError(f"{path}: unknown {cls.__name__} fields {unknown}{hint}")
    types = _field_types(cls)
    for name, value in data.items():
        nested = _dataclass_in(types[name])
        if nested is not None and isinstance(value, Mapping):
            refuse_unknown_fields(nested, value, f"{path}.{name}")


def _holds_floats(hint: object) -> bool:
    """Whether a field's annotation takes float numbers (``float``, ``float | None``, ``tuple[float, ...]``)."""
    return hint is float or any(_holds_floats(arg) for arg in typing.get_args(hint))


def _inexact_integer(value: object) -> object | None:
    """The first integer in ``value`` (a number or a list of them) that a float cannot hold exactly."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if float(value) != value else None
    if isinstance(value, (list, tuple)):
        return next((found for item in value if (found := _inexact_integer(item)) is not None), None)
    return None


def refuse_inexact_floats(cls: type, data: Mapping, path: str) -> None:
    """Refuse an integer given for a float setting that float64 cannot hold (2**53 + 1 would arrive as
    2**53): the setting would silently differ from the file."""
    types = _field_types(cls)
    for name, value in data.items():
        nested = _dataclass_in(types[name])
        if nested is not None and isinstance(value, Mapping):
            refuse_inexact_floats(nested, value, f"{path}.{name}")
        elif _holds_floats(types[name]) and (found := _inexact_integer(value)) is not None:
            raise ConfigError(f"{path}.{name}: {found} cannot be held exactly as a float number")


def merged(base: Mapping, changes: Mapping) -> dict:
    """``base`` with ``changes`` laid over it: a JSON object merges field by field into the object it
    replaces, anything else replaces (``--hardware`` files over a model's tree, ``export --set`` sections)."""
    out = dict(base)
    for name, value in changes.items():
        nested = isinstance(value, Mapping) and isinstance(base.get(name), Mapping)
        out[name] = merged(base[name], value) if nested else value
    return out


_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


def parse(cls: type, data: object, path: str):
    """``data`` (a JSON object, or an instance of ``cls``) as config dataclass ``cls``, or one
    :class:`ConfigError` that names the field: ``path`` is where the data came from (e.g. ``hardware``),
    and the field's path within it is appended."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a JSON object of {cls.__name__} fields, got {data!r}")
    refuse_unknown_fields(cls, data, path)
    refuse_inexact_floats(cls, data, path)
    try:
        return msgspec.convert(dict(data), cls, strict=True)
    except msgspec.ValidationError as exc:  # also wraps the class's own rules (its __post_init__'s ConfigError)
        match = _AT.match(str(exc))
        message = match.group("message").replace("`", "")
        where = path + (match.group("path") or "")
        section = where.rsplit(".", 1)
        if len(section) == 2 and message.startswith(section[1] + "."):  # a section's own rule names its field
            field, _, message = message.partition(" ")
            where = f"{section[0]}.{field}"
        if message.startswith("Expected"):
            message = "e" + message[1:]
        raise ConfigError(f"{where}: {message}") from None
