"""Copying chosen rows out of a staged HDF5 column (``canonical.columns._read_fixed``): dense
runs, sparse splits read as windows of spans, and rows far apart picked by HDF5, all give
exactly the rows asked for."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from datastack.canonical import columns
from datastack.canonical.columns import SPARSE_SPAN, _read_fixed


@pytest.fixture
def staged(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.normal(size=(50_000, 3)).astype(np.float32)
    with h5py.File(tmp_path / "stage.h5", "w") as f:
        f.create_dataset("x", data=data, chunks=(1024, 3))
    with h5py.File(tmp_path / "stage.h5", "r") as f:
        yield f["x"], data


@pytest.mark.parametrize("share", [1.0, 0.5, 0.1, 0.03, 1 / (2 * SPARSE_SPAN)])
def test_rows_of_any_density_are_the_rows_asked_for(staged, share):
    dataset, data = staged
    rng = np.random.default_rng(int(share * 1000))
    wanted = np.flatnonzero(rng.random(len(data)) < share).astype(np.int64)
    got = _read_fixed(dataset, wanted)
    assert got.dtype == data.dtype and got.shape == (len(wanted), 3)
    np.testing.assert_array_equal(got, data[wanted])


def test_a_sparse_block_is_read_as_spans_not_point_by_point(staged, monkeypatch):
    """A 10% split: every read of the staged column is a slice (a span), never a list of
    rows, and no span is longer than four times the rows asked for."""
    dataset, data = staged
    wanted = np.arange(7, len(data), 10, dtype=np.int64)
    reads: list[object] = []

    class Spy:
        shape, dtype = dataset.shape, dataset.dtype

        def __getitem__(self, key):
            reads.append(key)
            return dataset[key]

    got = _read_fixed(Spy(), wanted)
    np.testing.assert_array_equal(got, data[wanted])
    assert reads and all(isinstance(k, slice) for k in reads)
    assert max(k.stop - k.start for k in reads) <= 4 * len(wanted)
    assert len(reads) >= 2  # the span is cut into windows: memory stays bounded


def test_rows_far_apart_are_picked_by_hdf5(staged):
    dataset, data = staged
    wanted = np.array([0, 20_000, 49_999], np.int64)
    np.testing.assert_array_equal(_read_fixed(dataset, wanted), data[wanted])
    assert columns.SPARSE_SPAN >= 8
