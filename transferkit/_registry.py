"""One generic registry: ``@REG.register("name")``, ``REG.get(name)`` with "did you mean".

Backbones and strategies each have one; adding a thing is one decorated function or class,
and registering it enrols it in the conformance tests.
"""
from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, TypeVar

from .errors import UserInputError

T = TypeVar("T")


@dataclass
class Entry(Generic[T]):
    name: str
    obj: T
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """A named collection of factories.

    Args:
        kind: what the registry holds, used in messages ("backbone", "strategy").
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        """Decorator that enrols ``obj`` under ``name`` with free-form metadata."""

        def deco(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, obj, dict(meta))
            return obj

        return deco

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries.values())

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
            hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else None
            known = ", ".join(sorted(self._entries))
            raise UserInputError(
                f"unknown {self.kind} {name!r}; known: {known}",
                hint=hint or f"pick one of: {known}",
            ) from None

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def list(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))
