"""GridFS writes and the sweep of what crashed writers left: the write half of the connector.

Write protocol (memory flat in the size of the data; see :mod:`datastack.storage.gridfs`):

1. insert a *pending* files document named ``.tmp-<file id>.`` (never listed or resolved);
2. stream the chunks, ``insert_many`` in batches of ``write_batch_bytes`` with one batch in
   flight on a helper thread, touching the pending document's ``uploadDate`` now and then;
3. ``verify()`` (checksums), then publish with **one** journaled document update (the pending
   document gets the identifier, its length and a fresh ``uploadDate``);
4. delete the older files of that identifier.

On any error the chunks and the pending document are deleted (what ``GridIn.abort()`` does;
pymongo's ``__exit__`` does not); :func:`sweep` removes the leftovers of killed writers.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from datastack._fs import TEMP_PREFIX, is_temporary_name
from datastack._mongo import bson_now, durable, naive_utc
from datastack.errors import StorageError
from datastack.storage.base import HashingReader, Verifier

if TYPE_CHECKING:  # pragma: no cover
    from datastack.storage.gridfs import GridFSStorageConnector

_log = logging.getLogger("datastack.storage.gridfs")

#: Chunk documents sent per ``insert_many`` (bounds client memory while uploading).
DEFAULT_WRITE_BATCH_BYTES = 8 * 1024 * 1024
#: How often (seconds) a running upload refreshes its pending document.
HEARTBEAT_SECONDS = 30.0
#: Default grace window (seconds) before :func:`sweep` deletes leftovers.
DEFAULT_GRACE_SECONDS = 3600.0


def _read_exactly(reader: HashingReader, size: int) -> bytes:
    data = reader.read(size)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = reader.read(size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def write(
    store: GridFSStorageConnector, identifier: str, reader: HashingReader, verify: Verifier
) -> None:
    """Upload ``reader`` as ``identifier`` (the protocol in the module docstring)."""
    from bson import Int64, ObjectId

    file_id = ObjectId()
    temp_name = f"{TEMP_PREFIX}{file_id}."
    with store.mongo.errors(f"storing {identifier!r}"):
        store.files.insert_one(
            {
                "_id": file_id,
                "filename": temp_name,
                "length": Int64(0),
                "chunkSize": store.chunk_size,
                "uploadDate": bson_now(),
                "metadata": {"datastack": {"state": "uploading", "target": identifier}},
            }
        )
    try:
        with store.mongo.errors(f"storing {identifier!r}"):
            _upload_chunks(store, file_id, reader)
        verify()
        with store.mongo.errors(f"publishing {identifier!r}"):
            upload_date = _publish(store, identifier, file_id, temp_name, reader)
    except BaseException:
        _abort(store, file_id)
        raise
    with store.mongo.errors(f"deleting older copies of {identifier!r}"):
        older = store.files.find(
            {
                "filename": {"$eq": identifier},
                "_id": {"$ne": file_id},
                "uploadDate": {"$lte": upload_date},
            },
            {"_id": 1},
        )
        store._delete_files([doc["_id"] for doc in older])


def _upload_chunks(store: GridFSStorageConnector, file_id: Any, reader: HashingReader) -> None:
    """Send the chunks in ``write_batch_bytes`` batches, one ``insert_many`` in flight on a
    helper thread while the next batch is read and hashed here (so at most two batches are
    in memory). A failed insert is raised here; the caller aborts the upload."""
    chunks, files = store.chunks, store.files
    batch: list[dict[str, Any]] = []
    batch_bytes = 0
    number = 0
    beat = time.monotonic()
    with ThreadPoolExecutor(1, "datastack-upload") as sender:
        pending: Future[Any] | None = None
        try:
            while True:
                data = _read_exactly(reader, store.chunk_size)
                if data:
                    batch.append({"files_id": file_id, "n": number, "data": data})
                    batch_bytes += len(data)
                    number += 1
                last = len(data) < store.chunk_size
                if batch and (last or batch_bytes >= store.write_batch_bytes):
                    if pending is not None:
                        pending.result()
                    pending = sender.submit(chunks.insert_many, batch, ordered=True)
                    batch, batch_bytes = [], 0
                    if time.monotonic() - beat > HEARTBEAT_SECONDS:
                        files.update_one({"_id": file_id}, {"$set": {"uploadDate": bson_now()}})
                        beat = time.monotonic()
                if last:
                    break
            if pending is not None:
                pending.result()
        except BaseException:
            if pending is not None:  # let it land before the caller deletes the chunks
                pending.cancel() or pending.exception()
            raise


def _publish(
    store: GridFSStorageConnector,
    identifier: str,
    file_id: Any,
    temp_name: str,
    reader: HashingReader,
) -> dt.datetime:
    from bson import Int64

    upload_date = bson_now()
    newest = store.files.find_one(
        {"filename": {"$eq": identifier}}, {"uploadDate": 1}, sort=[("uploadDate", -1)]
    )
    if newest is not None and isinstance(newest.get("uploadDate"), dt.datetime):
        previous = naive_utc(newest["uploadDate"])
        if previous >= upload_date:  # keep "newest uploadDate wins" strictly ordered
            upload_date = previous + dt.timedelta(milliseconds=1)
    # Journaled, majority write: once the resource is visible it survives a server crash
    # (the journal flush also covers the chunks written before it).
    result = durable(store.files).update_one(
        {"_id": file_id, "filename": temp_name},
        {
            "$set": {
                "filename": identifier,
                "length": Int64(reader.size),
                "uploadDate": upload_date,
                "metadata": {"sha256": reader.sha256},
            }
        },
    )
    if result.matched_count != 1:
        raise StorageError(
            f"upload of {identifier!r} to {store.mongo.display} lost its pending document "
            "before publishing (swept as stale?); nothing was stored, retry"
        )
    return upload_date


def _abort(store: GridFSStorageConnector, file_id: Any) -> None:
    """Best-effort removal of an unpublished upload (the sweep catches what remains)."""
    try:
        store.chunks.delete_many({"files_id": {"$eq": file_id}})
        store.files.delete_one({"_id": {"$eq": file_id}})
    except Exception as exc:  # the original error matters more; GC sweeps later
        _log.warning(
            "could not remove unpublished GridFS upload %s in %s (%s); the next sweep "
            "(datastack gc) will remove it",
            file_id,
            store.mongo.display,
            store.mongo.scrub(f"{type(exc).__name__}: {exc}"),
        )


def sweep(store: GridFSStorageConnector, grace_seconds: float, prefix: str = "") -> dict[str, int]:
    """Delete leftovers of crashed uploads older than ``grace_seconds``.

    Removes pending uploads whose heartbeat is older than the grace window (their document
    and chunks), and chunks that have no files document and whose ``files_id`` (an ObjectId,
    which carries its creation time) is older than the grace window. Chunks with non-ObjectId
    ids and no files document are left alone (their age is unknown). With ``prefix``, only
    pending uploads whose target identifier starts with it (orphan chunks name no target).

    Returns ``{"pending_files": n, "orphan_files": m, "orphan_chunks": k}``.
    """
    from bson import ObjectId

    cutoff = bson_now() - dt.timedelta(seconds=grace_seconds)
    counts = {"pending_files": 0, "orphan_files": 0, "orphan_chunks": 0}
    files, chunks = store.files, store.chunks
    with store.mongo.errors("sweeping orphans"):
        query: dict[str, Any] = {
            "filename": {"$regex": "^" + re.escape(TEMP_PREFIX)},
            "uploadDate": {"$lt": cutoff},
        }
        if prefix:
            query["metadata.datastack.target"] = {"$regex": "^" + re.escape(prefix)}
        stale = files.find(query, {"_id": 1, "filename": 1})
        for doc in list(stale):
            if not is_temporary_name(str(doc.get("filename"))):
                continue
            counts["orphan_chunks"] += chunks.delete_many(
                {"files_id": {"$eq": doc["_id"]}}
            ).deleted_count
            files.delete_one({"_id": doc["_id"], "uploadDate": {"$lt": cutoff}})
            counts["pending_files"] += 1
        if prefix:
            return counts
        owners = [
            fid
            for fid in chunks.distinct("files_id", {"n": {"$gte": 0}})
            if isinstance(fid, ObjectId) and naive_utc(fid.generation_time) < cutoff
        ]
        for start in range(0, len(owners), 1000):
            group = owners[start : start + 1000]
            known = set(files.distinct("_id", {"_id": {"$in": group}}))
            for fid in group:
                if fid in known:
                    continue
                counts["orphan_chunks"] += chunks.delete_many(
                    {"files_id": {"$eq": fid}}
                ).deleted_count
                counts["orphan_files"] += 1
    return counts


__all__ = [
    "DEFAULT_GRACE_SECONDS",
    "DEFAULT_WRITE_BATCH_BYTES",
    "HEARTBEAT_SECONDS",
    "sweep",
    "write",
]
