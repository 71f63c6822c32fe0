"""The columns of an open records split (:mod:`datastack.canonical.records`): where each
field's values lie in the file, and the arithmetic from rows to byte ranges and blocks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from datastack._ranges import covered_units
from datastack.canonical._stored import _chunk_index, _StoredArray
from datastack.fields import STRING, Field
from datastack.iterators.base import Indices


@dataclass
class _Column:
    """One field of the open split: its stored data and what was read eagerly."""

    field: Field
    stored: _StoredArray
    offsets: NDArray[np.int64] | None = None
    shapes: NDArray[np.int64] | None = None
    values: NDArray[Any] | None = None  # an eagerly read fixed column
    #: File offset of each chunk of raw (unfiltered) values, -1 where not raw; None: use h5py.
    raw_starts: NDArray[np.int64] | None = None

    #: Run number of each raw chunk: chunks of one run follow each other in the file
    #: (derived from ``raw_starts`` on first use)
    runs: NDArray[np.int64] | None = None

    def _runs(self, starts: NDArray[np.int64]) -> NDArray[np.int64]:
        if self.runs is None:
            apart = np.diff(starts) != self.stored.rows_per_group * self.stored.row_bytes
            self.runs = np.concatenate([[0], np.cumsum(apart)])
        return self.runs

    def raw_ranges(
        self, los: NDArray[np.int64], his: NDArray[np.int64]
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]] | None:
        """``(file offsets, byte counts)`` of values ``los[i]..his[i]-1`` (non-empty) when
        each lies in adjacent raw chunks (the default layout): plain reads, no h5py call;
        None otherwise."""
        starts = self.raw_starts
        if starts is None:
            return None
        rows, item = self.stored.rows_per_group, self.stored.row_bytes
        g0, g1 = los // rows, (his - 1) // rows
        first = starts[g0]
        if bool((first < 0).any()):
            return None
        if bool((g1 != g0).any()):
            runs = self._runs(starts)
            if bool((runs[g1] != runs[g0]).any()):
                return None
        return first + (los - g0 * rows) * item, (his - los) * item

    def raw_range(self, lo: int, hi: int) -> tuple[int, int] | None:
        """:meth:`raw_ranges` of one ``(lo, hi)`` in plain ints (a single sample's read)."""
        starts = self.raw_starts
        if starts is None:
            return None
        rows, item = self.stored.rows_per_group, self.stored.row_bytes
        g0, g1 = lo // rows, (hi - 1) // rows
        first = int(starts[g0])
        if first < 0 or (g1 != g0 and self._runs(starts)[g1] != self._runs(starts)[g0]):
            return None
        return first + (lo - g0 * rows) * item, (hi - lo) * item


def _value_groups(column: _Column, rows: Indices) -> NDArray[np.int64]:
    """The chunks (row groups of the values dataset) holding the values of ``rows``."""
    assert column.offsets is not None
    total = int(column.stored.dset.shape[0])
    return covered_units(column.offsets[rows], column.offsets[rows + 1],
                         column.stored.rows_per_group, total)


def _sample_starts(column: _Column, length: int) -> NDArray[np.int64]:
    """File offset of the chunk where each sample's values start (its storage block)."""
    stored = column.stored
    total = int(stored.dset.shape[0])
    rows = np.arange(length, dtype=np.int64) if column.offsets is None else column.offsets[:-1]
    rows = np.minimum(rows, max(0, total - 1))
    if not stored.chunked:
        return int(stored.offset or 0) + rows * stored.row_bytes
    if stored.chunk_ranges is None:
        stored.chunk_ranges = _chunk_index(stored.dset)
    per = stored.rows_per_group
    firsts = np.zeros(max(1, -(-total // per)), dtype=np.int64)
    for group, ranges in stored.chunk_ranges.items():
        if 0 <= group < len(firsts):
            firsts[group] = ranges[0][0]
    return firsts[rows // per]


def _cut_bytes(
    column: _Column, buffer: Any, starts: NDArray[np.int64], ends: NDArray[np.int64]
) -> NDArray[Any] | None:
    """The values ``buffer[starts[i]:ends[i]]`` of a string or bytes field (``buffer``: bytes,
    a bytearray, a uint8 array or a memory map of the file), one copy per value, as an object
    array; None when a value is not valid UTF-8 (the caller's per-row decode then says
    which)."""
    out = np.empty(len(ends), dtype=object)
    pairs = zip(starts.tolist(), ends.tolist(), strict=True)
    with memoryview(buffer).cast("B") as view:  # released here: a map can then be closed
        if column.field.kind == STRING:
            try:
                out[:] = [str(view[a:b], "utf-8") for a, b in pairs]
            except UnicodeDecodeError:
                return None
        else:  # str / bytes are scalars to numpy: one C-level fill
            out[:] = [view[a:b].tobytes() for a, b in pairs]
    return out
