"""Validation of spec mappings with errors that say where: one helper for specs and formats.

A :class:`Checker` knows how to build the error for a key (``fail(key, reason)``), so the spec
parser and each format's options block report problems the same way: file, dataset, key,
reason, and a "did you mean" for unknown keys.

>>> from datastack.errors import SpecError
>>> check = Checker(lambda key, reason: SpecError(f"key {key!r}: {reason}"), prefix="csv.")
>>> check.integer(-1, "skip_rows")
Traceback (most recent call last):
...
datastack.errors.SpecError: key 'csv.skip_rows': expected an integer >= 0, got -1
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

Fail = Callable[[str | None, str], Exception]


class Checker:
    """Typed reads of one mapping; every error names ``prefix + key``."""

    def __init__(self, fail: Fail, prefix: str = "") -> None:
        self._fail = fail
        self.prefix = prefix

    def child(self, prefix: str) -> Checker:
        """A checker for a nested block (``csv.``, ``sources[0].``)."""
        return Checker(self._fail, self.prefix + prefix)

    def fail(self, key: str | None, reason: str) -> Exception:
        """The error for ``key`` (``None``: the block itself)."""
        where = None if key is None and not self.prefix else f"{self.prefix}{key or ''}"
        return self._fail(where.rstrip(".") if where else where, reason)

    def keys(self, mapping: Mapping[Any, Any], allowed: Iterable[str]) -> None:
        """Refuse non-string and unknown keys (with the closest allowed key as a hint)."""
        allowed = tuple(allowed)
        for key in mapping:
            if not isinstance(key, str):
                raise self.fail(f"{key!r}", "keys must be strings")
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise self.fail(key, f"unknown key; {hint}allowed keys: {', '.join(allowed)}")

    def mapping(self, value: Any, key: str | None) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(key, f"expected a mapping, got {type(value).__name__}")
        return value

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {value!r}")
        return value

    def integer(self, value: Any, key: str, minimum: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(key, f"expected an integer >= {minimum}, got {value!r:.80}")
        return value

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {type(value).__name__} {value!r:.80}")
        return value

    def column(self, value: Any, key: str) -> str | int:
        """A column reference: a name or an index."""
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise self.fail(key, f"expected a column name or index, got {value!r:.80}")
        return value

    def columns(self, value: Any, key: str) -> tuple[str | int, ...]:
        """A list of column references."""
        if not isinstance(value, list) or any(
            isinstance(c, bool) or not isinstance(c, (str, int)) for c in value
        ):
            raise self.fail(key, "expected a list of column names or indices")
        return tuple(value)

    def strings(self, value: Any, key: str, what: str = "strings") -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
            raise self.fail(key, f"expected a list of {what}")
        return tuple(value)

    def names(self, value: Any, key: str) -> tuple[str, ...]:
        """A column name or a list of distinct ones."""
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not names or len(set(map(repr, names))) != len(
            names) or not all(isinstance(n, str) and n for n in names):
            raise self.fail(key, f"expected a column name or a list of distinct column names, "
                                 f"got {value!r:.80}")
        return tuple(names)


__all__ = ["Checker", "Fail"]
