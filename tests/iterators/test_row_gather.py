"""Random batches read rows as bytes at their file offsets (iterators/_stored.py): the rows
must equal h5py's for every layout the canonical writer or a user's HDF5 file can have."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from datastack.errors import FormatError
from datastack.iterators.hdf5 import HDF5DatasetIterator
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
