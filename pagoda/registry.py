"""One generic registry for every kind of plugin-provided thing (models, parsers, backends ...)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class RegistryError(ValueError):
    """A name registered twice, or a lookup of a name nobody registered."""


@dataclass(slots=True)
class Entry(Generic[T]):
    """One registered name: the value (a class, or a lazy "module:attr" string) and who gave it."""

    name: str
    value: T | str
    provider: str
    extra: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Maps names to classes (or lazy "module:Class" references), loudly.

    Registering a name twice raises and names both providers; looking up an unknown name
    raises and lists the names that exist.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, value: T | str, *, provider: str = "?", **extra: Any) -> None:
        if name in self._entries:
            first = self._entries[name].provider
            raise RegistryError(
                f"{self.kind} {name!r} is registered twice: by {first!r} and by {provider!r}"
            )
        self._entries[name] = Entry(name, value, provider, dict(extra))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in self.names()]

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self.names()) or "(none)"
            raise RegistryError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def get(self, name: str) -> T:
        """The registered value, importing it first if it was registered lazily."""
        entry = self.entry(name)
        if isinstance(entry.value, str):
            entry.value = load_reference(entry.value)
        return entry.value  # type: ignore[return-value]


def load_reference(ref: str) -> Any:
    """Import "package.module:Attr" and return Attr."""
    module_name, _, attr = ref.partition(":")
    if not attr:
        raise RegistryError(f"lazy reference {ref!r} must look like 'module:Attr'")
    return getattr(importlib.import_module(module_name), attr)
