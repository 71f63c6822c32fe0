"""Random batches read rows as bytes at their file offsets (canonical/_stored.py): the rows
must equal h5py's for every layout the canonical writer or a user's HDF5 file can have."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from datastack.canonical.hdf5 import HDF5DatasetIterator
from datastack.errors import FormatError
from datastack.resources import StreamedResource


def _write(path: Path, data: np.ndarray, reverse_chunks: bool, **kw: object) -> None:
    with h5py.File(path, "w") as f:
        d = f.create_dataset("g/samples", shape=data.shape, dtype=data.dtype, **kw)
        rows = d.chunks[0] if d.chunks else len(data)
        starts = list(range(0, len(data), rows))
        for lo in reversed(starts) if reverse_chunks else starts:  # chunks out of file order
            d[lo : lo + rows] = data[lo : lo + rows]
        f["g/targets"] = np.arange(len(data)) % 7


LAYOUTS = {
    "chunked": {"chunks": (5, 3, 4)},
    "chunked-reversed": {"chunks": (5, 3, 4), "_reverse": True},
    "contiguous": {},
    "gzip": {"chunks": (5, 3, 4), "compression": "gzip"},
    "big-endian": {"chunks": (4, 3, 4), "_dtype": ">f4"},
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("backend", ["file", "bytes"])
def test_random_batches_equal_numpy(tmp_path: Path, layout: str, backend: str) -> None:
    options = dict(LAYOUTS[layout])
    reverse = bool(options.pop("_reverse", False))
    dtype = options.pop("_dtype", "<f4")
    data = np.random.default_rng(0).random((203, 3, 4)).astype(dtype)
    path = tmp_path / "d.h5"
    _write(path, data, reverse, **options)
    resource = (
        StreamedResource.from_path("d.h5", path)
        if backend == "file"
        else StreamedResource.from_bytes("d.h5", path.read_bytes())
    )
    it = HDF5DatasetIterator(resource, "g", eager_targets=False)
    rng = np.random.default_rng(1)
    for _ in range(30):
        idx = rng.integers(0, len(data), size=int(rng.integers(1, 60)))
        samples, targets = it.get_batch(idx)
        assert np.array_equal(samples, data[idx]) and samples.dtype.str[1:] == data.dtype.str[1:]
        assert np.array_equal(targets, idx % 7)
    sorted_unique = np.unique(rng.integers(0, len(data), size=40))
    assert np.array_equal(it.get_batch(sorted_unique)[0], data[sorted_unique])


def test_a_file_cut_inside_the_rows_is_a_format_error(tmp_path: Path) -> None:
    data = np.random.default_rng(0).random((400, 64)).astype("<f8")
    path = tmp_path / "d.h5"
    _write(path, data, False, chunks=(10, 64))
    with h5py.File(path, "r") as f:  # the end of the last chunk's data in the file
        dsid = f["g/samples"].id
        infos = [dsid.get_chunk_info(i) for i in range(dsid.get_num_chunks())]
        last = max(info.byte_offset + info.size for info in infos)
    raw = path.read_bytes()
    it = HDF5DatasetIterator(StreamedResource.from_bytes("d.h5", raw), "g")
    it.get_batch(np.array([3, 399]))  # opens and reads the chunk index on the whole file
    state = it._state()
    state.resource.stream.truncate(last - 100)  # the stream loses its tail after opening
    with pytest.raises(FormatError, match="truncated"):
        it.get_batch(np.array([5, 399]))


@pytest.mark.parametrize("layout", ["chunked", "chunked-reversed", "contiguous"])
def test_local_raw_files_are_gathered_from_a_memory_map(tmp_path: Path, layout: str) -> None:
    """The fast path for local files (one numpy gather per batch) is taken for raw layouts,
    and a single sample is a private copy, not a view of the map."""
    options = dict(LAYOUTS[layout])
    reverse = bool(options.pop("_reverse", False))
    data = np.random.default_rng(0).random((203, 3, 4)).astype("<f4")
    _write(tmp_path / "d.h5", data, reverse, **options)
    it = HDF5DatasetIterator(StreamedResource.from_path("d.h5", tmp_path / "d.h5"), "g")
    sample = it[7][0]
    state = it._state()
    assert state.samples.mapped is not None
    assert sample.flags.writeable and not np.shares_memory(sample, state.samples.mapped)
    assert np.array_equal(sample, data[7])
    assert it.get_batch(np.array([9, 2, 9]))[0].flags.writeable


def test_canonical_files_with_an_index_node_between_chunks_are_gathered(tmp_path: Path) -> None:
    """write_arrays' layout puts HDF5's chunk index after the first chunk, so the chunks have
    two alignments: both are gathered from the map and every batch (any order, repeats) is
    exact."""
    from datastack.canonical.hdf5 import split_iterators
    from datastack.preprocessing import write_arrays

    x = np.random.default_rng(0).random((2000, 28, 28)).astype("f4")
    y = np.arange(2000)
    write_arrays(tmp_path / "c.h5", "x", {"train": (x, y)})
    it = split_iterators(StreamedResource.from_path("c", tmp_path / "c.h5"))["train"]
    order = np.random.default_rng(1).permutation(2000)
    for lo in range(0, 2000, 256):
        batch = np.concatenate([order[lo : lo + 256], order[lo : lo + 3]])
        samples, targets = it.get_batch(batch)
        assert np.array_equal(samples, x[batch]) and np.array_equal(targets, y[batch])
    column = it._state().samples
    assert column.mapped is not None and column.mapped_starts is not None
    assert len(np.unique(column.mapped_starts % column.row_bytes)) == 2
    assert np.array_equal(it[0][0], x[0]) and np.array_equal(it[1999][0], x[1999])


def test_fields_written_side_by_side_are_gathered_from_the_map(tmp_path: Path) -> None:
    """The records writer appends fields block by block, so their chunks interleave in the
    file at dozens of alignments (a prepared file; a shard copies field after field): batches
    are still one gather from the memory map, exact."""
    from datastack.canonical.records import RecordsDatasetIterator
    from datastack.canonical.writer import CanonicalWriter
    from datastack.fields import ARRAY, Field

    x = np.random.default_rng(0).random((30000, 28, 28), dtype=np.float32)
    y = np.random.default_rng(1).integers(0, 10, 30000)
    path = tmp_path / "side.h5"
    fields = [Field("image", ARRAY, "float32", (28, 28)), Field("label", ARRAY, "int64", ())]
    with CanonicalWriter(path, "side") as writer:
        writer.add_fields("train", fields, {"image": x, "label": y})
        writer.prepared()
    it = RecordsDatasetIterator(StreamedResource.from_path("side.h5", path), "train")
    order = np.random.default_rng(2).permutation(len(x))
    for lo in range(0, len(x), 4096):
        batch = np.concatenate([order[lo : lo + 4096], order[lo : lo + 5]])
        images, labels = it.get_batch(batch)
        assert np.array_equal(images, x[batch]) and np.array_equal(labels, y[batch])
    column = it._state().columns[0].stored
    assert column.mapped is not None and column.mapped_starts is not None
    assert len(np.unique(column.mapped_starts % column.row_bytes)) > 8
    assert np.array_equal(it[29999][0], x[29999]) and it[3][0].flags.writeable


def test_strings_and_bytes_of_a_local_file_are_cut_from_its_memory_map(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of a string or bytes field of a local file is cut from the file's memory map
    (one copy per value, no read into a buffer first); empty values, repeats and any order
    come out exact, and the same batches read from a stream that is not a local file (the
    read path) are equal."""
    import os

    import datastack
    from datastack.canonical.records import RecordsDatasetIterator

    rng = np.random.default_rng(0)
    words = ["", "naïve", "日本語", "Ω≈ç√", "plain", "emoji 🎉", "x" * 5000]
    texts = [words[i % len(words)] * int(rng.integers(0, 4)) for i in range(600)]
    blobs = [bytes(rng.integers(0, 256, int(rng.integers(0, 3000)), dtype=np.uint8))
             for _ in range(600)]
    store = str(tmp_path / "store")
    datastack.publish("mixed", {"text": texts, "blob": blobs, "label": np.arange(600) % 3},
                      target="label", storage=store)
    it = datastack.load("mixed", storage=store)
    [path] = (tmp_path / "store").rglob("*.h5")
    batches = [rng.integers(0, 600, 70), np.arange(100, 164), np.array([5, 5, 0, 599, 5])]
    it[0]  # opened: from here on, batches must not read through the descriptor
    monkeypatch.setattr(os, "preadv", lambda *a: pytest.fail("a batch read into a buffer"))
    for batch in batches:
        got_text, got_blob, _ = it.get_batch(batch)
        assert list(got_text) == [texts[i] for i in batch]
        assert list(got_blob) == [blobs[i] for i in batch]
    shard = it.shard(0)  # the version's only shard
    assert isinstance(shard, RecordsDatasetIterator) and shard._state().memory is not None
    monkeypatch.undo()
    streamed = RecordsDatasetIterator(
        StreamedResource.from_bytes("mixed.h5", path.read_bytes()), it.group)
    assert streamed._state().fd is None and streamed._state().memory_map() is None
    for batch in batches:
        got_text, got_blob, _ = streamed.get_batch(batch)
        assert list(got_text) == [texts[i] for i in batch]
        assert list(got_blob) == [blobs[i] for i in batch]
