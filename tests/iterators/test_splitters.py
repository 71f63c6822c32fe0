"""Splitters, split expressions and reports."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datastack.errors import ConfigurationError, SplitNotFoundError
from datastack.iterators import (
    CombinedDatasetIterator,
    DatasetIteratorView,
    NestedCVSplitter,
    RandomSplitter,
    SequenceDatasetIterator,
    k_fold_split,
    nested_cv_split,
    parse_split_expression,
    random_split,
    report,
    select,
    stratified_split,
)


def labelled(n: int = 200) -> SequenceDatasetIterator:
    # imbalanced classes: 60% / 30% / 10%
    n1, n2 = n * 3 // 10, n // 10
    y = np.array([0] * (n - n1 - n2) + [1] * n1 + [2] * n2)
    return SequenceDatasetIterator(np.arange(n), y)


def members(view: DatasetIteratorView) -> set[int]:
    return set(view.indices.tolist())


def test_random_split_sizes_disjoint_deterministic() -> None:
    it = labelled(101)
    parts = random_split(it, {"train": 0.7, "val": 0.2, "test": 0.1}, seed=4)
    assert {k: len(v) for k, v in parts.items()} == {"train": 71, "val": 20, "test": 10}
    sets = [members(v) for v in parts.values()]
    assert set().union(*sets) == set(range(101)) and sum(map(len, sets)) == 101
    again = random_split(it, {"train": 0.7, "val": 0.2, "test": 0.1}, seed=4)
    other = random_split(it, {"train": 0.7, "val": 0.2, "test": 0.1}, seed=5)
    assert members(again["test"]) == members(parts["test"])
    assert members(other["test"]) != members(parts["test"])


@pytest.mark.parametrize("ratios", [{}, {"a": 0.5}, {"a": -0.1, "b": 1.1}, {"a": "x"}])
def test_bad_ratios(ratios: dict) -> None:
    with pytest.raises(ConfigurationError):
        random_split(labelled(10), ratios)


def test_stratified_split_keeps_proportions() -> None:
    it = labelled(200)
    parts = stratified_split(it, {"train": 0.75, "test": 0.25}, seed=0)
    for view in parts.values():
        counts = np.bincount(view.get_targets(), minlength=3) / len(view)
        assert np.allclose(counts, [0.6, 0.3, 0.1], atol=0.011)
    assert not members(parts["train"]) & members(parts["test"])
    assert len(parts["train"]) + len(parts["test"]) == 200


@pytest.mark.parametrize("stratified", [False, True])
def test_k_fold_covers_every_sample_once(stratified: bool) -> None:
    it = labelled(103)
    folds = k_fold_split(it, k=5, seed=1, stratified=stratified)
    tests = [members(f["test"]) for f in folds]
    assert sorted(i for t in tests for i in t) == list(range(103))
    assert max(map(len, tests)) - min(map(len, tests)) <= 1
    for f in folds:
        assert members(f["train"]) | members(f["test"]) == set(range(103))
        assert not members(f["train"]) & members(f["test"])
    if stratified:
        for f in folds:
            assert abs(int((f["test"].get_targets() == 2).sum()) - 2) <= 1
    same = k_fold_split(it, k=5, seed=1, stratified=stratified)
    assert [members(f["test"]) for f in same] == tests
    with pytest.raises(ConfigurationError):
        k_fold_split(it, k=1)


def test_nested_cv() -> None:
    it = labelled(60)
    outer = nested_cv_split(it, outer_folds=3, inner_folds=2, seed=0, outer_stratification=True)
    assert len(outer) == 3
    for fold in outer:
        assert len(fold.inner) == 2
        inner_val = set().union(*(members(f["val"]) for f in fold.inner))
        assert inner_val == members(fold.train)  # inner folds cover the outer train part
        assert not inner_val & members(fold.test)
        assert fold.inner[0]["val"].iterator is it  # views collapse onto the source
    splitter = NestedCVSplitter(3, 2, seed=0)
    assert len(splitter.split(it)) == 3
    assert len(RandomSplitter({"a": 1.0}).split(it)["a"]) == 60


# -- split expressions -----------------------------------------------------------------------------
SPLITS = {
    "train": SequenceDatasetIterator(list(range(100))),
    "test": SequenceDatasetIterator(list(range(100, 120))),
}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("train", list(range(100))),
        ("train[:10%]", list(range(10))),
        ("train[10%:20%]", list(range(10, 20))),
        ("train[:100]", list(range(100))),
        ("train[-5:]", list(range(95, 100))),
        ("train[95:200]", list(range(95, 100))),
        ("train[-10%:]", list(range(90, 100))),
        ("test[12.5%:25%]", list(range(103, 105))),
        (" train[:2] + test[:2] ", [0, 1, 100, 101]),
        ("train+test", list(range(120))),
    ],
)
def test_select(expr: str, expected: list[int]) -> None:
    assert [s for (s,) in select(SPLITS, expr)] == expected


def test_select_returns_split_itself_and_combinations() -> None:
    assert select(SPLITS, "train") is SPLITS["train"]
    assert isinstance(select(SPLITS, "train+test"), CombinedDatasetIterator)


@pytest.mark.parametrize(
    "expr",
    [
        "",
        "train[",
        "train[:10%%]",
        "train[1.5:]",
        "train[:101%]",
        "train+",
        "train[1:2:3]",
        "tr ain",
    ],
)
def test_select_malformed(expr: str) -> None:
    with pytest.raises(ConfigurationError):
        select(SPLITS, expr)


def test_select_unknown_split_lists_available() -> None:
    with pytest.raises(SplitNotFoundError, match="available: test, train"):
        select(SPLITS, "train+valid[:5]")
    parsed = parse_split_expression("a[1%:-3]")
    assert parsed.to_spec() == "a[1%:-3]" and parsed.splits == ["a"]


# -- reports ---------------------------------------------------------------------------------------
def test_report_recurses_and_serialises() -> None:
    it = labelled(50)
    stack = (it[:30] + it[30:]).shuffle(0).map(lambda s: s)
    rep = report(stack, speed_samples=20)
    assert rep.iterator == "MappedDatasetIterator" and rep.length == 50
    shuffled = rep.children[0]
    assert shuffled.target_distribution == {"0": 30, "1": 15, "2": 5}
    assert [c.length for c in shuffled.children[0].children] == [30, 20]
    assert shuffled.samples_per_second and shuffled.samples_per_second > 0
    data = json.loads(rep.to_json())
    assert data["children"][0]["children"][0]["iterator"] == "CombinedDatasetIterator"
    assert report(stack, max_depth=0, speed_samples=0).children == []
