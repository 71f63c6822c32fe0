"""Samples as dicts keyed by field name: ``it.as_dict()``.

The view wraps any iterator (tuples stay the underlying form, so ``(sample, target)`` code and
every stacked wrapper keep working); it is sized, indexable, sliceable, iterable and picklable,
so a DataLoader takes it as a map-style dataset.

>>> from datastack.iterators import SequenceDatasetIterator
>>> d = SequenceDatasetIterator(["a", "b"], [0, 1]).as_dict()
>>> d[1], len(d[:1]), d.get_batch([1, 0])["targets"].tolist()
({'samples': 'b', 'targets': 1}, 1, [1, 0])
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:  # pragma: no cover
    from datastack.fields import Field
    from datastack.iterators.base import DatasetIterator


class DictView:
    """The samples of ``iterator`` as ``{field name: value}`` dicts."""

    def __init__(self, iterator: DatasetIterator) -> None:
        self.iterator = iterator
        self._names: list[str] | None = None

    @property
    def names(self) -> list[str]:
        """Field names in tuple order."""
        if self._names is None:
            self._names = list(self.iterator.fields)
        return self._names

    @property
    def fields(self) -> dict[str, Field]:
        return self.iterator.fields

    def __len__(self) -> int:
        return len(self.iterator)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            return DictView(self.iterator[key])
        if isinstance(key, (np.ndarray, list, range)):
            return self.get_batch(key)
        return dict(zip(self.names, self.iterator[key], strict=True))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        names = self.names
        for sample in self.iterator:
            yield dict(zip(names, sample, strict=True))

    def get_batch(self, indices: Iterable[int] | NDArray[Any]) -> dict[str, NDArray[Any]]:
        """Columns of many samples, keyed by field name."""
        return dict(zip(self.names, self.iterator.get_batch(indices), strict=True))

    def to_arrow(self) -> Any:
        """The underlying iterator's ``to_arrow()`` (one column per field, by name)."""
        return self.iterator.to_arrow()

    def to_arrow_reader(self, batch_rows: int = 8192) -> Any:
        return self.iterator.to_arrow_reader(batch_rows)

    def to_pandas(self, *, flatten: bool = True) -> Any:
        return self.iterator.to_pandas(flatten=flatten)

    def to_hf(self) -> Any:
        return self.iterator.to_hf()

    def __repr__(self) -> str:
        return f"<DictView of {self.iterator!r}>"


__all__ = ["DictView"]
