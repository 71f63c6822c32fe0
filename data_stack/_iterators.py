"""The original dataset iterators, as subclasses of :mod:`datastack.iterators` classes.

Each adapter keeps the original constructor and is an instance of the datastack class, so it
stacks with datastack iterators (``+``, ``view``, ``shuffle``, ``get_batch``, reports...).
Indexing follows datastack: negative indices count from the end, out of range raises
``IndexError`` (the original raised ``StopIteration`` in views), iteration uses ``__iter__``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from data_stack._meta import DatasetMetaIF
from datastack import iterators as _ds


class DatasetIteratorIF(_ds.DatasetIterator):
    """The original iterator interface on datastack's base.

    A 0.0.13-style subclass implements ``__len__`` and ``__getitem__(index)`` (and optionally
    ``underlying_iterators``); datastack's machinery reads it through ``__getitem__``. Any
    datastack iterator also counts as a ``DatasetIteratorIF`` / ``DatasetIterator``.
    """

    @classmethod
    def __subclasshook__(cls, other: type) -> Any:
        # MRO test, not issubclass: ABC subclass checks would recurse through this hook.
        if cls in (DatasetIteratorIF, DatasetIterator) and _ds.DatasetIterator in other.__mro__:
            return True
        return NotImplemented

    def _get(self, index: int) -> Any:
        getitem = type(self).__getitem__
        if getitem is _ds.DatasetIterator.__getitem__:
            raise NotImplementedError(f"{type(self).__name__} must implement __getitem__ or _get")
        return getitem(self, index)


class DatasetIterator(DatasetIteratorIF):
    """The original concrete base (no underlying iterators)."""


class SequenceDatasetIterator(_ds.SequenceDatasetIterator, DatasetIterator):
    """``SequenceDatasetIterator(dataset_sequences)``: sample ``i`` is ``(s0[i], s1[i], ...)``.

    Takes ONE list of sequences (datastack's takes them as separate arguments).
    """

    def __init__(self, dataset_sequences: Sequence[Sequence[Any]]) -> None:
        super().__init__(*dataset_sequences)


class DatasetIteratorView(_ds.DatasetIteratorView, DatasetIterator):
    """The samples of ``dataset_iterator`` at ``indices``, with optional ``view_tags``.

    ``indices`` is a read-only numpy array; a view of a datastack view collapses onto the
    innermost iterator (datastack's behaviour).
    """

    def __init__(
        self,
        dataset_iterator: _ds.DatasetIterator,
        indices: Iterable[int] | NDArray[Any],
        view_tags: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(dataset_iterator, indices)
        self._view_tags = view_tags

    @property
    def view_tags(self) -> dict[str, Any] | None:
        """The tags given at construction (the original's property returned None by a bug)."""
        return self._view_tags


class CombinedDatasetIterator(_ds.CombinedDatasetIterator, DatasetIterator):
    """``iterators`` one after another."""

    def __init__(self, iterators: Sequence[_ds.DatasetIterator]) -> None:
        super().__init__(iterators)


class InMemoryDatasetIterator(_ds.InMemoryDatasetIterator, DatasetIterator):
    """Every sample of ``dataset_iterator`` read now and kept as it was returned.

    Unlike datastack's (which stacks columns into numpy arrays), samples keep their types, as in
    the original; ``progress=False`` hides the tqdm bar.
    """

    def __init__(self, dataset_iterator: _ds.DatasetIterator, progress: bool = True) -> None:
        from tqdm.auto import tqdm

        self.iterator = dataset_iterator
        items = tqdm(dataset_iterator, desc="Loading iterator to memory", disable=not progress)
        self._samples: list[Any] = list(items)

    def __len__(self) -> int:
        return len(self._samples)

    def _get(self, index: int) -> Any:
        return self._samples[index]

    def _get_batch(self, indices: NDArray[np.int64]) -> Any:
        return _ds.DatasetIterator._get_batch(self, indices)

    def _get_targets(self, target_pos: int) -> NDArray[Any]:
        return _ds.DatasetIterator._get_targets(self, target_pos)


class InformedDatasetIteratorIF(DatasetIterator):
    """An iterator that knows its (original) :class:`~data_stack._meta.DatasetMetaIF`."""

    @property
    def dataset_meta(self) -> DatasetMetaIF:
        raise NotImplementedError


class InformedDatasetIterator(InformedDatasetIteratorIF):
    """``dataset_iterator`` with ``dataset_meta`` attached (reads pass straight through).

    As in the original, ``underlying_iterators`` are those of the wrapped iterator.
    """

    def __init__(self, dataset_iterator: Any, dataset_meta: DatasetMetaIF) -> None:
        self._dataset_iterator = dataset_iterator
        self._dataset_meta = dataset_meta

    @property
    def iterator(self) -> Any:
        """The wrapped iterator."""
        return self._dataset_iterator

    @property
    def dataset_meta(self) -> DatasetMetaIF:
        return self._dataset_meta

    def __len__(self) -> int:
        return len(self._dataset_iterator)

    def _get(self, index: int) -> Any:
        return self._dataset_iterator[index]

    def _get_batch(self, indices: NDArray[np.int64]) -> Any:
        if isinstance(self._dataset_iterator, _ds.DatasetIterator):
            return self._dataset_iterator.get_batch(indices)
        return super()._get_batch(indices)

    def _get_targets(self, target_pos: int) -> NDArray[Any]:
        if isinstance(self._dataset_iterator, _ds.DatasetIterator):
            return self._dataset_iterator.get_targets(target_pos)
        return super()._get_targets(target_pos)

    @property
    def underlying_iterators(self) -> list[Any]:
        return list(getattr(self._dataset_iterator, "underlying_iterators", []))

    def close(self) -> None:
        close = getattr(self._dataset_iterator, "close", None)
        if close is not None:
            close()


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
