"""A loaded split (or any iterator with fields) as Arrow, pandas or a Hugging Face dataset.

``to_arrow(it)`` gives a ``pyarrow.Table`` with one column per field, in field order:

==========  =====================================================================
kind        Arrow type
==========  =====================================================================
``array``   its numpy dtype (a scalar), a ``fixed_size_list`` (nested per dim)
``label``   ``dictionary<int64, string>``: codes and the class names
``ragged``  ``list<dtype>`` (1-D samples); ``list<fixed_size_list>`` for (None, k)
``string``  ``string`` (``large_string`` past 2 GiB of text)
``bytes``   ``binary``
``image``   ``binary``: the encoded PNG/JPEG bytes as published
==========  =====================================================================

Every Arrow field carries the datastack field description as JSON in its metadata
(``b"datastack"``: kind, dtype, shape, class names, feature columns).

Zero-copy: a whole split of a published file (what ``datastack.load(name, split="train")``
returns) wraps the arrays read from the file: fixed-shape numbers and labels are the numpy
arrays themselves, and strings, bytes, images and 1-D ragged fields are the stored values and
offsets buffers (offsets narrowed to int32 below 2 GiB). Views, shuffles and combinations are
read in batches (``get_batch``): fixed fields wrap each batch's stacked array; variable ones
are built from the batch's values. ``to_arrow_reader(it)`` streams the same batches as a
``pyarrow.RecordBatchReader`` (one batch in memory at a time).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from numpy.typing import NDArray

from datastack._arrow_in import require_pyarrow
from datastack.errors import FormatError, MissingDependencyError
from datastack.fields import ARRAY, BYTE_KINDS, IMAGE, LABEL, RAGGED, STRING, Field

#: Rows read at a time by the batch path.
BATCH_ROWS = 8192
_INT32 = 2**31 - 1


def _fixed_array(pa: Any, fld: Field, matrix: NDArray[Any]) -> Any:
    matrix = np.ascontiguousarray(matrix)
    if fld.kind == LABEL:
        names = pa.array(list(fld.names or ()), pa.string())
        return pa.DictionaryArray.from_arrays(pa.array(matrix.astype(np.int64, copy=False)), names)
    out = pa.array(matrix.reshape(-1))
    for size in reversed(matrix.shape[1:]):
        out = pa.FixedSizeListArray.from_arrays(out, int(size))
    return out


def _offsets(pa: Any, offsets: NDArray[np.int64]) -> tuple[Any, bool]:
    """Arrow offsets from stored int64 offsets (made to start at 0): int32 when they fit."""
    offsets = offsets - offsets[0] if len(offsets) and offsets[0] else offsets
    if len(offsets) and int(offsets[-1]) > _INT32:
        return pa.py_buffer(np.ascontiguousarray(offsets, np.int64)), True
    return pa.py_buffer(offsets.astype(np.int32)), False


def _from_buffers(pa: Any, fld: Field, values: NDArray[Any], offsets: NDArray[np.int64],
                  shapes: Any) -> Any | None:
    """A variable field from its stored values + offsets (no Python object per value);
    None when the layout does not allow it (ragged of several dims)."""
    n = len(offsets) - 1
    buffer, large = _offsets(pa, offsets)
    start = int(offsets[0])
    values = values[start:]
    if fld.kind in BYTE_KINDS:
        kind = {STRING: (pa.string(), pa.large_string())}.get(
            fld.kind, (pa.binary(), pa.large_binary()))[large]
        data = pa.py_buffer(np.ascontiguousarray(values, np.uint8))
        out = pa.Array.from_buffers(kind, n, [None, buffer, data])
        if fld.kind == STRING:
            try:
                out.validate(full=True)  # UTF-8, as decode_value would check
            except pa.ArrowInvalid as exc:
                raise FormatError(f"field {fld.name!r}: stored text is not UTF-8 ({exc}); "
                                  "re-run the preprocessing") from None
        return out
    if fld.kind == RAGGED and (shapes is None or shapes.shape[1] == 1):
        list_type = (pa.large_list if large else pa.list_)(pa.from_numpy_dtype(values.dtype))
        return pa.Array.from_buffers(list_type, n, [None, buffer],
                                     children=[pa.array(np.ascontiguousarray(values))])
    return None


def _variable_array(pa: Any, fld: Field, values: NDArray[Any]) -> Any:
    """A batch column of a variable field (1-D object array of values) as Arrow."""
    items = list(values)
    if fld.kind == STRING:
        return pa.array(items, pa.string())
    if fld.kind in BYTE_KINDS:
        return pa.array([bytes(v) for v in items], pa.binary())
    arrays = [np.asarray(v, dtype=fld.dtype) for v in items]
    trailing = {a.shape[1:] for a in arrays}
    flat = np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros(0, fld.dtype)
    lengths = np.array([a.shape[0] if a.ndim else 1 for a in arrays], dtype=np.int64)
    inner: Any = pa.array(flat)
    if len(trailing) == 1 and (dims := next(iter(trailing))):
        for size in reversed(dims):
            inner = pa.FixedSizeListArray.from_arrays(inner, int(size))
    elif len(trailing) > 1 or any(a.ndim > 1 for a in arrays):
        return pa.array([a.tolist() for a in arrays])  # variable in several dims: nested lists
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), inner)


def _arrow_field(pa: Any, fld: Field, array: Any) -> Any:
    return pa.field(fld.name, array.type, metadata={"datastack": json.dumps(fld.to_dict())})


def _whole_split(pa: Any, it: Any, fields: dict[str, Field]) -> list[Any] | None:
    """Every column of a whole published split from its stored arrays, or None."""
    column_arrays = getattr(it, "column_arrays", None)
    if column_arrays is None:
        return None
    out = []
    for fld in fields.values():
        values, offsets, shapes = column_arrays(fld.name)
        if offsets is None:
            out.append(_fixed_array(pa, fld, values))
            continue
        array = _from_buffers(pa, fld, values, offsets, shapes)
        if array is None:
            return None
        out.append(array)
    return out


def _batch_arrays(pa: Any, it: Any, fields: dict[str, Field], lo: int, hi: int) -> list[Any]:
    """Rows ``lo..hi-1`` of ``it`` as one Arrow array per field (one ``get_batch``)."""
    batch = it.get_batch(np.arange(lo, hi, dtype=np.int64))
    return [_variable_array(pa, fld, column) if fld.variable or column.dtype == object
            else _fixed_array(pa, fld, column)
            for fld, column in zip(fields.values(), batch, strict=True)]


def _batched(pa: Any, it: Any, fields: dict[str, Field], batch_rows: int) -> list[Any]:
    chunks: list[list[Any]] = [[] for _ in fields]
    for lo in range(0, len(it), batch_rows):
        arrays = _batch_arrays(pa, it, fields, lo, min(lo + batch_rows, len(it)))
        for k, array in enumerate(arrays):
            chunks[k].append(array)
    return [pa.chunked_array(parts) if parts else pa.chunked_array([], _empty_type(pa, fld))
            for parts, fld in zip(chunks, fields.values(), strict=True)]


def to_arrow_reader(it: Any, *, batch_rows: int = BATCH_ROWS) -> Any:
    """``it`` as a ``pyarrow.RecordBatchReader`` of ``batch_rows`` rows at a time (memory
    bounded by one batch: for writers that take a stream, e.g. ``lance.write_dataset``)."""
    pa = require_pyarrow("to_arrow_reader")
    fields = dict(it.fields)
    if any(f.kind == IMAGE for f in fields.values()):
        it = it.with_image_options(decode=False)
    length = len(it)
    first = _batch_arrays(pa, it, fields, 0, min(batch_rows, length)) if length else [
        pa.array([], _empty_type(pa, f)) for f in fields.values()]
    schema = pa.schema([_arrow_field(pa, f, a) for f, a in zip(fields.values(), first,
                                                                 strict=True)])

    def batches() -> Any:
        yield pa.RecordBatch.from_arrays(first, schema=schema)
        for lo in range(batch_rows, length, batch_rows):
            arrays = _batch_arrays(pa, it, fields, lo, min(lo + batch_rows, length))
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)

    return pa.RecordBatchReader.from_batches(schema, batches())


def _empty_type(pa: Any, fld: Field) -> Any:
    if fld.kind == LABEL:
        return pa.dictionary(pa.int64(), pa.string())
    if fld.kind == STRING:
        return pa.string()
    if fld.kind in BYTE_KINDS:
        return pa.binary()
    return pa.from_numpy_dtype(np.dtype(fld.dtype))


def to_arrow(it: Any, *, batch_rows: int = BATCH_ROWS) -> Any:
    """``it`` as a ``pyarrow.Table`` (see the module docstring for the types)."""
    pa = require_pyarrow("to_arrow")
    fields = dict(it.fields)
    if any(f.kind == IMAGE for f in fields.values()):
        it = it.with_image_options(decode=False)
    columns = _whole_split(pa, it, fields)
    if columns is None:
        columns = _batched(pa, it, fields, batch_rows)
    schema = pa.schema([_arrow_field(pa, f, c) for f, c in zip(fields.values(), columns,
                                                                  strict=True)])
    return pa.Table.from_arrays(columns, schema=schema)


def to_pandas(it: Any, *, flatten: bool = True) -> Any:
    """``it`` as a pandas DataFrame: labels as categoricals; with ``flatten`` a table's feature
    vector (an ``array`` field that lists its source ``columns``) spread back into one column
    per source column, as the table had them."""
    table = to_arrow(it)
    try:
        frame = table.to_pandas()
    except ImportError:
        raise MissingDependencyError("to_pandas needs pandas: pip install 'datastack[tables]'"
                                     ) from None
    if not flatten:
        return frame
    for fld in it.fields.values():
        if fld.kind != ARRAY or not fld.columns or fld.shape != (len(fld.columns),):
            continue
        column = table.column(fld.name).combine_chunks()
        matrix = column.flatten().to_numpy().reshape(len(column), len(fld.columns))
        at = list(frame.columns).index(fld.name)
        frame = frame.drop(columns=[fld.name])
        for k, name in enumerate(fld.columns):
            frame.insert(at + k, name, matrix[:, k])
    return frame


def to_hf(it: Any) -> Any:
    """``it`` as a Hugging Face ``datasets.Dataset``: labels as ``ClassLabel`` features,
    images as ``Image`` features (encoded bytes), the rest as Arrow gives them."""
    try:
        import datasets
    except ImportError:
        raise MissingDependencyError("to_hf needs Hugging Face datasets: pip install "
                                     "'datastack[hf]'") from None
    pa = require_pyarrow("to_hf")
    table = to_arrow(it)
    features: dict[str, Any] = {}
    for k, fld in enumerate(it.fields.values()):
        column = table.column(k)
        if fld.kind == LABEL:
            column = pa.chunked_array([c.indices for c in column.chunks], pa.int64())
            features[fld.name] = datasets.ClassLabel(names=list(fld.names or ()))
        elif fld.kind == IMAGE:
            column = pa.chunked_array([pa.StructArray.from_arrays(
                [c, pa.nulls(len(c), pa.string())], ["bytes", "path"]) for c in column.chunks])
            features[fld.name] = datasets.Image()
        else:
            features[fld.name] = datasets.Features.from_arrow_schema(
                pa.schema([pa.field(fld.name, column.type)]))[fld.name]
        table = table.set_column(k, pa.field(fld.name, column.type), column)
    info = datasets.DatasetInfo(features=datasets.Features(features))
    return datasets.Dataset(datasets.table.InMemoryTable(table), info=info)


__all__ = ["to_arrow", "to_arrow_reader", "to_hf", "to_pandas"]
