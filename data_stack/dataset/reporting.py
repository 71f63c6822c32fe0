"""Deprecated: the original ``data_stack.dataset.reporting``; use datastack.iterators."""

from __future__ import annotations

from data_stack._deprecation import warn_deprecated_module
from data_stack._reporting import (
    DatasetIteratorReport,
    DatasetIteratorReportGenerator,
)

__all__ = [
    "DatasetIteratorReport",
    "DatasetIteratorReportGenerator",
]

warn_deprecated_module(
    __name__,
    "datastack.iterators (report, IteratorReport)",
)
