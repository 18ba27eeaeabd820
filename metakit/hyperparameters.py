"""Typed hyperparameter dataclasses that round-trip through JSON."""

from __future__ import annotations

import dataclasses
import json
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
        return cls(**{name: _coerce(name, value, hints[name]) for name, value in values.items()})

    @classmethod
    def from_json(cls: type[H], text: str) -> H:
        return cls.from_dict(json.loads(text))


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Accept what JSON can hold for ``hint`` (an int for a float, a list for a tuple)."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        (item,) = {arg for arg in typing.get_args(hint) if arg is not Ellipsis}
        if not isinstance(value, (list, tuple)):
            raise MetakitError(f"option {name} must be a list, got {value!r}")
        return tuple(_coerce(name, v, item) for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is typing.Any or isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise MetakitError(f"option {name} must be {hint.__name__}, got {value!r}")
