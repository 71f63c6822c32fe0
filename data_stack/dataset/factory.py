"""Deprecated: the original ``data_stack.dataset.factory``; use datastack.iterators."""

from __future__ import annotations

from data_stack._deprecation import warn_deprecated_module
from data_stack._factory import (
    BaseDatasetFactory,
    HigherOrderDatasetFactory,
    InformedDatasetFactory,
)

__all__ = [
    "BaseDatasetFactory",
    "HigherOrderDatasetFactory",
    "InformedDatasetFactory",
]

warn_deprecated_module(
    __name__,
    "datastack.iterators (CombinedDatasetIterator, DatasetIteratorView, "
    "InMemoryDatasetIterator, ShuffledDatasetIterator) and datastack.load(name, "
    "split=...)",
)
