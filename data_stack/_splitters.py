"""The original splitters, computed by datastack's split functions.

Every split is a list of :class:`~data_stack._iterators.DatasetIteratorView` over the given
iterator (``indices`` relative to it, sorted). The index sets come from
``datastack.iterators.random_split`` / ``stratified_split`` / ``k_fold_split`` /
``nested_cv_split``: sizes follow datastack's largest-remainder rule and the same splitter
with the same seed gives the same split on every call (the original's random generator
advanced between calls). scikit-learn is not needed.
"""

from __future__ import annotations

import abc
import math
import secrets
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from data_stack._iterators import DatasetIteratorView
from datastack import iterators as _ds
from datastack.errors import ConfigurationError

Indices = NDArray[np.int64]


def _targets(iterator: Any, target_pos: int) -> NDArray[Any]:
    if isinstance(iterator, _ds.DatasetIterator):
        return np.asarray(iterator.get_targets(target_pos))
    return np.asarray([sample[target_pos] for sample in iterator])


def _proxy(n: int, targets: NDArray[Any] | None = None) -> _ds.DatasetIterator:
    """A datastack source over positions ``0..n-1`` (and targets): split it, not the data."""
    positions = cast("Sequence[int]", np.arange(n, dtype=np.int64))
    if targets is None:
        return _ds.SequenceDatasetIterator(positions)
    return _ds.SequenceDatasetIterator(positions, cast("Sequence[Any]", targets))


def _named(ratios: Sequence[float]) -> dict[str, float]:
    """Ratios keyed by position; a total below 1 leaves the remainder to the last split."""
    values = [float(r) for r in ratios]
    if not values:
        raise ConfigurationError("split ratios are empty; expected e.g. [0.8, 0.2]")
    total = math.fsum(values)
    if total < 1.0:
        values[-1] += 1.0 - total
    return {f"split_{i}": r for i, r in enumerate(values)}


def _seed(seed: int | None) -> int:
    return secrets.randbits(63) if seed is None else int(seed)


def _views(iterator: Any, parts: Sequence[Indices]) -> list[DatasetIteratorView]:
    return [DatasetIteratorView(iterator, part) for part in parts]


def _test_folds(
    targets: NDArray[Any] | None, n: int, k: int, stratified: bool, shuffle: bool, seed: int
) -> list[Indices]:
    """The ``k`` held-out folds (positions, sorted) over ``n`` samples."""
    if shuffle:
        folds = _ds.k_fold_split(_proxy(n, targets), k, seed, stratified, 1)
        return [np.array(f["test"].indices) for f in folds]
    if not isinstance(k, int) or not 2 <= k <= n:
        raise ConfigurationError(f"k-fold needs 2 <= k <= {n} (the number of samples), got {k!r}")
    if not stratified or targets is None:
        return [np.asarray(part, dtype=np.int64) for part in np.array_split(np.arange(n), k)]
    order = np.concatenate([np.flatnonzero(targets == label) for label in np.unique(targets)])
    fold_of = np.arange(n) % k  # classes dealt round-robin, in their original order
    return [np.sort(order[fold_of == f]).astype(np.int64) for f in range(k)]


class SplitterIF(abc.ABC):
    """Something that splits an iterator into views."""

    @abc.abstractmethod
    def split(self, dataset_iterator: Any) -> Any:
        raise NotImplementedError

    @abc.abstractmethod
    def get_indices(self, dataset_iterator: Any) -> Any:
        raise NotImplementedError


class Splitter(SplitterIF):
    """Delegates to a splitter implementation."""

    def __init__(self, splitter_impl: SplitterIF) -> None:
        self.splitter_impl = splitter_impl

    def split(self, dataset_iterator: Any) -> Any:
        return self.splitter_impl.split(dataset_iterator)

    def get_indices(self, dataset_iterator: Any) -> Any:
        return self.splitter_impl.get_indices(dataset_iterator)


class RandomSplitterImpl(SplitterIF):
    """Disjoint random splits with sizes ``ratio x len`` (``datastack.iterators.random_split``)."""

    def __init__(self, ratios: Sequence[float], seed: int = 1) -> None:
        self.ratios = list(ratios)
        self.seed = seed

    def _determine_split_indices(
        self, dataset_length: int, ratios: Sequence[float]
    ) -> list[list[int]]:
        parts = _ds.random_split(_proxy(dataset_length), _named(ratios), self.seed)
        return [view.indices.tolist() for view in parts.values()]

    def split(self, dataset_iterator: Any) -> list[DatasetIteratorView]:
        indices = self._determine_split_indices(len(dataset_iterator), self.ratios)
        return _views(dataset_iterator, [np.asarray(i, dtype=np.int64) for i in indices])

    def get_indices(self, dataset_iterator: Any) -> list[list[int]]:
        return self._determine_split_indices(len(dataset_iterator), self.ratios)


class StratifiedSplitterImpl(SplitterIF):
    """Random splits keeping the class ratios (``datastack.iterators.stratified_split``);
    targets are at position 1. ``seed=None`` draws a seed per call, as the original did."""

    def __init__(self, ratios: Sequence[float], seed: int | None = None) -> None:
        self.ratios = list(ratios)
        self.seed = seed

    def get_indices(self, dataset_iterator: Any) -> list[list[int]]:
        targets = _targets(dataset_iterator, 1)
        proxy = _proxy(len(targets), targets)
        parts = _ds.stratified_split(proxy, _named(self.ratios), _seed(self.seed), 1)
        return [view.indices.tolist() for view in parts.values()]

    def split(self, dataset_iterator: Any) -> list[DatasetIteratorView]:
        indices = self.get_indices(dataset_iterator)
        return _views(dataset_iterator, [np.asarray(i, dtype=np.int64) for i in indices])


class CVSplitterImpl(SplitterIF):
    """``num_folds`` cross-validation folds (``datastack.iterators.k_fold_split``).

    ``shuffle=False`` gives contiguous folds (stratified: each class dealt round-robin in its
    original order) without randomness.
    """

    def __init__(
        self,
        num_folds: int = 5,
        stratification: bool = True,
        target_pos: int = 1,
        shuffle: bool = True,
        seed: int = 1,
    ) -> None:
        self.num_folds = num_folds
        self.stratification = stratification
        self.target_pos = target_pos
        self.shuffle = shuffle
        self.seed = seed

    def _folds(self, dataset_iterator: Any) -> list[Indices]:
        n = len(dataset_iterator)
        targets = _targets(dataset_iterator, self.target_pos) if self.stratification else None
        return _test_folds(
            targets, n, self.num_folds, self.stratification, self.shuffle, self.seed
        )

    def split(self, dataset_iterator: Any) -> list[DatasetIteratorView]:
        return _views(dataset_iterator, self._folds(dataset_iterator))

    def get_indices(self, dataset_iterator: Any) -> list[list[int]]:
        return [fold.tolist() for fold in self._folds(dataset_iterator)]


class NestedCVSplitterImpl(SplitterIF):
    """Nested cross-validation (``datastack.iterators.nested_cv_split``).

    ``split`` returns ``(outer_folds, inner_folds_per_outer_fold)``; the inner folds of outer
    fold ``i`` partition the other outer folds.
    """

    def __init__(
        self,
        num_outer_loop_folds: int = 5,
        num_inner_loop_folds: int = 2,
        inner_stratification: bool = True,
        outer_stratification: bool = True,
        target_pos: int = 1,
        shuffle: bool = True,
        seed: int = 1,
    ) -> None:
        self.num_outer_loop_folds = num_outer_loop_folds
        self.num_inner_loop_folds = num_inner_loop_folds
        self.inner_stratification = inner_stratification
        self.outer_stratification = outer_stratification
        self.target_pos = target_pos
        self.shuffle = shuffle
        self.seed = seed

    def _folds(self, dataset_iterator: Any) -> tuple[list[Indices], list[list[Indices]]]:
        n = len(dataset_iterator)
        stratify = self.inner_stratification or self.outer_stratification
        targets = _targets(dataset_iterator, self.target_pos) if stratify else None
        if self.shuffle:
            folds = _ds.nested_cv_split(
                _proxy(n, targets),
                self.num_outer_loop_folds,
                self.num_inner_loop_folds,
                self.seed,
                self.outer_stratification,
                self.inner_stratification,
                1,
            )
            outer = [np.array(f.test.indices) for f in folds]
            inner = [[np.array(v["val"].indices) for v in f.inner] for f in folds]
            return outer, inner
        outer = _test_folds(
            targets, n, self.num_outer_loop_folds, self.outer_stratification, False, self.seed
        )
        inner = []
        for i in range(len(outer)):
            train = np.sort(np.concatenate([f for j, f in enumerate(outer) if j != i]))
            sub_targets = targets[train] if targets is not None else None
            parts = _test_folds(
                sub_targets,
                len(train),
                self.num_inner_loop_folds,
                self.inner_stratification,
                False,
                self.seed,
            )
            inner.append([train[p] for p in parts])
        return outer, inner

    def split(
        self, dataset_iterator: Any
    ) -> tuple[list[DatasetIteratorView], list[list[DatasetIteratorView]]]:
        outer, inner = self._folds(dataset_iterator)
        return _views(dataset_iterator, outer), [_views(dataset_iterator, f) for f in inner]

    def get_indices(self, dataset_iterator: Any) -> tuple[list[list[int]], list[list[list[int]]]]:
        outer, inner = self._folds(dataset_iterator)
        return [f.tolist() for f in outer], [[f.tolist() for f in fs] for fs in inner]


class SplitterFactory:
    """The original named constructors."""

    @staticmethod
    def get_random_splitter(ratios: Sequence[float], seed: int = 1) -> Splitter:
        return Splitter(RandomSplitterImpl(ratios, seed=seed))

    @staticmethod
    def get_stratified_splitter(ratios: Sequence[float], seed: int | None = None) -> Splitter:
        return Splitter(StratifiedSplitterImpl(ratios, seed=seed))

    @staticmethod
    def get_nested_cv_splitter(
        num_outer_loop_folds: int = 5,
        num_inner_loop_folds: int = 2,
        inner_stratification: bool = True,
        outer_stratification: bool = True,
        target_pos: int = 1,
        shuffle: bool = True,
        seed: int = 1,
    ) -> Splitter:
        impl = NestedCVSplitterImpl(
            num_outer_loop_folds, num_inner_loop_folds, inner_stratification,
            outer_stratification, target_pos, shuffle, seed,
        )  # fmt: skip
        return Splitter(impl)

    @staticmethod
    def get_cv_splitter(
        num_folds: int = 5,
        stratification: bool = True,
        target_pos: int = 1,
        shuffle: bool = True,
        seed: int = 1,
    ) -> Splitter:
        return Splitter(CVSplitterImpl(num_folds, stratification, target_pos, shuffle, seed))


__all__ = [
    "CVSplitterImpl",
    "NestedCVSplitterImpl",
    "RandomSplitterImpl",
    "Splitter",
    "SplitterFactory",
    "SplitterIF",
    "StratifiedSplitterImpl",
]
