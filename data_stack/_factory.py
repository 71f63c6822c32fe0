"""The original dataset factories (kept here; they build the adapters of ``_iterators``)."""

from __future__ import annotations

import abc
import random
from collections.abc import Sequence
from typing import Any

from data_stack._iterators import (
    CombinedDatasetIterator,
    DatasetIteratorView,
    InformedDatasetIterator,
    InMemoryDatasetIterator,
)
from data_stack._meta import DatasetMetaIF, IteratorMeta
from datastack.factory import DatasetFactory


class BaseDatasetFactory(DatasetFactory, abc.ABC):
    """Base of dataset factories: ``get_dataset_iterator(config) -> (iterator, IteratorMeta)``.

    A :class:`datastack.factory.DatasetFactory` (the same concept, renamed): subclasses may
    also define ``name``/``sources``/``prepare`` and publish through the datastack catalog.
    """

    def __init__(self, storage_connector: Any = None) -> None:
        super().__init__()
        self.storage_connector = storage_connector

    def get_dataset_iterator(
        self, config: dict[str, Any] | None = None
    ) -> tuple[Any, IteratorMeta]:
        """The iterator described by ``config`` and the positions in its sample tuples."""
        raise NotImplementedError


class HigherOrderDatasetFactory:
    """Combined iterators and views."""

    @staticmethod
    def get_combined_dataset_iterator(iterators: Sequence[Any]) -> CombinedDatasetIterator:
        return CombinedDatasetIterator(iterators)

    @staticmethod
    def get_dataset_iterator_view(
        iterator: Any, indices: Sequence[int], view_tags: dict[str, Any] | None = None
    ) -> DatasetIteratorView:
        return DatasetIteratorView(iterator, indices, view_tags)


class InformedDatasetFactory:
    """Iterators with :class:`~data_stack._meta.DatasetMeta` attached."""

    @staticmethod
    def get_dataset_iterator(iterator: Any, meta: DatasetMetaIF) -> InformedDatasetIterator:
        return InformedDatasetIterator(iterator, meta)

    @staticmethod
    def get_combined_dataset_iterator(
        iterators: Sequence[Any], meta: DatasetMetaIF
    ) -> InformedDatasetIterator:
        iterator = HigherOrderDatasetFactory.get_combined_dataset_iterator(iterators)
        return InformedDatasetIterator(iterator, meta)

    @staticmethod
    def get_dataset_iterator_view(
        iterator: Any,
        meta: DatasetMetaIF,
        indices: Sequence[int],
        view_tags: dict[str, Any] | None = None,
    ) -> InformedDatasetIterator:
        view = HigherOrderDatasetFactory.get_dataset_iterator_view(iterator, indices, view_tags)
        return InformedDatasetIterator(view, meta)

    @staticmethod
    def get_in_memory_dataset_iterator(
        iterator: Any, meta: DatasetMetaIF
    ) -> InformedDatasetIterator:
        return InformedDatasetIterator(InMemoryDatasetIterator(iterator), meta)

    @staticmethod
    def get_shuffled_dataset_iterator(
        iterator: Any, meta: DatasetMetaIF, seed: int
    ) -> InformedDatasetIterator:
        """A view in the original's order (``random.Random(seed).shuffle``), so old seeds
        reproduce old orders; datastack's ``it.shuffle(seed)`` uses another generator."""
        indices = list(range(len(iterator)))
        random.Random(seed).shuffle(indices)
        return InformedDatasetFactory.get_dataset_iterator_view(iterator, meta, indices)


__all__ = ["BaseDatasetFactory", "HigherOrderDatasetFactory", "InformedDatasetFactory"]
