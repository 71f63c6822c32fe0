"""data_stack.dataset.iterator / .factory / .meta through the shim, stacked with datastack."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import datastack.iterators as ds
from data_stack.dataset.factory import HigherOrderDatasetFactory, InformedDatasetFactory
from data_stack.dataset.iterator import (
    CombinedDatasetIterator,
    DatasetIterator,
    DatasetIteratorIF,
    DatasetIteratorView,
    InformedDatasetIterator,
    InMemoryDatasetIterator,
    SequenceDatasetIterator,
)
from data_stack.dataset.meta import DatasetMeta, IteratorMeta, MetaFactory

SEQUENCES = [[(1, 2), (3, 4), (5, 6), (7, 8), (9, 0)], [1, 0, 2, 3, 3], ["b", "a", "c", "d", "d"]]


@pytest.fixture
def it() -> SequenceDatasetIterator:
    return SequenceDatasetIterator(dataset_sequences=SEQUENCES)


def test_sequence_iterator_takes_one_list_of_sequences(it):
    assert len(it) == 5
    assert it[0] == ((1, 2), 1, "b") and it[-1] == ((9, 0), 3, "d")
    assert list(it) == list(zip(*SEQUENCES, strict=True))
    assert it.underlying_iterators == []
    with pytest.raises(IndexError):
        it[5]
    assert isinstance(it, ds.SequenceDatasetIterator) and isinstance(it, DatasetIteratorIF)


def test_view_indices_tags_and_underlying(it):
    view = DatasetIteratorView(it, indices=[4, 0], view_tags={"split": "val"})
    assert len(view) == 2 and view[0] == it[4] and view[1] == it[0]
    assert view.indices.tolist() == [4, 0]
    assert view.view_tags == {"split": "val"}
    assert view.underlying_iterators == [it]
    assert isinstance(view, ds.DatasetIteratorView)
    assert HigherOrderDatasetFactory.get_dataset_iterator_view(it, [1], None)[0] == it[1]


def test_combined_iterator(it):
    combined = CombinedDatasetIterator(iterators=[it, it])
    assert len(combined) == 10 and combined[5] == it[0] and combined[9] == it[4]
    assert combined.underlying_iterators == [it, it]
    with pytest.raises(IndexError):
        combined[10]
    assert isinstance(combined, ds.CombinedDatasetIterator)


def test_in_memory_keeps_samples_as_they_were(it):
    memory = InMemoryDatasetIterator(it, progress=False)
    assert len(memory) == 5 and list(memory) == list(it)
    assert memory[0][0] == (1, 2)  # a tuple, not a stacked numpy row
    assert memory.underlying_iterators == [it]
    assert isinstance(memory, ds.InMemoryDatasetIterator)
    assert memory.get_targets(1).tolist() == [1, 0, 2, 3, 3]


def test_adapters_stack_with_datastack_iterators(it):
    native = ds.SequenceDatasetIterator([(0, 0)], [9], ["z"])
    stack = (it + native).shuffle(seed=3)
    assert sorted(s[1] for s in stack) == [0, 1, 2, 3, 3, 9]
    _, targets, tags = it[1:3].get_batch([1, 0])
    assert targets.tolist() == [2, 0] and tags.tolist() == ["c", "a"]
    assert isinstance(native, DatasetIteratorIF) and isinstance(native, DatasetIterator)
    assert not isinstance(object(), DatasetIteratorIF)
    assert pickle.loads(pickle.dumps(DatasetIteratorView(it, [2])))[0] == it[2]


class SquaresIterator(DatasetIterator):
    """A 0.0.13-style user iterator: implements __len__ and __getitem__ only."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int):
        if not 0 <= index < 4:
            raise IndexError(index)
        return (index * index, index % 2)


def test_original_style_subclass_works_in_datastack_stacks():
    squares = SquaresIterator()
    assert squares[3] == (9, 1) and list(squares) == [(0, 0), (1, 1), (4, 0), (9, 1)]
    assert DatasetIteratorView(squares, [3, 1])[0] == (9, 1)
    assert CombinedDatasetIterator([squares, squares])[6] == (4, 0)
    assert squares.get_targets(1).tolist() == [0, 1, 0, 1]
    assert ds.random_split(squares, {"a": 0.5, "b": 0.5})["a"].indices.size == 2


def test_informed_iterator_meta_and_underlying(it):
    meta = MetaFactory.get_dataset_meta(
        identifier="id", dataset_name="toy", dataset_tag="train",
        iterator_meta=MetaFactory.get_iterator_meta(sample_pos=0, target_pos=1, tag_pos=2),
    )
    informed = InformedDatasetFactory.get_dataset_iterator(it, meta)
    assert isinstance(informed, InformedDatasetIterator)
    assert isinstance(informed, ds.DatasetIterator)
    assert informed.dataset_meta.dataset_name == "toy" and informed.dataset_meta.target_pos == 1
    assert len(informed) == 5 and informed[2] == it[2] and informed.iterator is it
    # as in the original: the underlying iterators are those of the wrapped iterator
    assert informed.underlying_iterators == []
    combined = InformedDatasetFactory.get_combined_dataset_iterator([informed, informed], meta)
    assert len(combined) == 10 and combined.underlying_iterators == [informed, informed]
    memory = InformedDatasetFactory.get_in_memory_dataset_iterator(it, meta)
    assert list(memory) == list(it)
    view = InformedDatasetFactory.get_dataset_iterator_view(it, meta, [1, 2], {"t": 1})
    assert [s[2] for s in view] == ["a", "c"]


def test_shuffled_iterator_is_a_reproducible_permutation(it):
    meta = MetaFactory.get_dataset_meta(identifier="id_1")
    first = InformedDatasetFactory.get_shuffled_dataset_iterator(it, meta, seed=1)
    second = InformedDatasetFactory.get_shuffled_dataset_iterator(it, meta, seed=1)
    assert sorted(first) == sorted(it) and list(first) == list(second)
    assert list(first) != list(it)


def test_meta_classes():
    meta = DatasetMeta(IteratorMeta(sample_pos=1, target_pos=0, tag_pos=2), "id", "name", "tag")
    derived = MetaFactory.get_dataset_meta_from_existing(meta, identifier="id2", dataset_tag="t2")
    assert (derived.identifier, derived.dataset_name, derived.dataset_tag) == ("id2", "name", "t2")
    assert (derived.sample_pos, derived.target_pos, derived.tag_pos) == (1, 0, 2)
    assert MetaFactory.get_dataset_meta().target_pos == 1  # default positions
    assert np.array_equal(
        SequenceDatasetIterator([[1, 2], [3, 4]]).get_targets(1), np.array([3, 4])
    )
