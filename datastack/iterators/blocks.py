"""Which storage block holds each sample, and orders that read each block about once.

A remote reader (GridFS) fetches fixed-size blocks (255 KiB chunks) through a bounded block
cache. A per-sample random permutation touches a random block at every step, so with a cache
smaller than the file each block is fetched many times per epoch. Knowing which samples share
a block (:class:`StorageBlocks`) a sampler can instead use :func:`block_aware_order`: shuffle
the blocks, lay their samples out in that order, then shuffle samples within windows of
``window_blocks`` blocks (the idea of MosaicML streaming's ``py1b`` shuffle). Every window's
blocks fit the cache, so each block is fetched about once; the order is still a full
permutation and far from sequential.

>>> import numpy as np
>>> ids = np.repeat(np.arange(6), 4)                     # 6 blocks of 4 samples
>>> order = block_aware_order(ids, 2, np.random.default_rng(0))
>>> sorted(order.tolist()) == list(range(24))            # a permutation
True
>>> [len(set(ids[order[w:w + 8]].tolist())) for w in range(0, 24, 8)]   # <= 2 blocks a window
[2, 2, 2]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from datastack.errors import ConfigurationError

Indices = NDArray[np.int64]
Prefetch = Callable[[Indices], None]
"""Hint that the samples at these indices will be read soon (the reader fetches their
blocks on a background thread); never raises for a mere hint."""


@dataclass(frozen=True)
class StorageBlocks:
    """``ids[i]``: the storage block holding sample ``i`` (equal ids: one block).

    ``block_bytes`` is the size of a block; ``prefetch`` (optional) takes sample indices.
    Computed per process by :meth:`DatasetIterator.storage_blocks` (never pickled).
    """

    ids: Indices
    block_bytes: int
    prefetch: Prefetch | None = None

    def take(self, indices: Indices) -> StorageBlocks:
        """The blocks of a view whose sample ``j`` is sample ``indices[j]`` here."""
        inner = self.prefetch
        prefetch = None if inner is None else _MappedPrefetch(inner, indices)
        return StorageBlocks(self.ids[indices], self.block_bytes, prefetch)

    @staticmethod
    def concat(parts: Sequence[StorageBlocks]) -> StorageBlocks:
        """The blocks of iterators one after another (ids of different parts never clash)."""
        ids, offset = [], 0
        for part in parts:
            ids.append(part.ids - int(part.ids.min(initial=0)) + offset)
            offset = int(ids[-1].max(initial=offset - 1)) + 1
        ends = np.cumsum([len(p.ids) for p in parts])
        prefetch = _SplitPrefetch([p.prefetch for p in parts], ends)
        joined = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
        return StorageBlocks(joined, max(p.block_bytes for p in parts), prefetch)


class _MappedPrefetch:
    def __init__(self, inner: Prefetch, indices: Indices) -> None:
        self.inner, self.indices = inner, indices

    def __call__(self, indices: Indices) -> None:
        self.inner(self.indices[indices])


class _SplitPrefetch:
    def __init__(self, parts: Sequence[Prefetch | None], ends: NDArray[Any]) -> None:
        self.parts, self.ends = list(parts), ends

    def __call__(self, indices: Indices) -> None:
        which = np.searchsorted(self.ends, indices, side="right")
        starts = np.concatenate([[0], self.ends[:-1]])
        for k in np.unique(which).tolist():
            hook = self.parts[k]
            if hook is not None:
                hook(indices[which == k] - starts[k])


def block_aware_order(
    ids: NDArray[np.int64], window_blocks: int, rng: np.random.Generator, unit_blocks: int = 1
) -> Indices:
    """A permutation of ``range(len(ids))``: units of ``unit_blocks`` consecutive blocks in
    random order, samples shuffled within consecutive windows of about ``window_blocks``
    blocks' worth of samples.

    Units larger than one block matter when a read spans two blocks (an HDF5 chunk across a
    block boundary): only the blocks at the edges of a unit are then needed by two windows,
    so the extra fetches are about ``1 / unit_blocks`` of the file.
    """
    if window_blocks < 1 or unit_blocks < 1:
        raise ConfigurationError(
            f"window_blocks and unit_blocks should be >= 1, but got {window_blocks}, {unit_blocks}"
        )
    n = len(ids)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    uniq, inverse = np.unique(ids // unit_blocks, return_inverse=True)
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[rng.permutation(len(uniq))] = np.arange(len(uniq))
    by_unit = np.argsort(rank[inverse], kind="stable")  # samples of unit 0, unit 1, ...
    blocks = len(np.unique(ids))
    window = max(1, round(window_blocks * n / blocks))
    keys = np.arange(n) // window + rng.random(n)  # shuffle within each window
    return by_unit[np.argsort(keys, kind="stable")].astype(np.int64)


def worker_parts_order(order: Indices, batch_size: int, workers: int) -> Indices:
    """``order`` cut into ``workers`` contiguous parts of whole batches, then batches taken
    from the parts in turn: batch ``j`` comes from part ``j % workers``.

    A DataLoader hands batch ``j`` to worker ``j % workers``, so each worker reads one
    contiguous part of a block-aware order, and each storage block is fetched by one worker
    (its own block cache), not by all of them. A permutation of ``order``; the one short
    batch (if any) stays last so that every other batch keeps its worker.
    """
    n = len(order)
    full = n // batch_size  # whole batches; the short tail (if any) goes last, as it was
    if workers < 2 or full < 2:
        return order
    quotient, extra = divmod(full, workers)  # the first `extra` parts get one batch more
    sizes = np.array([quotient + 1] * extra + [quotient] * (workers - extra), dtype=np.int64)
    firsts = np.cumsum(sizes) - sizes
    c = np.arange(full)
    part = np.searchsorted(firsts, c, side="right") - 1
    sequence = np.argsort((c - firsts[part]) * workers + part, kind="stable")
    positions = np.concatenate(
        [(sequence[:, None] * batch_size + np.arange(batch_size)).ravel(),
         np.arange(full * batch_size, n)]
    )
    dealt: Indices = order[positions]
    return dealt


def hdf5_row_spans(dset: Any) -> tuple[Indices, Indices]:
    """``(starts, ends)``: the file byte range read for each row of an h5py dataset.

    The whole HDF5 chunk holding the row (what h5py reads for it), or the row itself for
    contiguous data; ``0, 0`` for rows in unallocated chunks (the fill value: no I/O).
    """
    n = int(dset.shape[0]) if dset.ndim else 0
    row_bytes = int(np.prod(dset.shape[1:], dtype=np.int64)) * dset.dtype.itemsize
    rows = np.arange(n, dtype=np.int64)
    if dset.chunks is None:
        offset = dset.id.get_offset()
        starts = rows * row_bytes + (0 if offset is None else int(offset))
        return (starts, starts + row_bytes) if offset is not None else (rows * 0, rows * 0)
    per_chunk = int(dset.chunks[0])
    groups = -(-n // per_chunk)
    first = np.full(groups, -1, dtype=np.int64)
    last = np.zeros(groups, dtype=np.int64)

    def visit(info: Any) -> None:
        if info.byte_offset is None:
            return
        g, start = int(info.chunk_offset[0]) // per_chunk, int(info.byte_offset)
        first[g] = start if first[g] < 0 else min(first[g], start)
        last[g] = max(last[g], start + int(info.size))

    dset.id.chunk_iter(visit)
    group_of = rows // per_chunk
    starts, ends = first[group_of], last[group_of]
    missing = starts < 0
    starts[missing], ends[missing] = 0, 0
    return starts, ends


def remote_block_size(resource: Any) -> int | None:
    """The block size of ``resource``'s stream when it reads fixed-size blocks that take
    prefetch hints (GridFS), else None (a local file, memory)."""
    stream = resource.stream
    block = getattr(stream, "block_size", None)
    if not isinstance(block, int) or block <= 0 or not callable(getattr(stream, "prefetch", None)):
        return None
    return block


def hdf5_storage_blocks(resource: Any, dset: Any) -> StorageBlocks | None:
    """The :class:`StorageBlocks` of an h5py dataset read through ``resource``; None unless
    the stream reads fixed-size blocks that take prefetch hints (GridFS)."""
    block = remote_block_size(resource)
    if block is None:
        return None
    starts, ends = hdf5_row_spans(dset)
    ids = np.where(ends > starts, starts // block, -1 - np.arange(len(starts)))

    def prefetch(indices: Indices) -> None:
        first, where = np.unique(starts[indices], return_index=True)  # one range per chunk
        last = ends[indices][where]
        keep = last > first
        if keep.any():
            ranges = list(zip(first[keep].tolist(), last[keep].tolist(), strict=True))
            resource.prefetch(ranges, wait=False)

    return StorageBlocks(ids.astype(np.int64), block, prefetch)


__all__ = [
    "StorageBlocks", "block_aware_order", "hdf5_row_spans", "hdf5_storage_blocks",
    "remote_block_size",
    "worker_parts_order",
]
