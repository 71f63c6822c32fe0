"""HDF5 and NPY iterators over the filesystem and GridFS (SecantusDB) connectors."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest

from datastack.iterators import HDF5DatasetIterator, NPYDatasetIterator, select, split_iterators


def test_hdf5_over_store(store: Any, dataset: dict[str, Any]) -> None:
    store.set_resource("demo/v1/data.h5", dataset["path"])
    resource = store.get_resource("demo/v1/data.h5")
    splits = split_iterators(resource)
    x, y = dataset["x"], dataset["y"]
    train, test = splits["train"], splits["test"]
    assert (len(train), len(test)) == (600, 100)
    assert np.array_equal(test[-1][0], x[-1]) and test[0][1] == y[600]
    rng = np.random.default_rng(1)
    idx = rng.integers(-600, 600, size=200)
    samples, targets = train.get_batch(idx)
    assert np.array_equal(samples, x[:600][idx]) and np.array_equal(targets, y[:600][idx])
    singles = [train[int(i)] for i in idx[:20]]
    assert all(np.array_equal(s[0], samples[k]) for k, s in enumerate(singles))
    stack = select(splits, "train[10%:20%]+test[:5]").shuffle(3).map_targets(int)
    clone = pickle.loads(pickle.dumps(stack))
    assert [int(t) for _, t in clone] == [int(t) for _, t in stack]
    for it in (train, test, clone):
        it.close()


def test_npy_over_store(store: Any, dataset: dict[str, Any]) -> None:
    store.set_resource("demo/x.npy", dataset["x_npy"])
    store.set_resource("demo/y.npy", dataset["y_npy"])
    it = NPYDatasetIterator(store.get_resource("demo/x.npy"), store.get_resource("demo/y.npy"))
    x, y = dataset["x"], dataset["y"]
    assert len(it) == 700
    idx = np.random.default_rng(2).integers(0, 700, size=100)
    samples, targets = it.get_batch(idx)
    assert np.array_equal(samples, x[idx]) and np.array_equal(targets, y[idx])
    assert np.array_equal(it[-3][0], x[-3])
    assert np.array_equal(pickle.loads(pickle.dumps(it))[5][0], x[5])


@pytest.mark.mongo
def test_gridfs_batch_prefetches_in_one_round_trip(
    mongo_uri: str, dataset: dict[str, Any], fresh_cache: None
) -> None:
    """After the chunk index is cached, a random batch costs exactly one block fetch."""
    from datastack.storage.cache import default_cache
    from datastack.storage.gridfs import GridFSStorageConnector

    store = GridFSStorageConnector(mongo_uri, chunk_size=4096, readahead_bytes=0)
    store.set_resource("demo/data.h5", dataset["path"])
    it = HDF5DatasetIterator(store.get_resource("demo/data.h5"), "train")
    it.get_batch([0, 599])  # opens the file, reads labels and the chunk index
    reader = it._state().resource.stream
    default_cache().clear()
    reader._local = {}
    before = reader.fetch_calls
    idx = np.random.default_rng(5).choice(600, size=64, replace=False)
    samples, _ = it.get_batch(idx)
    assert np.array_equal(samples, dataset["x"][idx])
    assert reader.fetch_calls - before == 1
    store.close()


@pytest.mark.mongo
def test_gridfs_contiguous_batch_still_prefetches(
    mongo_uri: str, dataset: dict[str, Any], fresh_cache: None
) -> None:
    """The sequential fast path (one slice read) still loads its blocks in one fetch."""
    from datastack.storage.cache import default_cache
    from datastack.storage.gridfs import GridFSStorageConnector

    store = GridFSStorageConnector(mongo_uri, chunk_size=4096, readahead_bytes=0)
    store.set_resource("demo/data.h5", dataset["path"])
    it = HDF5DatasetIterator(store.get_resource("demo/data.h5"), "train")
    it.get_batch([0, 599])
    state = it._state()
    assert state.can_prefetch and state.file.driver == "fileobj"
    reader = state.resource.stream
    default_cache().clear()
    reader._local = {}
    before = reader.fetch_calls
    samples, targets = it.get_batch(range(100, 300))
    assert np.array_equal(samples, dataset["x"][100:300])
    assert np.array_equal(targets, dataset["y"][100:300])
    assert reader.fetch_calls - before == 1
    store.close()
