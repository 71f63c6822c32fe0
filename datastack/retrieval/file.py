"""Retrieve ``file://`` URLs and local paths into a StorageConnector, verified like downloads.

A folder is copied as one deterministic tar archive of its files (:mod:`.folder`).

>>> import hashlib, pathlib, tempfile
>>> from datastack.storage import connect                            # doctest: +SKIP
>>> src = pathlib.Path(tempfile.mkdtemp()) / "a.bin"; _ = src.write_bytes(b"abc")
>>> d = ResourceDefinition("demo/a.bin", src.as_uri(),
...                        sha256=hashlib.sha256(b"abc").hexdigest())
>>> FileRetriever(connect(tempfile.mkdtemp())).retrieve([d])        # doctest: +SKIP
['demo/a.bin']
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import formatdate
from pathlib import Path
from stat import S_ISDIR, S_ISREG
from typing import IO, TYPE_CHECKING, Any, cast
from urllib.parse import unquote, urlsplit

from datastack._uri import redact
from datastack.errors import ChecksumError, RetrievalError, UnsupportedSchemeError
from datastack.retrieval.base import (
    ResourceDefinition,
    SourceInfo,
    check_scheme,
    max_source_bytes,
)
from datastack.retrieval.folder import FolderTar

if TYPE_CHECKING:  # pragma: no cover
    from datastack.storage.base import StorageConnector

logger = logging.getLogger("datastack.retrieval")


def local_path(source: str) -> str:
    """The filesystem path of a ``file://`` URL or plain path; refuses ``file://host/...``.

    >>> local_path("file:///data/x%20y.csv")
    '/data/x y.csv'
    >>> local_path("file://fileserver/share/x.csv")
    Traceback (most recent call last):
    ...
    datastack.errors.UnsupportedSchemeError: file URL 'file://fileserver/share/x.csv' names \
host 'fileserver': ...
    """
    if check_scheme(source) != "file":
        raise UnsupportedSchemeError(
            f"FileRetriever reads file:// URLs and local paths only, got {redact(source)!r}; "
            "use HTTPRetriever or retriever_for(definitions, storage)"
        )
    if "://" not in source:
        return source
    parts = urlsplit(source)
    if parts.netloc not in {"", "localhost"}:
        raise UnsupportedSchemeError(
            f"file URL {redact(source)!r} names host {parts.netloc!r}: only local files are "
            "read (file:///absolute/path); mount the share and use its local path"
        )
    return unquote(parts.path)


class _Bounded(io.RawIOBase):
    """A file read up to the size it had when opened: a file that grows while being read (a
    log, a pseudo-file) fails instead of filling the storage."""

    def __init__(self, raw: Any, size: int, shown: str) -> None:
        super().__init__()
        self._raw, self._left, self._shown = raw, size, shown

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        want = self._left if size is None or size < 0 else min(size, self._left)
        data = self._raw.read(want) if want else b""
        self._left -= len(data)
        if self._left == 0 and want == 0 and self._raw.read(1):
            raise RetrievalError(
                f"{self._shown} grew while it was copied; copy a file that is not being written"
            )
        return bytes(data)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(memoryview(buffer)))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def fileno(self) -> int:
        return int(self._raw.fileno())

    def close(self) -> None:
        self._raw.close()
        super().close()


class FileRetriever:
    """Copies local files into ``storage``, verifying checksums before they become visible.

    The copy streams in chunks (bounded memory); size and mtime are reported in
    :class:`~datastack.retrieval.base.SourceInfo` (mtime as an HTTP-date in ``last_modified``).
    """

    def __init__(self, storage: StorageConnector, *, deadline: float | None = None) -> None:
        self.storage = storage
        self.deadline = deadline

    def retrieve(self, definitions: Iterable[ResourceDefinition]) -> list[str]:
        """Copy, verify and store each definition; return the identifiers in order."""
        return [info.identifier or "" for info in self.retrieve_with_info(definitions)]

    def retrieve_with_info(self, definitions: Iterable[ResourceDefinition]) -> list[SourceInfo]:
        """Like :meth:`retrieve`, returning size and mtime of each source."""
        defs = list(definitions)
        paths = [local_path(d.source) for d in defs]
        return [self._copy(d, p) for d, p in zip(defs, paths, strict=True)]

    def _copy(self, definition: ResourceDefinition, path: str) -> SourceInfo:
        shown = redact(definition.source)
        handle, mtime, etag = _open_source(path, shown)
        with handle:
            try:
                stored = self.storage.set_resource(
                    definition.identifier,
                    cast("IO[bytes]", handle),
                    sha256=definition.sha256,
                    md5=definition.md5,
                )
            except ChecksumError as exc:
                raise ChecksumError(f"copy of {shown} failed verification: {exc}") from None
        logger.info("copied %s (%d bytes) to %s", shown, stored.size, stored.identifier)
        return SourceInfo(
            url=shown,
            size=stored.size,
            etag=etag,
            last_modified=formatdate(mtime, usegmt=True),
            sha256=stored.sha256,
            md5=stored.md5,
            retrieved_at=datetime.now(UTC),
            identifier=stored.identifier,
        )


def _open_source(path: str, shown: str) -> tuple[io.RawIOBase, float, str | None]:
    """A bounded stream of a file source, or the tar stream of a folder source; its mtime
    and, for a folder, its ETag (:func:`~datastack.retrieval.folder.folder_etag`)."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below
        fd = os.open(os.path.realpath(path), os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise RetrievalError(
            f"cannot read {shown}: {exc.strerror or exc}; check the path exists and is a "
            "readable file or folder"
        ) from None
    stat = os.fstat(fd)
    if S_ISDIR(stat.st_mode):
        os.close(fd)
        folder = FolderTar(Path(path), shown)
        size, mtime, handle = folder.size, folder.mtime, cast("io.RawIOBase", folder)
        etag: str | None = folder.etag
    elif not S_ISREG(stat.st_mode):
        os.close(fd)
        raise RetrievalError(
            f"cannot read {shown}: it is a device, FIFO or socket, not a regular file or a "
            "folder; file sources must be regular files or folders"
        )
    else:
        os.set_blocking(fd, True)
        size, mtime, etag = stat.st_size, stat.st_mtime, file_etag(stat)
        handle = _Bounded(os.fdopen(fd, "rb"), stat.st_size, shown)
    limit = max_source_bytes()
    if size > limit:
        handle.close()
        raise RetrievalError(
            f"cannot read {shown}: {size} bytes is over the limit of {limit} bytes for one "
            "source; nothing was stored. Raise DATASTACK_MAX_SOURCE_BYTES if the source "
            "really is that large"
        )
    return handle, mtime, etag


def file_etag(stat: os.stat_result) -> str:
    """The validator of a file source: its size and its modification time in nanoseconds
    (a rewrite within the same second changes it on any filesystem with sub-second times)."""
    return f'"file-{stat.st_size}-{stat.st_mtime_ns}"'


def file_changed(
    path: str, shown: str, *, etag: str | None, last_modified: str | None,
    sha256: str | None = None,
) -> tuple[bool | None, str, str]:
    """``(changed, etag, last_modified)`` of the file at ``path`` against what was recorded.

    A different size or nanosecond mtime (``etag``, see :func:`file_etag`) means changed.
    The same size and mtime are ambiguous (a rewrite within the filesystem's timestamp
    granularity, or an mtime set back with ``os.utime``): with the ``sha256`` recorded of the
    previous copy (tracked sources), the file is read once and hashed to decide; without it,
    the same size and mtime count as unchanged. Records made before the nanosecond
    validator compare ``last_modified`` (whole seconds) the same way.
    """
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise RetrievalError(f"cannot stat {shown}: {exc.strerror}") from None
    tag, now = file_etag(stat), formatdate(stat.st_mtime, usegmt=True)
    if etag is not None and etag.startswith('"file-'):
        if etag != tag:
            return True, tag, now
    elif last_modified is None:
        return None, tag, now
    elif now != last_modified:
        return True, tag, now
    # same size and mtime (or, for an older record, the same second): only the bytes can tell
    if sha256 is None or not S_ISREG(stat.st_mode):
        return False, tag, now
    return _sha256_of(path, shown) != sha256.lower(), tag, now


def _sha256_of(path: str, shown: str) -> str:
    import hashlib

    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        raise RetrievalError(f"cannot read {shown}: {exc.strerror}") from None


def make_retriever(storage: StorageConnector, options: dict[str, Any]) -> FileRetriever:
    """The retriever of ``file://`` URLs and paths (``retrieval.RETRIEVERS`` entry); of the
    download options only ``deadline`` applies."""
    return FileRetriever(storage, deadline=options.get("deadline"))
