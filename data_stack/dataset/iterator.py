"""Deprecated: the original ``data_stack.dataset.iterator``; use datastack.iterators."""

from __future__ import annotations

from data_stack._deprecation import warn_deprecated_module
from data_stack._iterators import (
    CombinedDatasetIterator,
    DatasetIterator,
    DatasetIteratorIF,
    DatasetIteratorView,
    InformedDatasetIterator,
    InformedDatasetIteratorIF,
    InMemoryDatasetIterator,
    SequenceDatasetIterator,
)

__all__ = [
    "CombinedDatasetIterator",
    "DatasetIterator",
    "DatasetIteratorIF",
    "DatasetIteratorView",
    "InMemoryDatasetIterator",
    "InformedDatasetIterator",
    "InformedDatasetIteratorIF",
    "SequenceDatasetIterator",
]

warn_deprecated_module(
    __name__,
    "datastack.iterators (DatasetIterator, SequenceDatasetIterator(*sequences), "
    "DatasetIteratorView, CombinedDatasetIterator, InMemoryDatasetIterator; or "
    "it.view(), it.in_memory(), a + b)",
)
