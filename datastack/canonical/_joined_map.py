"""Every shard of a local split mapped side by side in one address range (``docs/living.md``).

A batch of random indices over a split of many local shards touches most shards; reading it
shard by shard costs one reader call per shard touched. When every shard is a local regular
file whose columns are stored raw (or read eagerly, like labels), the shards' files are
mapped one after the other into ONE reserved address range (an anonymous ``PROT_NONE``
reservation, then each file ``MAP_FIXED`` at a page-aligned offset inside it), that range is
seen as an array of "rows starting at any byte" (a void dtype of one row's size, a stride of
one byte, as :meth:`datastack.canonical._stored._StoredArray.gather` does for one file), and
each requested row's byte offset is computed vectorised (the shard's offset in the range +
the row group's start in the file + the row within the group x the row's bytes): one numpy
gather per column for the whole batch, whatever the shards.

The range is unmapped when nothing references it any more (a finalizer on the buffer object
under the arrays); a shard reader closed or evicted meanwhile does not invalidate it (a
mapping holds its file). Gathers copy, so a returned batch never points into the range.
Linux on x86-64 and ARM64 only (``MAP_FIXED``'s value); :func:`join_shards` returns None
anywhere else, and the caller reads shard by shard.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import stat
import sys
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: Flags of mmap(2) on Linux x86-64 and ARM64 (the ``mmap`` module lacks ``MAP_FIXED``).
_MAP_FIXED = 0x10
_PROT_NONE = 0
_MAP_NORESERVE = 0x4000
_MACHINES = ("x86_64", "amd64", "aarch64", "arm64")


@dataclass(frozen=True)
class RawRows:
    """A column of one shard stored raw: where each row group starts in the file."""

    starts: NDArray[np.int64]  # file offset of each row group (all >= 0)
    rows_per_group: int
    row_bytes: int
    dtype: np.dtype[Any]
    shape: tuple[int, ...]  # one row's shape
    rows: int


#: One column of one shard: its values read eagerly (labels), or its raw rows in the file.
ColumnPart = NDArray[Any] | RawRows


@dataclass(frozen=True)
class _JoinedColumn:
    values: NDArray[Any] | None  # eager values of every shard, concatenated
    view: NDArray[Any] | None  # the range as rows starting at any byte
    starts: NDArray[np.int64] | None  # every shard's row groups: offset in the range
    group_base: NDArray[np.int64] | None  # each shard's first row group in ``starts``
    per: int | NDArray[np.int64]  # rows per group: one for every shard, or each shard's
    row_bytes: int
    dtype: np.dtype[Any]
    shape: tuple[int, ...]

    def take(self, shard: NDArray[np.intp], local: NDArray[np.int64],
             indices: NDArray[np.int64]) -> NDArray[Any]:
        if self.values is not None:
            return self.values[indices]
        assert self.view is not None and self.starts is not None and self.group_base is not None
        per = self.per if isinstance(self.per, int) else self.per[shard]
        group = self.group_base[shard] + local // per
        at = self.starts[group] + (local % per) * self.row_bytes
        taken = self.view[at]
        out: NDArray[Any] = taken.view(self.dtype).reshape((len(taken), *self.shape))
        return out


class JoinedSplit:
    """The rows of every shard of a split gathered from one mapped range (module docstring)."""

    def __init__(self, ends: NDArray[np.int64], columns: list[_JoinedColumn],
                 buffer: Any) -> None:
        self.ends = ends
        self.firsts = np.concatenate([np.zeros(1, np.int64), ends[:-1]])
        self.columns = columns
        self._buffer = buffer  # the ctypes object under every view (unmapped when freed)

    def gather(self, indices: NDArray[np.int64]) -> tuple[NDArray[Any], ...]:
        """Rows ``indices`` (any order, duplicates allowed, within the split), one array a
        column, as the shards' readers return them."""
        if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= int(self.ends[-1])):
            raise IndexError(f"rows {int(indices.min())}..{int(indices.max())} outside the "
                             f"split's {int(self.ends[-1])} rows")  # never read off the map
        shard = np.searchsorted(self.ends, indices, side="right")
        local = indices - self.firsts[shard]
        return tuple(column.take(shard, local, indices) for column in self.columns)


def join_shards(
    slots: Sequence[int], parts_of: Callable[[int], tuple[int, list[ColumnPart]] | None],
    ends: Sequence[int],
) -> JoinedSplit | None:
    """Shards ``0..len(slots)-1`` mapped side by side, or None when any cannot be.

    ``slots[k]``: bytes reserved for shard ``k``'s file (its size in the manifest; a larger
    file refuses the join); ``parts_of(k)``: the descriptor of shard ``k``'s open local file
    and its columns (each read raw or eagerly), or None (not a local raw file); the file is
    mapped before ``parts_of(k + 1)`` is asked, so it may close it afterwards; ``ends``: the
    cumulative rows of the shards.
    """
    if not _supported() or not slots:
        return None
    page = mmap.PAGESIZE
    bases = np.concatenate([[0], np.cumsum([-(-max(1, s) // page) * page for s in slots])])
    total = int(bases[-1])
    libc = _libc()
    address = _mmap(libc, None, total, _PROT_NONE,
                    mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE, -1)
    if address is None:
        return None
    buffer = (ctypes.c_char * total).from_address(address)
    weakref.finalize(buffer, _unmap, libc, address, total).atexit = False  # exit unmaps
    shards: list[list[ColumnPart]] = []
    for k in range(len(slots)):
        found = parts_of(k)
        if found is None:
            return None
        fd, columns = found
        size = _file_size(fd)
        rows = int(ends[k]) - (int(ends[k - 1]) if k else 0)
        if size is None or size > int(bases[k + 1] - bases[k]) or not _fits(columns, size, rows):
            return None
        flags = mmap.MAP_SHARED | _MAP_FIXED
        if _mmap(libc, address + int(bases[k]), size, mmap.PROT_READ, flags, fd) is None:
            return None
        shards.append(columns)
    joined = _columns(shards, bases[:-1].astype(np.int64), buffer, total)
    if joined is None:
        return None
    return JoinedSplit(np.asarray(ends, dtype=np.int64), joined, buffer)


def _columns(shards: list[list[ColumnPart]], bases: NDArray[np.int64], buffer: Any,
             total: int) -> list[_JoinedColumn] | None:
    """Each column over every shard (None: the shards' columns differ in kind or type)."""
    widths = {len(columns) for columns in shards}
    if len(widths) != 1:
        return None
    views: dict[int, NDArray[Any]] = {}
    out = []
    for j in range(widths.pop()):
        pieces = [columns[j] for columns in shards]
        if all(isinstance(p, np.ndarray) for p in pieces):
            arrays = [p for p in pieces if isinstance(p, np.ndarray)]
            if len({(a.dtype, a.shape[1:]) for a in arrays}) != 1:
                return None
            values = np.concatenate(arrays)
            out.append(_JoinedColumn(values, None, None, None, 1, 0, values.dtype, ()))
            continue
        raws = [p for p in pieces if isinstance(p, RawRows)]
        if len(raws) != len(pieces) or len(_kinds(raws)) != 1:
            return None
        head = raws[0]
        size = head.row_bytes
        if size not in views:
            views[size] = np.ndarray((total - size + 1,), dtype=np.dtype((np.void, size)),
                                     buffer=buffer, strides=(1,))
        counts = [len(r.starts) for r in raws]
        group_base = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        starts = np.concatenate([r.starts + base for r, base in zip(raws, bases, strict=True)])
        pers = {r.rows_per_group for r in raws}
        per = pers.pop() if len(pers) == 1 else np.array([r.rows_per_group for r in raws])
        out.append(_JoinedColumn(None, views[size], starts.astype(np.int64), group_base,
                                 per, size, head.dtype, head.shape))
    return out


def _kinds(raws: Iterable[RawRows]) -> set[tuple[Any, ...]]:
    return {(r.row_bytes, r.dtype, r.shape) for r in raws}


def _fits(columns: list[ColumnPart], size: int, rows: int) -> bool:
    """Whether every column of the shard holds its ``rows`` rows (as the manifest says) and
    every raw row lies inside its file of ``size`` bytes (a gather never reads past it)."""
    for column in columns:
        if not isinstance(column, RawRows):
            if len(column) != rows:
                return False
            continue
        groups = -(-rows // max(1, column.rows_per_group))
        if column.rows != rows or rows <= 0 or column.row_bytes <= 0 or (
                len(column.starts) != groups):
            return False
        last = (rows - 1) % column.rows_per_group + 1  # rows in the last group
        ends = column.starts + column.rows_per_group * column.row_bytes
        ends[-1] = column.starts[-1] + last * column.row_bytes
        if int(column.starts.min()) < 0 or int(ends.max()) > size:
            return False
    return True


def _file_size(fd: int) -> int | None:
    try:
        info = os.fstat(fd)
    except OSError:
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) and info.st_size > 0 else None


def _supported() -> bool:
    return sys.platform.startswith("linux") and platform.machine().lower() in _MACHINES


def _libc() -> Any:
    from datastack._libc import libc as loaded

    libc = loaded()
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.restype = ctypes.c_int
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return libc


def _mmap(libc: Any, at: int | None, size: int, prot: int, flags: int, fd: int) -> int | None:
    """mmap(2); the address, or None when it failed (MAP_FAILED)."""
    found = libc.mmap(at, size, prot, flags, fd, 0)
    if found is None or found == ctypes.c_void_p(-1).value:
        return None
    if at is not None and found != at:  # pragma: no cover - MAP_FIXED maps where asked
        return None
    return int(found)


def _unmap(libc: Any, address: int, total: int) -> None:
    libc.munmap(address, total)


__all__ = ["ColumnPart", "JoinedSplit", "RawRows", "join_shards"]
