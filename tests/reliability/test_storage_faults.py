"""Storage-level faults: SIGKILL mid-upload, a source that raises, a full disk, a MongoDB server
stopped mid-write. Each checks: a clear typed error (or a dead writer), the previous content
of the identifier intact, and temporary data removed at once or by the sweeper.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest

from datastack.errors import StorageUnavailableError
from datastack.storage import connect
from datastack.storage.filesystem import FileStorageConnector, is_temporary_name
from datastack.storage.gridfs import DEFAULT_CHUNK_SIZE, GridFSStorageConnector
from tests.mongo_server import MongoServer
from tests.reliability.helpers import (
    FailingStream,
    payload,
    run_child,
    sigkill,
    start_child,
    wait_for_file,
)

IDENT = "ds/v1/data.bin"


def _temporaries(store: Any) -> int:
    """Temporary files (filesystem) or pending upload documents (GridFS)."""
    if isinstance(store, FileStorageConnector):
        return sum(
            1
            for p in Path(store.root).rglob("*")
            if is_temporary_name(p.name)
        ) if Path(store.root).exists() else 0
    return int(store.files.count_documents({"filename": {"$regex": r"^\.tmp-"}}))


def _chunks(store: Any) -> int:
    if isinstance(store, GridFSStorageConnector):
        return int(store.chunks.count_documents({"n": {"$gte": 0}}))
    return 0


def _sweep(store: Any) -> None:
    if isinstance(store, FileStorageConnector):
        store.sweep(0)
    else:
        store.sweep(0)


@pytest.mark.slow
def test_sigkill_mid_upload_keeps_old_content_and_sweep_removes_leftovers(
    storage: str, tmp_path: Path
) -> None:
    old = payload(600_000, seed=1)
    store = connect(storage)
    store.set_resource(IDENT, old)
    marker, log = tmp_path / "cue", tmp_path / "child.log"
    # Cue at 18 MB of 24: GridFS keeps one 8 MiB insert_many in flight while it reads the next
    # batch, so past 16 MiB the first batch has certainly been written.
    proc = start_child(
        {"mode": "upload", "storage": storage, "identifier": IDENT, "size": 24_000_000,
         "seed": 2, "cue_bytes": 18_000_000, "marker": str(marker)},
        log,
    )
    wait_for_file(marker, proc, log)
    sigkill(proc)

    # The fault hit: leftovers exist (a temp file; a pending document and its chunks).
    assert _temporaries(store) == 1
    if isinstance(store, GridFSStorageConnector):
        assert _chunks(store) > math.ceil(len(old) / DEFAULT_CHUNK_SIZE)
    # Readers see the old content only, and nothing else is listed.
    assert store.get_resource(IDENT).read() == old
    assert store.list_resources("") == [IDENT]

    _sweep(store)
    assert _temporaries(store) == 0
    if isinstance(store, GridFSStorageConnector):
        assert _chunks(store) == math.ceil(len(old) / DEFAULT_CHUNK_SIZE)
    assert store.get_resource(IDENT).read() == old
    # and the identifier can be written again
    store.set_resource(IDENT, b"new")
    assert store.get_resource(IDENT).read() == b"new"


def test_exception_mid_upload_reraises_and_leaves_nothing(storage: str) -> None:
    old = payload(300_000, seed=3)
    store = connect(storage)
    store.set_resource(IDENT, old)
    chunks_before = _chunks(store)

    def boom() -> None:
        raise RuntimeError("source died on cue")

    # 9 MB with the cue at 8.5 MB: one GridFS batch of chunks is already in the database.
    stream = FailingStream(payload(9_000_000, seed=4), 8_500_000, boom)
    with pytest.raises(RuntimeError, match="source died on cue"):
        store.set_resource(IDENT, stream)
    assert stream.fired
    assert _temporaries(store) == 0
    assert _chunks(store) == chunks_before  # GridIn.abort() equivalent: zero chunks left
    assert store.get_resource(IDENT).read() == old


def test_disk_full_fails_clearly_and_removes_the_partial_file(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = connect(str(root))
    old = payload(100_000, seed=5)
    store.set_resource(IDENT, old)
    result = run_child(
        {"mode": "upload", "storage": str(root), "identifier": IDENT, "size": 3_000_000,
         "rlimit_fsize": 1_000_000},
        tmp_path / "child.log",
    )
    assert result["ok"] is False
    assert "StorageError" in result["mro"], result
    assert IDENT in result["message"] and "nothing was stored" in result["message"]
    assert _temporaries(store) == 0
    assert store.get_resource(IDENT).read() == old


def _stop_server_on_cue(server: MongoServer) -> Any:
    def stop() -> None:
        server.stop(kill=True)

    return stop


@pytest.mark.slow
def test_mongo_stopped_mid_write_is_unavailable_in_bounded_time(own_mongo: MongoServer) -> None:
    uri = f"{own_mongo.uri}/reliab"
    store = GridFSStorageConnector(uri, timeout_ms=2000)
    old = payload(700_000, seed=6)
    store.set_resource(IDENT, old)

    stream = FailingStream(payload(12_000_000, seed=7), 9_000_000, _stop_server_on_cue(own_mongo))
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError) as info:
        store.set_resource(IDENT, stream)
    elapsed = time.monotonic() - started
    assert stream.fired
    assert elapsed < 20, f"took {elapsed:.1f}s to report the lost server"
    message = str(info.value)
    assert "unavailable" in message and IDENT in message and own_mongo.uri in message

    own_mongo.start()  # same data folder
    fresh = GridFSStorageConnector(uri, timeout_ms=5000)
    assert fresh.get_resource(IDENT).read() == old
    assert fresh.list_resources("") == [IDENT]
    fresh.sweep(0)
    assert _temporaries(fresh) == 0
    assert _chunks(fresh) == math.ceil(len(old) / DEFAULT_CHUNK_SIZE)
    new = payload(400_000, seed=8)
    fresh.set_resource(IDENT, new)
    assert fresh.get_resource(IDENT).read() == new


def test_mongo_down_before_any_io_fails_fast(tmp_path: Path) -> None:
    from tests.mongo_server import free_port

    store = GridFSStorageConnector(f"mongodb://127.0.0.1:{free_port()}/x", timeout_ms=500)
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError):
        store.set_resource(IDENT, b"x")
    with pytest.raises(StorageUnavailableError):
        store.get_resource(IDENT)
    assert time.monotonic() - started < 10
