"""The storage interface: a narrow set of primitives, a validating public API on top.

A backend implements five private primitives (``_open``, ``_write``, ``_exists``, ``_delete``,
``_list``), and ``_sweep`` when crashed writers can leave something behind; the public verbs
validate identifiers once and delegate. Backends never re-validate
and know nothing about file types.
"""

from __future__ import annotations

import abc
import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from datastack.errors import ChecksumError, ConfigurationError, ResourceNotFoundError
from datastack.identifiers import validate_identifier, validate_prefix
from datastack.resources import DEFAULT_CHUNK_SIZE, StreamedResource, as_binary_stream


@dataclass(frozen=True)
class ResourceInfo:
    """What a write produced: identifier, size in bytes and content digests (hex)."""

    identifier: str
    size: int
    sha256: str
    md5: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"identifier": self.identifier, "size": self.size, "sha256": self.sha256}


class InOrder:
    """Calls run one after another on one thread of their own, in the order submitted, with
    at most ``waiting`` of them not yet known to be done (the submitter waits for the oldest
    beyond that: bounded memory); a call's error is raised to the submitter when it waits
    for it. Used as a context manager, leaving drops what has not started."""

    def __init__(self, waiting: int, name: str) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.waiting, self.name = waiting, name
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._futures: list[Any] = []
        self._checked = 0  # futures known to have succeeded

    def __enter__(self) -> InOrder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._futures.append(self._pool.submit(fn, *args))
        while len(self._futures) - self._checked > self.waiting:
            self._futures[self._checked].result()
            self._checked += 1

    def pending(self) -> int:
        """Calls submitted and not done."""
        return sum(1 for future in self._futures[self._checked :] if not future.done())

    def results(self) -> list[Any]:
        """Every call's result, in order, once all are done."""
        return [future.result() for future in self._futures]

    def close(self, *, cancel: bool = True) -> None:
        """Let the thread go: the call running finishes, those not started are dropped
        (``cancel``) or run first."""
        self._pool.shutdown(wait=True, cancel_futures=cancel)


class HashingReader:
    """A read-only stream wrapper that hashes (sha256, optionally md5) and counts what passes.

    >>> import io
    >>> r = HashingReader(io.BytesIO(b"abc"))
    >>> r.read(), r.size, r.sha256[:8]
    (b'abc', 3, 'ba7816bf')
    """

    #: Chunks from this size on are hashed on a thread of the reader's (hashlib lets go of
    #: the GIL), while the caller writes them: a 1 GB copy 1.1 -> 0.6 s before its fsync.
    THREAD_BYTES = 256 * 1024
    #: Chunks waiting for the hashing thread at most (bounds the memory held).
    PENDING = 8

    def __init__(self, stream: IO[bytes], *, md5: bool = False) -> None:
        self._stream = stream
        self._sha256 = hashlib.sha256()
        self._md5 = hashlib.md5(usedforsecurity=False) if md5 else None
        self.size = 0
        self._hashing: InOrder | None = None  # the thread hashing large chunks

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        if data:
            if len(data) >= self.THREAD_BYTES or self._hashing is not None:
                if self._hashing is None:  # once the thread runs, every chunk goes to it
                    self._hashing = InOrder(self.PENDING, "datastack-hash")
                self._hashing.submit(self._update, data)
            else:
                self._update(data)
            self.size += len(data)
        return data

    def _update(self, data: bytes) -> None:
        self._sha256.update(data)
        if self._md5 is not None:
            self._md5.update(data)

    def release(self) -> None:
        """Let the hashing thread go (after a failed write: what is left is not needed)."""
        if self._hashing is not None:
            self._hashing.close()
            self._hashing = None

    def _settle(self) -> None:
        """Every chunk read so far hashed; the thread let go."""
        if self._hashing is not None:
            self._hashing.results()
            self._hashing.close(cancel=False)
            self._hashing = None

    def readable(self) -> bool:
        return True

    def iter_chunks(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Any:
        while True:
            chunk = self.read(chunk_size)
            if not chunk:
                return
            yield chunk

    @property
    def sha256(self) -> str:
        self._settle()
        return self._sha256.hexdigest()

    @property
    def md5(self) -> str | None:
        self._settle()
        return self._md5.hexdigest() if self._md5 is not None else None


class _KnownDigest(HashingReader):
    """A :class:`HashingReader` over bytes whose sha256 the caller computed from them:
    counts what passes, hashes nothing."""

    def __init__(self, stream: IO[bytes], sha256: str) -> None:
        super().__init__(stream)
        self._known = sha256.lower()

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.size += len(data)
        return data

    @property
    def sha256(self) -> str:
        return self._known


Verifier = Callable[[], None]
"""Called by a backend after all bytes are written to the temporary location and before the
resource becomes visible under its identifier. Raises to abort the write."""

Writable = StreamedResource | IO[bytes] | bytes | bytearray | Path


class StorageConnector(abc.ABC):
    """Stores binary resources under identifiers; knows nothing of file types.

    Public verbs (validate, then call the primitives): :meth:`get_resource`,
    :meth:`set_resource`, :meth:`has_resource`, :meth:`delete_resource`,
    :meth:`list_resources`, :meth:`sweep`. Connectors are picklable: they hold configuration
    only and (re)connect lazily in each process.
    """

    #: Short backend name, e.g. ``"file"`` or ``"gridfs"``.
    scheme: str = ""
    #: Whether reads cross a network (cached on local disk, block-aware shuffling).
    remote: bool = False

    # -- public API ------------------------------------------------------------------------
    def get_resource(self, identifier: str) -> StreamedResource:
        """Return a lazy stream over the resource; raises ResourceNotFoundError at once."""
        identifier = validate_identifier(identifier)
        return self._open(identifier)

    def set_resource(
        self,
        identifier: str,
        data: Writable,
        *,
        sha256: str | None = None,
        md5: str | None = None,
        hashed: bool = False,
    ) -> ResourceInfo:
        """Store ``data`` under ``identifier`` atomically, streaming in chunks.

        When ``sha256`` and/or ``md5`` are given, the content is verified before it becomes
        visible; on a mismatch :class:`ChecksumError` is raised and nothing is stored (an
        existing resource of that identifier is left as it was).

        ``hashed=True``: ``data`` is bytes in memory and ``sha256`` the digest the caller
        computed from those very bytes (a raw chunk named by its digest,
        :class:`~datastack.storage.chunked.ChunkSink`), so it is taken as it is, not computed
        a second time.
        """
        identifier = validate_identifier(identifier)
        if hashed and (sha256 is None or md5 is not None
                       or not isinstance(data, (bytes, bytearray, memoryview))):
            raise ValueError("set_resource(hashed=True) takes bytes in memory and their "
                             "sha256 (no md5)")
        stream = as_binary_stream(data)
        close_after = isinstance(data, Path)
        reader = (_KnownDigest(stream, str(sha256)) if hashed
                  else HashingReader(stream, md5=md5 is not None))

        def verify() -> None:
            for algo, expected, actual in (
                ("sha256", sha256, reader.sha256),
                ("md5", md5, reader.md5),
            ):
                if expected is not None and not hmac.compare_digest(
                    expected.lower(), str(actual)
                ):
                    raise ChecksumError(
                        f"{algo} mismatch for {identifier!r}: expected {expected.lower()}, got "
                        f"{actual} ({reader.size} bytes). Nothing was stored; check the source "
                        "or update the checksum."
                    )

        try:
            self._write(identifier, reader, verify)
        except BaseException:
            reader.release()
            raise
        finally:
            if close_after:
                stream.close()
        return ResourceInfo(identifier, reader.size, reader.sha256, reader.md5)

    def adopt_file(self, identifier: str, path: str | os.PathLike[str], *,
                   sha256: str) -> ResourceInfo:
        """Store the file at ``path`` (a file this process wrote, such as a prepared shard)
        under ``identifier`` and take it over: the file at ``path`` is gone afterwards.
        ``sha256`` is its digest, read from the file by the caller. This default stores a
        copy (verified against ``sha256``) and removes the file; a filesystem store on the
        same filesystem moves it in (:meth:`FileStorageConnector.adopt_file`: no copy and no
        second hash of its bytes)."""
        info = self.set_resource(identifier, Path(path), sha256=sha256)
        Path(path).unlink(missing_ok=True)
        return info

    def has_resource(self, identifier: str) -> bool:
        """Whether a resource is stored under ``identifier``."""
        return self._exists(validate_identifier(identifier))

    def delete_resource(self, identifier: str, *, missing_ok: bool = False) -> None:
        """Delete the resource; raises ResourceNotFoundError if absent unless ``missing_ok``."""
        identifier = validate_identifier(identifier)
        if not self._delete(identifier) and not missing_ok:
            raise self._not_found(identifier)

    def list_resources(self, prefix: str = "") -> list[str]:
        """Sorted identifiers starting with ``prefix`` (a plain string prefix)."""
        return sorted(self._list(validate_prefix(prefix)))

    def sweep(self, grace_seconds: float = 3600.0, *, prefix: str = "") -> dict[str, int]:
        """Remove what crashed writers left behind, older than ``grace_seconds``.

        With ``prefix``, only leftovers of writes to identifiers under it (the caller knows no
        writer is live there, e.g. it holds the dataset's lease, and may pass 0). Returns
        counts by kind (e.g. ``{"temporary_files": 2}``); live writers are never touched
        (they refresh what they write within the grace window).
        """
        if not grace_seconds >= 0:
            raise ConfigurationError(f"grace_seconds must be >= 0, got {grace_seconds!r}")
        return self._sweep(float(grace_seconds), validate_prefix(prefix))

    def ping(self, timeout_s: float = 3.0) -> None:
        """Fail within about ``timeout_s`` if the storage cannot be used at all.

        Raises :class:`~datastack.errors.StorageUnavailableError` (server unreachable) or
        :class:`~datastack.errors.ConfigurationError` (e.g. a storage root that is a file).
        """
        return None

    def close(self) -> None:
        """Release connections (a connector reconnects lazily if used again)."""
        return None

    def open_stream(self, identifier: str) -> IO[bytes]:
        """A stream for one sequential read of the whole resource that keeps nothing in
        the process's block cache (what local-cache fills use)."""
        return self.get_resource(identifier)  # type: ignore[return-value]

    def __enter__(self) -> StorageConnector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def uri(self) -> str:
        """The storage URI, with any password redacted."""
        return self._uri()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"

    def _not_found(self, identifier: str) -> ResourceNotFoundError:
        return ResourceNotFoundError(
            f"no resource {identifier!r} in {self.uri}; list what exists with "
            "list_resources(prefix)"
        )

    # -- primitives ------------------------------------------------------------------------
    @abc.abstractmethod
    def _uri(self) -> str:
        """Redacted URI of this storage."""

    @abc.abstractmethod
    def _open(self, identifier: str) -> StreamedResource:
        """Lazy stream; must raise ResourceNotFoundError (via ``_not_found``) if missing."""

    @abc.abstractmethod
    def _write(self, identifier: str, reader: HashingReader, verify: Verifier) -> None:
        """Copy ``reader`` to a temporary location, call ``verify()``, then publish atomically.

        On any exception, remove the temporary data and re-raise.
        """

    @abc.abstractmethod
    def _exists(self, identifier: str) -> bool: ...

    @abc.abstractmethod
    def _delete(self, identifier: str) -> bool:
        """Delete; return False when nothing was stored under ``identifier``."""

    @abc.abstractmethod
    def _list(self, prefix: str) -> list[str]: ...

    def _sweep(self, grace_seconds: float, prefix: str) -> dict[str, int]:
        """Remove leftovers of crashed writers (default: a backend that leaves none)."""
        return {}
