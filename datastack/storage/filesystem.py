"""Filesystem storage: one file per resource under a root folder, written atomically.

A write goes to a temporary file in the destination folder, is fsynced, verified, then moved
into place with ``os.replace`` (atomic on POSIX) and the folder is fsynced: a crash leaves
either the old file or the new one under the identifier, never a half. Temporary files are
named ``.tmp-<random>.`` -- a trailing dot no valid identifier can have -- so they are never
listed and never collide with a resource; :meth:`FileStorageConnector.sweep` removes the
leftovers of crashed writers.

>>> import tempfile
>>> store = FileStorageConnector(tempfile.mkdtemp())
>>> store.set_resource("iris/v1/data.csv", b"5.1,3.5,1.4,0.2,setosa\\n").size
23
>>> store.list_resources("iris/")
['iris/v1/data.csv']
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Any

from datastack._fs import TEMP_PREFIX, Writeback, atomic_write, fsync_dir, is_temporary_name
from datastack._uri import StorageLocation
from datastack.errors import ConfigurationError, InvalidIdentifierError, StorageError
from datastack.identifiers import validate_identifier
from datastack.resources import DEFAULT_CHUNK_SIZE, StreamedResource
from datastack.storage.base import HashingReader, ResourceInfo, StorageConnector, Verifier

RESOURCES_DIR = "resources"


class FileStorageConnector(StorageConnector):
    """Store resources as files under ``root`` (created on the first write).

    Parameters
    ----------
    root:
        The folder holding the resources; identifier ``a/b.h5`` is stored as ``root/a/b.h5``.
    fsync:
        Flush file and folder to disk before a write returns (default True; turn off only
        for scratch stores).

    Example
    -------
    >>> import tempfile
    >>> store = FileStorageConnector(tempfile.mkdtemp())
    >>> _ = store.set_resource("a/b.bin", b"abc")
    >>> with store.get_resource("a/b.bin") as res:
    ...     res.read()
    b'abc'
    """

    scheme = "file"

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        root_str = os.fspath(root)
        if not root_str or "\x00" in root_str:
            raise ConfigurationError(f"storage root {root_str!r} must be a non-empty path")
        self.root = Path(os.path.abspath(root_str))
        self.fsync = fsync

    @classmethod
    def from_location(cls, location: StorageLocation) -> FileStorageConnector:
        """The connector for a parsed ``file`` storage URI (used by ``storage.connect``).

        Resources live in ``<path>/resources``; the filesystem catalog uses ``<path>/catalog``.
        """
        if location.kind != "file" or location.path is None:
            raise ConfigurationError(
                f"expected a path or file:// URI, got {location.redacted!r} ({location.kind})"
            )
        return cls(location.path / RESOURCES_DIR)

    # -- paths ---------------------------------------------------------------------------------
    def _path(self, identifier: str) -> str:
        """The absolute path of ``identifier``; refuses anything resolving outside the root."""
        root = os.path.realpath(self.root)
        path = os.path.join(root, *identifier.split("/"))
        real = os.path.realpath(path)
        if os.path.commonpath([root, real]) != root or real == root:
            raise InvalidIdentifierError(
                f"identifier {identifier!r} resolves to {real!r}, outside the storage root "
                f"{root!r} (a symbolic link?); nothing was read or written"
            )
        return path

    def _uri(self) -> str:
        return self.root.as_uri()

    def ping(self, timeout_s: float = 3.0) -> None:
        """The storage folder must be a folder (or not exist yet: created on the first write)."""
        for folder in (self.root, self.root.parent):
            if folder.exists() and not folder.is_dir():
                raise ConfigurationError(
                    f"storage root {folder} is not a folder; point --storage (or "
                    "$DATASTACK_STORAGE) at a folder, or at mongodb://host/DBNAME"
                )

    # -- primitives ----------------------------------------------------------------------------
    def _open(self, identifier: str) -> StreamedResource:
        path = self._path(identifier)
        try:
            if os.path.isfile(path):
                return StreamedResource.from_path(identifier, path)
        except FileNotFoundError:  # deleted between the check and the size lookup
            pass
        raise self._not_found(identifier)

    def _exists(self, identifier: str) -> bool:
        return os.path.isfile(self._path(identifier))

    def adopt_file(self, identifier: str, path: str | os.PathLike[str], *,
                   sha256: str) -> ResourceInfo:
        """Move the file at ``path`` in under ``identifier``: flushed to disk (unless
        ``fsync=False``), renamed into place (atomic: a reader sees no half) and the folder
        flushed; no copy and no second hash of its bytes (``sha256`` is the caller's, who
        read the file: a prepared shard). A file on another filesystem is copied, verified
        and removed (the default)."""
        identifier = validate_identifier(identifier)
        target = self._path(identifier)
        source = os.fspath(path)
        folder = os.path.dirname(target)
        try:
            size = os.stat(source).st_size
            if os.path.isdir(target):
                raise IsADirectoryError(errno.EISDIR, "a folder of other resources", target)
            if self.fsync:
                fd = os.open(source, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            os.makedirs(folder, exist_ok=True)
            os.replace(source, target)
        except OSError as exc:
            if exc.errno == errno.EXDEV:  # another filesystem: a copy
                return super().adopt_file(identifier, path, sha256=sha256)
            raise StorageError(
                f"could not move {source!r} in as {identifier!r} under {self.root}: "
                f"{exc.strerror or exc}; nothing was stored under that identifier"
            ) from exc
        if self.fsync:
            fsync_dir(folder)
        return ResourceInfo(identifier, size, sha256.lower())

    def _write(self, identifier: str, reader: HashingReader, verify: Verifier) -> None:
        path = self._path(identifier)

        def disk_error(exc: OSError) -> StorageError:
            if isinstance(exc, (FileExistsError, NotADirectoryError)):
                return StorageError(
                    f"cannot store {identifier!r}: a parent of {os.path.dirname(path)!r} is a "
                    f"file ({exc.strerror}); choose another identifier"
                )
            return StorageError(
                f"could not store {identifier!r} under {self.root}: {exc.strerror or exc}; "
                "the temporary file was removed and nothing was stored"
            )

        with atomic_write(path, fsync=self.fsync, on_error=disk_error) as out:
            writeback = Writeback(out) if self.fsync else None
            while True:
                chunk = reader.read(DEFAULT_CHUNK_SIZE)  # source errors propagate as they are
                if not chunk:
                    break
                try:
                    out.write(chunk)
                    if writeback is not None:
                        writeback.wrote(len(chunk))
                except OSError as exc:
                    raise disk_error(exc) from exc
            verify()
            if os.path.isdir(path):
                raise StorageError(
                    f"cannot store {identifier!r}: {path!r} is a folder of other resources; "
                    "choose another identifier"
                )

    def _delete(self, identifier: str) -> bool:
        path = self._path(identifier)
        if not os.path.isfile(path):
            return False
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        self._prune_empty_folders(os.path.dirname(path))
        return True

    def _prune_empty_folders(self, folder: str) -> None:
        root = os.path.realpath(self.root)
        while os.path.realpath(folder) != root and folder.startswith(root):
            try:
                os.rmdir(folder)
            except OSError:
                return
            folder = os.path.dirname(folder)

    def _list(self, prefix: str) -> list[str]:
        root = os.path.realpath(self.root)
        # Start the walk at the deepest folder the prefix names.
        folder_part = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = os.path.join(root, *folder_part.split("/")) if folder_part else root
        if not os.path.isdir(start):
            return []
        found: list[str] = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
            rel_dir = os.path.relpath(dirpath, root)
            for name in filenames:
                if is_temporary_name(name):
                    continue
                full = os.path.join(dirpath, name)
                if os.path.islink(full) or not os.path.isfile(full):
                    continue
                identifier = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
                if identifier.startswith(prefix):
                    found.append(identifier)
        return found

    # -- maintenance ---------------------------------------------------------------------------
    def _sweep(self, grace_seconds: float, prefix: str) -> dict[str, int]:
        """Remove temporary files not modified for ``grace_seconds``.

        Temporary files are the leftovers of writers that crashed (SIGKILL, power loss) before
        the rename. A live writer keeps touching its file, so a grace window of minutes is safe.
        """
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = os.path.join(self.root, *folder.split("/")) if folder else str(self.root)
        if not os.path.isdir(start):
            return {"temporary_files": 0}
        cutoff = time.time() - grace_seconds
        removed = 0
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
            for name in filenames:
                if not is_temporary_name(name):
                    continue
                full = os.path.join(dirpath, name)
                try:
                    if os.lstat(full).st_mtime <= cutoff:
                        os.unlink(full)
                        removed += 1
                except FileNotFoundError:
                    continue
        return {"temporary_files": removed}

    # -- pickling ------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {"root": str(self.root), "fsync": self.fsync}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"], fsync=state["fsync"])  # type: ignore[misc]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FileStorageConnector) and other.root == self.root

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.root))


__all__ = ["TEMP_PREFIX", "FileStorageConnector", "is_temporary_name"]
