"""Name -> factory registries for algorithms, backbones and task samplers.

Built-in plugins register with a decorator at their definition. Third-party
packages declare Python entry points in the groups ``metakit.algorithms``,
``metakit.backbones`` and ``metakit.samplers``; those are only imported the
first time their name is looked up (or the registry is listed), so a broken
plugin never slows down or breaks ``import metakit``. A plugin that reuses a
taken name is an error, never a silent override.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from importlib import metadata
from typing import Any, TypeVar

from metakit.errors import MetakitError

T = TypeVar("T")


class Registry:
    """One kind of plugin: a mapping from a name to a factory (usually a class)."""

    def __init__(self, kind: str, entry_point_group: str):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._factories: dict[str, Callable[..., Any]] = {}
        self._entry_points: dict[str, metadata.EntryPoint] | None = None

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@registry.register("name")`` above a class or function."""

        def decorate(factory: T) -> T:
            self._add(name, factory)
            return factory

        return decorate

    def _add(self, name: str, factory: Callable[..., Any]) -> None:
        if name in self._factories:
            raise MetakitError(
                f"{self.kind} '{name}' is registered twice "
                f"({_origin(self._factories[name])} and {_origin(factory)}); rename one of them"
            )
        self._factories[name] = factory

    def _plugins(self) -> dict[str, metadata.EntryPoint]:
        if self._entry_points is None:
            found = metadata.entry_points(group=self.entry_point_group)
            self._entry_points = {ep.name: ep for ep in found}
        return self._entry_points

    def _load_plugin(self, name: str) -> None:
        entry_point = self._plugins().pop(name)
        try:
            factory = entry_point.load()
        except Exception as error:  # a plugin's import error is the plugin's bug, say whose
            raise MetakitError(
                f"{self.kind} plugin '{name}' ({entry_point.value}) failed to import: {error}"
            ) from error
        self._add(name, factory)

    def get(self, name: str) -> Callable[..., Any]:
        """The factory registered under ``name``; a MetakitError suggests the closest name."""
        if name in self._plugins():
            self._load_plugin(name)
        if name in self._factories:
            return self._factories[name]
        known = self.names()
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise MetakitError(f"unknown {self.kind} '{name}'.{hint} Known: {', '.join(known)}")

    def create(self, name: str, **kwargs: Any) -> Any:
        """Call the factory registered under ``name`` with ``kwargs``."""
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        """Every registered name, plugins included (which loads them), sorted."""
        for name in list(self._plugins()):
            self._load_plugin(name)
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        return name in self._factories or name in self._plugins()


def _origin(factory: Callable[..., Any]) -> str:
    return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', factory)}"


algorithms = Registry("algorithm", "metakit.algorithms")
backbones = Registry("backbone", "metakit.backbones")
samplers = Registry("sampler", "metakit.samplers")

register_algorithm = algorithms.register
register_backbone = backbones.register
register_sampler = samplers.register
create_algorithm = algorithms.create
create_backbone = backbones.create
create_sampler = samplers.create
list_algorithms = algorithms.names
list_backbones = backbones.names
list_samplers = samplers.names
