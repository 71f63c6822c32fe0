"""Range arithmetic shared by the storage blocks and the HDF5 chunks of a field: which
fixed-size units (blocks of a stored file, row groups of a dataset) a set of ranges covers,
in one numpy pass."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def covered_units(
    starts: NDArray[np.int64], ends: NDArray[np.int64], unit: int, size: int
) -> NDArray[np.int64]:
    """The sorted distinct numbers of the ``unit``-sized units covering the ranges
    ``starts[i]..ends[i]`` clipped to ``0..size`` (empty ranges cover nothing).

    >>> covered_units(np.array([0, 250]), np.array([10, 420]), 100, 1000).tolist()
    [0, 2, 3, 4]
    """
    starts, ends = np.maximum(starts, 0), np.minimum(ends, size)
    keep = ends > starts
    if not keep.all():
        starts, ends = starts[keep], ends[keep]
    if not len(starts):
        return np.zeros(0, dtype=np.int64)
    first, last = starts // unit, (ends - 1) // unit
    extra = last - first
    if not extra.any():
        return np.unique(first)
    counts = extra + 1
    begins = np.repeat(np.cumsum(counts) - counts, counts)
    return np.unique(np.repeat(first, counts) + (np.arange(int(counts.sum())) - begins))


__all__ = ["covered_units"]
