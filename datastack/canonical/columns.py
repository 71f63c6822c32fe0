"""Writing fields into the canonical file: resizable datasets appended block by block.

A :class:`FieldAppender` writes the fields of one split group (layout: :mod:`datastack.fields`)
incrementally: every fixed-shape field is a dataset ``(N, ...)`` grown along N, every
variable-length field a group with flat ``values``, ``offsets`` (N+1) and, for ragged arrays,
``shapes`` (N, ndim). Nothing is held beyond one block, so readers that stream (CSV, JSON Lines,
Parquet, image folders) write a file of any size in bounded memory.

:func:`copy_fields` copies a split's rows (optionally a sorted subset) from *column sources*:
an array-like (numpy, memmap, h5py dataset) for a fixed field, a :class:`RowSource` (``take``
of sorted row numbers -> values) for a variable one. :class:`StagedRows` reads a staged
variable field back as such a source.

>>> import tempfile, pathlib, h5py, numpy as np
>>> from datastack.fields import Field, STRING, ARRAY
>>> path = pathlib.Path(tempfile.mkdtemp()) / "s.h5"
>>> fields = [Field("x", ARRAY, "float32", (2,)), Field("t", STRING)]
>>> with h5py.File(path, "w") as f:
...     out = FieldAppender(f.create_group("train"), fields)
...     out.append({"x": np.ones((2, 2)), "t": ["a", "bé"]})
...     StagedRows(f["train"]["t"], fields[1]).take(np.array([1]))
['bé']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from datastack.errors import FormatError
from datastack.fields import (
    BYTES,
    RAGGED,
    STRING,
    Field,
    FlatRows,
    decode_value,
    encode_value,
)

#: Bytes per chunk of a variable field's flat values (one random sample: one or two chunks).
VALUE_CHUNK_BYTES = 256 * 1024
#: Rows per chunk of offsets (8 KiB x 8 bytes; read eagerly by readers).
OFFSET_CHUNK_ROWS = 8192
FIXED_CHUNK_BYTES = 32 * 1024
MIN_FIXED_ROWS = 4
MAX_FIXED_BYTES = 1024 * 1024
#: Copy blocks: about this many bytes of fixed rows, at most this many variable rows.
COPY_BLOCK_BYTES = 16 * 1024 * 1024
VARIABLE_BLOCK_ROWS = 256
#: Rows asked for that lie further apart than this on average are picked by HDF5 itself
#: (point selection); closer ones are read as spans and selected in memory.
SPARSE_SPAN = 64

Transform = Callable[[NDArray[Any]], NDArray[Any]]


class RowSource(Protocol):
    """The rows of a variable-length field: ``take(sorted row numbers) -> list of values``."""

    def __len__(self) -> int: ...

    def take(self, rows: NDArray[np.int64]) -> list[Any]: ...


def _chunk_rows(item: tuple[int, ...], itemsize: int, expected: int) -> int:
    row = max(1, math.prod(item) * itemsize)
    rows = max(FIXED_CHUNK_BYTES // row, min(MIN_FIXED_ROWS, MAX_FIXED_BYTES // row))
    return max(1, min(rows, max(expected, 1)))


class FieldAppender:
    """Append blocks of samples to the fields of one split group (see module docstring).

    ``filters`` are h5py dataset options (compression); ``expected_rows`` sizes fixed chunks
    (the default layout: ~32 KiB chunks of whole samples).
    """

    def __init__(
        self,
        group: Any,
        fields: Sequence[Field],
        filters: Mapping[str, Any] | None = None,
        expected_rows: int = 1 << 20,
    ) -> None:
        self.group = group
        self.fields = list(fields)
        self.filters = dict(filters or {})
        self.length = 0
        self._value_ends: dict[str, int] = {}
        for field in self.fields:
            self._create(field, expected_rows)

    def _create(self, field: Field, expected_rows: int) -> None:
        name = field.stored_name
        if not field.variable:
            item = tuple(int(d or 0) for d in field.shape or ())
            dtype = np.dtype(field.dtype)
            rows = _chunk_rows(item, dtype.itemsize, expected_rows)
            self.group.create_dataset(
                name, shape=(0, *item), maxshape=(None, *item), dtype=dtype,
                chunks=(rows, *item), shuffle=False, **self.filters,
            )
            return
        sub = self.group.create_group(name)
        dtype = np.dtype("uint8" if field.kind != RAGGED else field.dtype)
        sub.create_dataset(
            "values", shape=(0,), maxshape=(None,), dtype=dtype,
            chunks=(max(1, VALUE_CHUNK_BYTES // dtype.itemsize),), shuffle=False, **self.filters,
        )
        sub.create_dataset(
            "offsets", data=np.zeros(1, np.int64), maxshape=(None,),
            chunks=(OFFSET_CHUNK_ROWS,), shuffle=False,
        )
        if field.kind == RAGGED:
            ndim = len(field.shape or (0,))
            sub.create_dataset(
                "shapes", shape=(0, ndim), maxshape=(None, ndim), dtype=np.int64,
                chunks=(OFFSET_CHUNK_ROWS, ndim), shuffle=False,
            )
        self._value_ends[name] = 0

    def append(self, columns: Mapping[str, Any]) -> int:
        """Append one block: ``columns[field name]`` holds the same number of samples each."""
        counts = {len(columns[f.name]) for f in self.fields}
        if len(counts) != 1:
            raise FormatError(f"{self.group.name}: a block has columns of lengths {counts}")
        count = counts.pop()
        if count == 0:
            return self.length
        for field in self.fields:
            if field.variable:
                self._append_variable(field, columns[field.name])
            else:
                self._append_fixed(field, columns[field.name], count)
        self.length += count
        return self.length

    def _append_fixed(self, field: Field, block: Any, count: int) -> None:
        dset = self.group[field.stored_name]
        data = np.asarray(block, dtype=dset.dtype)
        if data.shape[1:] != dset.shape[1:]:
            raise FormatError(
                f"field {field.name!r}: samples of shape {data.shape[1:]}, expected "
                f"{dset.shape[1:]}; a fixed-shape field needs every sample the same shape"
            )
        dset.resize(self.length + count, axis=0)
        dset[self.length : self.length + count] = data

    def _append_variable(self, field: Field, block: Sequence[Any]) -> None:
        sub = self.group[field.stored_name]
        rows = FlatRows.of(block) if field.kind in (STRING, BYTES) else None
        if rows is not None:
            flat, sizes = rows.flat()
            encoded: list[tuple[Any, Any]] = []
        else:
            encoded = [encode_value(field, value) for value in block]
            sizes = np.fromiter((len(flat) for flat, _ in encoded), np.int64, len(encoded))
            flat = np.concatenate([f for f, _ in encoded]) if encoded else np.empty(0, np.uint8)
        start = self._value_ends[field.stored_name]
        ends = start + np.cumsum(sizes)
        values = sub["values"]
        total = int(ends[-1])
        values.resize(total, axis=0)
        if total > start:
            values[start:total] = flat
        offsets = sub["offsets"]
        offsets.resize(self.length + len(block) + 1, axis=0)
        offsets[self.length + 1 :] = ends
        if field.kind == RAGGED:
            shapes = sub["shapes"]
            shapes.resize(self.length + len(block), axis=0)
            shapes[self.length :] = np.asarray([shape for _, shape in encoded], np.int64)
        self._value_ends[field.stored_name] = total

    def described(self, classic: bool = False) -> dict[str, dict[str, Any]]:
        """``{field: {"shape", "dtype", "kind"}}`` of what was written (the schema's ``splits``
        entry); ``classic``: as in layout version 1 (by dataset name, short dtypes)."""
        out: dict[str, dict[str, Any]] = {}
        if classic:
            for field in self.fields:
                dset = self.group[field.stored_name]
                out[field.stored_name] = {
                    "shape": list(dset.shape), "dtype": dset.dtype.str.lstrip("<>=|")
                }
            return out
        for field in self.fields:
            shape = [self.length, *(field.shape or [])]  # None: a variable dimension
            out[field.name] = {"shape": shape, "dtype": field.dtype, "kind": field.kind}
        return out


class StagedRows:
    """A variable field written by a :class:`FieldAppender`, read back as a :class:`RowSource`
    (offsets of the rows asked for only: nothing proportional to the file is held)."""

    def __init__(self, group: Any, field: Field) -> None:
        self.group = group
        self.field = field

    def __len__(self) -> int:
        return int(self.group["offsets"].shape[0]) - 1

    def take_flat(self, rows: NDArray[np.int64]) -> FlatRows | None:
        """Rows of a string/bytes field as :class:`FlatRows` (``None`` for other kinds)."""
        if self.field.kind not in (STRING, BYTES) or len(rows) == 0:
            return None
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        offsets = np.asarray(self.group["offsets"][lo : hi + 1], np.int64)
        values = np.asarray(self.group["values"][int(offsets[0]) : int(offsets[-1])])
        offsets -= offsets[0]
        if hi - lo == len(rows):
            return FlatRows(values, offsets)
        import pyarrow as pa  # the gather in C, no index array per byte

        span = pa.LargeBinaryArray.from_buffers(
            pa.large_binary(), hi - lo, [None, pa.py_buffer(offsets), pa.py_buffer(values)])
        return FlatRows.of(span.take(pa.array(np.asarray(rows, np.int64) - lo)))

    def take(self, rows: NDArray[np.int64]) -> list[Any]:
        if len(rows) == 0:
            return []
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        offsets = self.group["offsets"][lo : hi + 1]
        values = self.group["values"][int(offsets[0]) : int(offsets[-1])]
        shapes = self.group["shapes"][lo:hi] if "shapes" in self.group else None
        base = int(offsets[0])
        out = []
        for row in rows:
            i = int(row) - lo
            flat = values[int(offsets[i]) - base : int(offsets[i + 1]) - base]
            shape = None if shapes is None else tuple(int(d) for d in shapes[i])
            out.append(decode_value(self.field, flat, shape, decode_images=False))
        return out


def is_classic(fields: Sequence[Field]) -> bool:
    """Whether fields are the classic pair of layout version 1: fixed numeric ``samples`` and
    optionally ``targets`` datasets (files readers of version 1 read unchanged)."""
    stored = [f.stored_name for f in fields]
    return (
        0 < len(fields) <= 2
        and stored == ["samples", "targets"][: len(fields)]
        and not any(f.variable for f in fields)
    )


def _block_rows(fields: Sequence[Field], columns: Mapping[str, Any]) -> int:
    """Rows per copy block: ~:data:`COPY_BLOCK_BYTES` of fixed rows; variable rows by their
    mean size when stored flat (text, bytes), else :data:`VARIABLE_BLOCK_ROWS`."""
    rows = 1 << 30
    for field in fields:
        if field.variable:
            mean = _mean_bytes(columns[field.name]) if field.kind in (STRING, BYTES) else None
            rows = min(rows, VARIABLE_BLOCK_ROWS if mean is None else
                       max(VARIABLE_BLOCK_ROWS, min(1 << 16, COPY_BLOCK_BYTES // max(1, mean))))
            continue
        row = max(1, math.prod(int(d or 1) for d in field.shape or ()))
        row *= np.dtype(field.dtype).itemsize
        rows = min(rows, max(1, COPY_BLOCK_BYTES // row))
    return rows


def _mean_bytes(source: Any) -> int | None:
    """Mean stored bytes per row of a staged variable field (``None``: not known)."""
    if not isinstance(source, StagedRows) or len(source) == 0:
        return None
    return int(source.group["values"].shape[0]) // len(source) + 1


def _read_fixed(source: Any, wanted: NDArray[np.int64]) -> NDArray[Any]:
    lo, hi = int(wanted[0]), int(wanted[-1]) + 1
    if hi - lo == len(wanted):
        return np.asarray(source[lo:hi])
    if hi - lo <= 4 * len(wanted):  # dense enough: read the span, select in memory
        return np.asarray(source[lo:hi])[wanted - lo]
    if hi - lo > SPARSE_SPAN * len(wanted) or not hasattr(source, "dtype"):
        return np.asarray(source[wanted])  # a few rows far apart: HDF5 picks them
    # a sparse split (10% of the rows): the span read in windows of 4 blocks, selected in
    # memory (HDF5's point selection costs microseconds per row; memory stays bounded)
    out = np.empty((len(wanted), *source.shape[1:]), source.dtype)
    window, at = 4 * len(wanted), 0
    while at < len(wanted):
        start = int(wanted[at])
        end = int(np.searchsorted(wanted, start + window, side="left"))
        out[at:end] = np.asarray(source[start : int(wanted[end - 1]) + 1])[wanted[at:end] - start]
        at = end
    return out


def copy_fields(
    appender: FieldAppender,
    columns: Mapping[str, Any],
    indices: NDArray[np.int64] | None = None,
    transforms: Mapping[str, Transform] | None = None,
) -> int:
    """Append rows ``indices`` (sorted; ``None``: all) of ``columns`` to ``appender`` in
    bounded blocks; ``transforms[name]`` maps a fixed field's block first (category codes)."""
    fields = appender.fields
    total = len(columns[fields[0].name]) if fields else 0
    rows = None if indices is None else np.asarray(indices, np.int64)
    count = total if rows is None else len(rows)
    step = _block_rows(fields, columns)
    if rows is not None and len(rows) and any(f.variable for f in fields):
        # a sparse subset (a 10% split): a block's rows span more of the staged values
        spread = (int(rows[-1]) - int(rows[0]) + 1) / len(rows)
        step = max(VARIABLE_BLOCK_ROWS, int(step / max(1.0, spread)))
    transforms = transforms or {}
    for start in range(0, count, step):  # no index array the size of the input
        wanted = (np.arange(start, min(count, start + step), dtype=np.int64) if rows is None
                  else rows[start : start + step])
        block: dict[str, Any] = {}
        for field in fields:
            source = columns[field.name]
            if field.variable:
                flat = source.take_flat(wanted) if hasattr(source, "take_flat") else None
                block[field.name] = flat if flat is not None else source.take(wanted)
                continue
            data = _read_fixed(source, wanted)
            fn = transforms.get(field.name)
            block[field.name] = fn(data) if fn is not None else data
        appender.append(block)
    return appender.length


__all__ = [
    "COPY_BLOCK_BYTES",
    "VALUE_CHUNK_BYTES",
    "FieldAppender",
    "FlatRows",
    "RowSource",
    "StagedRows",
    "Transform",
    "copy_fields",
    "is_classic",
]
