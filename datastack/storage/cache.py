"""A read-through block cache: an LRU of fixed-size blocks, bounded in bytes, per process.

Remote storage (GridFS) answers one query per round trip, so random access must not go
through a cursor that is thrown away on every seek. Instead a resource is cut into fixed-size
*blocks* (for GridFS: exactly its chunks) and read through a process-wide LRU of blocks:
:class:`BlockCache` is that LRU, shared by every reader in the process (the key of a block
includes the identity of the file it belongs to). The seekable reader built on it is
:class:`datastack.storage.reader.BlockReader`.

>>> cache = BlockCache(max_bytes=2048)
>>> cache.put(("f", 0), b"x" * 1024); cache.put(("f", 1), b"y" * 1024)
>>> cache.put(("f", 2), b"z" * 1024)      # evicts the least recently used block
>>> ("f", 0) in cache, cache.nbytes
(False, 2048)
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence

from datastack._env import env_size, parse_size
from datastack.errors import ConfigurationError

DEFAULT_CACHE_BYTES = 256 * 1024 * 1024
CACHE_BYTES_ENV = "DATASTACK_CACHE_BYTES"

_ALL_CACHES: weakref.WeakSet[BlockCache] = weakref.WeakSet()


class Flight:
    """One fetch of blocks in progress: readers that need its blocks wait for it
    (:meth:`BlockCache.begin_fetch`) instead of fetching them again. Held (its lock taken)
    until the fetch ends: a lock costs far less than an Event on the single-read path."""

    __slots__ = ("_held", "blocks")

    def __init__(self) -> None:
        self._held = threading.Lock()
        self._held.acquire()
        self.blocks: dict[int, bytes] = {}  # what the fetch brought (empty if it failed)

    def wait(self) -> None:
        """Return once the fetch has ended."""
        with self._held:
            pass

    def end(self) -> None:
        self._held.release()


class BlockCache:
    """A thread-safe LRU of blocks, bounded by the total bytes it holds.

    Keys are ``(file_key, block_number)`` tuples. A block larger than the whole budget is
    never stored. ``max_bytes=0`` disables caching (readers still work).

    Fetches are single-flight: a reader about to fetch blocks registers them
    (:meth:`begin_fetch`); another reader (or thread) that needs one of them meanwhile waits
    for that fetch instead of fetching the block again, whatever the timing.

    >>> cache = BlockCache(max_bytes=10)
    >>> cache.put(("f", 0), b"12345"); cache.put(("f", 1), b"67890"); cache.put(("f", 2), b"x")
    >>> cache.get(("f", 0)) is None, cache.nbytes            # the oldest block was evicted
    (True, 6)
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if max_bytes < 0:
            raise ConfigurationError(f"cache size must be >= 0 bytes, got {max_bytes}")
        self._max_bytes = int(max_bytes)
        self._blocks: OrderedDict[Hashable, bytes] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.generation = 0  # bumped by clear()/discard(): readers drop their own blocks too
        self._flights: dict[Hashable, Flight] = {}  # (file_key, n) -> the fetch bringing it
        self.flight_waits = 0  # reads that waited for a fetch in flight instead of fetching
        _ALL_CACHES.add(self)

    @property
    def max_bytes(self) -> int:
        """The budget in bytes."""
        return self._max_bytes

    @property
    def nbytes(self) -> int:
        """Bytes currently held."""
        return self._nbytes

    def __len__(self) -> int:
        return len(self._blocks)

    def resize(self, max_bytes: int) -> None:
        """Change the budget, evicting the least recently used blocks if needed."""
        if max_bytes < 0:
            raise ConfigurationError(f"cache size must be >= 0 bytes, got {max_bytes}")
        with self._lock:
            self._max_bytes = int(max_bytes)
            self._evict()

    def get(self, key: Hashable) -> bytes | None:
        """The block stored under ``key`` (marking it recently used), or None."""
        with self._lock:
            data = self._blocks.get(key)
            if data is None:
                self.misses += 1
                return None
            self._blocks.move_to_end(key)
            self.hits += 1
            return data

    def get_many(self, file_key: Hashable, numbers: Sequence[int]) -> dict[int, bytes]:
        """``{n: block}`` of the blocks ``(file_key, n)`` present (marked recently used):
        :meth:`get` for many blocks under one lock."""
        found: dict[int, bytes] = {}
        with self._lock:
            blocks = self._blocks
            for n in numbers:
                key = (file_key, n)
                data = blocks.get(key)
                if data is not None:
                    blocks.move_to_end(key)
                    found[n] = data
            self.hits += len(found)
            self.misses += len(numbers) - len(found)
        return found

    def begin_fetch(
        self, file_key: Hashable, numbers: Sequence[int]
    ) -> tuple[Flight | None, list[int], dict[int, Flight]]:
        """Register a fetch of the blocks ``numbers`` of ``file_key``.

        Returns ``(flight, mine, others)``: ``mine`` are the numbers the caller fetches now
        (under ``flight``, None when there are none; finish it with :meth:`end_fetch`),
        ``others`` maps the numbers already being fetched by someone else to their flight
        (``flight.wait()``, then take ``flight.blocks``).
        """
        mine: list[int] = []
        others: dict[int, Flight] = {}
        flight = Flight()
        with self._lock:
            flights = self._flights
            for n in numbers:
                other = flights.get((file_key, n))
                if other is None:
                    flights[(file_key, n)] = flight
                    mine.append(n)
                else:
                    others[n] = other
            self.flight_waits += bool(others)
        return (flight if mine else None), mine, others

    def end_fetch(
        self, file_key: Hashable, flight: Flight, numbers: Sequence[int], blocks: dict[int, bytes]
    ) -> None:
        """Finish a fetch begun with :meth:`begin_fetch` (``blocks``: what it brought, empty
        when it failed) and wake its waiters."""
        flight.blocks = blocks
        with self._lock:
            for n in numbers:
                if self._flights.get((file_key, n)) is flight:
                    del self._flights[(file_key, n)]
        flight.end()

    def fetch_once(
        self,
        file_key: Hashable,
        numbers: Sequence[int],
        fetch: Callable[[list[int]], Mapping[int, bytes]],
    ) -> dict[int, bytes]:
        """``{n: block}`` for ``numbers``: ``fetch`` is called for those nobody is fetching
        right now; the others are taken from the fetch in flight once it is done (a failed
        one is fetched here again, so its error is raised here)."""
        flight, mine, others = self.begin_fetch(file_key, numbers)
        out: dict[int, bytes] = {}
        if flight is not None:
            try:
                out = dict(fetch(mine))
            finally:
                self.end_fetch(file_key, flight, mine, out)
        for n, other in others.items():
            other.wait()
            if (data := other.blocks.get(n)) is not None:
                out[n] = data
        failed = [n for n in others if n not in out]
        if failed:
            out.update(fetch(failed))
        return out

    def __contains__(self, key: Hashable) -> bool:
        return key in self._blocks

    def put(self, key: Hashable, data: bytes) -> None:
        """Store a block, evicting least recently used blocks beyond the budget."""
        size = len(data)
        with self._lock:
            old = self._blocks.pop(key, None)
            if old is not None:
                self._nbytes -= len(old)
            if size > self._max_bytes:
                return
            self._blocks[key] = data
            self._nbytes += size
            self._evict()

    def discard(self, file_key: Hashable) -> int:
        """Drop every block of one file; return how many were dropped."""
        with self._lock:
            doomed = [k for k in self._blocks if isinstance(k, tuple) and k[0] == file_key]
            for k in doomed:
                self._nbytes -= len(self._blocks.pop(k))
            self.generation += 1
            return len(doomed)

    def clear(self) -> None:
        """Drop every block and reset the counters."""
        with self._lock:
            self._blocks.clear()
            self._nbytes = 0
            self.hits = self.misses = self.evictions = 0
            self.generation += 1

    def stats(self) -> dict[str, int]:
        """Counters: blocks, bytes, max_bytes, hits, misses, evictions."""
        return {
            "blocks": len(self._blocks),
            "bytes": self._nbytes,
            "max_bytes": self._max_bytes,
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
        }

    def _evict(self) -> None:
        while self._nbytes > self._max_bytes and self._blocks:
            _, data = self._blocks.popitem(last=False)
            self._nbytes -= len(data)
            self.evictions += 1

    def _after_fork(self) -> None:
        # A lock held by another thread at fork time would stay locked forever in the child,
        # and the parent's fetches in flight never finish here.
        self._lock = threading.Lock()
        self._flights = {}

    def __repr__(self) -> str:
        return f"<BlockCache {self._nbytes}/{self._max_bytes} bytes, {len(self._blocks)} blocks>"


def _reinit_after_fork() -> None:
    global _DEFAULT_LOCK
    _DEFAULT_LOCK = threading.Lock()
    for cache in list(_ALL_CACHES):
        cache._after_fork()


os.register_at_fork(after_in_child=_reinit_after_fork)

_DEFAULT_CACHE: BlockCache | None = None
_DEFAULT_LOCK = threading.Lock()


def cache_bytes_from_env(environ: Mapping[str, str] | None = None) -> int:
    """The cache budget from ``$DATASTACK_CACHE_BYTES`` (bytes; suffixes K, M, G allowed)."""
    return env_size(CACHE_BYTES_ENV, DEFAULT_CACHE_BYTES, environ)


def default_cache() -> BlockCache:
    """The process-wide block cache (created on first use from ``$DATASTACK_CACHE_BYTES``)."""
    global _DEFAULT_CACHE
    if _DEFAULT_CACHE is None:
        with _DEFAULT_LOCK:
            if _DEFAULT_CACHE is None:
                _DEFAULT_CACHE = BlockCache(cache_bytes_from_env())
    return _DEFAULT_CACHE


def set_cache_bytes(max_bytes: int) -> BlockCache:
    """Resize the process-wide block cache (0 disables it) and return it."""
    cache = default_cache()
    cache.resize(max_bytes)
    return cache


__all__ = [
    "CACHE_BYTES_ENV",
    "DEFAULT_CACHE_BYTES",
    "BlockCache",
    "Flight",
    "cache_bytes_from_env",
    "default_cache",
    "parse_size",
    "set_cache_bytes",
]
