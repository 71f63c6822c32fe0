"""Selecting splits by expression: ``select(splits, "train[:10%]+test")``.

The expression is parsed once into a :class:`~datastack.splits.SplitExpression` (the split
arithmetic and its rounding live in :mod:`datastack.splits`); a whole split is returned as it
is, a sliced one as a view, several terms as their combination.

>>> from datastack.iterators import SequenceDatasetIterator
>>> splits = {"train": SequenceDatasetIterator(range(10)),
...           "test": SequenceDatasetIterator(range(5))}
>>> [len(select(splits, e)) for e in ("train", "train[:10%]", "train[10%:30%]", "train+test[-2:]")]
[10, 1, 2, 12]
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from datastack.iterators.base import DatasetIterator
from datastack.iterators.views import CombinedDatasetIterator, DatasetIteratorView
from datastack.splits import SplitExpression, parse_split_expression


def select(
    splits: Mapping[str, DatasetIterator], expr: str | SplitExpression
) -> DatasetIterator:
    """The iterator an expression names: the split itself, a view, or a combination.

    Raises :class:`~datastack.errors.SplitNotFoundError` (listing the available splits) for an
    unknown name and :class:`~datastack.errors.ConfigurationError` for a malformed expression.
    """
    expression = expr if isinstance(expr, SplitExpression) else SplitExpression.from_spec(expr)
    lengths = {name: len(it) for name, it in splits.items() if name in expression.splits}
    if not set(expression.splits) <= set(lengths):
        lengths = {**{name: 0 for name in splits}, **lengths}  # error names every split
    parts: list[DatasetIterator] = []
    for term, window in zip(expression.terms, expression.to_absolute(lengths), strict=True):
        it = splits[term.split]
        if not term.sliced:
            parts.append(it)
        else:
            parts.append(DatasetIteratorView(it, np.arange(window.start, window.stop)))
    return parts[0] if len(parts) == 1 else CombinedDatasetIterator(parts)


__all__ = ["parse_split_expression", "select"]
