"""Split expressions: ``"train"``, ``"train[:10%]"``, ``"train[10%:20%]"``, ``"train[-100:]"``,
``"train+test"`` (terms joined by ``+``, each a split name with an optional slice).

Slice bounds are sample counts (negative counts from the end) or percentages of the split's
length (``0-100``, decimals allowed, rounded to the nearest sample), as in TFDS.

>>> from datastack.iterators import SequenceDatasetIterator
>>> splits = {"train": SequenceDatasetIterator(range(10)),
...           "test": SequenceDatasetIterator(range(5))}
>>> [len(select(splits, e)) for e in ("train", "train[:10%]", "train[10%:30%]", "train+test[-2:]")]
[10, 1, 2, 12]
>>> parse_split_expression("a[:5]+b")
[('a', None, '5'), ('b', None, None)]
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from datastack.errors import ConfigurationError, SplitNotFoundError
from datastack.iterators.base import DatasetIterator
from datastack.iterators.views import CombinedDatasetIterator, DatasetIteratorView

_BOUND = r"-?\d+(?:\.\d+)?%?"
_TERM = re.compile(
    rf"^\s*(?P<name>[A-Za-z0-9_][A-Za-z0-9_.-]*)\s*"
    rf"(?:\[\s*(?P<start>{_BOUND})?\s*:\s*(?P<stop>{_BOUND})?\s*\])?\s*$"
)

Term = tuple[str, str | None, str | None]


def parse_split_expression(expr: str) -> list[Term]:
    """``[(name, start, stop), ...]`` with bounds as written (``None`` when absent)."""
    if not isinstance(expr, str) or not expr.strip():
        raise ConfigurationError(f"empty split expression {expr!r}; expected e.g. 'train[:10%]'")
    terms: list[Term] = []
    for part in expr.split("+"):
        match = _TERM.match(part)
        if match is None:
            raise ConfigurationError(
                f"malformed split expression {expr!r} at {part.strip()!r}; expected terms like "
                "'train', 'train[:10%]', 'train[10%:20%]', 'train[:100]' joined by '+'"
            )
        terms.append((match["name"], match["start"], match["stop"]))
    return terms


def _bound(text: str | None, n: int, expr: str) -> int | None:
    if text is None:
        return None
    if text.endswith("%"):
        percent = float(text[:-1])
        if not -100 <= percent <= 100:
            raise ConfigurationError(f"{expr!r}: percentage {text} outside -100%..100%")
        value = int(np.floor(abs(percent) * n / 100 + 0.5))
        return -value if percent < 0 else value
    if "." in text:
        raise ConfigurationError(f"{expr!r}: {text} is not a whole number of samples (or add %)")
    return int(text)


def select(splits: Mapping[str, DatasetIterator], expr: str) -> DatasetIterator:
    """The iterator an expression names: the split itself, a view, or a combination.

    Raises :class:`~datastack.errors.SplitNotFoundError` (listing the available splits) for an
    unknown name and :class:`~datastack.errors.ConfigurationError` for a malformed expression.
    """
    parts: list[DatasetIterator] = []
    for name, start, stop in parse_split_expression(expr):
        if name not in splits:
            raise SplitNotFoundError(
                f"no split {name!r} (in {expr!r}); available: {', '.join(sorted(splits)) or 'none'}"
            )
        it = splits[name]
        if start is None and stop is None and "[" not in expr.split("+")[len(parts)]:
            parts.append(it)
            continue
        n = len(it)
        window = slice(_bound(start, n, expr), _bound(stop, n, expr))
        parts.append(DatasetIteratorView(it, np.arange(n, dtype=np.int64)[window]))
    return parts[0] if len(parts) == 1 else CombinedDatasetIterator(parts)
