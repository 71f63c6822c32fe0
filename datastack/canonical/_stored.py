"""Arrays of a canonical HDF5 file read by byte offset: the chunk index of each dataset,
read once, tells where every row lives, so rows stored raw (no filter, the default canonical
layout) are read as plain bytes (one read per run of adjacent chunks, or one piece per run
of adjacent rows in a gather) instead of one h5py call per chunk. Compressed data goes
through h5py. Used by :mod:`datastack.canonical.hdf5` and :mod:`datastack.canonical.records`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
from numpy.typing import NDArray

from datastack.canonical._joined_map import RawRows
from datastack.errors import FormatError
from datastack.iterators.base import Indices
from datastack.resources import StreamedResource

#: Rows of a contiguous (unchunked) dataset that one coalesced read may span.
CONTIGUOUS_GROUP_BYTES = 256 * 1024


@dataclass
class _StoredArray:
    """One HDF5 dataset of the split group, with its chunk index read once."""

    dset: Any
    rows_per_group: int
    row_bytes: int
    chunked: bool
    chunk_ranges: dict[int, list[tuple[int, int]]] | None = None  # row-chunk -> byte ranges
    offset: int | None = None  # contiguous data: file offset of row 0
    raw_starts: NDArray[np.int64] | None = None  # file offset of each raw row group (-1: not)
    #: every byte of the mapped local file as the start of a row (see :meth:`gather`)
    mapped: NDArray[Any] | None = None
    mapped_starts: NDArray[np.int64] | None = None  # file offset of each row group
    map_tried: bool = False

    def gather(self, resource: StreamedResource, rows: Any) -> Any:
        """Rows ``rows`` (an index or an index array, any order) gathered from a memory map
        of the local file when the rows are stored raw; None when they cannot be (not a
        local file, compressed...).

        The mapped file is seen as an array of "rows starting at any byte" (a void dtype of
        one row's size with a stride of one byte), so a batch is one numpy gather at the rows'
        file offsets, whatever the chunks' alignment (a writer that appends several fields
        interleaves their chunks), with no call per chunk or row: what a memmap-backed loader
        does. The canonical file is never changed in place (a new version is a new file; GC
        unlinks), so the mapping stays valid while open.
        """
        if not self.map_tried:
            self.map_tried = True
            self._map(resource)
        if self.mapped is None or self.mapped_starts is None:
            return None
        per = self.rows_per_group
        at = self.mapped_starts[rows // per] + (rows % per) * self.row_bytes
        if np.ndim(rows) == 0:
            return self.mapped[[int(at)]].view(self.dset.dtype).reshape(self.dset.shape[1:])
        taken = self.mapped[at]
        return taken.view(self.dset.dtype).reshape((len(taken), *self.dset.shape[1:]))

    def _map(self, resource: StreamedResource) -> None:
        starts = self._raw_starts()
        n, size = int(self.dset.shape[0]), self.row_bytes
        if starts is None or n == 0 or size == 0 or bool((starts < 0).any()):
            return
        memory = resource.memory_map()
        if memory is None:
            return
        last = (n - 1) % self.rows_per_group + 1  # rows in the last chunk
        ends = starts + self.rows_per_group * size
        ends[-1] = starts[-1] + last * size
        if int(ends.max()) > len(memory):
            return  # truncated: the read path says so
        self.mapped = np.ndarray(
            (len(memory) - size + 1,), dtype=np.dtype((np.void, size)), buffer=memory,
            strides=(1,),
        )
        self.mapped_starts = starts

    def raw_rows(self) -> RawRows | None:
        """Where every row group starts in the file, when every row is stored raw (for
        :mod:`datastack.canonical._joined_map`); None otherwise."""
        starts = self._raw_starts()
        n = int(self.dset.shape[0])
        if starts is None or n == 0 or self.row_bytes == 0 or bool((starts < 0).any()):
            return None
        return RawRows(starts, self.rows_per_group, self.row_bytes, self.dset.dtype,
                       tuple(int(d) for d in self.dset.shape[1:]), n)

    def ranges_for(self, groups: NDArray[np.int64]) -> list[tuple[int, int]]:
        """Byte ranges in the file holding the given row groups (chunks)."""
        if self.chunked:
            if self.chunk_ranges is None:
                self.chunk_ranges = _chunk_index(self.dset)
            out: list[tuple[int, int]] = []
            for g in groups.tolist():
                out.extend(self.chunk_ranges.get(g, ()))
            return out
        if self.offset is None:
            return []
        step = self.rows_per_group * self.row_bytes
        return [(self.offset + g * step, self.offset + (g + 1) * step) for g in groups.tolist()]

    def raw_segments(self, lo: int, hi: int) -> list[tuple[int, int, int]] | None:
        """``[(first_row, end_row, file_offset), ...]`` covering rows ``lo..hi-1`` when they are
        stored raw (no filter, native byte order): each segment is one plain byte range of
        the file. ``None`` when the rows must go through h5py (compressed data...).

        True of the default canonical layout (uncompressed chunks, mostly written one after
        the other) and of contiguous datasets; the per-chunk offsets come from the chunk
        index, read once.
        """
        starts = self._raw_starts()
        if starts is None:
            return None
        rows, step = self.rows_per_group, self.rows_per_group * self.row_bytes
        g0, g1 = lo // rows, (hi - 1) // rows
        span = starts[g0 : g1 + 1]
        if bool((span < 0).any()):
            return None
        breaks = (np.flatnonzero(span[1:] != span[:-1] + step) + 1).tolist()
        out: list[tuple[int, int, int]] = []
        row = lo
        for b in [*breaks, g1 - g0 + 1]:
            end = min(hi, (g0 + b) * rows)
            out.append((row, end, int(starts[row // rows]) + (row % rows) * self.row_bytes))
            row = end
        return out

    def row_offset(self, row: int) -> int | None:
        """:meth:`row_offsets` of one row, in plain ints (a single sample's read)."""
        starts = self._raw_starts()
        if starts is None:
            return None
        start = int(starts[row // self.rows_per_group])
        return None if start < 0 else start + (row % self.rows_per_group) * self.row_bytes

    def row_offsets(self, rows: Indices) -> NDArray[np.int64] | None:
        """The file offset of each of ``rows`` when all of them are stored raw (see
        :meth:`raw_segments`), else ``None``."""
        starts = self._raw_starts()
        if starts is None:
            return None
        per = self.rows_per_group
        found = starts[rows // per]
        if bool((found < 0).any()):
            return None
        return found + (rows % per) * self.row_bytes

    def all_raw(self) -> bool:
        """Whether every row is stored raw (read by offset, with no h5py call)."""
        starts = self._raw_starts()
        return starts is not None and not bool((starts < 0).any())

    def _raw_starts(self) -> NDArray[np.int64] | None:
        if self.raw_starts is None:
            self.raw_starts = self._find_raw_starts()
        return None if self.raw_starts.size == 0 else self.raw_starts

    def _find_raw_starts(self) -> NDArray[np.int64]:
        """File offset of each row group (-1: not stored raw); empty when nothing is raw."""
        dset, none = self.dset, np.zeros(0, dtype=np.int64)
        if dset.dtype.kind not in "biufc" or not dset.dtype.isnative or self.row_bytes == 0:
            return none
        if dset.id.get_create_plist().get_nfilters():
            return none
        step = self.rows_per_group * self.row_bytes
        groups = -(-int(dset.shape[0]) // self.rows_per_group)
        if not self.chunked:
            if self.offset is None:
                return none
            return self.offset + step * np.arange(groups, dtype=np.int64)
        if self.chunk_ranges is None:
            self.chunk_ranges = _chunk_index(self.dset)
        starts = np.full(groups, -1, dtype=np.int64)
        for g, ranges in self.chunk_ranges.items():
            if len(ranges) == 1 and ranges[0][1] - ranges[0][0] == step and 0 <= g < groups:
                starts[g] = ranges[0][0]
        return starts

    def groups_between(self, lo: int, hi: int) -> NDArray[np.int64]:
        """The row groups (chunks) holding rows ``lo..hi-1``."""
        return np.arange(lo // self.rows_per_group, (hi - 1) // self.rows_per_group + 1)

    def read_sorted(self, uniq: Indices) -> NDArray[Any]:
        """Rows ``uniq`` (sorted, unique): one slice read per run of adjacent row groups."""
        groups = uniq // self.rows_per_group
        cuts = np.flatnonzero(np.diff(groups) > 1) + 1
        parts = []
        for run in np.split(uniq, cuts) if len(cuts) else (uniq,):
            lo, hi = int(run[0]), int(run[-1]) + 1
            block = self.dset[lo:hi]
            parts.append(block if hi - lo == len(run) else block[run - lo])
        return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _chunk_index(dset: Any) -> dict[int, list[tuple[int, int]]]:
    """``{row chunk number: [(start, end) byte ranges]}`` of the allocated chunks."""
    rows = dset.chunks[0]
    index: dict[int, list[tuple[int, int]]] = {}

    def visit(info: Any) -> None:
        if info.byte_offset is not None:
            start = int(info.byte_offset)
            index.setdefault(int(info.chunk_offset[0]) // rows, []).append(
                (start, start + int(info.size))
            )

    try:
        dset.id.chunk_iter(visit)
    except (AttributeError, NotImplementedError):  # pragma: no cover - old HDF5
        for i in range(dset.id.get_num_chunks()):
            visit(dset.id.get_chunk_info(i))
    return index


def _stored_array(dset: Any, where: str) -> _StoredArray:
    if dset.is_virtual or dset.external:
        raise FormatError(
            f"{where} is a virtual dataset or uses external storage; refused because it "
            "would read other files. Store the data inside the file"
        )
    if dset.ndim == 0:
        raise FormatError(f"{where} is a scalar; expected an array of shape (N, ...)")
    row_bytes = int(np.prod(dset.shape[1:], dtype=np.int64)) * dset.dtype.itemsize
    if dset.chunks is not None:
        return _StoredArray(dset, int(dset.chunks[0]), row_bytes, chunked=True)
    offset = dset.id.get_offset()
    rows = max(1, CONTIGUOUS_GROUP_BYTES // max(1, row_bytes))
    return _StoredArray(dset, rows, row_bytes, chunked=False, offset=offset)


def _read_raw_rows(resource: StreamedResource, column: _StoredArray, lo: int, hi: int) -> Any:
    """Rows ``lo..hi-1`` read straight from the stream when they are stored raw: one read per
    run of adjacent chunks instead of one HDF5 call and one Python read per chunk. Otherwise
    (compressed data) through h5py."""
    segments = column.raw_segments(lo, hi)
    if segments is None:
        return column.dset[lo:hi]
    out = np.empty((hi - lo, *column.dset.shape[1:]), dtype=column.dset.dtype)
    view, size = out.data.cast("B"), column.row_bytes
    pieces = [(off, view[(a - lo) * size : (b - lo) * size]) for a, b, off in segments]
    _read_pieces(resource, pieces, lo, hi)
    return out


def _read_some_rows(
    resource: StreamedResource, column: _StoredArray, rows: Indices
) -> NDArray[Any]:
    """Rows ``rows`` (sorted, unique) of ``column``.

    Raw rows (the default canonical layout) are gathered as plain bytes at their file
    offsets (:meth:`StreamedResource.read_rows`: ``preadv`` per run of adjacent rows on a
    local file, one vectorised block gather on GridFS): a random batch of 256 rows touches
    ~250 chunks, and one h5py slice per chunk costs 4-8x more than the bytes. Compressed
    data goes through h5py.
    """
    offsets = column.row_offsets(rows)
    if offsets is None:
        return column.read_sorted(rows)
    out = np.empty((len(rows), *column.dset.shape[1:]), dtype=column.dset.dtype)
    wanted = len(rows) * column.row_bytes
    if resource.read_rows(offsets, column.row_bytes, out.data.cast("B")) != wanted:
        _truncated(resource, int(rows[0]), int(rows[-1]) + 1)
    return out


def _read_pieces(
    resource: StreamedResource, pieces: list[tuple[int, memoryview]], lo: int, hi: int
) -> None:
    wanted = sum(len(view) for _, view in pieces)
    if resource.read_at(pieces) != wanted:
        _truncated(resource, lo, hi)


def _truncated(resource: StreamedResource, lo: int, hi: int) -> NoReturn:
    raise FormatError(
        f"{resource.identifier}: the file ends inside rows {lo}..{hi - 1}; it is "
        "truncated, re-run the preprocessing"
    )


def _distinct(sorted_values: NDArray[np.int64]) -> NDArray[np.int64]:
    """The distinct values of a sorted array (cheaper than ``np.unique``, which sorts)."""
    if len(sorted_values) < 2:
        return sorted_values
    keep = np.empty(len(sorted_values), dtype=bool)
    keep[0] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=keep[1:])
    return sorted_values[keep]
