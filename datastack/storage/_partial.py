"""A local copy being filled block by block, shared by the fill and the readers of a process.

With the local disk cache on, the first epoch over GridFS used to move the file twice: the
background fill (:meth:`~datastack.storage.diskcache.DiskCache.fill_blocks`) read it once and
the epoch's reads fetched the same chunks again. Now the fill writes each block into its
temporary file at the block's offset, and a reader's fetch (:class:`SharedCopyFetch`, what
GridFS readers use) first takes the blocks already written there and writes the blocks it
fetches into it, so each block crosses the network once: whoever needs it first fetches it
(the block cache's single-flight also covers fetches in flight). After the fill, the verified
copy keeps serving the readers already open in this process. A forked child starts with no
copies (it fetches for itself, as before).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Fetch = Callable[[Sequence[int]], Mapping[int, bytes]]

#: Bytes the fill asks for per query (and hashes per read), as a sequential stream does.
WINDOW_BYTES = 8 * 1024 * 1024
_COPIES: dict[Hashable, PartialCopy] = {}
_LOCK = threading.Lock()


def _forget_after_fork() -> None:
    global _LOCK
    _LOCK = threading.Lock()
    _COPIES.clear()  # the parent's copies are not this process's to write


os.register_at_fork(after_in_child=_forget_after_fork)


@dataclass(frozen=True)
class BlockSource:
    """A stored resource as blocks: ``fetch(numbers) -> {n: bytes}`` of ``block_size`` bytes
    (GridFS: its chunks); ``key`` is the block cache's key of the file."""

    key: Hashable
    size: int
    block_size: int
    fetch: Fetch


class PartialCopy:
    """Blocks of one resource written into a file (``fd``, read back through ``rfd``) at
    ``n * block_size``."""

    def __init__(self, fd: int, rfd: int, size: int, block_size: int) -> None:
        self.fd, self.rfd, self.size, self.block_size = fd, rfd, size, block_size
        self._have = np.zeros(-(-size // block_size), dtype=bool)
        self._lock = threading.Lock()

    def missing(self, numbers: Sequence[int]) -> list[int]:
        have = self._have
        return [n for n in numbers if not have[n]]

    def complete(self) -> bool:
        return bool(self._have.all())

    def length(self, n: int) -> int:
        """The exact length of block ``n``."""
        return min(self.block_size, self.size - n * self.block_size)

    def take(self, numbers: Sequence[int]) -> dict[int, bytes]:
        """The blocks of ``numbers`` already written (read back from the file)."""
        out: dict[int, bytes] = {}
        with self._lock:  # the reading fd is not closed (nor its number reused) meanwhile
            if self.rfd < 0:
                return out
            for n in numbers:
                if self._have[n]:
                    data = os.pread(self.rfd, self.length(n), n * self.block_size)
                    if len(data) == self.length(n):
                        out[n] = data
        return out

    def put(self, blocks: Mapping[int, bytes]) -> dict[int, bytes]:
        """Write fetched blocks into the file; returns those of their exact lengths (a short
        or long block is neither written nor returned: its reader fetches it again and gets
        the storage's own error)."""
        good = {n: d for n, d in blocks.items() if len(d) == self.length(n)}
        with self._lock:
            for n, data in good.items():
                if self.fd >= 0 and not self._have[n]:
                    os.pwrite(self.fd, data, n * self.block_size)
                    self._have[n] = True
        return good


    def finish(self) -> None:
        """No more writes (the copy is complete and verified): close the writing fd."""
        with self._lock:
            fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def close(self) -> None:
        """No more reads either: close both descriptors (the copy is no longer shared)."""
        self.finish()
        with self._lock:
            rfd, self.rfd = self.rfd, -1
        if rfd >= 0:
            os.close(rfd)


def copy_blocks(
    fd: int,
    path: str,
    source: BlockSource,
    sha256: str,
    stop: threading.Event | None,
    beat: Callable[[], None],
) -> tuple[int, str]:
    """Write ``source`` into the temporary ``path`` (open as ``fd``) block by block, sharing
    it with this process's readers meanwhile; ``(bytes, sha256)`` of what was written, hashed
    from the file. A copy of the expected ``sha256`` stays shared (read-only) for the readers
    already open (until the next fill of the same key replaces it); otherwise, or on an
    error, it is unshared and closed (reads hold the copy's lock, so no reused fd number is
    read)."""
    from datastack.errors import StorageError
    from datastack.storage.cache import default_cache

    rfd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    copy = PartialCopy(fd, rfd, source.size, source.block_size)
    try:
        os.ftruncate(fd, source.size)
        share(source.key, copy)
        shared, cache = SharedCopyFetch(source.key, source.fetch), default_cache()
        count, per = len(copy._have), max(1, WINDOW_BYTES // source.block_size)
        for lo in range(0, count, per):
            if stop is not None and stop.is_set():
                raise StorageError("fill stopped (interpreter exit)")
            missing = copy.missing(range(lo, min(count, lo + per)))
            if missing:  # single-flight with the readers' fetches of the same blocks
                copy.put(cache.fetch_once(source.key, missing, shared))
            beat()
        os.fsync(fd)
        digest = hashlib.sha256()
        for at in range(0, source.size, WINDOW_BYTES):
            digest.update(os.pread(rfd, min(WINDOW_BYTES, source.size - at), at))
        copy.finish()
        actual = digest.hexdigest()
        if actual != sha256 or not copy.complete():
            unshare(source.key, copy)
            copy.close()
        return source.size if copy.complete() else -1, actual
    except BaseException:
        unshare(source.key, copy)
        copy.close()
        raise


def share(key: Hashable, copy: PartialCopy) -> None:
    """Readers of ``key`` in this process use ``copy`` from now on."""
    with _LOCK:
        old, _COPIES[key] = _COPIES.get(key), copy
    if old is not None and old is not copy:
        old.close()  # one copy a resource: a replaced one holds no descriptor (nor disk space)


def unshare(key: Hashable, copy: PartialCopy) -> None:
    with _LOCK:
        if _COPIES.get(key) is copy:
            del _COPIES[key]


class SharedCopyFetch:
    """A reader's fetch that goes through the process's partial copy of the file, if any."""

    def __init__(self, key: Hashable, inner: Fetch) -> None:
        self.key, self.inner = key, inner

    def __call__(self, numbers: Sequence[int]) -> Mapping[int, bytes]:
        copy = _COPIES.get(self.key)
        if copy is None:
            return self.inner(numbers)
        found = copy.take(numbers)
        rest = [n for n in numbers if n not in found]
        if rest:
            found.update(copy.put(self.inner(rest)))  # blocks of the right length only
        return found


__all__ = ["BlockSource", "PartialCopy", "SharedCopyFetch", "copy_blocks", "share", "unshare"]
