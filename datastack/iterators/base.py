"""The iterator base: a sized, indexable sequence of sample tuples ``(sample, target, ...)``.

Subclasses implement two methods, :meth:`DatasetIterator.__len__` and
:meth:`DatasetIterator._get` (one already-normalised index ``0 <= i < len``), and may override
:meth:`DatasetIterator._get_batch` (many normalised indices, columns of stacked arrays) and
:meth:`DatasetIterator._get_targets`. The base turns these into Python-sequence semantics:

- ``it[i]`` with negative indices; out of range raises ``IndexError`` (never StopIteration);
- ``it[a:b:c]`` (any step, negative too) returns a ``DatasetIteratorView``;
- ``it[array]`` / :meth:`DatasetIterator.get_batch` return a tuple of stacked numpy arrays;
- stacking helpers: :meth:`view`, :meth:`shuffle`, :meth:`map`, :meth:`map_targets`,
  :meth:`in_memory`, ``+`` / :meth:`combine`.

>>> from datastack.iterators import SequenceDatasetIterator
>>> it = SequenceDatasetIterator([10, 11, 12, 13], [0, 1, 0, 1])
>>> it[-1], len(it[1:3]), [s for s, _ in it[::-2]]
((13, 1), 2, [13, 11])
>>> it.get_batch([3, 0])[0]
array([13, 10])
"""

from __future__ import annotations

import abc
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from numpy.typing import NDArray

from datastack.errors import FormatError
from datastack.fields import object_column

if TYPE_CHECKING:  # pragma: no cover
    from datastack.fields import Field
    from datastack.iterators.blocks import StorageBlocks
    from datastack.iterators.named import DictView
    from datastack.iterators.views import (
        CombinedDatasetIterator,
        DatasetIteratorView,
        InMemoryDatasetIterator,
        MappedDatasetIterator,
        ShuffledDatasetIterator,
        TargetMappedDatasetIterator,
    )

Sample = tuple[Any, ...]
Batch = tuple[NDArray[Any], ...]
Indices = NDArray[np.int64]

#: The stacked iterators that the stacking methods build (``view``, ``shuffle``, ``map``...),
#: by class name. :mod:`datastack.iterators.views` defines them on top of this module and
#: registers them here when it is imported; the package ``datastack.iterators`` imports it,
#: so they are in place before any iterator exists (this module never imports that one).
_STACKED: dict[str, type[Any]] = {}


def register_stacked(*classes: type[Any]) -> None:
    """Make ``classes`` the ones the stacking methods of :class:`DatasetIterator` build."""
    _STACKED.update((cls.__name__, cls) for cls in classes)


def _stacked(name: str) -> type[Any]:
    try:
        return _STACKED[name]
    except KeyError:
        raise RuntimeError(
            f"{name} is not registered: import datastack.iterators (it registers the stacked "
            "iterators of datastack.iterators.views)"
        ) from None


def normalize_index(index: Any, length: int, owner: object = None) -> int:
    """``index`` as an int in ``[0, length)``, Python-style (negative counts from the end).

    >>> normalize_index(-1, 5)
    4
    """
    try:
        i = operator.index(index)
    except TypeError:
        raise TypeError(
            f"indices must be integers, slices or integer arrays, not {type(index).__name__}"
        ) from None
    j = i + length if i < 0 else i
    if not 0 <= j < length:
        where = f" of {owner!r}" if owner is not None else ""
        raise IndexError(f"index {i} is out of range{where} (length {length})")
    return j


def normalize_indices(indices: Any, length: int, owner: object = None) -> Indices:
    """A 1-D int64 array of indices in ``[0, length)`` (negatives wrapped; bool masks allowed).

    >>> normalize_indices([0, -1], 3).tolist()
    [0, 2]
    """
    array = np.asarray(indices)
    if array.dtype == np.bool_:
        if array.shape != (length,):
            raise IndexError(f"boolean mask of shape {array.shape} does not match length {length}")
        return np.flatnonzero(array).astype(np.int64)
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise TypeError(
            f"batch indices must be a 1-D sequence of integers, got shape {array.shape} "
            f"and dtype {array.dtype}"
        )
    out = array.astype(np.int64, copy=True)
    out[out < 0] += length
    bad = (out < 0) | (out >= length)
    if bad.any():
        first = int(array[np.flatnonzero(bad)[0]])
        where = f" of {owner!r}" if owner is not None else ""
        raise IndexError(f"index {first} is out of range{where} (length {length})")
    return out


def stack_column(values: Sequence[Any]) -> NDArray[Any]:
    """One column of a batch: stacked when the values share a numeric shape, else (strings,
    bytes, ragged arrays, images of different sizes) a 1-D object array of the values."""
    if not values:
        return np.zeros(0)
    if any(isinstance(v, (str, bytes)) for v in values):
        return object_column(values)
    arrays = [np.asarray(v) for v in values]
    first = arrays[0].shape if arrays else ()
    if any(a.shape != first or a.dtype.kind not in "biufcU" for a in arrays):
        return object_column(values)
    return np.stack(arrays)


def stack_samples(samples: Sequence[Sample], owner: object = None) -> Batch:
    """Stack sample tuples column-wise (one array per tuple position; see :func:`stack_column`)."""
    if not samples:
        return ()
    width = len(samples[0])
    if any(len(s) != width for s in samples):
        raise FormatError(f"samples of {owner!r} have different tuple lengths; cannot stack them")
    return tuple(stack_column([s[k] for s in samples]) for k in range(width))


def unstack_batch(batch: Batch, count: int) -> list[Sample]:
    """The inverse of :func:`stack_samples`: ``count`` tuples of rows (``column[i]`` each:
    iterating a numpy column yields what indexing it does)."""
    if not batch:
        return [() for _ in range(count)]
    return list(zip(*(column[:count] for column in batch), strict=True))


class DatasetIterator(abc.ABC):
    """A sized, indexable sequence of samples; each sample is a tuple ``(sample, target, ...)``.

    Implement ``__len__`` and ``_get``; everything else is built on them.
    """

    # -- to implement -------------------------------------------------------------------------
    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of samples."""

    @abc.abstractmethod
    def _get(self, index: int) -> Sample:
        """The sample at ``index``; ``0 <= index < len(self)`` is guaranteed by the caller."""

    def _get_batch(self, indices: Indices) -> Batch:
        """Stacked columns of the samples at valid ``indices`` (in that order, duplicates kept)."""
        return stack_samples([self._get(int(i)) for i in indices], self)

    def _get_targets(self, target_pos: int) -> NDArray[Any]:
        """All targets (position ``target_pos``) in order; override when cheaper than reading."""
        return stack_column([self._get(i)[target_pos] for i in range(len(self))])

    def storage_blocks(self) -> StorageBlocks | None:
        """Which storage block holds each sample, when samples are read in remote blocks.

        ``None`` (the default) means no block structure worth knowing (a local file, memory,
        or unknown): samplers then shuffle sample by sample. Wrappers map it through.
        """
        return None

    @property
    def underlying_iterators(self) -> list[DatasetIterator]:
        """The iterators this one reads from (empty for a source)."""
        return []

    #: Whether samples are those of the first underlying iterator, field for field (views,
    #: shuffles, combinations); ``False``: the fields are described from the first sample.
    keeps_fields: bool = False

    # -- fields -------------------------------------------------------------------------------
    @property
    def fields(self) -> dict[str, Field]:
        """Ordered ``name -> Field`` (kind, dtype, shape, names...) of the sample tuple.

        >>> from datastack.iterators import SequenceDatasetIterator
        >>> f = SequenceDatasetIterator(["a"], [1]).fields
        >>> [(name, v.kind) for name, v in f.items()]
        [('samples', 'string'), ('targets', 'array')]
        """
        from datastack.fields import default_names, infer_field

        children = self.underlying_iterators
        if self.keeps_fields and children:
            return children[0].fields
        if len(self) == 0:
            return {}
        sample = self._get(0)
        return {n: infer_field(n, v) for n, v in zip(default_names(len(sample)), sample,
                                                     strict=True)}

    def as_dict(self) -> DictView:
        """A view whose samples are dicts keyed by field name (``it.as_dict()[0]["image"]``)."""
        from datastack.iterators.named import DictView

        return DictView(self)

    def with_image_options(self, *, mode: str | None = None, decode: bool = True) -> Any:
        """The same stack with image fields converted to ``mode`` (``"RGB"``, ``"L"``...) or
        left as encoded bytes (``decode=False``); iterators without images are unchanged."""
        import copy

        children = self.underlying_iterators
        if not children:
            return self
        clone = copy.copy(self)
        new = [c.with_image_options(mode=mode, decode=decode) for c in children]
        if hasattr(clone, "iterators"):
            clone.iterators = new
        elif hasattr(clone, "iterator"):
            clone.iterator = new[0]
        return clone

    # -- other tools (docs/arrow.md) --------------------------------------------------------
    def to_arrow(self) -> Any:
        """A ``pyarrow.Table``, one column per field (zero-copy for a whole published split)."""
        from datastack.iterators.arrow import to_arrow

        return to_arrow(self)

    def to_arrow_reader(self, batch_rows: int = 8192) -> Any:
        """A ``pyarrow.RecordBatchReader`` of ``batch_rows`` rows at a time (bounded memory)."""
        from datastack.iterators.arrow import to_arrow_reader

        return to_arrow_reader(self, batch_rows=batch_rows)

    def to_pandas(self, *, flatten: bool = True) -> Any:
        """A pandas DataFrame (labels categorical; ``flatten``: a table's feature vector as
        its source columns)."""
        from datastack.iterators.arrow import to_pandas

        return to_pandas(self, flatten=flatten)

    def to_hf(self) -> Any:
        """A Hugging Face ``datasets.Dataset`` (``ClassLabel`` labels, ``Image`` images)."""
        from datastack.iterators.arrow import to_hf

        return to_hf(self)

    def close(self) -> None:
        """Release open files/streams (of this iterator and those under it); reopened lazily."""
        for child in self.underlying_iterators:
            child.close()

    # -- sequence protocol --------------------------------------------------------------------
    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            view = _stacked("DatasetIteratorView")
            indices = np.arange(len(self), dtype=np.int64)[key]
            return cast("DatasetIteratorView", view(self, indices))
        if isinstance(key, (np.ndarray, list, range)):
            return self.get_batch(key)
        return self._get(normalize_index(key, len(self), self))

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self._get(i)

    def __bool__(self) -> bool:
        return len(self) > 0

    # -- batches ------------------------------------------------------------------------------
    def get_batch(self, indices: Iterable[int] | NDArray[Any]) -> Batch:
        """Read many samples at once: a tuple of stacked arrays, rows in the requested order.

        Duplicates and negative indices are allowed; out-of-range raises ``IndexError``.

        >>> from datastack.iterators import SequenceDatasetIterator
        >>> samples, targets = SequenceDatasetIterator([[1, 2], [3, 4]], [7, 8]).get_batch([1, 1])
        >>> samples.tolist(), targets.tolist()
        ([[3, 4], [3, 4]], [8, 8])
        """
        if not isinstance(indices, np.ndarray):
            indices = list(indices)
        n = len(self)
        idx = normalize_indices(indices, n, self)
        if idx.size == 0:
            if n == 0:
                return ()
            return tuple(column[:0] for column in self._get_batch(np.zeros(1, dtype=np.int64)))
        return self._get_batch(idx)

    def get_samples(self, indices: Iterable[int] | NDArray[Any]) -> list[Sample]:
        """Many samples as a list of tuples, read as one batch (what a DataLoader worker
        wants: no stacking of values it will collate anyway)."""
        indices = indices if isinstance(indices, np.ndarray) else list(indices)
        return unstack_batch(self.get_batch(indices), len(indices))

    def get_targets(self, target_pos: int = 1) -> NDArray[Any]:
        """All targets as one array (read eagerly stored labels where the format has them)."""
        return self._get_targets(target_pos)

    # -- stacking -----------------------------------------------------------------------------
    def view(self, indices: Iterable[int] | NDArray[Any]) -> DatasetIteratorView:
        """A view over ``indices`` (any order, duplicates allowed; a view of a view collapses)."""
        stacked = _stacked("DatasetIteratorView")
        return cast("DatasetIteratorView", stacked(self, indices))

    def shuffle(self, seed: int | None = None) -> ShuffledDatasetIterator:
        """A reproducible permutation of this iterator (a random seed is drawn and kept if None)."""
        stacked = _stacked("ShuffledDatasetIterator")
        return cast("ShuffledDatasetIterator", stacked(self, seed))

    def map(self, fn: Callable[[Sample], Sample]) -> MappedDatasetIterator:
        """Apply a picklable ``fn(sample_tuple) -> sample_tuple`` on access."""
        stacked = _stacked("MappedDatasetIterator")
        return cast("MappedDatasetIterator", stacked(self, fn))

    def map_targets(
        self, mapping: Mapping[Any, Any] | Callable[[Any], Any], target_pos: int = 1
    ) -> TargetMappedDatasetIterator:
        """Relabel targets with a dict or a picklable callable."""
        stacked = _stacked("TargetMappedDatasetIterator")
        return cast("TargetMappedDatasetIterator", stacked(self, mapping, target_pos))

    def in_memory(self, progress: bool = True) -> InMemoryDatasetIterator:
        """Read everything now (with a progress bar unless ``progress=False``)."""
        stacked = _stacked("InMemoryDatasetIterator")
        return cast("InMemoryDatasetIterator", stacked(self, progress=progress))

    def combine(self, *others: DatasetIterator) -> CombinedDatasetIterator:
        """This iterator followed by ``others``."""
        stacked = _stacked("CombinedDatasetIterator")
        return cast("CombinedDatasetIterator", stacked([self, *others]))

    def __add__(self, other: object) -> CombinedDatasetIterator:
        if not isinstance(other, DatasetIterator):
            return NotImplemented
        combined = _stacked("CombinedDatasetIterator")
        left = self.iterators if isinstance(self, combined) else [self]
        return cast("CombinedDatasetIterator", combined([*left, other]))

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


class SequenceDatasetIterator(DatasetIterator):
    """A source over parallel in-memory sequences: sample ``i`` is ``(s0[i], s1[i], ...)``.

    >>> SequenceDatasetIterator(["a", "b"], [0, 1])[1]
    ('b', 1)
    """

    def __init__(self, *sequences: Sequence[Any]) -> None:
        if not sequences:
            raise ValueError("SequenceDatasetIterator needs at least one sequence")
        lengths = {len(s) for s in sequences}
        if len(lengths) != 1:
            raise FormatError(
                f"SequenceDatasetIterator: sequences have different lengths {sorted(lengths)}; "
                "they must be equally long"
            )
        self.sequences = sequences
        self._length = lengths.pop()

    def __len__(self) -> int:
        return self._length

    def _get(self, index: int) -> Sample:
        return tuple(s[index] for s in self.sequences)

    def _get_targets(self, target_pos: int) -> NDArray[Any]:
        return np.asarray(self.sequences[target_pos])
