"""Helpers shared by the storage tests: build a connector per backend, inspect leftovers."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

from datastack.storage.base import StorageConnector
from datastack.storage.filesystem import FileStorageConnector, is_temporary_name
from datastack.storage.gridfs import GridFSStorageConnector


def make_store(kind: str, handle: Any, **kwargs: Any) -> StorageConnector:
    """The connector for a ``backend`` fixture value."""
    if kind == "file":
        return FileStorageConnector(handle)
    if kind == "mongomock":
        return GridFSStorageConnector.from_database(handle, **kwargs)
    return GridFSStorageConnector(handle, timeout_ms=10_000, **kwargs)


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def leftovers(store: StorageConnector) -> dict[str, int]:
    """What a backend holds besides published resources: temporary files, chunk counts."""
    if isinstance(store, FileStorageConnector):
        temps = 0
        files = 0
        if os.path.isdir(store.root):
            for _, _, names in os.walk(store.root):
                temps += sum(1 for n in names if is_temporary_name(n))
                files += sum(1 for n in names if not is_temporary_name(n))
        return {"temporary": temps, "files": files}
    assert isinstance(store, GridFSStorageConnector)
    files = list(store.files.find({"_id": {"$exists": True}}, {"filename": 1}))
    return {
        "temporary": sum(1 for f in files if is_temporary_name(str(f["filename"]))),
        "files": len(files),
        "chunks": store.chunks.count_documents({"n": {"$gte": 0}}),
    }


def plant_temporary(store: StorageConnector) -> None:
    """Leave a temporary object like a crashed writer would."""
    if isinstance(store, FileStorageConnector):
        folder = Path(store.root) / "a"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ".tmp-deadbeef.").write_bytes(b"partial")
        return
    assert isinstance(store, GridFSStorageConnector)
    from bson import ObjectId

    from datastack._mongo import bson_now as _utcnow

    file_id = ObjectId()
    store.files.insert_one(
        {
            "_id": file_id,
            "filename": f".tmp-{file_id}.",
            "length": 0,
            "chunkSize": store.chunk_size,
            "uploadDate": _utcnow(),
        }
    )
    store.chunks.insert_one({"files_id": file_id, "n": 0, "data": b"partial"})
