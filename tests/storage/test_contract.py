"""The storage contract, run against every backend (file, GridFS on mongomock, SecantusDB)."""

from __future__ import annotations

import hashlib
import io
import pickle
import random
from pathlib import Path
from typing import Any

import pytest

from datastack.errors import ChecksumError, InvalidIdentifierError, ResourceNotFoundError
from datastack.storage.base import StorageConnector
from tests.storage.helpers import leftovers, make_store, payload, plant_temporary

LARGE = 17 * 1024 * 1024 + 123  # > 16 MiB: several insert batches, > one server batch


@pytest.fixture
def store(backend: tuple[str, Any]) -> StorageConnector:
    return make_store(*backend)


@pytest.fixture
def kind(backend: tuple[str, Any]) -> str:
    return backend[0]


@pytest.mark.parametrize("size", [0, 1, 1000, 255 * 1024, 255 * 1024 + 1])
def test_round_trip(store: StorageConnector, size: int) -> None:
    data = payload(size, seed=size)
    info = store.set_resource("rt/data.bin", data)
    assert (info.size, info.sha256) == (size, hashlib.sha256(data).hexdigest())
    res = store.get_resource("rt/data.bin")
    assert res.size == size
    assert res.read() == data
    assert res.read() == b""
    assert store.has_resource("rt/data.bin")


@pytest.mark.slow
def test_large_resource_boundaries_and_random_reads(store: StorageConnector) -> None:
    data = payload(LARGE, seed=1)
    store.set_resource("big/blob.bin", io.BytesIO(data), sha256=hashlib.sha256(data).hexdigest())
    with store.get_resource("big/blob.bin") as res:
        assert len(res) == LARGE
        assert b"".join(res.iter_chunks(3 * 1024 * 1024 + 7)) == data
        for chunk in (255 * 1024, 1024 * 1024):  # GridFS boundaries (default and 1 MiB)
            for k in (1, 2, 17, LARGE // chunk):
                for pos in (k * chunk - 3, k * chunk, k * chunk + 1):
                    res.seek(pos)
                    assert res.read(10) == data[pos : pos + 10], pos
        rng = random.Random(7)
        for _ in range(60):
            pos = rng.randrange(LARGE)
            n = rng.choice([1, 100, 4096, 300_000, 2_000_000])
            assert res.seek(pos) == pos
            assert res.read(n) == data[pos : pos + n]
            assert res.tell() == min(LARGE, pos + n)
        res.seek(-5, io.SEEK_END)
        assert res.read() == data[-5:]
        buf = bytearray(600_000)
        res.seek(255 * 1024 * 3 - 1000)
        assert res.readinto(buf) == len(buf)
        assert bytes(buf) == data[255 * 1024 * 3 - 1000 : 255 * 1024 * 3 - 1000 + len(buf)]


def test_readinto_and_seek(store: StorageConnector) -> None:
    data = payload(700_000, seed=3)
    store.set_resource("r/x", data)
    res = store.get_resource("r/x")
    assert res.seekable()
    view = memoryview(bytearray(300_000))
    res.seek(200_000)
    assert res.readinto(view) == 300_000
    assert bytes(view) == data[200_000:500_000]
    assert res.readinto(view) == 200_000
    assert bytes(view[:200_000]) == data[500_000:]
    assert res.readinto(view) == 0
    res.seek(10)
    assert res.seek(5, io.SEEK_CUR) == 15
    assert res.read(3) == data[15:18]


def test_list_by_prefix_sorted_without_temporaries(store: StorageConnector) -> None:
    for name in ["b/x", "a/2", "ab", "a/1", "a/sub/3"]:
        store.set_resource(name, name.encode())
    plant_temporary(store)
    assert store.list_resources() == ["a/1", "a/2", "a/sub/3", "ab", "b/x"]
    assert store.list_resources("a/") == ["a/1", "a/2", "a/sub/3"]
    assert store.list_resources("a") == ["a/1", "a/2", "a/sub/3", "ab"]
    assert store.list_resources("a/s") == ["a/sub/3"]
    assert store.list_resources("zzz") == []


def test_delete(store: StorageConnector) -> None:
    store.set_resource("d/one", payload(600_000))
    store.set_resource("d/two", b"2")
    store.delete_resource("d/one")
    assert not store.has_resource("d/one")
    assert store.list_resources("d/") == ["d/two"]
    with pytest.raises(ResourceNotFoundError, match="d/one"):
        store.delete_resource("d/one")
    store.delete_resource("d/one", missing_ok=True)
    with pytest.raises(ResourceNotFoundError):
        store.get_resource("d/one")
    assert store.get_resource("d/two").read() == b"2"
    assert leftovers(store).get("chunks", 1) == 1


def test_overwrite_shows_new_content_only(store: StorageConnector) -> None:
    old, new = payload(900_000, seed=1), payload(300_000, seed=2)
    store.set_resource("o/data", old)
    store.set_resource("o/data", new)
    res = store.get_resource("o/data")
    assert res.size == len(new)
    assert res.read() == new
    assert store.list_resources("o/") == ["o/data"]
    left = leftovers(store)
    assert left["files"] == 1 and left["temporary"] == 0
    if "chunks" in left:
        assert left["chunks"] == 2  # 300_000 bytes in 255 KiB chunks: only the new file's


def test_missing_identifier_raises_at_get_resource(store: StorageConnector) -> None:
    with pytest.raises(ResourceNotFoundError, match="nope/x") as info:
        store.get_resource("nope/x")
    assert isinstance(info.value, FileNotFoundError)
    assert not store.has_resource("nope/x")


BAD = ["../x", "/etc/passwd", "a\x00b", "x" * 10_000, {"$ne": None}, "a/../../b", "", "a//b"]


@pytest.mark.parametrize("bad", BAD, ids=lambda b: repr(b)[:20])
def test_bad_identifiers_touch_nothing(store: StorageConnector, bad: Any) -> None:
    with pytest.raises(InvalidIdentifierError):
        store.set_resource(bad, b"evil")
    with pytest.raises(InvalidIdentifierError):
        store.get_resource(bad)
    with pytest.raises(InvalidIdentifierError):
        store.has_resource(bad)
    with pytest.raises(InvalidIdentifierError):
        store.delete_resource(bad, missing_ok=True)
    assert store.list_resources() == []
    assert set(leftovers(store).values()) <= {0}


def test_checksum_mismatch_stores_nothing_and_keeps_old(store: StorageConnector) -> None:
    old = payload(600_000, seed=4)
    store.set_resource("c/data", old)
    before = leftovers(store)
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        store.set_resource("c/data", payload(700_000, seed=5), sha256="0" * 64)
    with pytest.raises(ChecksumError, match="md5"):
        store.set_resource("c/new", b"abc", md5="f" * 32)
    assert store.get_resource("c/data").read() == old
    assert not store.has_resource("c/new")
    assert leftovers(store) == before


class _Exploding(io.RawIOBase):
    """A source that fails after ``limit`` bytes (a dropped download, a full disk...)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sent = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.sent >= self.limit:
            raise ConnectionResetError("source went away")
        n = min(len(buffer), self.limit - self.sent)
        buffer[:n] = b"\x5a" * n
        self.sent += n
        return n


def test_source_failure_mid_upload_leaves_nothing(store: StorageConnector) -> None:
    with pytest.raises(ConnectionResetError, match="source went away"):
        store.set_resource("f/data", _Exploding(10 * 1024 * 1024))  # > one insert batch
    assert not store.has_resource("f/data")
    assert store.list_resources() == []
    assert set(leftovers(store).values()) <= {0}  # zero chunks, zero files, zero temporaries


def test_pickled_connector_and_resource(store: StorageConnector, kind: str) -> None:
    data = payload(800_000, seed=6)
    store.set_resource("p/data", data)
    res = store.get_resource("p/data")
    assert res.read(10) == data[:10]
    if kind == "mongomock":
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(store)
        return
    clone = pickle.loads(pickle.dumps(store))
    assert clone.get_resource("p/data").read() == data
    assert clone.uri == store.uri
    res_clone = pickle.loads(pickle.dumps(res))
    assert res_clone.tell() == 10
    assert res_clone.read() == data[10:]


def test_resource_is_lazy(store: StorageConnector) -> None:
    store.set_resource("l/data", b"lazy")
    res = store.get_resource("l/data")
    assert not res.is_open
    assert len(res) == 4 and not res.is_open
    assert res.read() == b"lazy" and res.is_open


def test_h5py_reads_through_the_stream(store: StorageConnector) -> None:
    h5py = pytest.importorskip("h5py")
    import numpy as np

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f["x"] = np.arange(300_000, dtype="f4").reshape(3000, 100)  # 1.2 MB: several chunks
    store.set_resource("h/data.h5", buf.getvalue())
    with store.get_resource("h/data.h5") as res, h5py.File(res, "r") as f:
        assert f["x"].shape == (3000, 100)
        assert f["x"][2500, 7] == 250_007
        assert np.array_equal(f["x"][10:12], np.arange(1000, 1200, dtype="f4").reshape(2, 100))


def test_a_file_is_adopted_and_gone_from_where_it_was(
    store: StorageConnector, tmp_path: Path,
) -> None:
    """``adopt_file``: the bytes are stored under the identifier, the file is the store's
    (gone from its path)."""
    import os

    data = os.urandom(300_000)
    path = tmp_path / "shard.h5"
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    info = store.adopt_file("d/shards/abc.h5", path, sha256=digest)
    assert (info.size, info.sha256) == (len(data), digest) and not path.exists()
    with store.get_resource("d/shards/abc.h5") as res:
        assert res.read() == data
