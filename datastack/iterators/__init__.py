"""Iterators: lazy format iterators over streams and the stacked iterators on top.

Samples are tuples ``(sample, target, ...)``. Every iterator has ``len``, Python-style indexing
(negative indices, ``IndexError`` when out of range), slicing into views, ``get_batch`` for many
samples at once, and stacking helpers (``view``, ``shuffle``, ``map``, ``map_targets``,
``in_memory``, ``+``). Everything is picklable; format iterators reopen their streams in each
process. h5py is imported by the HDF5 iterator on use; torch only by
:mod:`datastack.iterators.torch`.

>>> from datastack.iterators import SequenceDatasetIterator, select
>>> it = SequenceDatasetIterator(list(range(10)), [i % 2 for i in range(10)])
>>> len(select({"train": it}, "train[:20%]+train[-2:]"))
4
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from datastack.iterators.base import Batch, DatasetIterator, Sample, SequenceDatasetIterator
from datastack.iterators.report import IteratorReport, report
from datastack.iterators.selection import select
from datastack.iterators.splitters import (
    KFoldSplitter,
    NestedCVFold,
    NestedCVSplitter,
    RandomSplitter,
    Splitter,
    StratifiedSplitter,
    k_fold_split,
    nested_cv_split,
    random_split,
    stratified_split,
)
from datastack.iterators.views import (
    CombinedDatasetIterator,
    DatasetIteratorView,
    InMemoryDatasetIterator,
    MappedDatasetIterator,
    ShuffledDatasetIterator,
    TargetMappedDatasetIterator,
)
from datastack.splits import SplitExpression, parse_split_expression

if TYPE_CHECKING:  # pragma: no cover
    from datastack.canonical.hdf5 import HDF5DatasetIterator, split_iterators
    from datastack.formats.array_iterators import (
        IDXDatasetIterator,
        NPYDatasetIterator,
        NPZDatasetIterator,
    )
    from datastack.formats.table_iterators import CSVDatasetIterator

_READERS = ("HDF5DatasetIterator", "split_iterators")
_ARRAYS = ("IDXDatasetIterator", "NPYDatasetIterator", "NPZDatasetIterator")


def __getattr__(name: str) -> Any:
    """The iterators of the published file and of the input formats, loaded on first use
    (they live in :mod:`datastack.canonical` and :mod:`datastack.formats`, above this package)."""
    if name in _READERS:
        from datastack.canonical import hdf5

        value = getattr(hdf5, name)
    elif name in _ARRAYS:
        from datastack.formats import array_iterators

        value = getattr(array_iterators, name)
    elif name == "CSVDatasetIterator":
        from datastack.formats import table_iterators

        value = table_iterators.CSVDatasetIterator
    else:
        raise AttributeError(f"module 'datastack.iterators' has no attribute {name!r}")
    globals()[name] = value
    return value


__all__ = [
    "Batch",
    "CSVDatasetIterator",
    "CombinedDatasetIterator",
    "DatasetIterator",
    "DatasetIteratorView",
    "HDF5DatasetIterator",
    "IDXDatasetIterator",
    "InMemoryDatasetIterator",
    "IteratorReport",
    "KFoldSplitter",
    "MappedDatasetIterator",
    "NPYDatasetIterator",
    "NPZDatasetIterator",
    "NestedCVFold",
    "NestedCVSplitter",
    "RandomSplitter",
    "Sample",
    "SequenceDatasetIterator",
    "ShuffledDatasetIterator",
    "SplitExpression",
    "Splitter",
    "StratifiedSplitter",
    "TargetMappedDatasetIterator",
    "k_fold_split",
    "nested_cv_split",
    "parse_split_expression",
    "random_split",
    "report",
    "select",
    "split_iterators",
    "stratified_split",
]
