"""GridFS storage: standard GridFS files in a MongoDB database, published atomically.

Layout: bucket ``datastack`` (``datastack.files`` / ``datastack.chunks``), one GridFS file per
resource, ``filename`` = identifier; any GridFS client reads it with
``GridFSBucket(db, "datastack").open_download_stream_by_name(identifier)``.

Writes (memory flat in the size of the data):

1. insert a *pending* files document named ``.tmp-<file id>.`` (no valid identifier has that
   form, so it is never listed or resolved);
2. stream the data in chunks, ``insert_many`` in batches of ``write_batch_bytes``, touching
   the pending document's ``uploadDate`` now and then (a heartbeat);
3. call ``verify()`` (checksums), then publish with **one document update**: the pending
   document gets the identifier as ``filename``, its ``length`` and a fresh ``uploadDate``;
4. delete the older files of that identifier.

A reader by name resolves the newest ``uploadDate`` at open time and pins that file id, so it
never sees a mix or a half. On any error the chunks and the pending document are deleted (what
``GridIn.abort()`` does; pymongo's ``__exit__`` does not). Leftovers of killed writers are
removed by :meth:`GridFSStorageConnector.sweep_orphans`.

Reads go through :mod:`datastack.storage.cache`: blocks are the GridFS chunks, fetched with
direct chunk queries, never with ``GridOut``'s cursor (which is thrown away on every seek).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any, cast

from datastack._mongo import durable, get_client, mongo_errors, scrub
from datastack._uri import StorageLocation, parse_storage_uri, redact
from datastack.errors import ConfigurationError, StorageError
from datastack.resources import StreamedResource
from datastack.storage.base import HashingReader, StorageConnector, Verifier
from datastack.storage.cache import default_cache
from datastack.storage.filesystem import TEMP_PREFIX, is_temporary_name
from datastack.storage.reader import DEFAULT_READAHEAD_BYTES, BlockReader

_log = logging.getLogger(__name__)

DEFAULT_BUCKET = "datastack"
#: GridFS chunk size (bytes). 255 KiB: see docs/storage.md for the measurements.
DEFAULT_CHUNK_SIZE = 255 * 1024
#: Chunk documents sent per ``insert_many`` (bounds client memory while uploading).
DEFAULT_WRITE_BATCH_BYTES = 8 * 1024 * 1024
#: How often (seconds) a running upload refreshes its pending document.
HEARTBEAT_SECONDS = 30.0
#: Default grace window (seconds) before :meth:`sweep_orphans` deletes leftovers.
DEFAULT_GRACE_SECONDS = 3600.0

_MAX_CHUNK_SIZE = 15 * 1024 * 1024  # a chunk document must stay under MongoDB's 16 MB


def _utcnow() -> dt.datetime:
    """Now, as the naive UTC datetime with millisecond precision that BSON stores."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _naive_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


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


class _GridFSOpener:
    """Picklable opener of one GridFS file, pinned to its file id."""

    def __init__(
        self,
        connector: GridFSStorageConnector,
        identifier: str,
        file_id: Any,
        length: int,
        chunk_size: int,
    ) -> None:
        self.connector = connector
        self.identifier = identifier
        self.file_id = file_id
        self.length = length
        self.chunk_size = chunk_size

    def __call__(self) -> IO[bytes]:
        reader = self.connector._reader(self.identifier, self.file_id, self.length, self.chunk_size)
        return cast("IO[bytes]", reader)


class GridFSStorageConnector(StorageConnector):
    """Store resources as GridFS files in a MongoDB database.

    Parameters
    ----------
    uri:
        ``mongodb://[user:pass@]host[:port]/DBNAME[?options]`` (or ``mongodb+srv://``).
    database:
        Database name when the URI has none, or a ``Database`` object (pymongo or mongomock;
        prefer :meth:`from_database`). A connector built on a ``Database`` is not picklable.
    bucket:
        GridFS bucket name (collections ``<bucket>.files`` and ``<bucket>.chunks``).
    chunk_size:
        GridFS chunk size of new files, in bytes (also the block size of the read cache).
    timeout_ms:
        Server selection and connect timeout; ``None`` uses ``datastack._mongo`` defaults.
    write_batch_bytes:
        Chunk bytes sent per ``insert_many`` while uploading.
    readahead_bytes:
        Largest read-ahead window of readers once access turns sequential.
    background_readahead:
        Fetch the next read-ahead windows on background threads (pymongo only; up to
        ``READAHEAD_DEPTH`` range queries in flight per reader) while the caller consumes the
        current one; see docs/performance.md.

    Example
    -------
    >>> store = GridFSStorageConnector("mongodb://127.0.0.1:27017/team")  # doctest: +SKIP
    >>> store.set_resource("iris/v1/data.h5", open("data.h5", "rb"))      # doctest: +SKIP
    """

    scheme = "gridfs"

    def __init__(
        self,
        uri: str | None = None,
        *,
        database: Any = None,
        bucket: str = DEFAULT_BUCKET,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        timeout_ms: int | None = None,
        write_batch_bytes: int = DEFAULT_WRITE_BATCH_BYTES,
        readahead_bytes: int = DEFAULT_READAHEAD_BYTES,
        background_readahead: bool = True,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}", bucket or ""):
            raise ConfigurationError(f"GridFS bucket {bucket!r} must match [A-Za-z0-9._-]{{1,64}}")
        if not 1 <= chunk_size <= _MAX_CHUNK_SIZE:
            raise ConfigurationError(
                f"chunk_size must be between 1 and {_MAX_CHUNK_SIZE} bytes, got {chunk_size}"
            )
        if write_batch_bytes < chunk_size:
            write_batch_bytes = chunk_size
        self.bucket = bucket
        self.chunk_size = int(chunk_size)
        self.timeout_ms = timeout_ms
        self.write_batch_bytes = int(write_batch_bytes)
        self.readahead_bytes = int(readahead_bytes)
        self.background_readahead = bool(background_readahead)
        self._fixed_db: Any = None
        self._secret_uri = ""
        if uri is None and database is not None and not isinstance(database, str):
            self._fixed_db = database
            self.database_name = str(database.name)
            self._display = f"mongodb://{type(database.client).__module__}/{self.database_name}"
        elif uri is not None:
            if "://" not in uri:
                raise ConfigurationError(
                    f"GridFS storage needs a mongodb:// URI, got {redact(uri)!r}: expected "
                    "mongodb://[user:pass@]host[:port]/DBNAME"
                )
            name = database if isinstance(database, str) else None
            if name is None:
                name = parse_storage_uri(uri).database
            if not name or not re.fullmatch(r"[A-Za-z0-9_-]{1,63}", name):
                raise ConfigurationError(f"invalid database name {name!r} for {redact(uri)}")
            self.database_name = name
            self._secret_uri = uri
            self._display = redact(uri)
        else:
            raise ConfigurationError(
                "GridFSStorageConnector needs a URI (mongodb://host/DBNAME) or a Database object"
            )
        self._indexed = False

    @classmethod
    def from_location(cls, location: StorageLocation) -> GridFSStorageConnector:
        """The connector for a parsed ``mongodb://.../DBNAME`` URI (``storage.connect``)."""
        if location.kind != "mongodb":
            raise ConfigurationError(f"expected a mongodb:// URI, got {location.redacted!r}")
        return cls(location.uri, database=location.database)

    @classmethod
    def from_database(
        cls, db: Any, *, bucket: str = DEFAULT_BUCKET, **kwargs: Any
    ) -> GridFSStorageConnector:
        """A connector on an existing ``Database`` (pymongo or mongomock); not picklable."""
        return cls(database=db, bucket=bucket, **kwargs)

    # -- connection ----------------------------------------------------------------------------
    def _db(self) -> Any:
        if self._fixed_db is not None:
            return self._fixed_db
        return get_client(self._secret_uri, timeout_ms=self.timeout_ms)[self.database_name]

    def _errors(self, what: str = "") -> Any:
        return mongo_errors(self._secret_uri or self._display, what)

    @property
    def files(self) -> Any:
        """The ``<bucket>.files`` collection."""
        return self._db()[f"{self.bucket}.files"]

    @property
    def chunks(self) -> Any:
        """The ``<bucket>.chunks`` collection."""
        return self._db()[f"{self.bucket}.chunks"]

    def _ensure_indexes(self) -> None:
        if self._indexed:
            return
        self.files.create_index([("filename", 1), ("uploadDate", 1)])
        self.chunks.create_index([("files_id", 1), ("n", 1)], unique=True)
        self._indexed = True

    def _uri(self) -> str:
        return self._display

    @property
    def _cache_origin(self) -> tuple[Any, ...]:
        if self._fixed_db is not None:
            return ("db", id(self._fixed_db.client), self.database_name, self.bucket)
        return ("uri", self._display, self.database_name, self.bucket)

    # -- reads ---------------------------------------------------------------------------------
    def _newest(self, identifier: str) -> Mapping[str, Any] | None:
        with self._errors(f"looking up {identifier!r}"):
            doc: Mapping[str, Any] | None = self.files.find_one(
                {"filename": {"$eq": identifier}},
                projection={"_id": 1, "length": 1, "chunkSize": 1},
                sort=[("uploadDate", -1), ("_id", -1)],
            )
        return doc

    def resource_file_id(self, identifier: str) -> Any:
        """The GridFS file ``_id`` that ``identifier`` resolves to now (pin it to keep it).

        Raises :class:`~datastack.errors.ResourceNotFoundError` when nothing is stored.
        """
        from datastack.identifiers import validate_identifier

        identifier = validate_identifier(identifier)
        doc = self._newest(identifier)
        if doc is None:
            raise self._not_found(identifier)
        return doc["_id"]

    def _open(self, identifier: str) -> StreamedResource:
        doc = self._newest(identifier)
        if doc is None:
            raise self._not_found(identifier)
        length, chunk_size = int(doc.get("length", 0)), int(doc.get("chunkSize") or 1)
        opener = _GridFSOpener(self, identifier, doc["_id"], length, chunk_size)
        return StreamedResource(identifier, opener, size=length)

    def _reader(self, identifier: str, file_id: Any, length: int, chunk_size: int) -> BlockReader:
        fetch = functools.partial(self._fetch_chunks, identifier, file_id)
        return BlockReader(
            (self._cache_origin, file_id),
            length,
            chunk_size,
            fetch,
            cache=default_cache(),
            readahead_bytes=self.readahead_bytes,
            background=self.background_readahead,
            name=f"{identifier!r} (GridFS file {file_id}) in {self._display}",
        )

    def _fetch_chunks(
        self, identifier: str, file_id: Any, numbers: Sequence[int]
    ) -> dict[int, bytes]:
        """One query for the chunks ``numbers`` of ``file_id``: a range when contiguous."""
        if not numbers:
            return {}
        first, last = numbers[0], numbers[-1]
        selector: Any = first  # one block: an equality match is the cheapest query
        if len(numbers) > 1 and last - first + 1 == len(numbers):
            selector = {"$gte": first, "$lt": last + 1}
        elif len(numbers) > 1:
            selector = {"$in": list(numbers)}
        with self._errors(f"reading {identifier!r}"):
            cursor = self.chunks.find(
                {"files_id": file_id, "n": selector},
                projection={"_id": 0, "n": 1, "data": 1},
                limit=len(numbers),  # the server closes the cursor after the last chunk
            )
            return {int(doc["n"]): doc["data"] for doc in cursor}

    def _exists(self, identifier: str) -> bool:
        with self._errors(f"looking up {identifier!r}"):
            return self.files.find_one({"filename": {"$eq": identifier}}, {"_id": 1}) is not None

    def _list(self, prefix: str) -> list[str]:
        query: dict[str, Any] = {"filename": {"$type": "string"}}
        if prefix:
            query = {"filename": {"$regex": "^" + re.escape(prefix)}}
        with self._errors(f"listing {prefix!r}"):
            names = self.files.distinct("filename", query)
        return [
            n
            for n in names
            if isinstance(n, str) and n.startswith(prefix) and not is_temporary_name(n)
        ]

    # -- writes --------------------------------------------------------------------------------
    def _write(self, identifier: str, reader: HashingReader, verify: Verifier) -> None:
        from bson import Int64, ObjectId

        file_id = ObjectId()
        temp_name = f"{TEMP_PREFIX}{file_id}."
        with self._errors(f"storing {identifier!r}"):
            self._ensure_indexes()
            self.files.insert_one(
                {
                    "_id": file_id,
                    "filename": temp_name,
                    "length": Int64(0),
                    "chunkSize": self.chunk_size,
                    "uploadDate": _utcnow(),
                    "metadata": {"datastack": {"state": "uploading", "target": identifier}},
                }
            )
        try:
            with self._errors(f"storing {identifier!r}"):
                self._upload_chunks(file_id, reader)
            verify()
            with self._errors(f"publishing {identifier!r}"):
                upload_date = self._publish(identifier, file_id, temp_name, reader)
        except BaseException:
            self._abort(file_id)
            raise
        with self._errors(f"deleting older copies of {identifier!r}"):
            older = self.files.find(
                {
                    "filename": {"$eq": identifier},
                    "_id": {"$ne": file_id},
                    "uploadDate": {"$lte": upload_date},
                },
                {"_id": 1},
            )
            self._delete_files([doc["_id"] for doc in older])

    def _upload_chunks(self, file_id: Any, reader: HashingReader) -> None:
        """Send the chunks in ``write_batch_bytes`` batches, one ``insert_many`` in flight on a
        helper thread while the next batch is read and hashed here (so at most two batches are
        in memory). A failed insert is raised here; the caller aborts the upload."""
        from concurrent.futures import Future, ThreadPoolExecutor

        chunks, files = self.chunks, self.files
        batch: list[dict[str, Any]] = []
        batch_bytes = 0
        number = 0
        beat = time.monotonic()
        with ThreadPoolExecutor(1, "datastack-upload") as sender:
            pending: Future[Any] | None = None
            try:
                while True:
                    data = _read_exactly(reader, self.chunk_size)
                    if data:
                        batch.append({"files_id": file_id, "n": number, "data": data})
                        batch_bytes += len(data)
                        number += 1
                    last = len(data) < self.chunk_size
                    if batch and (last or batch_bytes >= self.write_batch_bytes):
                        if pending is not None:
                            pending.result()
                        pending = sender.submit(chunks.insert_many, batch, ordered=True)
                        batch, batch_bytes = [], 0
                        if time.monotonic() - beat > HEARTBEAT_SECONDS:
                            files.update_one({"_id": file_id}, {"$set": {"uploadDate": _utcnow()}})
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
        self, identifier: str, file_id: Any, temp_name: str, reader: HashingReader
    ) -> dt.datetime:
        from bson import Int64

        upload_date = _utcnow()
        newest = self.files.find_one(
            {"filename": {"$eq": identifier}}, {"uploadDate": 1}, sort=[("uploadDate", -1)]
        )
        if newest is not None and isinstance(newest.get("uploadDate"), dt.datetime):
            previous = _naive_utc(newest["uploadDate"])
            if previous >= upload_date:  # keep "newest uploadDate wins" strictly ordered
                upload_date = previous + dt.timedelta(milliseconds=1)
        # Journaled, majority write: once the resource is visible it survives a server crash
        # (the journal flush also covers the chunks written before it).
        result = durable(self.files).update_one(
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
                f"upload of {identifier!r} to {self._display} lost its pending document before "
                "publishing (swept as stale by sweep_orphans?); nothing was stored, retry"
            )
        return upload_date

    def _abort(self, file_id: Any) -> None:
        """Best-effort removal of an unpublished upload (the sweeper catches what remains)."""
        try:
            self.chunks.delete_many({"files_id": {"$eq": file_id}})
            self.files.delete_one({"_id": {"$eq": file_id}})
        except Exception as exc:  # the original error matters more; GC sweeps later
            _log.warning(
                "could not remove unpublished GridFS upload %s in %s (%s); sweep_orphans() "
                "will remove it",
                file_id,
                self._display,
                scrub(f"{type(exc).__name__}: {exc}", self._secret_uri),
            )

    def _delete_files(self, file_ids: list[Any]) -> None:
        if not file_ids:
            return
        self.files.delete_many({"_id": {"$in": file_ids}})
        self.chunks.delete_many({"files_id": {"$in": file_ids}})
        cache = default_cache()
        for file_id in file_ids:
            cache.discard((self._cache_origin, file_id))

    def _delete(self, identifier: str) -> bool:
        with self._errors(f"deleting {identifier!r}"):
            ids = [d["_id"] for d in self.files.find({"filename": {"$eq": identifier}}, {"_id": 1})]
            self._delete_files(ids)
        return bool(ids)

    # -- maintenance ---------------------------------------------------------------------------
    def sweep_orphans(self, grace_seconds: float = DEFAULT_GRACE_SECONDS) -> dict[str, int]:
        """Delete leftovers of crashed uploads older than ``grace_seconds``.

        Removes pending uploads whose heartbeat is older than the grace window (their
        document and chunks), and chunks that have no files document and whose ``files_id``
        (an ObjectId, which carries its creation time) is older than the grace window. Chunks
        with non-ObjectId ids and no files document are left alone (their age is unknown).

        Returns ``{"pending_files": n, "orphan_files": m, "orphan_chunks": k}``.
        """
        from bson import ObjectId

        cutoff = _utcnow() - dt.timedelta(seconds=grace_seconds)
        counts = {"pending_files": 0, "orphan_files": 0, "orphan_chunks": 0}
        with self._errors("sweeping orphans"):
            stale = self.files.find(
                {
                    "filename": {"$regex": "^" + re.escape(TEMP_PREFIX)},
                    "uploadDate": {"$lt": cutoff},
                },
                {"_id": 1, "filename": 1},
            )
            for doc in list(stale):
                if not is_temporary_name(str(doc.get("filename"))):
                    continue
                counts["orphan_chunks"] += self.chunks.delete_many(
                    {"files_id": {"$eq": doc["_id"]}}
                ).deleted_count
                self.files.delete_one({"_id": doc["_id"], "uploadDate": {"$lt": cutoff}})
                counts["pending_files"] += 1
            chunk_owners = [
                fid
                for fid in self.chunks.distinct("files_id", {"n": {"$gte": 0}})
                if isinstance(fid, ObjectId) and _naive_utc(fid.generation_time) < cutoff
            ]
            for start in range(0, len(chunk_owners), 1000):
                group = chunk_owners[start : start + 1000]
                known = set(self.files.distinct("_id", {"_id": {"$in": group}}))
                for fid in group:
                    if fid in known:
                        continue
                    counts["orphan_chunks"] += self.chunks.delete_many(
                        {"files_id": {"$eq": fid}}
                    ).deleted_count
                    counts["orphan_files"] += 1
        return counts

    # -- pickling ------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        if self._fixed_db is not None:
            raise TypeError(
                f"{self!r} was built on a Database object and cannot be pickled; build it from "
                "a URI (GridFSStorageConnector('mongodb://host/DBNAME')) to send it to workers"
            )
        return {
            "uri": self._secret_uri,
            "database": self.database_name,
            "bucket": self.bucket,
            "chunk_size": self.chunk_size,
            "timeout_ms": self.timeout_ms,
            "write_batch_bytes": self.write_batch_bytes,
            "readahead_bytes": self.readahead_bytes,
            "background_readahead": self.background_readahead,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        uri = state.pop("uri")
        self.__init__(uri, **state)  # type: ignore[misc]


__all__ = ["DEFAULT_BUCKET", "DEFAULT_CHUNK_SIZE", "GridFSStorageConnector"]

