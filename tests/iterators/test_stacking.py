"""Random stacks of views/slices/combined/shuffled/mapped equal the same operations on lists."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datastack.iterators import (
    CombinedDatasetIterator,
    DatasetIterator,
    DatasetIteratorView,
    SequenceDatasetIterator,
    ShuffledDatasetIterator,
)
from tests.iterators.helpers import add_one

Model = list[tuple[int, int]]


def plain(sample: tuple[Any, ...]) -> tuple[int, ...]:
    return tuple(int(v) for v in sample)


def source(n: int, offset: int = 0) -> tuple[DatasetIterator, Model]:
    xs = list(range(offset, offset + n))
    ys = [x % 3 for x in xs]
    return SequenceDatasetIterator(xs, ys), list(zip(xs, ys, strict=True))


RELABEL = {0: 10, 1: 11, 2: 12}

operation = st.one_of(
    st.tuples(
        st.just("slice"),
        st.one_of(st.none(), st.integers(-30, 30)),
        st.one_of(st.none(), st.integers(-30, 30)),
        st.one_of(st.none(), st.integers(-4, 4).filter(lambda s: s != 0)),
    ),
    st.tuples(st.just("view"), st.lists(st.integers(-1000, 1000), max_size=12)),
    st.tuples(st.just("shuffle"), st.integers(0, 2**32)),
    st.tuples(st.just("map")),
    st.tuples(st.just("relabel")),
    st.tuples(st.just("combine"), st.integers(0, 8)),
    st.tuples(st.just("in_memory")),
)


def apply(op: tuple[Any, ...], it: DatasetIterator, model: Model) -> tuple[DatasetIterator, Model]:
    kind = op[0]
    if kind == "slice":
        window = slice(op[1], op[2], op[3])
        return it[window], model[window]
    if kind == "view":
        n = len(model)
        if n == 0:
            return it.view([]), []
        idx = [i % (2 * n) - n for i in op[1]]  # in range, negatives included
        return it.view(idx), [model[i] for i in idx]
    if kind == "shuffle":
        shuffled = it.shuffle(op[1])
        perm = shuffled.permutation
        assert sorted(perm.tolist()) == list(range(len(model)))
        return shuffled, [model[p] for p in perm]
    if kind == "map":
        return it.map(add_one), [(x + 1, y) for x, y in model]
    if kind == "relabel":
        mapping = {**RELABEL, **{v: v for v in RELABEL.values()}}
        return it.map_targets(mapping), [(x, mapping[y]) for x, y in model]
    if kind == "combine":
        other, other_model = source(op[1], offset=1000)
        return it + other, model + other_model
    if kind == "in_memory":
        if not model:
            return it, model
        return it.in_memory(progress=False), model
    raise AssertionError(kind)


def check(it: DatasetIterator, model: Model, probe: list[int]) -> None:
    n = len(model)
    assert len(it) == n
    assert [plain(s) for s in it] == model
    for i in probe:
        j = i % (2 * n) - n if n else i
        if n:
            assert plain(it[j]) == model[j]
    with pytest.raises(IndexError):
        it[n]
    with pytest.raises(IndexError):
        it[-n - 1]
    if n:
        idx = [p % n for p in probe] + [0, 0, -1]
        batch = it.get_batch(idx)
        assert [tuple(int(c[k]) for c in batch) for k in range(len(idx))] == [model[i] for i in idx]


@settings(max_examples=120, deadline=None)
@given(
    n=st.integers(0, 25),
    ops=st.lists(operation, max_size=5),
    probe=st.lists(st.integers(-100, 100), max_size=6),
)
def test_random_stacks_match_list_semantics(n: int, ops: list[Any], probe: list[int]) -> None:
    it, model = source(n)
    for op in ops:
        it, model = apply(op, it, model)
        check(it, model, probe)
    clone = pickle.loads(pickle.dumps(it))
    assert [plain(s) for s in clone] == model


def test_view_of_view_collapses_and_slices_any_step() -> None:
    it, model = source(10)
    v = it[2:9][::-2][1:]
    assert isinstance(v, DatasetIteratorView) and v.iterator is it
    assert [plain(s) for s in v] == model[2:9][::-2][1:]
    assert [plain(s) for s in it[::-1]] == model[::-1]
    assert len(it[20:]) == 0


def test_index_types() -> None:
    it, model = source(5)
    assert plain(it[np.int64(-2)]) == model[-2]
    with pytest.raises(TypeError):
        it[1.5]
    with pytest.raises(TypeError):
        it["0"]
    with pytest.raises(IndexError):
        it.get_batch([0, 5])
    with pytest.raises(IndexError):
        it.view([-6])
    # iteration stops at the end (via IndexError-free range), and it[array] is a batch
    assert np.array_equal(it[np.array([4, 0])][0], [4, 0])
    assert [len(c) for c in it.get_batch([])] == [0, 0]
    mask = np.array([True, False, True, False, False])
    assert it.get_batch(mask)[0].tolist() == [0, 2]


def test_combined_bisect_and_flattening() -> None:
    parts = [source(n, offset=100 * k)[0] for k, n in enumerate([3, 0, 2, 5])]
    combined = CombinedDatasetIterator(parts)
    expected = [plain(s) for p in parts for s in p]
    assert [plain(combined[i]) for i in range(-len(combined), len(combined))] == expected * 2
    assert combined.ends == [3, 3, 5, 10]
    a, b, c = parts[0], parts[2], parts[3]
    assert len((a + b + c).iterators) == 3
    batch = combined.get_batch([9, 0, 4, 3, 0])
    assert batch[0].tolist() == [expected[i][0] for i in (9, 0, 4, 3, 0)]


def test_shuffle_is_reproducible_and_seed_kept() -> None:
    it, _ = source(50)
    assert np.array_equal(it.shuffle(7).permutation, it.shuffle(7).permutation)
    assert not np.array_equal(it.shuffle(7).permutation, it.shuffle(8).permutation)
    drawn = it.shuffle()
    clone = pickle.loads(pickle.dumps(drawn))
    assert isinstance(clone, ShuffledDatasetIterator)
    assert np.array_equal(clone.permutation, drawn.permutation)


def test_target_mapping_errors_and_callables() -> None:
    it, _ = source(4)
    with pytest.raises(ValueError, match="target 2 has no entry"):
        list(it.map_targets({0: "a", 1: "b"}))
    assert it.map_targets(str).get_targets().tolist() == ["0", "1", "2", "0"]


def test_in_memory_reads_once_and_shows_progress(capsys: pytest.CaptureFixture[str]) -> None:
    it, model = source(3000)
    mem = it.in_memory(progress=True)
    assert [plain(s) for s in mem] == model
    assert "3000" in capsys.readouterr().err
    it.in_memory(progress=False)
    assert capsys.readouterr().err == ""
