"""data_stack.repository.repository and data_stack.exception through the shim."""

from __future__ import annotations

import pickle

import pytest

import datastack.errors as errors
from data_stack import exception
from data_stack.dataset.factory import BaseDatasetFactory
from data_stack.dataset.iterator import SequenceDatasetIterator
from data_stack.dataset.meta import IteratorMeta
from data_stack.repository.repository import DatasetRepository


class ToyFactory(BaseDatasetFactory):
    def __init__(self) -> None:
        super().__init__(storage_connector=None)
        self.configs: list[object] = []

    def get_dataset_iterator(self, config=None):
        self.configs.append(config)
        return SequenceDatasetIterator([["a", "b", "c"], [0, 1, 0]]), IteratorMeta()


def test_register_and_get():
    repository, factory = DatasetRepository(), ToyFactory()
    repository.register(identifier="toy", dataset_factory=factory)
    iterator, meta = repository.get("toy", {"split": "train"})
    assert [s for s, _ in iterator] == ["a", "b", "c"] and meta.target_pos == 1
    repository.get("toy", split="test")  # keyword items are merged into the config
    assert factory.configs == [{"split": "train"}, {"split": "test"}]
    assert factory.storage_connector is None


def test_unknown_dataset_raises_both_names():
    with pytest.raises(exception.DatasetNotFoundError) as info:
        DatasetRepository().get("nope")
    assert isinstance(info.value, errors.DatasetNotFoundError)
    assert isinstance(info.value, errors.DatastackError) and "nope" in str(info.value)


def test_base_factory_is_abstract_by_convention():
    with pytest.raises(NotImplementedError):
        BaseDatasetFactory().get_dataset_iterator({})


@pytest.mark.parametrize(
    ("name", "datastack_base"),
    [
        ("DatasetNotFoundError", errors.DatasetNotFoundError),
        ("ResourceNotFoundError", errors.ResourceNotFoundError),
        ("DatasetFileCorruptError", errors.ChecksumError),
        ("MaliciousFilePathError", errors.InvalidIdentifierError),
        ("MalformedIdentifierError", errors.InvalidIdentifierError),
        ("DatasetOutOfBoundsError", IndexError),
        ("ModelNotTrainedError", RuntimeError),
    ],
)
def test_exceptions_are_datastack_errors_with_original_names(name, datastack_base):
    cls = getattr(exception, name)
    assert cls.__name__ == name and issubclass(cls, errors.DatastackError)
    assert issubclass(cls, datastack_base)
    error = cls("message")
    assert str(error) == "message" and type(pickle.loads(pickle.dumps(error))) is cls


def test_not_found_errors_are_datastacks_own():
    # so except clauses written for 0.0.13 also catch what datastack itself raises
    assert exception.ResourceNotFoundError is errors.ResourceNotFoundError
    assert exception.DatasetNotFoundError is errors.DatasetNotFoundError
