"""GridFS-specific behaviour: standard files, orphan sweeping, chunk queries, failures."""

from __future__ import annotations

import datetime as dt
import pickle
import time
from typing import Any

import pytest

from datastack.errors import ResourceNotFoundError, StorageError, StorageUnavailableError
from datastack.storage import connect
from datastack.storage.cache import default_cache
from datastack.storage.gridfs import GridFSStorageConnector
from tests.mongo_server import free_port
from tests.storage.helpers import leftovers, make_store, payload


@pytest.fixture(params=["mongomock", "secantus"])
def gstore(request: pytest.FixtureRequest) -> GridFSStorageConnector:
    if request.param == "mongomock":
        handle = request.getfixturevalue("mongomock_db")
    else:
        handle = request.getfixturevalue("mongo_uri")
    store = make_store(request.param, handle)
    assert isinstance(store, GridFSStorageConnector)
    return store


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    default_cache().clear()


def test_plain_gridfs_reads_what_datastack_wrote(mongo_uri: str) -> None:
    # Real server only: mongomock's gridfs integration patches pymongo types process-wide.
    import gridfs

    gstore = GridFSStorageConnector(mongo_uri)
    data = payload(1_000_000, seed=11)
    gstore.set_resource("std/data.bin", data)
    gstore.set_resource("std/data.bin", data[::-1])  # the newest revision is what readers get
    bucket = gridfs.GridFSBucket(gstore._db(), bucket_name="datastack")
    assert bucket.open_download_stream_by_name("std/data.bin").read() == data[::-1]
    assert [f.filename for f in bucket.find({"filename": "std/data.bin"})] == ["std/data.bin"]


def test_connect_mongodb_uri(mongo_uri: str) -> None:
    store = connect(mongo_uri)
    assert isinstance(store, GridFSStorageConnector)
    store.set_resource("c/x", b"over the wire")
    assert connect(mongo_uri).get_resource("c/x").read() == b"over the wire"


def _old_object_id(hours: float) -> Any:
    from bson import ObjectId

    then = dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)
    raw = ObjectId.from_datetime(then).binary[:4] + ObjectId().binary[4:]
    return ObjectId(raw)


def test_sweep_orphans_respects_grace(gstore: GridFSStorageConnector) -> None:
    from bson import ObjectId

    from datastack._mongo import bson_now as _utcnow

    gstore.set_resource("keep/me", payload(600_000))
    old_orphan, fresh_orphan = _old_object_id(2), ObjectId()
    for fid in (old_orphan, fresh_orphan):
        gstore.chunks.insert_many([{"files_id": fid, "n": n, "data": b"x"} for n in range(3)])
    stale_pending, live_pending = _old_object_id(2), ObjectId()
    for fid, when in (
        (stale_pending, _utcnow() - dt.timedelta(hours=2)),
        (live_pending, _utcnow()),
    ):
        gstore.files.insert_one(
            {
                "_id": fid,
                "filename": f".tmp-{fid}.",
                "length": 0,
                "chunkSize": 1,
                "uploadDate": when,
            }
        )
        gstore.chunks.insert_one({"files_id": fid, "n": 0, "data": b"y"})

    counts = gstore.sweep(3600)

    assert counts == {"pending_files": 1, "orphan_files": 1, "orphan_chunks": 4}
    owners = set(gstore.chunks.distinct("files_id", {"n": {"$gte": 0}}))
    assert old_orphan not in owners and stale_pending not in owners
    assert fresh_orphan in owners and live_pending in owners
    assert gstore.get_resource("keep/me").read() == payload(600_000)
    assert gstore.sweep(3600) == dict.fromkeys(counts, 0)


def test_random_reads_use_one_chunk_query_and_the_cache(gstore: GridFSStorageConnector) -> None:
    data = payload(5 * 255 * 1024 + 99, seed=12)
    gstore.set_resource("q/data", data)
    res = gstore.get_resource("q/data")
    res.seek(3 * 255 * 1024 + 17)
    assert res.read(100) == data[3 * 255 * 1024 + 17 :][:100]
    reader = res.stream
    assert reader.fetch_calls == 1  # type: ignore[attr-defined]
    # Another resource over the same file id shares the process-wide cache.
    again = gstore.get_resource("q/data")
    again.seek(3 * 255 * 1024)
    assert again.read(50) == data[3 * 255 * 1024 :][:50]
    assert again.stream.fetch_calls == 0  # type: ignore[attr-defined]
    # prefetch: the missing blocks of scattered ranges in one query, then reads hit the cache
    ranges = [(10, 20), (255 * 1024 * 2 + 5, 255 * 1024 * 2 + 9), (len(data) - 3, len(data))]
    res.prefetch(ranges)
    assert reader.fetch_calls == 2  # type: ignore[attr-defined]
    for start, end in ranges:
        res.seek(start)
        assert res.read(end - start) == data[start:end]
    assert reader.fetch_calls == 2  # type: ignore[attr-defined]


def test_reader_pinned_to_file_id_reports_replacement(gstore: GridFSStorageConnector) -> None:
    old = payload(3 * 255 * 1024, seed=13)
    gstore.set_resource("pin/data", old)
    res = gstore.get_resource("pin/data")
    assert res.read(10) == old[:10]
    gstore.set_resource("pin/data", b"new")
    res.seek(2 * 255 * 1024)  # a block never fetched: the old file's chunks are gone
    with pytest.raises(StorageError, match="deleted or replaced"):
        res.read(10)
    assert gstore.get_resource("pin/data").read() == b"new"


def test_resource_file_id_names_newest(gstore: GridFSStorageConnector) -> None:
    gstore.set_resource("id/x", b"1")
    first = gstore.resource_file_id("id/x")
    gstore.set_resource("id/x", b"2")
    assert gstore.resource_file_id("id/x") != first
    with pytest.raises(ResourceNotFoundError):
        gstore.resource_file_id("id/none")


def test_chunk_size_is_stored_per_file(gstore: GridFSStorageConnector) -> None:
    gstore.set_resource("cs/a", payload(300_000))
    big = GridFSStorageConnector.from_database(gstore._db(), chunk_size=1024 * 1024)
    big.set_resource("cs/b", payload(3_000_000))
    docs = {d["filename"]: d["chunkSize"] for d in gstore.files.find({"length": {"$gte": 0}})}
    assert docs == {"cs/a": 255 * 1024, "cs/b": 1024 * 1024}
    assert gstore.get_resource("cs/b").read() == payload(3_000_000)
    assert leftovers(gstore)["chunks"] == 2 + 3


def test_unreachable_server_fails_fast_without_password() -> None:
    port = free_port()  # nothing listens there
    store = GridFSStorageConnector(
        f"mongodb://alice:SENTINEL-pw@127.0.0.1:{port}/team", timeout_ms=300
    )
    assert "SENTINEL" not in repr(store) and "SENTINEL" not in store.uri
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError) as info:
        store.get_resource("any/thing")
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "SENTINEL" not in message and "alice:***@127.0.0.1" in message
    with pytest.raises(StorageUnavailableError):
        store.set_resource("any/thing", b"x")
    # still picklable, and the password travels only inside the pickle (for workers)
    assert pickle.loads(pickle.dumps(store)).uri == store.uri


@pytest.mark.slow
def test_server_stopped_mid_session(tmp_path: Any) -> None:
    from tests.mongo_server import MongoServer

    server = MongoServer(tmp_path / "db").start()
    try:
        store = GridFSStorageConnector(f"{server.uri}/stopped", timeout_ms=500)
        store.set_resource("s/x", b"before")
        server.stop(kill=True)
        started = time.monotonic()
        with pytest.raises(StorageUnavailableError, match="unavailable"):
            store.get_resource("s/x")
        assert time.monotonic() - started < 10
    finally:
        server.stop()
