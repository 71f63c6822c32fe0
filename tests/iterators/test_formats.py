"""Format iterators over in-memory and local-file streams, and malformed inputs."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from datastack.errors import ConfigurationError, FormatError, SplitNotFoundError
from datastack.iterators import (
    CSVDatasetIterator,
    HDF5DatasetIterator,
    IDXDatasetIterator,
    NPYDatasetIterator,
    NPZDatasetIterator,
    read_csv_arrays,
    split_iterators,
)
from datastack.resources import StreamedResource
from tests.iterators.helpers import idx_bytes, mnist_like, npy_bytes, write_h5


# -- HDF5 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk_rows", [7, None], ids=["chunked", "contiguous"])
def test_hdf5_reads_match_arrays(tmp_path: Path, chunk_rows: int | None) -> None:
    x, y = mnist_like(100)
    path = write_h5(
        tmp_path / "d.h5", {"train": (x, y), "test": (x[:10], y[:10])}, chunk_rows=chunk_rows
    )
    resource = StreamedResource.from_path("d.h5", path)
    splits = split_iterators(resource)
    assert sorted(splits) == ["test", "train"]
    it = splits["train"]
    assert not it.is_open and not resource.is_open  # nothing opened at construction
    assert len(it) == 100 and len(splits["test"]) == 10
    assert np.array_equal(it[-1][0], x[-1]) and it[-1][1] == y[-1]
    idx = [99, 3, 3, 50, 0, 8, 7, 99, -1]
    samples, targets = it.get_batch(idx)
    assert np.array_equal(samples, x[idx]) and np.array_equal(targets, y[idx])
    assert np.array_equal(it.get_targets(), y)
    assert it.dataset_meta.dataset_name == "demo" and it.dataset_meta.dataset_tag == "train"
    clone = pickle.loads(pickle.dumps(it))
    assert not clone.is_open
    assert np.array_equal(clone.get_batch([5, 1])[0], x[[5, 1]])
    with pytest.raises(IndexError):
        it[100]


def test_hdf5_missing_group_lists_available(tmp_path: Path) -> None:
    x, y = mnist_like(5)
    path = write_h5(tmp_path / "d.h5", {"train": (x, y)})
    it = HDF5DatasetIterator(StreamedResource.from_path("d.h5", path), group="valid")
    with pytest.raises(SplitNotFoundError, match="available: train"):
        len(it)


def test_hdf5_lazy_targets_and_unlabelled(tmp_path: Path) -> None:
    x, y = mnist_like(40)
    path = write_h5(tmp_path / "d.h5", {"train": (x, y), "raw": (x, None)})
    res = StreamedResource.from_path("d.h5", path)
    lazy = HDF5DatasetIterator(res, "train", eager_targets=False)
    assert np.array_equal(lazy.get_batch([39, 2, 2])[1], y[[39, 2, 2]])
    raw = HDF5DatasetIterator(res, "raw")
    assert len(raw[0]) == 1 and len(raw.get_batch([1, 0])) == 1


def test_hdf5_garbage_is_format_error() -> None:
    it = HDF5DatasetIterator(StreamedResource.from_bytes("x.h5", b"not hdf5" * 100), "train")
    with pytest.raises(FormatError, match="not a readable HDF5"):
        len(it)


# -- NPY -------------------------------------------------------------------------------------------
def test_npy_reads_by_seek(tmp_path: Path) -> None:
    x = np.arange(60, dtype=">i4").reshape(20, 3)  # big-endian: converted to native
    y = np.arange(20) % 2
    (tmp_path / "x.npy").write_bytes(npy_bytes(x))
    it = NPYDatasetIterator(
        StreamedResource.from_path("x.npy", tmp_path / "x.npy"),
        StreamedResource.from_bytes("y.npy", npy_bytes(y)),
    )
    assert len(it) == 20
    assert it[5][0].tolist() == [15, 16, 17] and it[5][0].dtype.isnative
    samples, targets = it.get_batch([19, 0, 0, 10])
    assert np.array_equal(samples, x[[19, 0, 0, 10]]) and targets.tolist() == [1, 0, 0, 0]
    assert samples.flags.writeable
    clone = pickle.loads(pickle.dumps(it))
    assert np.array_equal(clone[3][0], x[3])


def test_npy_refuses_pickled_objects() -> None:
    data = npy_bytes(np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    it = NPYDatasetIterator(StreamedResource.from_bytes("evil.npy", data))
    with pytest.raises(FormatError, match="pickle"):
        len(it)


def test_npy_huge_header_refused_before_allocating() -> None:
    # a header claiming 1e8 x 10 float64 (8 GB) followed by 80 bytes
    import numpy.lib.format as fmt

    buf = io.BytesIO()
    fmt.write_array_header_1_0(
        buf, {"descr": "<f8", "fortran_order": False, "shape": (100_000_000, 10)}
    )
    data = buf.getvalue() + b"\0" * 80
    assert data.startswith(b"\x93NUMPY")
    it = NPYDatasetIterator(StreamedResource.from_bytes("huge.npy", data))
    with pytest.raises(FormatError, match="truncated or the header is wrong"):
        len(it)


def test_npy_truncated_and_garbage() -> None:
    data = npy_bytes(np.ones((10, 4)))
    with pytest.raises(FormatError, match="truncated"):
        len(NPYDatasetIterator(StreamedResource.from_bytes("t.npy", data[:-5])))
    with pytest.raises(FormatError, match=r"not a valid \.npy"):
        len(NPYDatasetIterator(StreamedResource.from_bytes("g.npy", b"hello world" * 3)))
    with pytest.raises(FormatError, match="Fortran"):
        len(
            NPYDatasetIterator(
                StreamedResource.from_bytes("f.npy", npy_bytes(np.asfortranarray(np.ones((3, 4)))))
            )
        )


# -- NPZ -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("compressed", [False, True])
def test_npz_members(compressed: bool) -> None:
    x, y = mnist_like(30)
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, images=x, labels=y)
    it = NPZDatasetIterator(
        StreamedResource.from_bytes("d.npz", buf.getvalue()), "images", "labels"
    )
    assert len(it) == 30
    assert np.array_equal(it.get_batch([29, 1, 1])[0], x[[29, 1, 1]])
    assert np.array_equal(it.get_targets(), y)
    with pytest.raises(FormatError, match="members: images, labels"):
        len(NPZDatasetIterator(StreamedResource.from_bytes("d.npz", buf.getvalue()), "x"))


def test_npz_refuses_object_member() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("samples.npy", npy_bytes(np.array([object()]), allow_pickle=True))
    it = NPZDatasetIterator(StreamedResource.from_bytes("e.npz", buf.getvalue()), targets=None)
    with pytest.raises(FormatError, match="pickle"):
        len(it)


# -- IDX -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_idx_images_and_labels(compress: bool) -> None:
    images = np.arange(5 * 4 * 4, dtype=np.uint8).reshape(5, 4, 4)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    it = IDXDatasetIterator(
        StreamedResource.from_bytes("img.idx", idx_bytes(images, compress)),
        StreamedResource.from_bytes("lbl.idx", idx_bytes(labels, compress)),
    )
    assert len(it) == 5 and np.array_equal(it[2][0], images[2]) and it[-1][1] == 5
    assert np.array_equal(it.get_batch([4, 0])[0], images[[4, 0]])
    floats = np.linspace(0, 1, 6, dtype=np.float32).reshape(3, 2)
    f_it = IDXDatasetIterator(StreamedResource.from_bytes("f.idx", idx_bytes(floats, compress)))
    assert np.array_equal(f_it.get_batch([2, 1])[0], floats[[2, 1]])


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_idx_truncated_and_bad_magic(compress: bool) -> None:
    data = idx_bytes(np.zeros((10, 8, 8), dtype=np.uint8))
    cut = data[: len(data) // 2]
    blob = __import__("gzip").compress(cut) if compress else cut
    with pytest.raises(FormatError, match="truncated"):
        len(IDXDatasetIterator(StreamedResource.from_bytes("cut.idx", blob)))
    bad = b"\x01\x02" + data[2:]
    with pytest.raises(FormatError, match="not an IDX file"):
        len(IDXDatasetIterator(StreamedResource.from_bytes("bad.idx", bad)))
    if compress:
        noisy = idx_bytes(np.random.default_rng(0).integers(0, 255, (10, 8, 8), dtype=np.uint8))
        whole = __import__("gzip").compress(noisy)
        half_gzip = whole[: len(whole) // 2]
        with pytest.raises(FormatError, match="truncated"):
            len(IDXDatasetIterator(StreamedResource.from_bytes("g.idx.gz", half_gzip)))


# -- CSV -------------------------------------------------------------------------------------------
def test_csv_options_and_iterator() -> None:
    text = b"# comment line\nsepal;petal;species\n1;2;setosa\n3;4.5;virginica\n\n5;6;setosa\n"
    it = CSVDatasetIterator(
        StreamedResource.from_bytes("iris.csv", text),
        skip_rows=1,
        delimiter=";",
        target="species",
    )
    assert len(it) == 3 and it[1][0].tolist() == [3.0, 4.5] and it[1][1] == "virginica"
    assert it.map_targets({"setosa": 0, "virginica": 1}).get_targets().tolist() == [0, 1, 0]
    x, y, names = read_csv_arrays(io.BytesIO(b"1,9,2\n3,8,4\n"), header=False, target=1)
    assert names == ["0", "1", "2"] and x.tolist() == [[1, 2], [3, 4]] and y.tolist() == [9, 8]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (b"a,b,c\n1,2,3\n4,5\n", r"data row 2 \(near line 3\) has 2 fields, expected 3"),
        (b"a,b,c\n1,2,3\n4,x,6\n", r"data row 2 \(near line 3\), column 'b': 'x' is not a number"),
        (b"a,b\n", "no data rows"),
        (b"", "no data rows"),
        (b"a,b\n1,\x002\n", "NUL"),
        (b"a,b\n1,\xff\n", "not valid utf-8"),
        (b"a,b\n1," + b"9" * (200 * 1024) + b"\n", "malformed CSV"),
    ],
)
def test_csv_malformed(text: bytes, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        read_csv_arrays(io.BytesIO(text), name="bad.csv")


def test_csv_bad_target_option() -> None:
    with pytest.raises(ConfigurationError, match="columns: a, b"):
        read_csv_arrays(io.BytesIO(b"a,b\n1,2\n"), target="zz")


def test_huge_npy_header_allocates_nothing() -> None:
    import tracemalloc

    import numpy.lib.format as fmt

    buf = io.BytesIO()
    fmt.write_array_header_1_0(
        buf, {"descr": "<f8", "fortran_order": False, "shape": (100_000_000, 10)}
    )
    it = NPYDatasetIterator(StreamedResource.from_bytes("huge.npy", buf.getvalue() + b"\0" * 80))
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match="8000000000 bytes"):
            it[0]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20


def test_import_is_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, datastack.iterators; "
        "print(sorted(m for m in ('h5py', 'torch', 'pymongo', 'tqdm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
