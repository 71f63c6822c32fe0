"""Deprecated: the original ``data_stack.dataset.meta``; use datastack.iterators."""

from __future__ import annotations

from data_stack._deprecation import warn_deprecated_module
from data_stack._meta import (
    DatasetMeta,
    DatasetMetaIF,
    IdentifiyingInfoIF,
    IteratorMeta,
    MetaFactory,
    WrappedDatasetMeta,
)

__all__ = [
    "DatasetMeta",
    "DatasetMetaIF",
    "IdentifiyingInfoIF",
    "IteratorMeta",
    "MetaFactory",
    "WrappedDatasetMeta",
]

warn_deprecated_module(
    __name__,
    "datastack.iterators (samples are (sample, target, ...) tuples at fixed "
    "positions; no meta objects)",
)
