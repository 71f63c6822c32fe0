"""Splitters: random, stratified, k-fold and nested cross-validation, returning views.

All splits are deterministic given the seed (numpy's ``default_rng``; the same result with or
without scikit-learn installed). Sizes come from :func:`datastack.splits.split_sizes` (the
largest-remainder rule, the same arithmetic as a spec's ``splits:``), so they always sum to the
length; indices inside a split are sorted (reads stay local; shuffle at load time).

>>> from datastack.iterators import SequenceDatasetIterator
>>> it = SequenceDatasetIterator(list(range(10)), [0] * 5 + [1] * 5)
>>> parts = stratified_split(it, {"train": 0.6, "test": 0.4}, seed=0)
>>> {k: len(v) for k, v in parts.items()}, sorted(parts["test"].get_targets().tolist())
({'train': 6, 'test': 4}, [0, 0, 1, 1])
>>> [len(f["test"]) for f in k_fold_split(it, k=3)]
[4, 3, 3]
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from datastack.errors import ConfigurationError
from datastack.iterators.base import DatasetIterator, Indices
from datastack.iterators.views import DatasetIteratorView
from datastack.splits import check_ratios, class_members, cut, split_sizes


def label_position(it: DatasetIterator, target_pos: int | None = None) -> int:
    """The tuple position stratification uses: ``target_pos`` when given, else the first
    label field (a class with names), else position 1 (the classic ``(sample, target)``).

    >>> from datastack.iterators import SequenceDatasetIterator
    >>> label_position(SequenceDatasetIterator([1, 2], [0, 1]))
    1
    """
    if target_pos is not None:
        return target_pos
    from datastack.fields import LABEL

    kinds = [f.kind for f in it.fields.values()]
    return kinds.index(LABEL) if LABEL in kinds else 1


def _views(it: DatasetIterator, parts: Mapping[str, Indices]) -> dict[str, DatasetIteratorView]:
    return {name: DatasetIteratorView(it, np.sort(idx)) for name, idx in parts.items()}


def random_split(
    it: DatasetIterator, ratios: Mapping[str, float], seed: int = 0
) -> dict[str, DatasetIteratorView]:
    """Disjoint random views with sizes ``ratios x len(it)`` (summing to ``len(it)``)."""
    n = len(it)
    order = np.random.default_rng(seed).permutation(n).astype(np.int64)
    return _views(it, cut(order, split_sizes(n, ratios)))


def stratified_split(
    it: DatasetIterator, ratios: Mapping[str, float], seed: int = 0, target_pos: int | None = None
) -> dict[str, DatasetIteratorView]:
    """Like :func:`random_split`, but every class is split with the same ratios (classes of
    the label field, see :func:`label_position`)."""
    targets = it.get_targets(label_position(it, target_pos))
    rng = np.random.default_rng(seed)
    parts: dict[str, list[Indices]] = {name: [] for name in check_ratios(ratios)}
    for members in class_members(targets):
        members = members[rng.permutation(len(members))]
        for name, idx in cut(members, split_sizes(len(members), ratios)).items():
            parts[name].append(idx)
    empty = np.zeros(0, np.int64)
    return _views(it, {k: np.concatenate(v) if v else empty for k, v in parts.items()})


def _fold_ids(n: int, k: int, seed: int, targets: NDArray[Any] | None) -> tuple[Indices, Indices]:
    """``(order, fold_of_position)``: samples in a shuffled (class-grouped) order, round-robin."""
    if not isinstance(k, int) or k < 2:
        raise ConfigurationError(f"k-fold needs k >= 2 folds, got {k!r}")
    if k > n:
        raise ConfigurationError(f"k-fold with k={k} needs at least {k} samples, got {n}")
    rng = np.random.default_rng(seed)
    if targets is None:
        order = rng.permutation(n).astype(np.int64)
    else:
        groups = [m[rng.permutation(len(m))] for m in class_members(targets)]
        order = np.concatenate(groups)
    return order, np.arange(n, dtype=np.int64) % k


def k_fold_split(
    it: DatasetIterator,
    k: int = 5,
    seed: int = 0,
    stratified: bool = False,
    target_pos: int | None = None,
) -> list[dict[str, DatasetIteratorView]]:
    """``k`` folds ``{"train": view, "test": view}``; every sample is in exactly one test fold.

    Stratified folds deal each class round-robin over the folds, so every fold keeps the
    class proportions (up to one sample per class).
    """
    targets = it.get_targets(label_position(it, target_pos)) if stratified else None
    order, fold = _fold_ids(len(it), k, seed, targets)
    return [_views(it, {"train": order[fold != f], "test": order[fold == f]}) for f in range(k)]


@dataclass
class NestedCVFold:
    """One outer fold: its train/test views and the inner folds over its train part."""

    train: DatasetIteratorView
    test: DatasetIteratorView
    inner: list[dict[str, DatasetIteratorView]] = field(default_factory=list)


def nested_cv_split(
    it: DatasetIterator,
    outer_folds: int = 5,
    inner_folds: int = 2,
    seed: int = 0,
    outer_stratification: bool = False,
    inner_stratification: bool = False,
    target_pos: int | None = None,
) -> list[NestedCVFold]:
    """Nested cross-validation: ``outer_folds`` folds, each with ``inner_folds`` folds
    (keys ``"train"``/``"val"``) over its train part. Inner views index ``it`` directly."""
    outer = k_fold_split(it, outer_folds, seed, outer_stratification, target_pos)
    result = []
    for i, fold in enumerate(outer):
        inner = k_fold_split(
            fold["train"], inner_folds, seed + 1 + i, inner_stratification, target_pos
        )
        result.append(
            NestedCVFold(
                fold["train"],
                fold["test"],
                [{"train": f["train"], "val": f["test"]} for f in inner],
            )
        )
    return result


# -- the original's object interface --------------------------------------------------------------
class Splitter(abc.ABC):
    """Something that splits an iterator (``split(it)``)."""

    @abc.abstractmethod
    def split(self, it: DatasetIterator) -> Any:
        """Split ``it`` into views."""


@dataclass
class RandomSplitter(Splitter):
    ratios: Mapping[str, float]
    seed: int = 0

    def split(self, it: DatasetIterator) -> dict[str, DatasetIteratorView]:
        return random_split(it, self.ratios, self.seed)


@dataclass
class StratifiedSplitter(Splitter):
    ratios: Mapping[str, float]
    seed: int = 0
    target_pos: int | None = None

    def split(self, it: DatasetIterator) -> dict[str, DatasetIteratorView]:
        return stratified_split(it, self.ratios, self.seed, self.target_pos)


@dataclass
class KFoldSplitter(Splitter):
    k: int = 5
    seed: int = 0
    stratified: bool = False
    target_pos: int | None = None

    def split(self, it: DatasetIterator) -> list[dict[str, DatasetIteratorView]]:
        return k_fold_split(it, self.k, self.seed, self.stratified, self.target_pos)


@dataclass
class NestedCVSplitter(Splitter):
    num_outer_loop_folds: int = 5
    num_inner_loop_folds: int = 2
    seed: int = 0
    outer_stratification: bool = False
    inner_stratification: bool = False
    target_pos: int | None = None

    def split(self, it: DatasetIterator) -> list[NestedCVFold]:
        return nested_cv_split(
            it,
            self.num_outer_loop_folds,
            self.num_inner_loop_folds,
            self.seed,
            self.outer_stratification,
            self.inner_stratification,
            self.target_pos,
        )
