"""A persistent local cache of published resources on disk, content-addressed by sha256.

Remote storage (GridFS) is cached on local disk so that training restarts read nothing
again and a trainer can start with the storage unreachable. Layout under the cache folder
(``$DATASTACK_CACHE_DIR``, default: the user cache folder, e.g. ``~/.cache/datastack``)::

    objects/<aa>/<sha256>        verified copies, named by the digest the catalog records
    objects/<aa>/<sha256>.ok     verification stamp (inode, size, mtime, ctime); mtime = last use
    records/...                  catalog records for offline loads (datastack.offline)
    tmp/.tmp-<random>.           fills in progress;  tmp/.claim-<sha256>: who is filling

Guarantees:

- **never a partial or wrong file**: a fill streams into ``tmp/``, hashing as it writes; the
  size and sha256 must match the catalog's before ``os.replace`` moves it into ``objects/``
  (atomic), so a reader sees no file or a whole verified one. A killed fill leaves only a
  temporary, swept later.
- **verified before use**: a copy is used only when its stamp (written after verification)
  still matches ``stat()``; any write to the file changes its ctime, so a flipped byte makes
  the next use hash it again, and a copy that fails is deleted and fetched again.
- **many processes at once**: no locks. Concurrent fills of one resource each write their own
  temporary and rename it over the same name (identical bytes). A background fill first takes
  a *claim* (``O_EXCL`` marker) so that only one process downloads; a claim not refreshed for
  :data:`CLAIM_STALE_SECONDS` is abandoned. Nobody ever waits on a claim, so a dead process
  (or a network filesystem) can never hang a reader.
- **bounded**: ``$DATASTACK_CACHE_DIR_BYTES`` (default 20 GiB; ``0`` disables the cache);
  least recently used copies are evicted before a fill. A reader that has a copy open keeps
  reading it after eviction (POSIX unlink semantics).

>>> import io, hashlib, tempfile
>>> cache = DiskCache(tempfile.mkdtemp(), max_bytes=1 << 20)
>>> data = b"hello"; sha = hashlib.sha256(data).hexdigest()
>>> cache.path(sha) is None
True
>>> cache.fill(sha, len(data), lambda: io.BytesIO(data)).read_bytes()
b'hello'
>>> cache.path(sha) is not None, cache.usage()
(True, 5)
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import shutil
import stat
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from datastack._env import env_size
from datastack._fs import atomic_write, create_temporary, fsync_dir, is_temporary_name
from datastack.errors import ChecksumError, ConfigurationError, NotCachedError, StorageError
from datastack.storage._partial import BlockSource, copy_blocks
from datastack.storage._regular import file_sha256 as _file_sha256
from datastack.storage._regular import open_regular, read_regular

CACHE_DIR_ENV = "DATASTACK_CACHE_DIR"
CACHE_DIR_BYTES_ENV = "DATASTACK_CACHE_DIR_BYTES"
DEFAULT_CACHE_DIR_BYTES = 20 * 1024**3
#: A claim whose marker was not refreshed for this long belongs to a dead process.
CLAIM_STALE_SECONDS = 60.0
#: Temporaries older than this are leftovers of killed fills (a live fill keeps its mtime).
TEMP_GRACE_SECONDS = 3600.0
FILL_CHUNK_BYTES = 8 * 1024 * 1024

Source = Callable[[], IO[bytes]] | BlockSource
"""Opens a fresh stream over the whole resource (read sequentially, once), or the resource
as blocks (a fill shared with this process's readers: :mod:`datastack.storage._partial`)."""

log = logging.getLogger("datastack.cache")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_STOP_FILLS = threading.Event()
_FILL_THREADS: list[threading.Thread] = []


def default_cache_dir() -> Path:
    """The user cache folder of datastack (platformdirs, else ``$XDG_CACHE_HOME/datastack``)."""
    try:
        import platformdirs
    except ImportError:  # pragma: no cover - platformdirs is a dependency
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return Path(base) / "datastack"
    return Path(platformdirs.user_cache_dir("datastack", appauthor=False))


def _checked_sha256(sha256: str) -> str:
    text = str(sha256).lower()
    if not _SHA256_RE.fullmatch(text):
        raise ConfigurationError(f"expected a sha256 digest (64 hex digits), got {sha256!r:.80}")
    return text


def _stamp_of(st: os.stat_result) -> dict[str, int]:
    return {
        "inode": st.st_ino,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
    }


class DiskCache:
    """Verified copies of resources under ``root``, at most ``max_bytes`` in total.

    Picklable (a folder and a budget): DataLoader workers and spawned processes share it.
    """

    def __init__(self, root: str | os.PathLike[str], max_bytes: int = DEFAULT_CACHE_DIR_BYTES):
        if max_bytes < 0:
            raise ConfigurationError(f"cache size must be >= 0 bytes, got {max_bytes}")
        self.root = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
        self.max_bytes = int(max_bytes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DiskCache | None:
        """The cache ``$DATASTACK_CACHE_DIR`` / ``$DATASTACK_CACHE_DIR_BYTES`` describe, or
        None when disabled (``DATASTACK_CACHE_DIR_BYTES=0``)."""
        env = os.environ if environ is None else environ
        max_bytes = env_size(CACHE_DIR_BYTES_ENV, DEFAULT_CACHE_DIR_BYTES, env)
        if max_bytes == 0:
            return None
        return cls(env.get(CACHE_DIR_ENV, "").strip() or default_cache_dir(), max_bytes)

    # -- paths ---------------------------------------------------------------------------------
    @property
    def records_dir(self) -> Path:
        """Where catalog records for offline use are kept (see :mod:`datastack.offline`)."""
        return self.root / "records"

    @property
    def _tmp_dir(self) -> Path:
        return self.root / "tmp"

    def _object(self, sha256: str) -> Path:
        return self.root / "objects" / sha256[:2] / sha256

    def _stamp(self, sha256: str) -> Path:
        return self.root / "objects" / sha256[:2] / f"{sha256}.ok"

    def _claim(self, sha256: str) -> Path:
        return self._tmp_dir / f".claim-{sha256}"

    # -- reading -------------------------------------------------------------------------------
    def path(self, sha256: str) -> Path | None:
        """The verified local copy of the resource with this digest, or None.

        A copy whose stamp no longer matches (written to, replaced, or never stamped) is
        hashed again first; one that fails is deleted (it will be fetched again).
        """
        sha256 = _checked_sha256(sha256)
        target = self._object(sha256)
        try:
            st = os.lstat(target)  # the entry itself: a symlink is not followed
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):
            log.warning("cached copy %s is not a regular file: removed (a miss)", target)
            self.discard(sha256)
            return None
        if not self._stamp_matches(sha256, st):
            if _file_sha256(target) != sha256:
                log.warning("cached copy %s is corrupt (sha256 mismatch): deleted", target)
                self.discard(sha256)
                return None
            self._write_stamp(sha256, target)
        with contextlib.suppress(OSError):
            os.utime(self._stamp(sha256), follow_symlinks=False)  # last use, for LRU eviction
        return target

    def _stamp_matches(self, sha256: str, st: os.stat_result) -> bool:
        try:
            raw = read_regular(self._stamp(sha256))
            stamp = json.loads(raw) if raw is not None else None
        except (OSError, ValueError):
            return False
        return bool(stamp == _stamp_of(st))

    def _write_stamp(self, sha256: str, target: Path) -> None:
        stamp, path = _stamp_of(os.lstat(target)), self._stamp(sha256)
        with atomic_write(path, fsync=False, on_error=lambda exc: _stamp_error(path, exc)) as out:
            out.write(json.dumps(stamp).encode())

    def open(self, sha256: str, name: str = "") -> IO[bytes]:
        """The verified copy opened for reading; :class:`NotCachedError` when absent."""
        for _ in range(2):  # evicted between the check and the open: look once more
            target = self.path(sha256)
            if target is None:
                break
            if (fh := open_regular(target)) is not None:
                return fh
        raise NotCachedError(
            f"{name or sha256} (sha256 {sha256[:12]}...) is not in the local cache {self.root}; "
            "fetch it while the storage is reachable: `datastack pull NAME --storage URI`"
        )

    def discard(self, sha256: str) -> None:
        """Delete the copy (readers that have it open keep reading it)."""
        sha256 = _checked_sha256(sha256)
        for path in (self._object(sha256), self._stamp(sha256)):
            with contextlib.suppress(FileNotFoundError):
                if not os.path.islink(path) and os.path.isdir(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)

    # -- filling -------------------------------------------------------------------------------
    def fill(
        self,
        sha256: str,
        size: int,
        source: Source,
        *,
        name: str = "",
        stop: threading.Event | None = None,
    ) -> Path:
        """Copy the resource into the cache (unless a verified copy is there); its path.

        The bytes from ``source()`` go to a temporary file; size and sha256 are checked
        before the atomic rename. On a mismatch :class:`ChecksumError` is raised and nothing
        is kept.
        """
        sha256 = _checked_sha256(sha256)
        existing = self.path(sha256)
        if existing is not None:
            return existing
        if size > self.max_bytes:
            raise ConfigurationError(
                f"{name or sha256}: {size} bytes do not fit the local cache "
                f"({CACHE_DIR_BYTES_ENV}={self.max_bytes}); raise the limit"
            )
        self.make_room(size, keep=sha256)
        fd, tmp = create_temporary(str(self._tmp_dir))
        try:
            if isinstance(source, BlockSource):  # block by block, shared with the readers
                written, actual = copy_blocks(fd, tmp, source, sha256, stop,
                                              lambda: self._beat(sha256))
            else:
                written, actual = self._copy(fd, source, sha256, stop)
            if written != size or not hmac.compare_digest(actual, sha256):
                raise ChecksumError(
                    f"{name or 'resource'}: expected {size} bytes with sha256 {sha256}, got "
                    f"{written} bytes with sha256 {actual}; nothing was cached. The stored "
                    "copy does not match its catalog record: republish it"
                )
            target = self._object(sha256)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(tmp, 0o444)
            os.replace(tmp, target)
            fsync_dir(target.parent)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._write_stamp(sha256, target)
        return target

    def _copy(
        self, fd: int, source: Callable[[], IO[bytes]], sha256: str, stop: threading.Event | None
    ) -> tuple[int, str]:
        digest, written, beat = hashlib.sha256(), 0, time.monotonic()
        with os.fdopen(fd, "wb") as out, contextlib.closing(source()) as stream:
            while chunk := stream.read(FILL_CHUNK_BYTES):
                if stop is not None and stop.is_set():
                    raise StorageError(f"fill of {sha256[:12]}... stopped (interpreter exit)")
                out.write(chunk)
                digest.update(chunk)
                written += len(chunk)
                if time.monotonic() - beat > CLAIM_STALE_SECONDS / 4:
                    beat = time.monotonic()
                    self._beat(sha256)
            out.flush()
            os.fsync(out.fileno())
        return written, digest.hexdigest()

    def _beat(self, sha256: str) -> None:
        with contextlib.suppress(OSError):
            os.utime(self._claim(sha256))  # the claim stays fresh while a fill works

    def fill_in_background(
        self, sha256: str, size: int, source: Source, *, name: str = ""
    ) -> threading.Thread | None:
        """Start :meth:`fill` on a thread unless cached or another process is filling it.

        Returns the thread (None when nothing was started). Failures are logged, never
        raised: the reader keeps reading from the storage.
        """
        sha256 = _checked_sha256(sha256)
        if size > self.max_bytes or self.path(sha256) is not None or not self._take_claim(sha256):
            return None

        def run() -> None:
            try:
                self.fill(sha256, size, source, name=name, stop=_STOP_FILLS)
            except Exception as exc:  # a failed fill only costs a later refetch
                log.warning("could not cache %s: %s", name or sha256, exc)
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(self._claim(sha256))

        thread = threading.Thread(target=run, name="datastack-cache-fill", daemon=True)
        _FILL_THREADS.append(thread)
        thread.start()
        return thread

    def _take_claim(self, sha256: str) -> bool:
        claim = self._claim(sha256)
        for _ in range(2):
            try:
                self._tmp_dir.mkdir(parents=True, exist_ok=True)
                fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    age = time.time() - os.stat(claim).st_mtime
                except FileNotFoundError:
                    continue
                if age <= CLAIM_STALE_SECONDS:
                    return False
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(claim)  # its owner died: take over
                continue
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            return True
        return False

    # -- size ----------------------------------------------------------------------------------
    def entries(self) -> list[tuple[float, int, str]]:
        """``(last use, size, sha256)`` of every cached copy, least recently used first."""
        out: list[tuple[float, int, str]] = []
        objects = self.root / "objects"
        for folder in sorted(objects.iterdir()) if objects.is_dir() else ():
            for entry in os.scandir(folder):
                if not _SHA256_RE.fullmatch(entry.name):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    size = entry.stat().st_size
                    try:
                        used = os.stat(self._stamp(entry.name)).st_mtime
                    except FileNotFoundError:
                        used = 0.0
                    out.append((used, size, entry.name))
        return sorted(out)

    def usage(self) -> int:
        """Bytes held by cached copies."""
        return sum(size for _, size, _ in self.entries())

    def make_room(self, size: int, *, keep: str = "") -> list[str]:
        """Evict least recently used copies until ``size`` more bytes fit; what was evicted.

        Also removes temporaries of killed fills older than :data:`TEMP_GRACE_SECONDS`.
        """
        self.sweep()
        entries = self.entries()
        total = sum(s for _, s, _ in entries)
        evicted: list[str] = []
        for _, entry_size, sha256 in entries:
            if total + size <= self.max_bytes:
                break
            if sha256 != keep:
                self.discard(sha256)
                total -= entry_size
                evicted.append(sha256)
        return evicted

    def sweep(self, grace_seconds: float = TEMP_GRACE_SECONDS) -> int:
        """Remove temporaries (and claims) left by killed processes; how many."""
        removed = 0
        cutoff = time.time() - grace_seconds
        folder = self._tmp_dir
        for entry in os.scandir(folder) if folder.is_dir() else ():
            if not (is_temporary_name(entry.name) or entry.name.startswith(".claim-")):
                continue
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def __getstate__(self) -> dict[str, Any]:
        return {"root": str(self.root), "max_bytes": self.max_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"], state["max_bytes"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"DiskCache({str(self.root)!r}, max_bytes={self.max_bytes})"


_WARNED: set[str] = set()


def warn_unusable(cache: DiskCache, exc: OSError) -> None:
    """Warn once per folder that the local cache cannot be used (unwritable, full, ...):
    loads then read from the storage; the cache is only an optimisation."""
    key = str(cache.root)
    if key in _WARNED:
        return
    _WARNED.add(key)
    warnings.warn(
        f"the local cache folder {cache.root} is not usable ({type(exc).__name__}: {exc}); "
        "reading from the storage instead. Free space or fix its permissions, choose another "
        f"folder with {CACHE_DIR_ENV}, or turn the cache off with {CACHE_DIR_BYTES_ENV}=0",
        CacheUnusableWarning,
        stacklevel=3,
    )


class CacheUnusableWarning(UserWarning):
    """The local disk cache folder cannot be read or written; loads read the storage."""


class CachedOpener:
    """Picklable opener: the verified local copy when cached, else ``remote`` (if any).

    Checked at every open, so a DataLoader worker started after a fill finished reads the
    local copy. With no ``remote`` (offline) a missing copy is :class:`NotCachedError`.
    """

    def __init__(
        self,
        cache: DiskCache,
        sha256: str,
        identifier: str,
        remote: Callable[[], IO[bytes]] | None = None,
    ) -> None:
        self.cache = cache
        self.sha256 = _checked_sha256(sha256)
        self.identifier = identifier
        self.remote = remote

    def __call__(self) -> IO[bytes]:
        if self.remote is None:
            return self.cache.open(self.sha256, self.identifier)
        try:
            target = self.cache.path(self.sha256)
            fh = open_regular(target) if target is not None else None
        except OSError as exc:  # an unreadable cache folder: read the storage (#26.18)
            warn_unusable(self.cache, exc)
            fh = None
        return fh if fh is not None else self.remote()


def _stop_fills_at_exit() -> None:
    _STOP_FILLS.set()  # a fill stops at its next chunk and removes its temporary
    for thread in _FILL_THREADS:
        thread.join(timeout=5.0)


atexit.register(_stop_fills_at_exit)

_DEFAULT: tuple[tuple[str, str], DiskCache | None] | None = None


def _stamp_error(path: Path, exc: OSError) -> StorageError:
    kind = "a folder" if path.is_dir() else "not writable"
    return StorageError(
        f"local cache: cannot write the stamp {path} ({exc.strerror or exc}): it is {kind}; "
        "expected a regular file datastack writes. Remove it, or point DATASTACK_CACHE_DIR "
        "at a writable folder"
    )


def default_disk_cache() -> DiskCache | None:
    """The cache of this process's environment (None when disabled); re-read when
    ``$DATASTACK_CACHE_DIR`` or ``$DATASTACK_CACHE_DIR_BYTES`` change."""
    global _DEFAULT
    key = (os.environ.get(CACHE_DIR_ENV, ""), os.environ.get(CACHE_DIR_BYTES_ENV, ""))
    if _DEFAULT is None or _DEFAULT[0] != key:
        _DEFAULT = (key, DiskCache.from_env())
    return _DEFAULT[1]


__all__ = [
    "CACHE_DIR_BYTES_ENV",
    "CACHE_DIR_ENV",
    "DEFAULT_CACHE_DIR_BYTES",
    "CacheUnusableWarning",
    "CachedOpener",
    "DiskCache",
    "default_cache_dir",
    "default_disk_cache",
    "open_regular",
    "read_regular",
    "warn_unusable",
]
