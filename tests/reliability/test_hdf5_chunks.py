"""HDF5 inputs with very many tiny chunks are refused up front or read with bounded memory
(#26.14); a fully written, very compressible dataset is not "mostly unwritten" (#26.22)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import datastack
from datastack.errors import UnsafeArchiveError
from datastack.formats.hdf5 import BoundedReads, inspect
from tests.fields.realdata import write_spec

h5py = pytest.importorskip("h5py")


def _many_chunks(path: Path, rows: int) -> Path:
    """``x`` (rows,) float32 in one-element chunks and ``y`` int64, written in pieces."""
    with h5py.File(path, "w") as f:
        x = f.create_dataset("x", (rows,), np.float32, chunks=(1,))
        y = f.create_dataset("y", (rows,), np.int64, chunks=(4096,))
        for lo in range(0, rows, 10_000):
            hi = min(lo + 10_000, rows)
            x[lo:hi] = np.arange(lo, hi, dtype=np.float32)
            y[lo:hi] = np.arange(lo, hi) % 3
    return path


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _many_chunks(tmp_path_factory.mktemp("h5") / "many.h5", 200_000)


def test_too_many_chunks_refused_up_front_naming_dataset_and_count(
    many: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATASTACK_MAX_HDF5_CHUNKS", "150000")
    with pytest.raises(UnsafeArchiveError) as info:
        inspect(many, ["x", "y"], "many.h5")
    message = str(info.value)
    assert "dataset 'x'" in message and "200000 chunks" in message, message
    assert "at most 150000" in message and "DATASTACK_MAX_HDF5_CHUNKS" in message
    spec = write_spec(tmp_path / "s.yaml", "many", [many],
                      "    format: hdf5\n    hdf5: {samples: x, targets: y}\n")
    [result] = datastack.refresh(spec, storage=str(tmp_path / "store"))  # probe child too
    assert result.status == "failed" and "200000 chunks" in result.reason, result.reason


def test_many_chunks_under_the_cap_publish_with_right_values(
    many: Path, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path / "s.yaml", "many", [many],
                      "    format: hdf5\n    hdf5: {samples: x, targets: y}\n")
    [result] = datastack.refresh(spec, storage=str(tmp_path / "store"))
    assert result.status == "published", result.reason
    it = datastack.load("many", storage=str(tmp_path / "store"))
    x, y = it.get_batch(np.array([0, 1, 123_457, 199_999]))
    assert np.ravel(x).tolist() == [0.0, 1.0, 123_457.0, 199_999.0]
    assert np.ravel(y).tolist() == [0, 1, 123_457 % 3, 199_999 % 3]


_READ = """
import resource, sys, numpy as np, h5py
from datastack.formats.hdf5 import BoundedReads
f = h5py.File(sys.argv[1], "r")
source = f["x"] if sys.argv[2] == "raw" else BoundedReads(f["x"])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
whole = source[:]
picked = source[np.arange(0, 200_000, 3)]
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(int(whole.astype("f8").sum()), int(picked.astype("f8").sum()), (after - before) * 1024)
"""


def test_reads_of_tiny_chunks_are_bounded(many: Path) -> None:
    """Reading 200k one-element chunks at once costs HDF5 ~0.5 GB of bookkeeping; in pieces
    of at most MAX_CHUNKS_PER_READ chunks the growth of the peak RSS stays small."""
    grown = {}
    for how in ("raw", "bounded"):
        done = subprocess.run([sys.executable, "-c", _READ, str(many), how],
                              capture_output=True, text=True, timeout=300, check=True)
        whole, picked, grown[how] = (int(v) for v in done.stdout.split())
        assert whole == sum(range(200_000)) and picked == sum(range(0, 200_000, 3))
    assert grown["bounded"] < 150 * 1024 * 1024, grown
    if grown["raw"] <= 2 * grown["bounded"]:  # seen once on a loaded machine: {0, 0}
        pytest.skip(f"the plain read did not grow the peak RSS on this run ({grown}): the "
                    "comparison that shows the bound matters was not reproduced")


def test_bounded_reads_equal_plain_reads(tmp_path: Path) -> None:
    path = tmp_path / "grid.h5"
    data = np.arange(40 * 6 * 5, dtype=np.int16).reshape(40, 6, 5)
    with h5py.File(path, "w") as f:
        f.create_dataset("g", data=data, chunks=(3, 2, 5))
    with h5py.File(path, "r") as f:
        bounded = BoundedReads(f["g"], max_chunks=7)
        assert bounded.rows == 6 and bounded.shape == data.shape and len(bounded) == 40
        np.testing.assert_array_equal(bounded[:], data)
        np.testing.assert_array_equal(bounded[5:37], data[5:37])
        rows = np.array([0, 1, 2, 9, 10, 20, 21, 22, 30, 31, 38, 39])
        np.testing.assert_array_equal(bounded[rows], data[rows])
        np.testing.assert_array_equal(bounded[7], data[7])


def test_fully_written_compressible_dataset_is_not_unwritten(tmp_path: Path) -> None:
    """96 MiB of zeros, gzip-compressed to well under 1/250 of that on disk, all chunks
    written: published (before: refused as "mostly unwritten")."""
    path = tmp_path / "zeros.h5"
    with h5py.File(path, "w") as f:
        x = f.create_dataset("x", (3072, 8192), np.float32, chunks=(256, 8192),
                             compression="gzip", compression_opts=9)
        for lo in range(0, 3072, 256):
            x[lo : lo + 256] = 0.0
        f.create_dataset("y", data=np.arange(3072) % 2)
    with h5py.File(path, "r") as f:
        assert f["x"].id.get_storage_size() * 250 < 3072 * 8192 * 4
    described = inspect(path, ["x", "y"], "zeros.h5")
    assert described["x"]["shape"] == [3072, 8192]
    # the same declaration with only one chunk written is still refused as unwritten
    sparse = tmp_path / "sparse.h5"
    with h5py.File(sparse, "w") as f:
        x = f.create_dataset("x", (256 * 300, 8192), np.float32, chunks=(256, 8192),
                             compression="gzip")
        x[:256] = 1.0  # 1 chunk of 300 written: 8 MiB of 2.4 GiB declared
        f.create_dataset("y", data=np.arange(3072) % 2)
    with pytest.raises(UnsafeArchiveError, match="only 8388608 are written"):
        inspect(sparse, ["x", "y"], "sparse.h5")
    json.dumps(described)
