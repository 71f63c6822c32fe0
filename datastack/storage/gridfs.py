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
removed by :meth:`GridFSStorageConnector.sweep` (``datastack gc``).

Reads go through :mod:`datastack.storage.cache`: blocks are the GridFS chunks, fetched with
direct chunk queries, never with ``GridOut``'s cursor (which is thrown away on every seek).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import IO, Any, cast

from datastack._fs import is_temporary_name
from datastack._mongo import MongoHandle
from datastack._uri import StorageLocation
from datastack.errors import ConfigurationError
from datastack.resources import StreamedResource
from datastack.storage import _gridfs_upload as upload
from datastack.storage._partial import BlockSource, SharedCopyFetch
from datastack.storage.base import HashingReader, StorageConnector, Verifier
from datastack.storage.cache import BlockCache, default_cache
from datastack.storage.reader import DEFAULT_READAHEAD_BYTES, BlockReader

DEFAULT_BUCKET = "datastack"
#: GridFS chunk size (bytes). 255 KiB: see docs/storage.md for the measurements.
DEFAULT_CHUNK_SIZE = 255 * 1024
#: Chunk documents sent per ``insert_many`` (bounds client memory while uploading).
DEFAULT_WRITE_BATCH_BYTES = upload.DEFAULT_WRITE_BATCH_BYTES
#: Default grace window (seconds) before :meth:`GridFSStorageConnector.sweep` deletes leftovers.
DEFAULT_GRACE_SECONDS = upload.DEFAULT_GRACE_SECONDS

_MAX_CHUNK_SIZE = 15 * 1024 * 1024  # a chunk document must stay under MongoDB's 16 MB


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
    remote = True

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
        if isinstance(database, MongoHandle):
            self.mongo = database
        elif uri is None and database is not None and not isinstance(database, str):
            self.mongo = MongoHandle.from_database(database)
        elif uri is not None:
            self.mongo = MongoHandle(
                uri, database=database if isinstance(database, str) else None,
                timeout_ms=timeout_ms,
            )
        else:
            raise ConfigurationError(
                "GridFSStorageConnector needs a URI (mongodb://host/DBNAME) or a Database object"
            )
        self.database_name = self.mongo.database_name
        #: Reads retried after a lost connection (see :meth:`_fetch_chunks`).
        self.reconnects = 0

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
        return self.mongo.db()

    def _errors(self, what: str = "") -> Any:
        return self.mongo.errors(what)

    @property
    def files(self) -> Any:
        """The ``<bucket>.files`` collection."""
        return self._db()[f"{self.bucket}.files"]

    @property
    def chunks(self) -> Any:
        """The ``<bucket>.chunks`` collection."""
        return self._db()[f"{self.bucket}.chunks"]

    def _ensure_indexes(self) -> None:
        def create(db: Any) -> None:
            db[f"{self.bucket}.files"].create_index([("filename", 1), ("uploadDate", 1)])
            db[f"{self.bucket}.chunks"].create_index([("files_id", 1), ("n", 1)], unique=True)

        self.mongo.ensure_indexes(f"gridfs:{self.bucket}", create)

    def _uri(self) -> str:
        return self.mongo.display

    def ping(self, timeout_s: float = 3.0) -> None:
        """One ``ping`` command with a short server selection timeout."""
        self.mongo.ping(timeout_s)

    @property
    def _cache_origin(self) -> tuple[Any, ...]:
        return (*self.mongo.cache_origin, self.bucket)

    def _file_key(self, file_id: Any) -> tuple[Any, ...]:
        """The block cache's key of one stored file: built-in types only (hashed in C; an
        ObjectId hashes in Python, and every block lookup hashes the key)."""
        return (self._cache_origin, type(file_id).__name__, str(file_id))

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

    def _reader(
        self,
        identifier: str,
        file_id: Any,
        length: int,
        chunk_size: int,
        cache: BlockCache | None = None,
    ) -> BlockReader:
        fetch: Any = functools.partial(self._fetch_chunks, identifier, file_id)
        if cache is None:  # through this process's local copy being filled, if any
            fetch = SharedCopyFetch(self._file_key(file_id), fetch)
        return BlockReader(
            self._file_key(file_id),
            length,
            chunk_size,
            fetch,
            cache=default_cache() if cache is None else cache,
            readahead_bytes=self.readahead_bytes,
            background=self.background_readahead and cache is None,
            name=f"{identifier!r} (GridFS file {file_id}) in {self.mongo.display}",
        )

    def open_stream(self, identifier: str) -> IO[bytes]:
        """One query per 8 MiB read, through a private zero-size block cache."""
        from datastack.identifiers import validate_identifier

        identifier = validate_identifier(identifier)
        doc = self._newest(identifier)
        if doc is None:
            raise self._not_found(identifier)
        length, chunk_size = int(doc.get("length", 0)), int(doc.get("chunkSize") or 1)
        reader = self._reader(identifier, doc["_id"], length, chunk_size, cache=BlockCache(0))
        return cast("IO[bytes]", reader)

    def block_source(self, identifier: str) -> BlockSource:
        """The resource as blocks (its chunks), for a local-cache fill that shares what it
        fetches with this process's readers (:mod:`datastack.storage._partial`)."""
        from datastack.identifiers import validate_identifier

        identifier = validate_identifier(identifier)
        doc = self._newest(identifier)
        if doc is None:
            raise self._not_found(identifier)
        length, chunk_size = int(doc.get("length", 0)), int(doc.get("chunkSize") or 1)
        fetch = functools.partial(self._fetch_chunks, identifier, doc["_id"])
        return BlockSource(self._file_key(doc["_id"]), length, chunk_size, fetch)

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
        query = {"files_id": file_id, "n": selector}
        with self._errors(f"reading {identifier!r}"):
            try:
                return self._find_chunks(query, len(numbers))
            except Exception as exc:
                if not _interrupted(exc):
                    raise
            # The connection was lost mid-read (a server restart, a reset): once more, so a
            # restart costs the time server selection waits for the server to answer again,
            # not an exception. Still down after that: StorageUnavailableError.
            self.reconnects += 1
            return self._find_chunks(query, len(numbers))

    def _find_chunks(self, query: dict[str, Any], count: int) -> dict[int, bytes]:
        # No projection: SecantusDB copies each 255 KiB chunk to project it (~60 us less per
        # uncached sample, ~10% less server CPU over a sequential pass without one), and
        # `_id`/`files_id` add ~60 bytes a chunk. One block: as find_one (one batch, no
        # cursor); a run: the server closes the cursor after the last chunk (a negative
        # limit would cut the answer at one 16 MB batch).
        cursor = self.chunks.find(query, limit=-1 if count == 1 else count)
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

    # -- writes ------------------------------------------------------------------------------
    def _write(self, identifier: str, reader: HashingReader, verify: Verifier) -> None:
        with self._errors(f"storing {identifier!r}"):
            self._ensure_indexes()
        upload.write(self, identifier, reader, verify)

    def _delete_files(self, file_ids: list[Any]) -> None:
        if not file_ids:
            return
        self.files.delete_many({"_id": {"$in": file_ids}})
        self.chunks.delete_many({"files_id": {"$in": file_ids}})
        cache = default_cache()
        for file_id in file_ids:
            cache.discard(self._file_key(file_id))

    def _delete(self, identifier: str) -> bool:
        with self._errors(f"deleting {identifier!r}"):
            ids = [d["_id"] for d in self.files.find({"filename": {"$eq": identifier}}, {"_id": 1})]
            self._delete_files(ids)
        return bool(ids)

    # -- maintenance ---------------------------------------------------------------------------
    def _sweep(self, grace_seconds: float, prefix: str) -> dict[str, int]:
        """Leftovers of crashed uploads (see :func:`datastack.storage._gridfs_upload.sweep`)."""
        return upload.sweep(self, grace_seconds, prefix)

    # -- pickling ------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {
            "mongo": self.mongo,  # raises TypeError for a connector built on a Database object
            "bucket": self.bucket,
            "chunk_size": self.chunk_size,
            "timeout_ms": self.timeout_ms,
            "write_batch_bytes": self.write_batch_bytes,
            "readahead_bytes": self.readahead_bytes,
            "background_readahead": self.background_readahead,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        mongo = state.pop("mongo")
        self.__init__(database=mongo, **state)  # type: ignore[misc]


def _interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is a connection lost under a read (``AutoReconnect``: a reset, a
    closed socket, a primary stepping down), not a server that stopped answering in time."""
    from pymongo.errors import AutoReconnect, NetworkTimeout

    return isinstance(exc, AutoReconnect) and not isinstance(exc, NetworkTimeout)


__all__ = ["DEFAULT_BUCKET", "DEFAULT_CHUNK_SIZE", "GridFSStorageConnector"]

