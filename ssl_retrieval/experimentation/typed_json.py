"""A frozen dataclass read from JSON, every value checked against the field's type.

  read(Config, "configs/experiments/debian.json")   the file, or ValueError naming it and the field
  from_json(Config, values, where)                   the same from parsed JSON

Types a field may have: str, int, float (an integer is taken too), bool, `X | None`, unions of
those (the first that fits; `str | int | float | bool` keeps a value as JSON wrote it),
`tuple[X, ...]` (a JSON list), `dict[str, X]` (a JSON object, in its order) and another such
dataclass (a JSON object). A field's JSON name is its own, or `dataclasses.field(metadata={"json":
name})` (for names Python reserves, like "from"). Keys starting with "_" are comments; any other
key the dataclass has no field for is an error, and so is a missing field without a default.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing


class ConfigError(ValueError):
    """A value of a config file that does not fit its field: the message names both."""


def read(cls, path: str):
    """The `cls` of the JSON file at `path`.

    Raises:
      ConfigError: the file is not JSON, or a value does not fit (`path: field: what`).
      OSError: the file cannot be read.
    """
    return from_json(cls, load(path), path)


def load(path: str):
    """The parsed JSON file; ConfigError naming it when it is not JSON."""
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not JSON ({e})") from None


def from_json(cls, values, where: str = "config"):
    """The `cls` of parsed JSON `values`; errors start with `where` (the file's name)."""
    try:
        return _dataclass(cls, values, "")
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def json_name(field: dataclasses.Field) -> str:
    """The field's name in the JSON file."""
    return field.metadata.get("json", field.name)


def _at(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _dataclass(cls, values, path: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{path or 'the file'}: expected an object, got {_show(values)}")
    hints = typing.get_type_hints(cls)
    fields = {json_name(f): f for f in dataclasses.fields(cls)}
    unknown = [k for k in values if k not in fields and not k.startswith("_")]
    if unknown:
        raise ConfigError(
            f"{_at(path, unknown[0])}: unknown field; {path or 'the file'} may have "
            f"{sorted(fields)} (and comments: keys starting with _)"
        )
    kwargs = {}
    for name, field in fields.items():
        if name in values:
            kwargs[field.name] = _value(hints[field.name], values[name], _at(path, name))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{_at(path, name)}: missing (it has no default)")
    return cls(**kwargs)


def _value(kind, value, path: str):
    """`value` as `kind`, or ConfigError naming `path`."""
    origin = typing.get_origin(kind)
    if origin is typing.Union or isinstance(kind, types.UnionType):
        return _union(typing.get_args(kind), value, path)
    if dataclasses.is_dataclass(kind):
        return _dataclass(kind, value, path)
    if origin is tuple:
        (item, _) = typing.get_args(kind)
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {_show(value)}")
        return tuple(_value(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        _, item = typing.get_args(kind)
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected an object, got {_show(value)}")
        return {k: _value(item, v, _at(path, k)) for k, v in value.items()}
    return _scalar(kind, value, path)


def _union(kinds, value, path: str):
    if value is None and type(None) in kinds:
        return None
    meant = []  # the errors of the alternatives of the value's shape: what it was meant as
    for kind in (k for k in kinds if k is not type(None)):
        try:
            return _value(kind, value, path)
        except ConfigError as e:
            if _shape(kind) == _shape(value):
                meant.append(e)
    if meant and _shape(value) != "scalar":  # say what is wrong inside the object or list
        raise meant[0]
    names = " or ".join(_name(k) for k in kinds)
    raise ConfigError(f"{path}: expected {names}, got {_show(value)}")


def _scalar(kind, value, path: str):
    # bool is an int to Python, not to a config: `"trials": true` is a mistake.
    fits = {
        str: isinstance(value, str),
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
    }
    if kind not in fits:
        raise TypeError(f"typed_json: unsupported field type {kind!r}")
    if not fits[kind]:
        raise ConfigError(f"{path}: expected {_name(kind)}, got {_show(value)}")
    return float(value) if kind is float else value


def _shape(kind_or_value) -> str:
    """ "object", "list" or "scalar": what a type reads, or what a JSON value is."""
    kind = kind_or_value
    if isinstance(kind, dict) or typing.get_origin(kind) is dict or dataclasses.is_dataclass(kind):
        return "object"
    if isinstance(kind, list) or typing.get_origin(kind) is tuple:
        return "list"
    return "scalar"


def _name(kind) -> str:
    if kind is type(None):
        return "null"
    origin = typing.get_origin(kind)
    if origin is tuple:
        return "a list"
    if origin is dict or dataclasses.is_dataclass(kind):
        return "an object"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        kind, str(kind)
    )


def _show(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."
