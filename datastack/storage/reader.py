"""A seekable reader over fixed-size blocks (GridFS: the file's chunks), fetched through the
process-wide LRU of blocks (:class:`~datastack.storage.cache.BlockCache`): random access never
goes through a cursor thrown away on every seek. :class:`BlockReader` depends only on a
``fetch(block_numbers) -> {block_number: bytes}`` callable, so it is tested with no I/O (the
model is fsspec's ``caching.py``). Missing blocks of one read are fetched in one call, and
once process-wide (single-flight); when reads turn sequential, the reader reads ahead (from
4x a read of several blocks, else 1 block), doubling the window up to ``readahead_bytes``;
:meth:`BlockReader.prefetch` loads the missing blocks of many byte ranges in one call.

With ``background=True`` (GridFS readers) the next read-ahead windows (up to
``READAHEAD_DEPTH`` per reader, together at most a quarter of the cache budget) are fetched on
a small thread pool while the caller consumes the current one. Those threads touch only
``fetch`` (pymongo) and the cache, never h5py (which calls back into Python from file-like
objects: a deadlock risk). A failed read-ahead is fetched again in the caller's thread, which
raises the error. See docs/performance.md for the measurements.

>>> data = bytes(range(256)) * 40                       # 10240 bytes, blocks of 1024
>>> calls = []
>>> def fetch(numbers):
...     calls.append(list(numbers))
...     return {n: data[n * 1024:(n + 1) * 1024] for n in numbers}
>>> reader = BlockReader(("demo", 1), len(data), 1024, fetch, cache=BlockCache(1 << 20))
>>> _ = reader.seek(1000); reader.read(48) == data[1000:1048]
True
>>> calls                                               # one fetch for the two blocks touched
[[0, 1]]
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np
from numpy.typing import NDArray

from datastack.errors import ConfigurationError, StorageError
from datastack.storage._gather import block_numbers, copy_rows, span_blocks
from datastack.storage._readahead import READAHEAD_DEPTH, READAHEAD_THREADS
from datastack.storage._readahead import readahead_executor as _readahead_executor
from datastack.storage.cache import BlockCache, default_cache

Fetch = Callable[[Sequence[int]], Mapping[int, bytes]]
"""Fetch blocks by number; return ``{number: bytes}`` for every number asked."""

DEFAULT_READAHEAD_BYTES = 8 * 1024 * 1024
_GONE = ("the resource was deleted or replaced while being read, or is corrupt; open it again "
         "with get_resource()")


class BlockReader(io.RawIOBase):
    """A seekable binary reader over fixed-size blocks fetched through a :class:`BlockCache`.

    Parameters
    ----------
    key:
        Identity of the file; blocks are cached under ``(key, block_number)``, shared by
        readers of one key: it changes whenever the content does (GridFS: the file ``_id``).
    size, block_size:
        Total size in bytes; size of every block but the last (GridFS: its ``chunkSize``).
    fetch:
        ``fetch(block_numbers) -> {number: bytes}``, once per read for all missing blocks
        (sorted, unique): every block asked, each of its exact length. Called from read-ahead
        threads too: thread-safe (a pymongo collection is), never calling back into h5py.
    cache:
        The cache to share (default: :func:`default_cache`).
    readahead_bytes:
        Largest read-ahead window once reads turn sequential (0 disables read-ahead); also
        bounds one fetch. Capped further at a quarter of the cache budget.
    background:
        Fetch the next read-ahead windows on background threads (up to ``readahead_depth``
        per reader, all of them together within that quarter). Off with the cache disabled.
    readahead_depth, name:
        Background windows in flight per reader; the name in error messages (identifier).
    """

    def __init__(
        self,
        key: Hashable,
        size: int,
        block_size: int,
        fetch: Fetch,
        *,
        cache: BlockCache | None = None,
        readahead_bytes: int = DEFAULT_READAHEAD_BYTES,
        background: bool = False,
        readahead_depth: int = READAHEAD_DEPTH,
        name: str = "",
    ) -> None:
        super().__init__()
        if block_size <= 0:
            raise ConfigurationError(f"block_size must be positive, got {block_size}")
        if size < 0:
            raise ConfigurationError(f"size must be >= 0, got {size}")
        if readahead_depth < 1:
            raise ConfigurationError(f"readahead_depth must be >= 1, got {readahead_depth}")
        self.key = key
        self.size = int(size)
        self.block_size = int(block_size)
        self.name = name or repr(key)
        self._fetch = fetch
        self._cache = default_cache() if cache is None else cache
        self._nblocks = -(-self.size // self.block_size)
        self._max_window = max(1, readahead_bytes // self.block_size)
        self._readahead = readahead_bytes > 0
        self._background = background and self._readahead
        self._depth = int(readahead_depth) if self._background else 1
        self._pos = 0
        self._last_start = -1
        self._last_end = -1
        self._window = 0  # read-ahead window in blocks; grows while reads are sequential
        self._ahead_end = 0  # first block that read-ahead has not asked for yet
        self._local: dict[int, bytes] = {}  # blocks of the last fetch (works with no cache)
        self._ahead: dict[int, bytes] = {}  # blocks of finished background fetches, unread
        #: fetches in flight, oldest first: read-ahead windows (ranges), prefetch hints (sets)
        self._inflight: list[tuple[range | frozenset[int], Future[dict[int, bytes]]]] = []
        self._pid = os.getpid()
        self._hinted = False  # prefetch hints arrive (a sampler's order): no guessed read-ahead
        self._memo: tuple[int, bytes] | None = None  # the last block of the fast path
        self._generation = self._cache.generation
        self.fetch_calls = 0
        self.background_fetches = 0
        #: Says why a block is missing (set by whoever knows what the file is, e.g. the
        #: version of a dataset that gc deleted); the default blames a deletion or corruption.
        self.explain_gone: Callable[[], str] | None = None
        self._gone: str | None = None

    # -- io ------------------------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._check_open()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._pos + offset
        elif whence == io.SEEK_END:
            target = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence!r}: expected 0, 1 or 2")
        if target < 0:
            raise OSError(f"negative seek position {target} in {self.name}")
        self._pos = target
        return target

    def readinto(self, buffer: Any) -> int:
        self._check_open()
        view = memoryview(buffer).cast("B")
        if self._hinted and self._read_one_block(view):
            return len(view)
        done = 0
        for part in self._parts(len(view)):  # copied group by group: memory stays bounded
            view[done : done + len(part)] = part
            done += len(part)
        return done

    def _read_one_block(self, view: memoryview) -> bool:
        """The fast path of hinted (sampler-driven) readers: a read inside one present block
        is one slice copy, no access tracking; the last such block is kept at hand."""
        start, count, bs = self._pos, len(view), self.block_size
        number = start // bs
        if not count or (start + count - 1) // bs != number or start + count > self.size:
            return False
        if self._generation != self._cache.generation:
            return False  # the slow path drops what the cache dropped
        memo = self._memo
        data = memo[1] if memo is not None and memo[0] == number else self._lookup(number)
        if data is None:
            return False
        self._memo = (number, data)
        offset = start - number * bs
        view[:] = memoryview(data)[offset : offset + count]
        self._pos = start + count
        return True

    def read(self, size: int | None = -1) -> bytes:
        self._check_open()
        if size is None or size < 0:
            size = max(0, self.size - self._pos)
        parts = list(self._parts(size))
        if len(parts) == 1:  # inside one block: a single copy of the slice
            return bytes(parts[0])
        return b"".join(parts)

    def _parts(self, size: int) -> Iterator[memoryview]:
        """Views of the block slices holding the next ``size`` bytes; advances the position."""
        start = self._pos
        count = min(size, self.size - start)
        if count <= 0:
            return
        end = start + count
        bs = self.block_size
        first, last = start // bs, (end - 1) // bs
        self._sync_generation()
        self._note_access(start, end, first, last)
        number = first
        while number <= last:
            group_end = min(last, number + self._max_window - 1)
            ahead = range(0)
            if group_end == last and self._window:
                ahead = range(last + 1, min(self._nblocks, last + 1 + self._window))
            blocks = self._blocks(range(number, group_end + 1), ahead)
            if group_end == last:
                self._schedule_readahead(last)  # overlaps the copy below and the caller's work
            for n in range(number, group_end + 1):
                lo = max(start, n * bs) - n * bs
                hi = min(end, (n + 1) * bs) - n * bs
                yield memoryview(blocks[n])[lo:hi]
            number = group_end + 1
        self._pos = end

    def readall(self) -> bytes:
        return self.read(-1)

    def read_at(self, pieces: Sequence[tuple[int, memoryview]]) -> int:
        """Fill each ``(offset, view)`` with the bytes at ``offset``; returns the bytes copied
        (less only past the end). One lookup and one fetch for the blocks of all pieces; the
        position does not move and no read-ahead is started."""
        self._check_open()
        bs, size = self.block_size, self.size
        self._sync_generation()
        needed = block_numbers([(o, o + len(v)) for o, v in pieces], bs, size)
        blocks = self._blocks(needed, range(0))
        done = 0
        for offset, view in pieces:
            end = min(size, offset + len(view))
            at = offset
            while at < end:
                n = at // bs
                upto = min(end, (n + 1) * bs)
                block = memoryview(blocks[n])
                view[at - offset : upto - offset] = block[at - n * bs : upto - n * bs]
                at = upto
            done += max(0, end - offset)
        return done

    def read_rows(self, offsets: NDArray[np.int64], row_bytes: int, out: memoryview) -> int:
        """Rows of ``row_bytes`` at ``offsets`` (any order) into ``out`` one after the other:
        :meth:`read_at` vectorised (one lookup, one fetch of the missing blocks, one copy per
        row). Returns the bytes copied, 0 when a row lies outside the file."""
        self._check_open()
        if not len(offsets) or offsets.min() < 0 or offsets.max() + row_bytes > self.size:
            return 0
        self._sync_generation()
        needed = span_blocks(offsets, offsets + row_bytes, self.block_size, self.size)
        blocks = self._blocks(needed, range(0))
        copy_rows(blocks, offsets, row_bytes, self.block_size, out)
        return len(offsets) * row_bytes

    def prefetch(
        self, ranges: Iterable[tuple[int, int]], *, wait: bool = True, ahead: bool = False
    ) -> int:
        """Load every missing block covering the byte ranges ``[(start, end), ...]`` at once.

        One ``fetch`` call for all of them (one ``$in`` query on GridFS). Returns how many
        blocks were fetched. Consecutive calls over consecutive ranges (a sequential pass in
        batches) count as sequential access and start read-ahead past the last range.

        With ``wait=False`` the fetch runs on a read-ahead thread (a hint for reads to come,
        e.g. the next batches of a sampler's order) and returns at once; the blocks land in
        the block cache, and a read that needs them waits for that fetch. Ignored without
        background read-ahead or with the cache disabled. With ``ahead=True`` too, the ranges
        are where a sequential pass will come in next (the next shard's first rows): fetched
        as read-ahead, and a read from there continues it (no hints taken over).
        """
        self._check_open()
        if not wait:
            return self._prefetch_later(ranges, ahead)
        spans = [(max(0, int(a)), min(self.size, int(b))) for a, b in ranges]
        spans = [(a, b) for a, b in spans if b > a]
        needed = block_numbers(spans, self.block_size, self.size)
        if not needed:
            return 0
        lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
        self._sync_generation()
        last = (hi - 1) // self.block_size
        # Only a contiguous run of blocks can continue a sequential pass: scattered ranges
        # (a shuffled batch) must not start read-ahead of blocks nobody asked for.
        contiguous = needed[-1] - needed[0] + 1 == len(needed)
        if contiguous:
            self._note_access(lo, hi, lo // self.block_size, last)
        self._collect(needed)
        missing = [n for n in needed if not self._present(n)]
        if missing:
            self._local = self._fetch_checked(missing)
        if contiguous:
            self._schedule_readahead(last)
        return len(missing)

    def _prefetch_later(self, ranges: Iterable[tuple[int, int]], ahead: bool) -> int:
        if not (self._background and self._cache.max_bytes) or self._pid != os.getpid():
            return 0
        # The caller knows the order: from now on it says what to fetch (sequential read-ahead,
        # fooled by the sorted reads of a shuffled batch, would push hinted blocks out).
        self._hinted, self._window = self._hinted or not ahead, 0
        self._sync_generation()
        self._collect_done()
        numbers = block_numbers(ranges, self.block_size, self.size)
        if ahead and numbers and not self._hinted:  # a read at the first block goes on from it
            self._last_start = self._last_end = numbers[0] * self.block_size
            self._window, self._ahead_end = len(numbers), numbers[-1] + 1
        flying = set().union(*(blocks for blocks, _ in self._inflight))
        missing = [n for n in numbers if n not in flying and not self._present(n)]
        if missing:
            future = _readahead_executor().submit(self._fetch_into_cache, missing)
            run = range(missing[0], missing[-1] + 1)
            self._inflight.append((run if len(run) == len(missing) else frozenset(missing), future))
            self.background_fetches += 1
        return len(missing)

    def _fetch_into_cache(self, numbers: list[int]) -> dict[int, bytes]:
        self._fetch_checked(numbers)  # kept by the cache only: its budget bounds them
        return {}

    # -- blocks --------------------------------------------------------------------------------
    def _note_access(self, start: int, end: int, first: int, last: int) -> None:
        """Track sequential access: grow the read-ahead window, or reset it on a random miss.

        A read that is not sequential but finds all its blocks present (an HDF5 metadata
        lookup, a re-read inside the last batch) leaves the sequential stream alone.
        """
        sequential = (
            self._last_start <= start <= self._last_end + self.block_size
            and end > self._last_end >= 0
        )
        if sequential and self._readahead and not self._hinted:
            quarter = self._cache.max_bytes // (4 * self._depth * self.block_size)
            cap = max(1, min(self._max_window, quarter))
            span = last - first + 1  # 4x a read of several blocks (a batch), else 1 (metadata)
            self._window = min(cap, max(4 * span if span > 1 else 1, self._window * 2))
        elif not sequential and all(self._present(n) for n in range(first, last + 1)):
            return
        else:
            self._window = 0
            self._ahead_end = 0
        self._last_start, self._last_end = start, end

    def _sync_generation(self) -> None:
        if self._generation != self._cache.generation:  # the cache was cleared: so are we
            self._generation = self._cache.generation
            self._local, self._ahead, self._memo = {}, {}, None

    def _present(self, n: int) -> bool:
        return n in self._local or n in self._ahead or (self.key, n) in self._cache

    def _lookup(self, n: int) -> bytes | None:
        data = self._local.get(n)
        if data is None:
            data = self._ahead.get(n)
        if data is None:
            data = self._cache.get((self.key, n))
        return data

    def _blocks(self, needed: Sequence[int], ahead: range) -> dict[int, bytes]:
        """The ``needed`` blocks: from the last fetches, the cache, the fetch in flight, or one
        fetch now.

        Read-ahead joins a miss: the missing blocks of ``ahead`` (not already in flight) join
        the fetch of the missing needed ones, so a sequential pass costs one fetch per window
        even without the background thread.
        """
        found: dict[int, bytes] = {}
        missing: list[int] = []
        local, landed = self._local, self._ahead
        for n in needed:
            data = local.get(n) or landed.get(n)
            if data is None:
                missing.append(n)
            else:
                found[n] = data
        if missing:
            found.update(self._cache.get_many(self.key, missing))
            missing = [n for n in missing if n not in found]
        if missing and self._collect(missing):
            for n in missing:
                if (data := self._lookup(n)) is not None:
                    found[n] = data
            missing = [n for n in missing if n not in found]
        if missing:
            extra = [n for n in ahead if not self._present(n) and not self._in_flight(n)]
            fetched = self._fetch_checked(missing + extra)
            self._local = fetched
            found.update(fetched)
            if extra:
                self._ahead_end = max(self._ahead_end, extra[-1] + 1)
        return found

    def _schedule_readahead(self, last: int) -> None:
        """Keep up to ``depth`` windows of blocks past ``last`` in flight on read-ahead threads.

        Each window is one contiguous run of blocks (one range query on GridFS). Windows that
        landed meanwhile are collected without waiting.
        """
        if not (self._background and self._window and self._cache.max_bytes):
            return
        if self._pid != os.getpid():  # forked: the parent's fetches never land here
            self._inflight, self._pid = [], os.getpid()
        self._collect_done()
        horizon = last + 1 + self._window * self._depth
        while len(self._inflight) < self._depth:
            start = max(self._ahead_end, last + 1)
            stop = min(self._nblocks, start + self._window)
            if start >= self._nblocks or start + self._window > horizon:
                return  # the next full window would go past `depth` windows ahead of `last`
            numbers = [n for n in range(start, stop) if not self._present(n)]
            self._ahead_end = stop
            if numbers:
                future = _readahead_executor().submit(self._fetch_checked, numbers)
                self._inflight.append((range(numbers[0], numbers[-1] + 1), future))
                self.background_fetches += 1

    def _in_flight(self, n: int) -> bool:
        return any(n in blocks for blocks, _ in self._inflight)

    def _collect(self, numbers: Sequence[int]) -> bool:
        """Wait for the fetches in flight that hold any of ``numbers`` (and older ones); keep
        their blocks. Return whether any was waited for."""
        if not self._inflight or self._pid != os.getpid():
            return False
        upto, wanted = 0, frozenset(numbers)
        for i, (blocks, _) in enumerate(self._inflight):
            if not wanted.isdisjoint(blocks):
                upto = i + 1
        if not upto:
            return False
        done, self._inflight = self._inflight[:upto], self._inflight[upto:]
        for _, future in done:
            self._land(future)
        return True

    def _collect_done(self) -> None:
        """Keep the blocks of the fetches that already finished, without waiting."""
        while self._inflight and self._inflight[0][1].done():
            self._land(self._inflight.pop(0)[1])

    def _land(self, future: Future[dict[int, bytes]]) -> None:
        """Add a finished fetch's blocks to ``_ahead``, dropping the ones already read past
        (they stay in the cache). A failure is retried in the caller's thread, which raises."""
        try:
            blocks = future.result()
        except Exception:  # the blocks are fetched again in the caller, which raises
            return
        floor = max(0, self._last_start) // self.block_size
        ahead = {n: data for n, data in self._ahead.items() if n >= floor}
        ahead.update(blocks)
        self._ahead = ahead

    def _fetch_checked(self, numbers: list[int]) -> dict[int, bytes]:
        """The blocks ``numbers``, fetched once process-wide (single-flight: blocks another
        reader or thread is fetching right now are waited for, not fetched again)."""
        return self._cache.fetch_once(self.key, numbers, self._fetch_now)

    def _fetch_now(self, numbers: list[int]) -> dict[int, bytes]:
        self.fetch_calls += 1
        result = self._fetch(numbers)
        out: dict[int, bytes] = {}
        for n in numbers:
            data = result.get(n)
            expected = min(self.block_size, self.size - n * self.block_size)
            if data is None or len(data) != expected:
                actual = "missing" if data is None else f"{len(data)} bytes"
                self._gone = (
                    f"block {n} of {self.name} is {actual}, expected {expected} bytes: "
                    + (self.explain_gone() if self.explain_gone is not None else _GONE)
                )
                raise StorageError(self._gone)
            if type(data) is not bytes:  # pymongo hands bytes over as is: no copy then
                data = bytes(data)
            out[n] = data
            self._cache.put((self.key, n), data)
        return out

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(f"I/O operation on closed reader {self.name}")
        if self._gone is not None:  # every later read fails alike, cached blocks or not
            raise StorageError(self._gone)

    def close(self) -> None:
        self._local, self._ahead, self._memo = {}, {}, None
        self._inflight = []  # a fetch in flight just lands (in the cache)
        super().close()

    def __repr__(self) -> str:
        return f"<BlockReader {self.name} size={self.size} block={self.block_size}>"


__all__ = ["DEFAULT_READAHEAD_BYTES", "READAHEAD_DEPTH", "READAHEAD_THREADS", "BlockReader",
           "Fetch"]
