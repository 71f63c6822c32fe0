"""Deprecated: the original ``data_stack.dataset.splitter``; use datastack.iterators."""

from __future__ import annotations

from data_stack._deprecation import warn_deprecated_module
from data_stack._splitters import (
    CVSplitterImpl,
    NestedCVSplitterImpl,
    RandomSplitterImpl,
    Splitter,
    SplitterFactory,
    SplitterIF,
    StratifiedSplitterImpl,
)

__all__ = [
    "CVSplitterImpl",
    "NestedCVSplitterImpl",
    "RandomSplitterImpl",
    "Splitter",
    "SplitterFactory",
    "SplitterIF",
    "StratifiedSplitterImpl",
]

warn_deprecated_module(
    __name__,
    "datastack.iterators (random_split, stratified_split, k_fold_split, "
    "nested_cv_split)",
)
