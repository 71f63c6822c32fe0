"""Format iterators over in-memory and local-file streams, and malformed inputs."""

from __future__ import annotations

import io
import itertools
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datastack.errors import ConfigurationError, FormatError, SplitNotFoundError
from datastack.iterators import (
    CSVDatasetIterator,
    HDF5DatasetIterator,
    IDXDatasetIterator,
    NPYDatasetIterator,
    NPZDatasetIterator,
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
    assert it.dataset_name == "demo" and it.split == "train"
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


class _HintedBytes(io.BytesIO):
    """An in-memory stream that takes prefetch hints, as GridFS readers do (records them)."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.hints: list[list[tuple[int, int]]] = []

    def prefetch(self, ranges: list[tuple[int, int]]) -> None:
        self.hints.append(list(ranges))


def _resource(path: Path, how: str) -> StreamedResource:
    """The file as a local path (HDF5's driver), plain bytes, or bytes that take hints."""
    if how == "path":
        return StreamedResource.from_path("d.h5", path)
    data = path.read_bytes()
    if how == "bytes":
        return StreamedResource.from_bytes("d.h5", data)
    return StreamedResource("d.h5", lambda: _HintedBytes(data), size=len(data))


@pytest.fixture(scope="module")
def batch_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """Groups: ``chunked`` (the default canonical layout), ``plain`` (contiguous), ``lzf``,
    ``scattered`` (raw chunks out of order in the file)."""
    from datastack.canonical.writer import CanonicalWriter

    x, y = mnist_like(90)
    path = tmp_path_factory.mktemp("batch") / "d.h5"
    with pytest.MonkeyPatch.context() as mp, CanonicalWriter(path, "demo") as writer:
        mp.setattr("datastack.canonical.writer.SAMPLE_CHUNK_BYTES", 7 * 48)  # 7-row chunks
        writer.add_split("chunked", x, y)
    write_h5(path.with_name("other.h5"), {"plain": (x, y)}, chunk_rows=None)
    write_h5(path.with_name("lzf.h5"), {"lzf": (x, y)}, chunk_rows=7)
    import h5py

    with h5py.File(path, "a") as f:
        scattered = f.create_group("scattered")  # raw chunks allocated last-first
        dset = scattered.create_dataset("samples", shape=x.shape, dtype=x.dtype, chunks=(7, 4, 3))
        for lo in reversed(range(0, 90, 7)):
            dset[lo : lo + 7] = x[lo : lo + 7]
        scattered.create_dataset("targets", data=y)
        for name in ("other.h5", "lzf.h5"):
            with h5py.File(path.with_name(name), "r") as src:
                for group in src:
                    src.copy(src[group], f, group)
    return path, x, y


@settings(max_examples=80, deadline=None)
@given(
    kind=st.sampled_from(["run", "sorted", "any"]),
    lo=st.integers(0, 89),
    size=st.integers(1, 40),
    picks=st.lists(st.integers(-90, 89), min_size=1, max_size=40),
    group=st.sampled_from(["chunked", "plain", "lzf", "scattered"]),
    how=st.sampled_from(["path", "bytes", "hinted"]),
    eager=st.booleans(),
)
def test_hdf5_batch_paths_match_numpy(
    batch_file: tuple[Path, np.ndarray, np.ndarray],
    kind: str,
    lo: int,
    size: int,
    picks: list[int],
    group: str,
    how: str,
    eager: bool,
) -> None:
    """Contiguous runs, sorted unique indices and arbitrary ones (duplicates, negatives), over
    every layout and every kind of stream (raw reads only happen on streams that take hints)."""
    path, x, y = batch_file
    if kind == "run":
        idx = list(range(lo, min(lo + size, 90)))
    elif kind == "sorted":
        idx = sorted({p % 90 for p in picks})
    else:
        idx = picks
    it = HDF5DatasetIterator(_resource(path, how), group, eager_targets=eager)
    samples, targets = it.get_batch(idx)
    assert np.array_equal(samples, x[idx]) and np.array_equal(targets, y[idx])
    assert samples.dtype == x.dtype and targets.dtype == y.dtype
    it.close()


def test_hdf5_hinted_stream_reads_raw_rows_after_one_hint(
    batch_file: tuple[Path, np.ndarray, np.ndarray],
) -> None:
    """On a stream that takes hints, a contiguous run is hinted, then read as plain bytes."""
    path, x, _ = batch_file
    it = HDF5DatasetIterator(_resource(path, "hinted"), "chunked")
    assert len(it) == 90
    state = it._state()
    stream = state.resource.stream
    assert state.can_prefetch and stream.hints == []
    assert np.array_equal(it.get_batch(range(3, 80))[0], x[3:80])
    assert len(stream.hints) == 1 and stream.hints[0]
    assert state.samples.dset.chunks[0] == 7 and state.samples.dset.compression is None
    segments = state.samples.raw_segments(3, 80)
    assert segments is not None and segments[0][0] == 3 and segments[-1][1] == 80
    assert all(a[1] == b[0] for a, b in itertools.pairwise(segments))
    scattered = HDF5DatasetIterator(_resource(path, "hinted"), "scattered")
    assert np.array_equal(scattered.get_batch(range(3, 80))[0], x[3:80])
    pieces = scattered._state().samples.raw_segments(3, 80)
    assert pieces is not None and len(pieces) == 12  # one per chunk: none adjacent in order
    scattered.close()
    lzf = HDF5DatasetIterator(_resource(path, "hinted"), "lzf")
    assert np.array_equal(lzf.get_batch(range(3, 80))[0], x[3:80])
    assert lzf._state().samples.raw_segments(3, 80) is None  # compressed: through h5py
    it.close()
    lzf.close()


def test_hdf5_local_file_coexists_with_plain_h5py(tmp_path: Path) -> None:
    """HDF5 shares one handle per file in a process: opening the same file with plain h5py
    before or after the iterator must work (same locking flags)."""
    import h5py

    x, y = mnist_like(20)
    path = write_h5(tmp_path / "d.h5", {"train": (x, y)}, chunk_rows=8)
    with h5py.File(path, "r") as before:
        it = HDF5DatasetIterator(StreamedResource.from_path("d.h5", path), "train")
        assert np.array_equal(it.get_batch(range(20))[0], before["train/samples"][()])
        with h5py.File(path, "r") as after:
            assert np.array_equal(after["train/targets"][()], it.get_targets())
        it.close()


def test_hdf5_contiguous_batch_owns_its_targets(
    batch_file: tuple[Path, np.ndarray, np.ndarray],
) -> None:
    path, _, y = batch_file
    it = HDF5DatasetIterator(StreamedResource.from_path("d.h5", path), "chunked")
    _, targets = it.get_batch(range(10, 20))
    targets[:] = -1  # must not write into the eagerly loaded labels
    assert np.array_equal(it.get_batch(range(10, 20))[1], y[10:20])
    it.close()


def test_hdf5_local_file_uses_native_driver_on_the_same_inode(tmp_path: Path) -> None:
    """A local file is read by HDF5's own driver (no Python call per chunk) and no chunk byte
    ranges are computed for it; a file replaced after opening is still the old one."""
    x, y = mnist_like(50)
    path = write_h5(tmp_path / "d.h5", {"train": (x, y)}, chunk_rows=8)
    it = HDF5DatasetIterator(StreamedResource.from_path("d.h5", path), "train")
    assert len(it) == 50
    state = it._state()
    assert state.file.driver == "sec2" and not state.can_prefetch
    write_h5(tmp_path / "new.h5", {"train": (x[:5] + 1, y[:5])}, chunk_rows=8)
    (tmp_path / "new.h5").replace(path)  # a new version published over the path
    assert np.array_equal(it.get_batch(range(50))[0], x)
    assert np.array_equal(it.get_batch([40, 2, 2])[0], x[[40, 2, 2]])
    assert state.samples.chunk_ranges is None  # no prefetch hook: no byte ranges built
    it.close()
    in_memory = HDF5DatasetIterator(StreamedResource.from_bytes("d.h5", path.read_bytes()))
    in_memory.group = "train"
    assert in_memory._state().file.driver == "fileobj"
    assert np.array_equal(in_memory.get_batch([4, 3])[0], x[:5][[4, 3]] + 1)
    in_memory.close()


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
    # The published-dataset policy: a text target becomes class codes over the sorted labels.
    assert len(it) == 3 and it[1][0].tolist() == [3.0, 4.5] and it[1][1] == 1
    assert it.encodings == {"species": ["setosa", "virginica"]}
    assert it.get_targets().tolist() == [0, 1, 0]
    no_header = CSVDatasetIterator(
        StreamedResource.from_bytes("n.csv", b"1,9,2\n3,8,4\n"), header=False, target=1
    )
    x, y = no_header.get_batch([0, 1])
    assert no_header.column_names == ["column_0", "column_1", "column_2"]
    assert x.tolist() == [[1, 2], [3, 4]] and y.tolist() == [9, 8]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (b"a,b,c\n1,2,3\n4,5\n", r"row 3: expected 3 fields, got 2"),
        (b"a,b,c\n1,2,3\n4,x,6\n", r"row 3, column 'b' \(index 1\): 'x' is not a number"),
        (b"a,b\n", "no data rows"),
        (b"", "no data rows"),
        (b"a,b\n1,\x002\n", "NUL"),
        (b"a,b\n1,\xff\n", "not valid utf-8"),
        (b"a,b\n1," + b"9" * (200 * 1024) + b"\n", "malformed CSV"),
    ],
)
def test_csv_malformed(text: bytes, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        len(CSVDatasetIterator(StreamedResource.from_bytes("bad.csv", text)))


def test_csv_bad_target_option() -> None:
    it = CSVDatasetIterator(StreamedResource.from_bytes("t.csv", b"a,b\n1,2\n"), target="zz")
    with pytest.raises(FormatError, match=r"not in header \['a', 'b'\]"):
        len(it)


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
