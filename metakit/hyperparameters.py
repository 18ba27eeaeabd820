"""Typed hyperparameter dataclasses that round-trip through JSON."""

from __future__ import annotations

import collections.abc
import dataclasses
import json
import os
import types
import typing
from typing import Any, TypeVar

from metakit.errors import MetakitError

H = TypeVar("H", bound="Hyperparameters")
JSON_KINDS = (
    bool,
    int,
    float,
    str,
    list,
    dict,
    os.PathLike,
    collections.abc.Sequence,
    collections.abc.Mapping,
)
"""The types whose values JSON and TOML hold (tuples as lists, paths as strings): an option of
another type (an Enum, ``torch.dtype``, a Protocol) is not checked."""


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
    is accepted for a float, a list for a tuple and a string for a path; a bool is not an
    int. A type that JSON cannot hold (an Enum, ``torch.dtype``, a Protocol) is not checked.
    Anything else is a MetakitError naming the option and the types it takes."""
    try:
        return _as_hint(value, hint)
    except TypeError:
        expected = " or ".join(_type_name(option) for option in _alternatives(hint))
        raise MetakitError(f"option {name} must be {expected}, got {value!r}") from None


def _alternatives(hint: Any) -> tuple[Any, ...]:
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    return typing.get_args(hint) if union else (hint,)


def _as_hint(value: Any, hint: Any) -> Any:
    """``value`` as the first alternative of ``hint`` that takes it, or TypeError."""
    for option in _alternatives(hint):
        try:
            return _as_type(value, option)
        except TypeError:
            continue
    raise TypeError


def _as_type(value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    kind = origin or hint
    if hint is typing.Any or (hint is type(None) and value is None):
        return value
    if origin is typing.Literal:
        if value in typing.get_args(hint):
            return value
        raise TypeError
    if kind is tuple:
        return _as_tuple(value, typing.get_args(hint))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and isinstance(kind, type) and issubclass(kind, os.PathLike):
        return value  # a path option takes its path as a string
    if hint is not type(None) and kind not in JSON_KINDS:
        return value
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    raise TypeError


def _as_tuple(value: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """A list (or tuple) as ``tuple[args]``: any items for a bare ``tuple``, any number of
    ``args[0]`` for ``tuple[X, ...]``, else exactly one item per arg."""
    if not isinstance(value, (list, tuple)):
        raise TypeError
    if not args:
        return tuple(value)
    items = [args[0]] * len(value) if args[-1:] == (Ellipsis,) else list(args)
    if len(items) != len(value):
        raise TypeError
    return tuple(_as_hint(v, item) for v, item in zip(value, items))


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "null"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(arg) for arg in args)
    if (origin or hint) is tuple:
        return "a list" if not args or args[-1:] == (Ellipsis,) else f"a list of {len(args)}"
    return (origin or hint).__name__
