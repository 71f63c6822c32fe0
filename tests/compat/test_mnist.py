"""data_stack.mnist through the shim, with tiny local IDX files (no internet)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import datastack.iterators as ds
from data_stack.exception import DatasetFileCorruptError, ResourceNotFoundError
from data_stack.io.resource_definition import ResourceDefinition
from data_stack.io.storage_connectors import FileStorageConnector
from data_stack.mnist.factory import MNISTFactory
from data_stack.mnist.iterator import MNISTIterator
from data_stack.repository.repository import DatasetRepository
from tests.compat._helpers import md5_of


def _local_factory(store, files, base: str) -> MNISTFactory:
    """An MNISTFactory whose definitions point at ``base`` (an http:// or file:// folder)."""
    factory = MNISTFactory(store)
    for split, definitions in factory.resource_definitions.items():
        images, labels = files[split][:2]
        factory.resource_definitions[split] = [
            ResourceDefinition(d.identifier, f"{base}/{path.name}", md5_of(path))
            for d, path in zip(definitions, (images, labels), strict=True)
        ]
    return factory


def test_original_definitions_are_kept(tmp_path):
    factory = MNISTFactory(FileStorageConnector(tmp_path))
    train, test = factory.resource_definitions["train"], factory.resource_definitions["test"]
    assert [d.identifier for d in train + test] == [
        "mnist/raw/samples_train.gz", "mnist/raw/labels_train.gz",
        "mnist/raw/samples_test.gz", "mnist/raw/targets.gz",
    ]
    assert train[0].md5_sum == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert not factory.check_exists()


def test_mnist_over_local_http(tmp_path, http_server, mnist_files):
    for split in ("train", "test"):
        for path in mnist_files[split][:2]:
            shutil.copy(path, http_server.root / path.name)
    store = FileStorageConnector(tmp_path / "store")
    factory = _local_factory(store, mnist_files, http_server.url)
    iterator, meta = factory.get_dataset_iterator(config={"split": "train"})
    images, labels = mnist_files["train"][2:]
    assert isinstance(iterator, MNISTIterator) and isinstance(iterator, ds.DatasetIterator)
    assert len(iterator) == 12 and (meta.sample_pos, meta.target_pos, meta.tag_pos) == (0, 1, 2)
    image, target, tag = iterator[3]
    assert image.shape == (28, 28) and image.dtype == np.float32
    assert np.allclose(image, images[3] / 255.0) and 0.0 <= image.min() <= image.max() <= 1.0
    assert target == tag == int(labels[3]) and isinstance(target, int)
    assert factory.check_exists() and len(http_server.requests) == 4
    # a second factory on the same store reads what is there; nothing is downloaded again
    test_iterator, _ = _local_factory(store, mnist_files, http_server.url).get_dataset_iterator(
        {"split": "test"}
    )
    assert len(test_iterator) == 5 and len(http_server.requests) == 4
    assert sorted(test_iterator.get_targets().tolist()) == sorted(mnist_files["test"][3].tolist())
    repository = DatasetRepository()
    repository.register("mnist", factory)
    assert len(repository.get("mnist", split="test")[0]) == 5


def test_mnist_from_file_urls_and_errors(tmp_path, mnist_files):
    store = FileStorageConnector(tmp_path / "store")
    base = Path(mnist_files["train"][0]).parent.as_uri()
    factory = _local_factory(store, mnist_files, base)
    with pytest.raises(ResourceNotFoundError):
        factory.get_dataset_iterator({"split": "validation"})
    corrupt = _local_factory(FileStorageConnector(tmp_path / "other"), mnist_files, base)
    first = corrupt.resource_definitions["train"][0]
    corrupt.resource_definitions["train"][0] = ResourceDefinition(
        first.identifier, first.source, "0" * 32
    )
    with pytest.raises(DatasetFileCorruptError):
        corrupt.get_dataset_iterator({"split": "train"})
    iterator, _ = factory.get_dataset_iterator({"split": "train"})
    assert [t for _, t, _ in iterator] == mnist_files["train"][3].tolist()
