"""One way to dispatch by name: a registry of lazily imported implementations.

Storage backends (by URI kind), retrievers (by URL scheme), input formats (by ``format:``) and
refresh engines (by ``--engine``) are all looked up the same way: a name maps to
``"module:attribute"``, imported on first use, with an install hint when the import fails.
Third-party packages add entries through an entry-point group (``datastack.engines``,
``datastack.formats``) or by calling :meth:`Registry.register`.

>>> reg: Registry[object] = Registry("greeting", entry_points=None)
>>> reg.register("hello", "string:capwords")
>>> reg.get("hello")("a b")
'A B'
>>> reg.get("bye")
Traceback (most recent call last):
...
datastack.errors.ConfigurationError: unknown greeting 'bye'; known: hello
"""

from __future__ import annotations

import pkgutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from datastack.errors import ConfigurationError, MissingDependencyError

T = TypeVar("T")


@dataclass(frozen=True)
class _Entry:
    target: str | Callable[..., Any] | object  # "module:attr" or the object itself
    extra: str = ""  # the pip extra providing its dependencies


class Registry(Generic[T]):
    """Name -> implementation, imported lazily.

    Parameters
    ----------
    kind:
        What the names are, for messages ("storage backend", "format", ...).
    entry_points:
        An entry-point group scanned once on the first lookup of an unknown name (packages
        installed next to datastack register themselves there), or ``None``.
    """

    def __init__(self, kind: str, *, entry_points: str | None = None) -> None:
        self.kind = kind
        self.group = entry_points
        self._entries: dict[str, _Entry] = {}
        self._loaded: dict[str, T] = {}
        self._scanned = entry_points is None
        self._lock = threading.Lock()

    def register(self, name: str, target: str | object, *, extra: str = "") -> None:
        """Add (or replace) ``name``: ``target`` is ``"module:attr"`` or the object itself."""
        with self._lock:
            self._entries[name] = _Entry(target, extra)
            self._loaded.pop(name, None)

    def names(self) -> list[str]:
        """Every registered name (entry points included), sorted."""
        self._scan()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._scan()
        return name in self._entries

    def get(self, name: str) -> T:
        """The implementation registered as ``name`` (imported now if needed)."""
        if name in self._loaded:
            return self._loaded[name]
        if name not in self._entries:
            self._scan()
        entry = self._entries.get(name)
        if entry is None:
            raise ConfigurationError(
                f"unknown {self.kind} {name!r}; known: {', '.join(self.names()) or 'none'}"
            )
        value = self._resolve(name, entry)
        self._loaded[name] = value
        return value

    def _resolve(self, name: str, entry: _Entry) -> T:
        if not isinstance(entry.target, str):
            return cast("T", entry.target)
        try:
            value: Any = pkgutil.resolve_name(entry.target)
        except ImportError as exc:
            hint = f": pip install 'datastack[{entry.extra}]'" if entry.extra else ""
            module_name = entry.target.partition(":")[0]
            raise MissingDependencyError(
                f"the {self.kind} {name!r} needs {exc.name or module_name!r}{hint}"
            ) from exc
        return cast("T", value)

    def _scan(self) -> None:
        if self._scanned or self.group is None:
            return
        from importlib.metadata import entry_points

        with self._lock:
            if self._scanned:
                return
            for ep in entry_points(group=self.group):
                self._entries.setdefault(ep.name, _Entry(ep.value))
            self._scanned = True


__all__ = ["Registry"]
