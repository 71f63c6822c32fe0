"""Higher-order iterators: small wrappers that stack in any order.

Each wrapper forwards single reads (``_get``) and batch reads (``_get_batch``) to the iterator
under it with mapped indices, so a batch through a stack of views, shuffles and combinations
still reaches the format iterator as one batch (one coalesced HDF5 read).

>>> from datastack.iterators import SequenceDatasetIterator
>>> a = SequenceDatasetIterator([0, 1, 2], ["x", "y", "x"])
>>> b = SequenceDatasetIterator([3, 4], ["y", "y"])
>>> stack = (a + b).map_targets({"x": 0, "y": 1}).shuffle(seed=1)[1:4]
>>> sorted(stack.get_targets().tolist()) == sorted(
...     [{"x": 0, "y": 1}[t] for t in (a + b).shuffle(seed=1).get_targets()[1:4]])
True
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from datastack.errors import ConfigurationError, FormatError, UnpicklableError
from datastack.iterators.base import (
    Batch,
    DatasetIterator,
    Indices,
    Sample,
    normalize_indices,
    register_stacked,
    stack_samples,
)
from datastack.iterators.blocks import StorageBlocks


class DatasetIteratorView(DatasetIterator):
    """The samples of ``iterator`` at ``indices`` (any order, duplicates allowed).

    A view of a view collapses into one index array over the innermost iterator.

    >>> from datastack.iterators import SequenceDatasetIterator
    >>> v = DatasetIteratorView(DatasetIteratorView(SequenceDatasetIterator("abcd"), [3, 1]), [1])
    >>> v[0], v.indices.tolist(), type(v.iterator).__name__
    (('b',), [1], 'SequenceDatasetIterator')
    """

    keeps_fields = True

    iterator: DatasetIterator
    indices: Indices

    def __init__(self, iterator: DatasetIterator, indices: Iterable[int] | NDArray[Any]) -> None:
        if not isinstance(indices, np.ndarray):
            indices = list(indices)
        idx = normalize_indices(indices, len(iterator), iterator)
        while isinstance(iterator, DatasetIteratorView):
            idx = iterator.indices[idx]
            iterator = iterator.iterator
        idx.setflags(write=False)
        self.iterator = iterator
        self.indices = idx

    def __len__(self) -> int:
        return len(self.indices)

    def _get(self, index: int) -> Sample:
        return self.iterator._get(int(self.indices[index]))

    def _get_batch(self, indices: Indices) -> Batch:
        return self.iterator._get_batch(self.indices[indices])

    def _get_targets(self, target_pos: int) -> NDArray[Any]:
        return self.iterator._get_targets(target_pos)[self.indices]

    def storage_blocks(self) -> StorageBlocks | None:
        blocks = self.iterator.storage_blocks()
        return None if blocks is None else blocks.take(self.indices)

    @property
    def underlying_iterators(self) -> list[DatasetIterator]:
        return [self.iterator]


class CombinedDatasetIterator(DatasetIterator):
    """Iterators one after another; lookup is a bisection over cumulative lengths (O(log k)).

    >>> from datastack.iterators import SequenceDatasetIterator
    >>> c = CombinedDatasetIterator([SequenceDatasetIterator("ab"), SequenceDatasetIterator("c")])
    >>> len(c), c[2], c[-3]
    (3, ('c',), ('a',))
    """

    keeps_fields = True

    def __init__(self, iterators: Sequence[DatasetIterator]) -> None:
        for it in iterators:
            if not isinstance(it, DatasetIterator):
                raise TypeError(f"can only combine DatasetIterators, got {type(it).__name__}")
        self.iterators = list(iterators)
        self._ends: list[int] | None = None  # cumulative lengths, computed on first access

    @property
    def ends(self) -> list[int]:
        """Cumulative lengths: sample ``i`` lives in iterator ``bisect_right(ends, i)``."""
        if self._ends is None:
            total, ends = 0, []
            for it in self.iterators:
                total += len(it)
                ends.append(total)
            self._ends = ends
        return self._ends

    def __len__(self) -> int:
        ends = self.ends
        return ends[-1] if ends else 0

    def _part(self, k: int) -> DatasetIterator:
        """Iterator ``k`` (subclasses may open it on first use)."""
        return self.iterators[k]

    def _get(self, index: int) -> Sample:
        ends = self.ends
        k = bisect.bisect_right(ends, index)
        start = ends[k - 1] if k else 0
        return self._part(k)._get(index - start)

    def _get_batch(self, indices: Indices) -> Batch:
        ends = np.asarray(self.ends, dtype=np.int64)
        which = np.searchsorted(ends, indices, side="right")
        starts = np.concatenate([[0], ends[:-1]])
        parts: list[Batch] = []
        positions: list[Indices] = []
        for k in np.unique(which):
            where = np.flatnonzero(which == k)
            parts.append(self._part(int(k))._get_batch(indices[where] - starts[k]))
            positions.append(where)
        if len(parts) == 1:
            return parts[0]
        widths = {len(p) for p in parts}
        if len(widths) != 1:
            raise FormatError(f"{self!r}: combined iterators yield tuples of different lengths")
        order = np.argsort(np.concatenate(positions), kind="stable")
        try:
            return tuple(np.concatenate([p[j] for p in parts])[order] for j in range(widths.pop()))
        except ValueError as exc:
            raise FormatError(
                f"{self!r}: samples of the combined iterators differ in shape ({exc})"
            ) from None

    def _get_targets(self, target_pos: int) -> NDArray[Any]:
        parts = [it._get_targets(target_pos) for it in self.iterators]
        return np.concatenate(parts) if parts else np.zeros(0)

    def storage_blocks(self) -> StorageBlocks | None:
        parts = [it.storage_blocks() for it in self.iterators]
        if not parts or any(p is None for p in parts):
            return None  # part of it has no block structure: shuffle sample by sample
        return StorageBlocks.concat([p for p in parts if p is not None])

    @property
    def underlying_iterators(self) -> list[DatasetIterator]:
        return list(self.iterators)


class ShuffledDatasetIterator(DatasetIterator):
    """A seeded permutation of ``iterator``: the same seed gives the same order everywhere.

    With ``seed=None`` a seed is drawn once and stored, so pickled copies (DataLoader workers)
    agree on the order.

    >>> from datastack.iterators import SequenceDatasetIterator
    >>> s = ShuffledDatasetIterator(SequenceDatasetIterator(range(5)), seed=0)
    >>> sorted(x for (x,) in s), [x for (x,) in s] == [x for (x,) in s.shuffle(0).iterator]
    ([0, 1, 2, 3, 4], True)
    """

    keeps_fields = True

    def __init__(self, iterator: DatasetIterator, seed: int | None = None) -> None:
        if seed is None:
            seed = int(np.random.SeedSequence().entropy) % (2**63)  # type: ignore[arg-type]
        self.iterator = iterator
        self.seed = int(seed)
        self._permutation: Indices | None = None

    @property
    def permutation(self) -> Indices:
        """Position ``i`` of this iterator is sample ``permutation[i]`` underneath."""
        if self._permutation is None:
            rng = np.random.default_rng(self.seed)
            self._permutation = rng.permutation(len(self.iterator)).astype(np.int64)
        return self._permutation

    def __len__(self) -> int:
        return len(self.iterator)

    def _get(self, index: int) -> Sample:
        return self.iterator._get(int(self.permutation[index]))

    def _get_batch(self, indices: Indices) -> Batch:
        return self.iterator._get_batch(self.permutation[indices])

    def _get_targets(self, target_pos: int) -> NDArray[Any]:
        return self.iterator._get_targets(target_pos)[self.permutation]

    def storage_blocks(self) -> StorageBlocks | None:
        blocks = self.iterator.storage_blocks()
        return None if blocks is None else blocks.take(self.permutation)

    @property
    def underlying_iterators(self) -> list[DatasetIterator]:
        return [self.iterator]


class InMemoryDatasetIterator(DatasetIterator):
    """Every sample of ``iterator`` read now (in batches, with a tqdm progress bar).

    >>> from datastack.iterators import SequenceDatasetIterator
    >>> m = InMemoryDatasetIterator(SequenceDatasetIterator([1, 2], [0, 1]), progress=False)
    >>> [int(v) for v in m[1]], m.columns[0].tolist()
    ([2, 1], [1, 2])
    """

    keeps_fields = True

    def __init__(
        self, iterator: DatasetIterator, progress: bool = True, batch_size: int = 1024
    ) -> None:
        from tqdm.auto import tqdm

        self.iterator = iterator
        n = len(iterator)
        parts: list[Batch] = []
        with tqdm(
            total=n, disable=not progress, desc="in memory", unit="samples", leave=False
        ) as bar:
            for start in range(0, n, batch_size):
                stop = min(n, start + batch_size)
                parts.append(iterator._get_batch(np.arange(start, stop, dtype=np.int64)))
                bar.update(stop - start)
        width = len(parts[0]) if parts else 0
        self.columns: Batch = tuple(np.concatenate([p[j] for p in parts]) for j in range(width))
        self._length = n

    def __len__(self) -> int:
        return self._length

    def _get(self, index: int) -> Sample:
        return tuple(column[index] for column in self.columns)

    def _get_batch(self, indices: Indices) -> Batch:
        return tuple(column[indices] for column in self.columns)

    def _get_targets(self, target_pos: int) -> NDArray[Any]:
        return self.columns[target_pos]

    @property
    def underlying_iterators(self) -> list[DatasetIterator]:
        return [self.iterator]


class MappedDatasetIterator(DatasetIterator):
    """``fn(sample_tuple) -> sample_tuple`` applied on access (``fn`` must be picklable).

    >>> from datastack.iterators import SequenceDatasetIterator
    >>> MappedDatasetIterator(SequenceDatasetIterator([1, 2], [0, 1]), _swap)[0]
    (0, 1)
    """

    def __init__(self, iterator: DatasetIterator, fn: Callable[[Sample], Sample]) -> None:
        if not callable(fn):
            raise TypeError(f"map needs a callable, got {type(fn).__name__}")
        self.iterator = iterator
        self.fn = fn

    def __len__(self) -> int:
        return len(self.iterator)

    def _get(self, index: int) -> Sample:
        return self._apply(self.iterator._get(index))

    def _apply(self, sample: Sample) -> Sample:
        out = self.fn(sample)
        return out if isinstance(out, tuple) else tuple(out)

    def _get_batch(self, indices: Indices) -> Batch:
        return stack_samples(self.get_samples(indices), self)

    def get_samples(self, indices: Iterable[int] | NDArray[Any]) -> list[Sample]:
        """The mapped samples of one underlying batch read, not stacked again."""
        rows = self.iterator.get_samples(indices)
        return [self._apply(row) for row in rows]

    def storage_blocks(self) -> StorageBlocks | None:
        return self.iterator.storage_blocks()

    @property
    def underlying_iterators(self) -> list[DatasetIterator]:
        return [self.iterator]

    def __getstate__(self) -> dict[str, Any]:
        check_picklable(self.fn, "map")
        return self.__dict__.copy()


def check_picklable(fn: Callable[..., Any], where: str) -> None:
    """Raise :class:`UnpicklableError` naming ``fn`` unless it pickles (by reference).

    Lambdas and functions defined inside other functions cannot be sent to processes
    started with ``spawn`` or ``forkserver`` (macOS, Python 3.14 defaults; DataLoader
    workers with ``multiprocessing_context``).
    """
    import pickle

    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    module = getattr(fn, "__module__", None) or type(fn).__module__
    suggestion = "transform" if "<lambda>" in name else name.split(".")[-1]
    fix = (
        f"define it with `def` at module level (e.g. `def {suggestion}(sample): ...` in an "
        "importable module), or use functools.partial of such a function"
    )
    if "<lambda>" in name or "<locals>" in name:
        raise UnpicklableError(
            f"{where}() holds {module}.{name}, which cannot be pickled for another process "
            f"(spawn/forkserver workers): it is a lambda or a local function; {fix}"
        )
    try:
        pickle.dumps(fn)
    except Exception as exc:
        raise UnpicklableError(
            f"{where}() holds {module}.{name}, which cannot be pickled for another process "
            f"({type(exc).__name__}: {exc}); {fix}"
        ) from None


def _swap(sample: Sample) -> Sample:
    return (sample[1], sample[0], *sample[2:])


class TargetMappedDatasetIterator(DatasetIterator):
    """Relabel the target at ``target_pos`` with a dict or a picklable callable.

    >>> from datastack.iterators import SequenceDatasetIterator
    >>> it = TargetMappedDatasetIterator(SequenceDatasetIterator([5, 6], [3, 9]), {3: 0, 9: 1})
    >>> it[1], it.get_targets().tolist()
    ((6, 1), [0, 1])
    """

    def __init__(
        self,
        iterator: DatasetIterator,
        mapping: Mapping[Any, Any] | Callable[[Any], Any],
        target_pos: int = 1,
    ) -> None:
        if not (isinstance(mapping, Mapping) or callable(mapping)):
            raise TypeError(f"target mapping must be a dict or callable, got {type(mapping)}")
        self.iterator = iterator
        self.mapping = mapping
        self.target_pos = target_pos

    def _map(self, target: Any) -> Any:
        if not isinstance(self.mapping, Mapping):
            return self.mapping(target)
        key = target.item() if isinstance(target, np.generic) else target
        try:
            return self.mapping[key]
        except (KeyError, TypeError):
            known = sorted(map(repr, self.mapping))[:20]
            raise ConfigurationError(
                f"target {key!r} has no entry in the target mapping (keys: {', '.join(known)}); "
                "add it to the mapping"
            ) from None

    def __len__(self) -> int:
        return len(self.iterator)

    def _get(self, index: int) -> Sample:
        sample = list(self.iterator._get(index))
        sample[self.target_pos] = self._map(sample[self.target_pos])
        return tuple(sample)

    def _get_batch(self, indices: Indices) -> Batch:
        batch = list(self.iterator._get_batch(indices))
        batch[self.target_pos] = self._map_array(batch[self.target_pos])
        return tuple(batch)

    def _map_array(self, targets: NDArray[Any]) -> NDArray[Any]:
        return np.asarray([self._map(t) for t in targets.tolist()])

    def _get_targets(self, target_pos: int) -> NDArray[Any]:
        targets = self.iterator._get_targets(target_pos)
        return self._map_array(targets) if target_pos == self.target_pos else targets

    def storage_blocks(self) -> StorageBlocks | None:
        return self.iterator.storage_blocks()

    def __getstate__(self) -> dict[str, Any]:
        if not isinstance(self.mapping, Mapping):
            check_picklable(self.mapping, "map_targets")
        return self.__dict__.copy()

    @property
    def underlying_iterators(self) -> list[DatasetIterator]:
        return [self.iterator]


register_stacked(
    DatasetIteratorView,
    CombinedDatasetIterator,
    ShuffledDatasetIterator,
    InMemoryDatasetIterator,
    MappedDatasetIterator,
    TargetMappedDatasetIterator,
)
