"""The reader of canonical files with fields (layout version 2, ``docs/fields.md``).

Samples are tuples in field order. Fixed-shape fields are read like the classic layout
(:mod:`datastack.canonical.hdf5`: chunk index once, raw byte reads of uncompressed chunks over
GridFS); labels are read eagerly. A variable-length field keeps its ``offsets`` (and ragged
``shapes``) in memory after open, so sample ``i`` is one contiguous read of
``values[offsets[i]:offsets[i+1]]``: one or two storage blocks over GridFS. Images are decoded
with Pillow on access (never at open), as stored or converted to one ``image_mode``;
``decode_images=False`` yields the encoded bytes.

>>> import tempfile, pathlib, numpy as np
>>> from datastack.fields import Field, STRING, LABEL
>>> from datastack.preprocessing import CanonicalWriter
>>> from datastack.resources import StreamedResource
>>> path = pathlib.Path(tempfile.mkdtemp()) / "d.h5"
>>> fields = [Field("text", STRING), Field("label", LABEL, names=("neg", "pos"))]
>>> with CanonicalWriter(path, "d") as w:
...     _ = w.add_fields("train", fields, {"text": ListRows(["bad", "good!"]),
...                                        "label": np.array([0, 1])})
...     _ = w.prepared()
>>> it = RecordsDatasetIterator(StreamedResource.from_path("d.h5", path), "train")
>>> it[1], list(it.fields), it.get_batch([1, 0])[0].tolist()
(('good!', np.int64(1)), ['text', 'label'], ['good!', 'bad'])
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from datastack.canonical._columns import _Column, _cut_bytes, _sample_starts, _value_groups
from datastack.canonical._gcpause import h5_calls, h5_opens
from datastack.canonical._joined_map import ColumnPart
from datastack.canonical._stored import _read_raw_rows, _stored_array
from datastack.canonical.hdf5 import _h5_file, _local_fd_path
from datastack.errors import FormatError, SplitNotFoundError
from datastack.fields import (
    BYTES,
    IMAGE,
    LABEL,
    STRING,
    Field,
    decode_value,
    fields_from_schema,
    object_column,
)
from datastack.iterators._process import ProcessLocalIterator, private_copy
from datastack.iterators.base import Batch, Indices, Sample
from datastack.resources import StreamedResource

#: Fixed fields whose whole column is at most this many bytes are read eagerly on open.
EAGER_BYTES = 1024 * 1024


class ListRows:
    """An in-memory :class:`~datastack.canonical.columns.RowSource` over a sequence."""

    def __init__(self, values: Sequence[Any]) -> None:
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def take(self, rows: NDArray[np.int64]) -> list[Any]:
        return [self.values[int(i)] for i in rows]


@dataclass
class _OpenRecords:
    resource: StreamedResource
    file: Any
    columns: list[_Column]
    length: int
    can_prefetch: bool
    attrs: dict[str, Any] = field(default_factory=dict)
    #: The descriptor of a local file (``os.pread``), else None (reads go through the stream).
    fd: int | None = None
    #: A read-only memory map of the local file (strings and bytes are cut from it), made on
    #: first use; None when there is none.
    memory: Any = None
    memory_tried: bool = False
    #: Whether HDF5 reads the file with its own driver (no Python stream: nothing to pause).
    native: bool = False

    def memory_map(self) -> Any:
        if not self.memory_tried:
            self.memory_tried = True
            self.memory = self.resource.memory_map() if self.fd is not None else None
        return self.memory


class RecordsDatasetIterator(ProcessLocalIterator[_OpenRecords]):
    """Samples of one split group of a canonical file with fields (see module docstring).

    Parameters
    ----------
    resource:
        The file as a stream (opened lazily, once per process; picklable).
    group:
        The split group (``"train"``).
    image_mode:
        Convert every image to this Pillow mode (``"RGB"``, ``"L"``...); default: as stored.
    decode_images:
        ``False`` yields image fields as their encoded bytes.
    """

    def __init__(
        self,
        resource: StreamedResource,
        group: str,
        *,
        image_mode: str | None = None,
        decode_images: bool = True,
    ) -> None:
        self.resource = resource
        self.group = group.strip("/")
        self.image_mode = image_mode
        self.decode_images = decode_images

    # -- opening ----------------------------------------------------------------------------
    def _open(self) -> _OpenRecords:
        import h5py

        resource = private_copy(self.resource)
        try:
            file = _h5_file(h5py, resource)
        except OSError as exc:
            resource.close()
            raise FormatError(f"{self.resource.identifier} is not a readable HDF5 file ({exc})"
                              ) from None
        try:
            return self._read_layout(resource, file, h5py)
        except BaseException:
            file.close()
            resource.close()
            raise

    def _read_layout(self, resource: StreamedResource, file: Any, h5py: Any) -> _OpenRecords:
        if not isinstance(file.get(self.group), h5py.Group):
            available = sorted(k for k in file if isinstance(file[k], h5py.Group))
            raise SplitNotFoundError(
                f"{self.resource.identifier} has no split group {self.group!r}; available: "
                f"{', '.join(available) or 'none'}"
            )
        group = file[self.group]
        schema = json.loads(file.attrs.get("schema", "{}"))
        fields = fields_from_schema(schema.get("fields") or [])
        if not fields:
            raise FormatError(f"{self.resource.identifier}: the file lists no fields")
        length = int(group.attrs.get("length", -1))
        columns = [self._column(group, f, length) for f in fields.values()]
        attrs = {"name": str(file.attrs.get("name", "")), "schema": schema}
        can_prefetch = callable(getattr(resource.stream, "prefetch", None))
        fd = int(resource.stream.fileno()) if _local_fd_path(resource) is not None else None
        return _OpenRecords(resource, file, columns, length, can_prefetch, attrs, fd,
                            native=file.driver != "fileobj")

    def _column(self, group: Any, fld: Field, length: int) -> _Column:
        where = f"{self.resource.identifier}:/{self.group}/{fld.stored_name}"
        if fld.stored_name not in group:
            raise FormatError(f"{where}: field {fld.name!r} is missing; re-run the preprocessing")
        node = group[fld.stored_name]
        if not fld.variable:
            stored = _stored_array(node, where)
            if stored.dset.shape[0] != length:
                raise FormatError(f"{where}: {stored.dset.shape[0]} rows, expected {length}")
            eager = fld.kind == LABEL or length * stored.row_bytes <= EAGER_BYTES
            return _Column(fld, stored, values=stored.dset[()] if eager else None)
        offsets = np.asarray(node["offsets"][()], dtype=np.int64)
        if offsets.shape != (length + 1,) or bool((np.diff(offsets) < 0).any()):
            raise FormatError(f"{where}: offsets do not describe {length} samples; re-run it")
        stored = _stored_array(node["values"], f"{where}/values")
        if int(offsets[-1]) > stored.dset.shape[0]:
            raise FormatError(f"{where}: offsets run past the values; the file is truncated")
        shapes = np.asarray(node["shapes"][()], np.int64) if "shapes" in node else None
        raw = stored._raw_starts()
        return _Column(fld, stored, offsets, shapes, raw_starts=raw)

    def _close_state(self, state: _OpenRecords) -> None:
        try:
            state.file.close()
        finally:
            state.resource.close()
            if state.memory is not None:
                state.memory.close()

    # -- reads ------------------------------------------------------------------------------
    @h5_opens
    def __len__(self) -> int:
        return self._state().length

    def _decode(self, column: _Column, flat: NDArray[Any], row: int) -> Any:
        shape = None if column.shapes is None else tuple(int(d) for d in column.shapes[row])
        if shape is None and column.field.kind not in ("string", "bytes", "image"):
            shape = (len(flat),)
        where = f"{self.resource.identifier}:/{self.group} sample {row} field {column.field.name!r}"
        return decode_value(
            column.field, flat, shape, image_mode=self.image_mode,
            decode_images=self.decode_images, where=where,
        )

    def _read_span(self, state: _OpenRecords, column: _Column, lo: int, hi: int) -> Any:
        dtype = column.stored.dset.dtype
        if hi <= lo:
            return np.zeros(0, dtype=dtype)
        raw = column.raw_range(lo, hi)
        if raw is None:
            if state.can_prefetch:
                return _read_raw_rows(state.resource, column.stored, lo, hi)
            return column.stored.dset[lo:hi]
        offset, size = raw
        if state.fd is not None:  # into a bytearray: values are writable arrays, not views
            data = bytearray(size)  # of immutable bytes (torch warns about those)
            got = os.preadv(state.fd, [data], offset)
            data = data if got == size else data[:got]
        else:
            data = bytearray(size)
            state.resource.seek(offset)
            view, done = memoryview(data), 0
            while done < size and (got := state.resource.readinto(view[done:])):
                done += got
            data = data[:done]
        if len(data) != size:
            raise FormatError(f"{self.resource.identifier}: the file ends inside a sample; it "
                              "is truncated, re-run the preprocessing")
        return np.frombuffer(data, dtype=dtype)

    def _gather_values(
        self, state: _OpenRecords, column: _Column, bounds: NDArray[np.int64]
    ) -> bytearray | None:
        """Values ``lo..hi-1`` of every ``(lo, hi)`` in ``bounds``, one after the other in one
        buffer, by one scattered read (one block lookup and fetch over GridFS, ``preadv``
        locally) when all lie in raw chunks; None otherwise."""
        full = bounds[bounds[:, 1] > bounds[:, 0]]
        if len(bounds) < 2 or not len(full):
            return None
        raw = column.raw_ranges(full[:, 0], full[:, 1])
        if raw is None:
            return None
        offsets, sizes = raw
        buffer = bytearray(int(sizes.sum()))
        if state.resource.read_ranges(offsets, sizes, memoryview(buffer)) != len(buffer):
            raise FormatError(f"{self.resource.identifier}: the file ends inside a sample; it "
                              "is truncated, re-run the preprocessing")
        return buffer

    def _value(self, state: _OpenRecords, column: _Column, index: int) -> Any:
        if column.values is not None:
            return column.values[index]
        if column.offsets is None:
            mapped = self._mapped_rows(state, column, np.int64(index))
            return column.stored.dset[index] if mapped is None else mapped
        lo, hi = int(column.offsets[index]), int(column.offsets[index + 1])
        return self._decode(column, self._read_span(state, column, lo, hi), index)

    @h5_calls
    def _get(self, index: int) -> Sample:
        state = self._state()
        return tuple(self._value(state, column, index) for column in state.columns)

    @h5_calls
    def _get_batch(self, indices: Indices) -> Batch:
        state = self._state()
        fixed = [self._mapped_rows(state, c, indices) for c in state.columns]
        if all(column is not None for column in fixed):
            return tuple(fixed)  # a local raw file of fixed fields: one gather per column
        uniq, inverse = np.unique(indices, return_inverse=True)
        if state.can_prefetch:
            self._prefetch(state, uniq)
        out = []
        for column, mapped in zip(state.columns, fixed, strict=True):
            if mapped is not None:
                out.append(mapped)
            elif column.offsets is None:
                out.append(column.stored.read_sorted(uniq)[inverse])
            else:
                out.append(self._variable_rows(state, column, uniq)[inverse])
        return tuple(out)

    @h5_opens
    def joined_parts(self) -> tuple[int, list[ColumnPart]] | None:
        """The descriptor of the local file and each field (raw rows, or values read
        eagerly), to map the shards of a split side by side
        (:mod:`datastack.canonical._joined_map`); None when a field is variable (strings,
        images...) or not raw, or the file is not local."""
        state = self._state()
        if state.fd is None or state.can_prefetch:
            return None
        columns: list[ColumnPart] = []
        for column in state.columns:
            part: ColumnPart | None = None
            if column.offsets is None and column.field.kind != LABEL:  # eager in small files
                part = column.stored.raw_rows()  # only: the same column in every shard
            if part is None:
                part = column.values
            if part is None:
                return None
            columns.append(part)
        return state.fd, columns

    @staticmethod
    def _mapped_rows(state: _OpenRecords, column: _Column, indices: Any) -> Any:
        """Rows of a fixed column read eagerly, or gathered from a memory map of a local
        file (as the arrays reader does); None when neither applies."""
        if column.values is not None:
            return column.values[indices]
        if column.offsets is not None or state.can_prefetch:
            return None
        return column.stored.gather(state.resource, indices)

    def _variable_rows(self, state: _OpenRecords, column: _Column, uniq: Indices) -> Any:
        """Rows ``uniq`` (sorted) of a variable field: the values of all its runs of adjacent
        rows in one buffer (one scattered read when they lie in raw chunks, else one read
        per run), strings and bytes cut from it with one slice per row."""
        assert column.offsets is not None
        kind = column.field.kind
        as_bytes = kind in (STRING, BYTES) or (kind == IMAGE and not self.decode_images)
        if as_bytes and (cut := self._cut_mapped(state, column, uniq)) is not None:
            return cut
        cuts = np.flatnonzero(np.diff(uniq) > 1) + 1
        firsts = uniq[np.concatenate([[0], cuts])]
        lasts = uniq[np.concatenate([cuts - 1, [len(uniq) - 1]])]
        bounds = np.stack([column.offsets[firsts], column.offsets[lasts + 1]], axis=1)
        buffer: Any = self._gather_values(state, column, bounds)
        if buffer is None:  # one run (a sequential batch) is used as read, not joined
            spans = [self._read_span(state, column, lo, hi) for lo, hi in bounds.tolist()]
            buffer = spans[0] if len(spans) == 1 else bytearray().join(spans)
        if as_bytes:  # uint8 values, one after the other in the buffer
            sizes = column.offsets[uniq + 1] - column.offsets[uniq]
            ends = np.cumsum(sizes)
            cut = _cut_bytes(column, buffer, ends - sizes, ends)
            if cut is not None:
                return cut  # else a row is not UTF-8: decoded one by one, the error names it
        dtype = column.stored.dset.dtype
        flat = np.frombuffer(buffer, dtype=dtype)
        ends = np.cumsum(column.offsets[uniq + 1] - column.offsets[uniq]).tolist()
        values, at = [], 0
        for row, end in zip(uniq.tolist(), ends, strict=True):
            values.append(self._decode(column, flat[at:end], row))
            at = end
        return object_column(values)

    @staticmethod
    def _cut_mapped(state: _OpenRecords, column: _Column, uniq: Indices) -> Any:
        """Rows ``uniq`` of a string or bytes field cut straight from the memory map of a
        local file, one copy per value (no buffer to fill first); None when the file is not
        local, a value is not stored raw, or the file is shorter than the values (the read
        path then says it is truncated)."""
        assert column.offsets is not None
        memory = state.memory_map()
        if memory is None:
            return None
        los, his = column.offsets[uniq], column.offsets[uniq + 1]
        full = his > los
        starts = np.zeros(len(uniq), dtype=np.int64)
        if bool(full.any()):
            raw = column.raw_ranges(los[full], his[full])
            if raw is None:
                return None
            starts[full] = raw[0]
        ends = starts + (his - los) * column.stored.row_bytes
        if len(ends) and int(ends.max()) > len(memory):
            return None
        return _cut_bytes(column, memory, starts, ends)

    @h5_opens
    def prefetch_start(self, rows: int) -> None:
        """Fetch the blocks of the first ``rows`` rows in the background, as the read-ahead
        of a sequential pass coming in from the shard before (:mod:`~datastack.canonical.
        sharded`); nothing for a local file."""
        state = self._state()
        rows = min(rows, state.length)
        if state.can_prefetch and rows > 0:
            self._prefetch(state, np.arange(rows), wait=False, ahead=True)

    def _prefetch(self, state: _OpenRecords, uniq: Indices, *, wait: bool = True,
                  ahead: bool = False) -> None:
        """Hand every byte range the rows need to the stream (one round trip over GridFS;
        ``wait=False``: in the background, a sampler's hint for the next batches, or with
        ``ahead``, the read-ahead of a sequential pass)."""
        ranges: list[tuple[int, int]] = []
        for column in state.columns:
            stored = column.stored
            if column.values is not None:
                continue
            if column.offsets is None:
                groups = np.unique(uniq // stored.rows_per_group)
            else:
                groups = _value_groups(column, uniq)
            ranges.extend(stored.ranges_for(groups))
        if ranges:
            state.resource.prefetch(sorted(ranges), wait=wait, ahead=ahead)

    @h5_calls
    def storage_blocks(self) -> Any:
        """The storage block of each sample when the file is read in remote blocks (GridFS):
        the block where the sample's largest field starts. None for local files."""
        from datastack.iterators.blocks import StorageBlocks, remote_block_size

        state = self._state()
        block = remote_block_size(state.resource)
        lazy = [c for c in state.columns if c.values is None]
        if block is None or not lazy:
            return None
        column = max(lazy, key=lambda c: int(c.stored.dset.shape[0]) * c.stored.row_bytes)
        starts = _sample_starts(column, state.length)

        def prefetch(indices: Indices) -> None:
            self._prefetch(state, np.unique(indices), wait=False)

        return StorageBlocks((starts // block).astype(np.int64), block, prefetch)

    @h5_calls
    def _get_targets(self, target_pos: int) -> NDArray[Any]:
        state = self._state()
        column = state.columns[target_pos]
        if column.values is not None:
            return column.values
        return super()._get_targets(target_pos)

    @h5_calls
    def column_arrays(self, name: str) -> tuple[NDArray[Any], Any, Any]:
        """The whole stored column of field ``name``: ``(values, offsets, shapes)`` as numpy
        (offsets and shapes None for a fixed field), for ``to_arrow`` to wrap without a
        Python object per value."""
        state = self._state()
        column = next((c for c in state.columns if c.field.name == name), None)
        if column is None:
            raise KeyError(name)
        if column.values is not None:
            return column.values, None, None
        if column.offsets is None:
            return np.asarray(column.stored.dset[()]), None, None
        values = np.asarray(column.stored.dset[: int(column.offsets[-1])])
        return values, column.offsets, column.shapes

    # -- metadata ---------------------------------------------------------------------------
    @property
    @h5_opens
    def fields(self) -> dict[str, Field]:
        """Ordered ``name -> Field`` of this split (from the file's schema)."""
        return {c.field.name: c.field for c in self._state().columns}

    @property
    @h5_opens
    def attrs(self) -> dict[str, Any]:
        """The file's name and schema."""
        return dict(self._state().attrs)

    @property
    def split(self) -> str:
        return self.group

    def with_image_options(
        self, *, mode: str | None = None, decode: bool = True
    ) -> RecordsDatasetIterator:
        """The same split with images converted to ``mode`` or left encoded (``decode=False``)."""
        return RecordsDatasetIterator(
            self.resource, self.group, image_mode=mode, decode_images=decode
        )

    def __repr__(self) -> str:
        return f"<RecordsDatasetIterator {self.resource.identifier}:/{self.group}>"


__all__ = ["ListRows", "RecordsDatasetIterator"]
