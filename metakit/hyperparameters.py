"""Typed hyperparameter dataclasses that round-trip through JSON."""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from typing import Any, TypeVar

from metakit.errors import MetakitError

H = TypeVar("H", bound="Hyperparameters")


@dataclasses.dataclass
class Hyperparameters:
    """Base of every plugin's hyperparameter dataclass.

    Subclasses are plain dataclasses of JSON scalars (bool, int, float, str and
    tuples of them); ``from_dict`` checks names and types so a typo in a config
    file is an error, not a silently ignored option.
    """

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls: type[H], values: dict[str, Any]) -> H:
        fields = {field.name: field for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise MetakitError(
                f"{cls.__name__} has no option {', '.join(unknown)}; known: {', '.join(fields)}"
            )
        hints = typing.get_type_hints(cls)
        return cls(**{name: json_value(name, value, hints[name]) for name, value in values.items()})

    @classmethod
    def from_json(cls: type[H], text: str) -> H:
        return cls.from_dict(json.loads(text))


def json_value(name: str, value: Any, hint: Any) -> Any:
    """``value`` (as JSON or TOML holds it) for an option ``name`` typed ``hint``: an int
    is accepted for a float and a list for a tuple; a bool is not an int. Anything else
    is a MetakitError naming the option and the types it takes."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    options = typing.get_args(hint) if union else (hint,)
    for option in options:
        try:
            return _as_type(value, option)
        except TypeError:
            continue
    expected = " or ".join(_type_name(option) for option in options)
    raise MetakitError(f"option {name} must be {expected}, got {value!r}")


def _as_type(value: Any, hint: Any) -> Any:
    """``value`` as ``hint`` asks, or TypeError. An annotation that ``isinstance`` cannot
    test (a Protocol, say) accepts any value."""
    origin = typing.get_origin(hint)
    if hint is typing.Any or (hint is type(None) and value is None):
        return value
    if origin is typing.Literal and value in typing.get_args(hint):
        return value
    if origin is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(hint)
        items = [args[0]] * len(value) if args[-1:] == (Ellipsis,) else list(args)
        if len(items) == len(value):
            return tuple(_as_type(v, item) for v, item in zip(value, items))
    if origin in (typing.Literal, tuple):
        raise TypeError
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    kind = origin or hint
    if isinstance(value, str) and isinstance(kind, type) and issubclass(kind, os.PathLike):
        return value  # a path option takes its path as a string
    try:
        matches = isinstance(value, kind)
    except TypeError:
        return value
    if matches and (kind is bool or not isinstance(value, bool)):
        return value
    raise TypeError


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "null"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(arg) for arg in args)
    if origin is tuple:
        return "a list" if args[-1:] == (Ellipsis,) else f"a list of {len(args)}"
    return (origin or hint).__name__
