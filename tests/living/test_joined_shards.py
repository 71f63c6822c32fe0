"""Batches over many local shards gathered from one mapped range (#24.9,
``datastack/canonical/_joined_map.py``): every shard's file mapped side by side, one gather
per column whatever the shards. The joined gather returns exactly what the shard-by-shard path
and a one-shard version return (random, unsorted, duplicate indices, every shard border),
for the arrays layout and for fields; it is taken (no per-shard reader call); GridFS versions
and splits with variable fields fall back and read the same; the mapping outlives ``close()``
while used and is unmapped once nothing uses it."""

from __future__ import annotations

import gc
import hashlib
import os
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import datastack
from datastack.canonical.hdf5 import HDF5DatasetIterator
from datastack.canonical.records import RecordsDatasetIterator
from datastack.canonical.sharded import ShardedSplit

ROWS = 700


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _npy_spec(tmp_path: Path) -> Path:
    """``one`` (one shard) and ``many`` (~8 KiB shards) of 4 x 5 float32 arrays + labels."""
    rng = np.random.default_rng(7)
    src = tmp_path / "src"
    src.mkdir()
    np.save(src / "x.npy", rng.normal(size=(ROWS, 4, 5)).astype(np.float32))
    np.save(src / "y.npy", rng.integers(0, 10, ROWS).astype(np.int64))
    sources = "".join(
        f"      - {{url: '{(src / f'{p}.npy').as_uri()}', sha256: {_sha(src / f'{p}.npy')}, "
        f"role: {role}}}\n" for p, role in (("x", "samples"), ("y", "targets")))
    body = "datasets:\n" + "".join(
        f"  {name}:\n    format: npy\n    shard_bytes: {cut}\n    sources:\n{sources}"
        for name, cut in (("one", "1G"), ("many", "8K")))
    spec = tmp_path / "npy.yaml"
    spec.write_text(body)
    return spec


def _csv_spec(tmp_path: Path) -> Path:
    """A table with a text field (layout 2, a variable field: never joined)."""
    source = tmp_path / "rows.csv"
    source.write_text("a,text,label\n" + "".join(
        f"{k * 0.5},row {k} {'x' * (k % 7)},{'xyz'[k % 3]}\n" for k in range(ROWS)))
    body = "datasets:\n" + "".join(
        f"  {name}:\n    sources: [{{url: {source.as_uri()!r}, sha256: {_sha(source)}}}]\n"
        f"    format: csv\n    csv: {{target: label, text: [text]}}\n    shard_bytes: {cut}\n"
        for name, cut in (("one", "1G"), ("many", "4K")))
    spec = tmp_path / "csv.yaml"
    spec.write_text(body)
    return spec


def _publish_fields(storage: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """Named fixed fields (layout 2): float32 (3,), int16, float64 (2, 2) and a label."""
    rng = np.random.default_rng(3)
    data = {"a": rng.normal(size=(ROWS, 3)).astype(np.float32),
            "b": rng.integers(-99, 99, ROWS).astype(np.int16),
            "emb": rng.normal(size=(ROWS, 2, 2)),
            "label": np.array(["xyz"[k % 3] for k in range(ROWS)])}
    for name, cut in (("one", "1G"), ("many", "4K")):
        monkeypatch.setenv("DATASTACK_SHARD_BYTES", cut)
        datastack.publish(name, data, target="label", storage=storage)
    monkeypatch.delenv("DATASTACK_SHARD_BYTES")
    return _loaded(storage)


def _publish(spec: Path, storage: str) -> tuple[Any, Any]:
    for result in datastack.refresh(spec, storage=storage):
        assert result.status == "published", (result.name, result.reason)
    return _loaded(storage)


def _loaded(storage: str) -> tuple[Any, Any]:
    one = datastack.load("one", "train", storage=storage)
    many = datastack.load("many", "train", storage=storage)
    assert isinstance(many, ShardedSplit) and len(many.entries) >= 5, many
    return one, many


def _batches(many: ShardedSplit) -> list[np.ndarray]:
    n, ends = len(many), np.asarray(many.ends)
    rng = np.random.default_rng(0)
    borders = np.concatenate([ends[:-1] - 1, ends[:-1], [0, n - 1]])
    return [rng.integers(0, n, 256), borders, rng.permutation(n), borders[::-1].copy(),
            np.array([ends[0], ends[0], 0, n - 1, ends[0], 1]), np.arange(n),
            np.arange(ends[1] - 3, ends[1] + 3), np.array([n - 1, 0])]


def _same(left: Any, right: Any) -> None:
    assert len(left) == len(right)
    for a, b in zip(left, right, strict=True):
        assert type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape
        assert a.tolist() == b.tolist() if a.dtype == object else np.array_equal(a, b)


def _shard_by_shard(many: ShardedSplit) -> ShardedSplit:
    """The same split with the joined map refused (the per-shard path)."""
    other = ShardedSplit(many.store, many.read, many.group, many.entries, many._fields,
                         many.layout)
    other._joined_slot = (os.getpid(), None)
    return other


@pytest.fixture
def count_reader_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Calls of the shard readers' ``_get_batch`` (both layouts)."""
    calls: list[int] = []
    for cls in (HDF5DatasetIterator, RecordsDatasetIterator):
        original = cls._get_batch

        def counted(self: Any, indices: Any, original: Any = original) -> Any:
            calls.append(len(indices))
            return original(self, indices)

        monkeypatch.setattr(cls, "_get_batch", counted)
    return calls


@pytest.mark.parametrize("layout", ["arrays", "fields"])
def test_joined_gather_equals_shard_by_shard_and_one_shard(
    tmp_path: Path, layout: str, count_reader_batches: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    storage = str(tmp_path / "store")
    if layout == "arrays":
        one, many = _publish(_npy_spec(tmp_path), storage)
    else:
        one, many = _publish_fields(storage, monkeypatch)
    assert many.layout == (1 if layout == "arrays" else 2)
    reference = _shard_by_shard(many)
    batches = _batches(many)
    expected = [one.get_batch(b) for b in batches]
    count_reader_batches.clear()
    for batch, want in zip(batches, expected, strict=True):
        _same(many.get_batch(batch), want)
    assert many._joined_slot is not None and many._joined_slot[1] is not None
    assert count_reader_batches == [], "the joined gather was not taken"
    for batch, want in zip(batches, expected, strict=True):
        _same(reference.get_batch(batch), want)
    assert count_reader_batches, "the shard-by-shard path reads through the readers"
    # a batch within one shard, before and after the join, reads the same
    for indices in (np.arange(3), np.array([2, 0, 2])):
        _same(many.get_batch(indices), one.get_batch(indices))
        _same(_shard_by_shard(many).get_batch(indices), one.get_batch(indices))


def test_a_batch_within_one_shard_does_not_map_every_shard(tmp_path: Path) -> None:
    one, many = _publish(_npy_spec(tmp_path), str(tmp_path / "store"))
    _same(many.get_batch([0, 2, 1]), one.get_batch([0, 2, 1]))
    assert many._joined_slot is None and len(many._opened) == 1


def test_gridfs_and_variable_fields_fall_back_and_read_the_same(
    tmp_path: Path, mongo_uri: str, count_reader_batches: list[int]
) -> None:
    cases = [_publish(_npy_spec(tmp_path), mongo_uri),
             _publish(_csv_spec(tmp_path), str(tmp_path / "store"))]
    for one, many in cases:
        for batch in _batches(many):
            _same(many.get_batch(batch), one.get_batch(batch))
        assert many._joined_slot is not None and many._joined_slot[1] is None
    assert count_reader_batches, "the fall back reads shard by shard"


def _mapped_lines(many: ShardedSplit) -> int:
    """Mappings of this process of the files of ``many``'s shards."""
    names = [str(e["identifier"]).rsplit("/", 1)[-1] for e in many.entries]
    maps = Path("/proc/self/maps").read_text().splitlines()
    return sum(any(name in line for name in names) for line in maps)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_the_mapping_outlives_close_while_used_and_is_unmapped_after(tmp_path: Path) -> None:
    store = tmp_path / "store"
    one, many = _publish(_npy_spec(tmp_path), str(store))
    indices = np.random.default_rng(1).integers(0, len(many), 300)
    batch = many.get_batch(indices)
    assert many._joined_slot is not None
    joined = many._joined_slot[1]
    assert joined is not None
    assert _mapped_lines(many) >= len(many.entries)  # each shard's file, side by side
    buffer = weakref.ref(joined._buffer)
    many.close()  # every shard reader closed: the mapping is still in use
    gc.collect()
    _same(joined.gather(indices), one.get_batch(indices))
    _same(batch, one.get_batch(indices))
    _same(many.get_batch(indices), one.get_batch(indices))  # mapped again, in a new range
    del joined
    many.close()
    gc.collect()
    assert buffer() is None
    assert _mapped_lines(many) == 0, "the ranges were not unmapped"
    _same(batch, one.get_batch(indices))


# -- a sequential pass over GridFS shards reads the next shard ahead -------------------------
def _gridfs_pair(tmp_path: Path, mongo_uri: str) -> tuple[Any, Any]:
    """6,000 rows of 1 KiB as one shard and as shards of 1 MiB (4 GridFS blocks each)."""
    rng = np.random.default_rng(11)
    src = tmp_path / "src"
    src.mkdir()
    np.save(src / "x.npy", rng.normal(size=(6000, 16, 16)).astype(np.float32))
    np.save(src / "y.npy", rng.integers(0, 10, 6000).astype(np.int64))
    sources = "".join(
        f"      - {{url: '{(src / f'{p}.npy').as_uri()}', sha256: {_sha(src / f'{p}.npy')}, "
        f"role: {role}}}\n" for p, role in (("x", "samples"), ("y", "targets")))
    spec = tmp_path / "big.yaml"
    spec.write_text("datasets:\n" + "".join(
        f"  {name}:\n    format: npy\n    shard_bytes: {cut}\n    sources:\n{sources}"
        for name, cut in (("one", "1G"), ("many", "1M"))))
    return _publish(spec, mongo_uri)


@pytest.fixture
def caller_fetches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Blocks of each GridFS fetch made in the caller's thread (not by read-ahead)."""
    import threading

    from datastack.storage.gridfs import GridFSStorageConnector

    fetched: list[int] = []
    original = GridFSStorageConnector._fetch_chunks

    def counted(self: Any, identifier: str, file_id: Any, numbers: Any) -> Any:
        if threading.current_thread() is threading.main_thread():
            fetched.append(len(numbers))
        return original(self, identifier, file_id, numbers)

    monkeypatch.setattr(GridFSStorageConnector, "_fetch_chunks", counted)
    return fetched


def _pass(split: Any, batch: int = 64) -> list[Any]:
    n = len(split)
    return [split.get_batch(np.arange(lo, min(n, lo + batch))) for lo in range(0, n, batch)]


@pytest.mark.parametrize("ahead", [True, False])
def test_a_sequential_pass_over_gridfs_shards_reads_the_next_shard_ahead(
    tmp_path: Path, mongo_uri: str, caller_fetches: list[int], ahead: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datastack.canonical import sharded
    from datastack.storage.cache import default_cache

    one, many = _gridfs_pair(tmp_path, mongo_uri)
    shards = len(many.entries)
    assert shards >= 5, many.entries
    if not ahead:  # the pass as it was: each shard's first reads wait for a round trip
        monkeypatch.setattr(sharded, "AHEAD_BYTES", 0)
    expected = _pass(one)
    _pass(many)  # opens every shard, reads its chunk index
    default_cache().clear()
    caller_fetches.clear()
    for got, want in zip(_pass(many), expected, strict=True):
        _same(got, want)
    many_fetches = len(caller_fetches)
    default_cache().clear()
    caller_fetches.clear()
    _pass(one)
    if ahead:  # only the first shard's first read, as over one shard
        assert many_fetches <= len(caller_fetches) + 1, (many_fetches, len(caller_fetches))
    else:
        assert many_fetches >= shards, (many_fetches, shards)


def test_a_sequential_pass_opens_at_most_one_shard_ahead(tmp_path: Path, mongo_uri: str) -> None:
    one, many = _gridfs_pair(tmp_path, mongo_uri)
    n, batch = len(many), 64
    for lo in range(0, n, batch):
        indices = np.arange(lo, min(n, lo + batch))
        _same(many.get_batch(indices), one.get_batch(indices))
        current = int(np.searchsorted(many.ends, indices[-1], side="right"))
        assert max(many._opened) <= current + 1, (sorted(many._opened), current)
    assert sorted(many._opened) == list(range(len(many.entries)))


# -- the module on its own: plain files of rows ------------------------------------------------
def test_join_shards_on_plain_files_and_its_refusals(tmp_path: Path) -> None:
    from datastack.canonical._joined_map import RawRows, join_shards

    rng = np.random.default_rng(5)
    arrays = [rng.normal(size=(rows, 3)).astype(np.float32) for rows in (10, 7, 12)]
    paths = []
    for k, array in enumerate(arrays):  # 5,000 bytes of header, then rows in groups of 4
        paths.append(tmp_path / f"s{k}.bin")
        paths[-1].write_bytes(b"h" * 5000 + array.tobytes())
    files = [open(p, "rb") for p in paths]
    try:
        def parts(dtype: Any = np.float32, shift: int = 0) -> Any:
            def of(k: int) -> Any:
                rows = len(arrays[k])
                starts = 5000 + shift + np.arange(0, rows, 4, dtype=np.int64) * 12
                raw = RawRows(starts, 4, 12, np.dtype(dtype), (3,), rows)
                return files[k].fileno(), [raw, np.arange(rows) + 100 * k]
            return of

        sizes = [p.stat().st_size for p in paths]
        ends = np.cumsum([len(a) for a in arrays]).tolist()
        joined = join_shards(sizes, parts(), ends)
        assert joined is not None
        whole = np.concatenate(arrays)
        labels = np.concatenate([np.arange(len(a)) + 100 * k for k, a in enumerate(arrays)])
        for indices in (np.arange(len(whole)), np.array([28, 0, 9, 10, 16, 17, 9, 9])):
            samples, targets = joined.gather(indices)
            assert np.array_equal(samples, whole[indices]) and samples.dtype == np.float32
            assert np.array_equal(targets, labels[indices])
        files[0].close()  # the mapping holds its file
        assert np.array_equal(joined.gather(np.array([1, 2]))[0], whole[[1, 2]])
        for outside in ([-1], [0, len(whole)]):  # an error, never a read off the mapped files
            with pytest.raises(IndexError):
                joined.gather(np.array(outside))
        files[0] = open(paths[0], "rb")
        assert join_shards([4000, *sizes[1:]], parts(), ends) is None  # file > its page(s)
        assert join_shards(sizes, parts(shift=13), ends) is None  # rows past the file's end
        assert join_shards(sizes, parts(), [10, 17, 30]) is None  # the manifest's rows differ
        assert join_shards(sizes, parts(), [10, 16, 28]) is None
        mixed = parts()

        def differing(k: int) -> Any:
            return parts(np.int32)(k) if k == 2 else mixed(k)

        assert join_shards(sizes, differing, ends) is None  # dtypes differ between shards
        assert join_shards(sizes, lambda k: None if k == 1 else mixed(k), ends) is None
    finally:
        for fh in files:
            fh.close()


def test_a_lost_shard_fails_only_the_batches_that_touch_it(tmp_path: Path) -> None:
    from datastack.errors import DatastackError
    from datastack.store import Store

    storage = str(tmp_path / "store")
    one, many = _publish(_npy_spec(tmp_path), storage)
    lost = str(many.entries[2]["identifier"])
    Store.open(storage).storage.delete_resource(lost)
    many = datastack.load("many", "train", storage=storage)
    ends = many.ends
    spanning = np.array([0, ends[0], ends[1] - 1, 3])  # shards 0 and 1: read as before
    _same(many.get_batch(spanning), one.get_batch(spanning))
    with pytest.raises(DatastackError) as info:
        many.get_batch([0, ends[1]])
    assert lost in str(info.value) and "shard 3 of" in str(info.value)
