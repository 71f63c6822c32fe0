"""The columns of an open records split (:mod:`datastack.iterators.records`): where each
field's values lie in the file, and the arithmetic from rows to byte ranges and blocks."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
from numpy.typing import NDArray

from datastack._ranges import covered_units
from datastack.fields import STRING, Field
from datastack.iterators._stored import _chunk_index, _StoredArray
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

    def raw_ranges(
        self, los: NDArray[np.int64], his: NDArray[np.int64]
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]] | None:
        """:meth:`raw_range` of many ``(lo, hi)`` (non-empty) at once: file offsets and byte
        counts, or None unless every one lies in adjacent raw chunks."""
        starts = self.raw_starts
        if starts is None:
            return None
        rows, item = self.stored.rows_per_group, self.stored.row_bytes
        g0, g1 = los // rows, (his - 1) // rows
        first = starts[g0]
        if bool((first < 0).any()):
            return None
        if bool((g1 != g0).any()):
            breaks = np.concatenate([[0], np.cumsum(np.diff(starts) != rows * item)])
            if bool((breaks[g1] != breaks[g0]).any()):
                return None
        return first + (los - g0 * rows) * item, (his - los) * item

    def raw_range(self, lo: int, hi: int) -> tuple[int, int] | None:
        """``(file offset, byte count)`` of values ``lo..hi-1`` when they lie in adjacent raw
        chunks (the default layout): one plain read, no h5py call."""
        starts = self.raw_starts
        if starts is None:
            return None
        rows, item = self.stored.rows_per_group, self.stored.row_bytes
        g0, g1 = lo // rows, (hi - 1) // rows
        first = int(starts[g0])
        if first < 0:
            return None
        if g1 != g0 and not bool((np.diff(starts[g0 : g1 + 1]) == rows * item).all()):
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


def _bytes_values(
    values: list[Any], column: _Column, span: NDArray[Any], first: int, last: int
) -> bool:
    """Append rows ``first..last`` of a string or bytes field, cut from one ``bytes`` of
    their span (no call per row but the decode); False, appending nothing, when a row is
    not valid UTF-8 (the per-row path then says which)."""
    assert column.offsets is not None
    data = span.tobytes()
    bounds = (column.offsets[first : last + 2] - column.offsets[first]).tolist()
    pieces = [data[a:b] for a, b in pairwise(bounds)]
    if column.field.kind != STRING:
        values.extend(pieces)
        return True
    try:
        values.extend([piece.decode("utf-8") for piece in pieces])
    except UnicodeDecodeError:
        return False
    return True
