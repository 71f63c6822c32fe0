"""data_stack.dataset.splitter through the shim: sizes, disjointness, stratification, seeds."""

from __future__ import annotations

from collections import Counter

import pytest

import datastack.iterators as ds
from data_stack.dataset.iterator import DatasetIteratorView, SequenceDatasetIterator
from data_stack.dataset.splitter import (
    CVSplitterImpl,
    NestedCVSplitterImpl,
    RandomSplitterImpl,
    Splitter,
    SplitterFactory,
    StratifiedSplitterImpl,
)


@pytest.fixture
def it() -> SequenceDatasetIterator:
    targets = [0] * 60 + [1] * 30 + [2] * 10
    return SequenceDatasetIterator([list(range(100)), targets])


def _ids(view) -> set[int]:
    return {sample for sample, _ in view}


def _assert_partition(parts, n: int) -> None:
    ids = [_ids(p) for p in parts]
    assert sum(len(s) for s in ids) == n and set().union(*ids) == set(range(n))


def test_random_splitter_sizes_disjoint_and_seeded(it):
    splits = Splitter(RandomSplitterImpl(ratios=[0.5, 0.3, 0.2], seed=7)).split(it)
    assert [len(s) for s in splits] == [50, 30, 20]
    _assert_partition(splits, 100)
    assert all(isinstance(s, DatasetIteratorView) and isinstance(s, ds.DatasetIteratorView)
               for s in splits)
    again = RandomSplitterImpl(ratios=[0.5, 0.3, 0.2], seed=7).get_indices(it)
    assert again == [s.indices.tolist() for s in splits]
    assert RandomSplitterImpl(ratios=[0.5, 0.3, 0.2], seed=8).get_indices(it) != again


def test_random_splitter_leaves_the_remainder_to_the_last_split(it):
    splits = SplitterFactory.get_random_splitter(ratios=[0.25, 0.25], seed=1).split(it)
    assert [len(s) for s in splits] == [25, 75]


def test_stratified_splitter_keeps_class_ratios(it):
    splits = SplitterFactory.get_stratified_splitter(ratios=[0.5, 0.3, 0.2], seed=1).split(it)
    _assert_partition(splits, 100)
    for split, ratio in zip(splits, [0.5, 0.3, 0.2], strict=True):
        counts = Counter(target for _, target in split)
        assert counts == {0: round(60 * ratio), 1: round(30 * ratio), 2: round(10 * ratio)}
    unseeded = StratifiedSplitterImpl(ratios=[0.5, 0.5]).split(it)  # seed=None: random
    assert [len(s) for s in unseeded] == [50, 50]


@pytest.mark.parametrize("stratification", [True, False])
@pytest.mark.parametrize("shuffle", [True, False])
def test_cv_splitter_folds(it, stratification, shuffle):
    folds = SplitterFactory.get_cv_splitter(
        num_folds=5, stratification=stratification, shuffle=shuffle, seed=3
    ).split(it)
    assert [len(f) for f in folds] == [20] * 5
    _assert_partition(folds, 100)
    if stratification:
        assert all(Counter(t for _, t in f) == {0: 12, 1: 6, 2: 2} for f in folds)
    if not shuffle and not stratification:
        assert folds[0].indices.tolist() == list(range(20))  # contiguous, like KFold


@pytest.mark.parametrize("shuffle", [True, False])
def test_nested_cv_splitter(it, shuffle):
    impl = NestedCVSplitterImpl(num_outer_loop_folds=5, num_inner_loop_folds=2, shuffle=shuffle)
    outer, inner = Splitter(impl).split(it)
    assert len(outer) == 5 and all(len(folds) == 2 for folds in inner)
    _assert_partition(outer, 100)
    for i, folds in enumerate(inner):
        outer_train = set(range(100)) - _ids(outer[i])
        assert set().union(*(_ids(f) for f in folds)) == outer_train
        assert not _ids(folds[0]) & _ids(folds[1])
        assert all(Counter(t for _, t in f) == {0: 24, 1: 12, 2: 4} for f in folds)
    outer_indices, inner_indices = impl.get_indices(it)
    assert outer_indices == [f.indices.tolist() for f in outer]
    assert len(inner_indices[0]) == 2


def test_split_views_of_a_view_index_that_view(it):
    part = DatasetIteratorView(it, list(range(50, 100)))
    folds = CVSplitterImpl(num_folds=2, stratification=False).split(part)
    assert {s for f in folds for s, _ in f} == set(range(50, 100))
    # get_indices is relative to the iterator given; the views collapse onto `it` (datastack)
    assert max(max(f) for f in CVSplitterImpl(2, False).get_indices(part)) == 49
