"""Arrow-shaped data given to ``datastack.publish``: a ``pyarrow.Table`` or ``RecordBatch``, a
``pyarrow.RecordBatchReader`` (read batch by batch), a Polars DataFrame and a Hugging Face
``datasets.Dataset``, turned at the edge into the fields and columns publish writes.

Arrow columns are typed already, so each one becomes one field under its own name (as a dict
of arrays does), without the CSV typing policy: numbers and booleans -> ``array`` fields (a
``fixed_size_list`` -> an ``array`` of that shape), ``list`` of numbers -> ``ragged``,
strings -> ``string`` (a string *target* -> a ``label`` over its sorted values, or continuing
the class names of the dataset's last version),
binary -> ``bytes``, a dictionary of strings -> a ``label`` whose names are the dictionary in
its order, a Hugging Face ``ClassLabel`` -> a ``label`` with its names; an ``Image`` feature
(or a binary column ``to_arrow`` wrote from an image field) -> an ``image`` field of the
encoded bytes, each verified with Pillow. Anything else (nulls in a column that has no NaN,
timestamps, structs) is a :class:`~datastack.errors.FormatError` naming the column and what
to do.

Fixed numeric columns are numpy views of the Arrow buffers where the layout allows (one
chunk, no nulls); variable columns stay Arrow arrays (:class:`ArrowRows`) and become Python
values only a block of rows at a time while they are written. A ``RecordBatchReader`` is
spooled batch by batch to an Arrow IPC file that is memory mapped (and unlinked at once), so
the data sits in the page cache rather than in the process's heap.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from datastack._codes import KnownCodes, continued, known_for
from datastack.errors import ConfigurationError, FormatError
from datastack.fields import ARRAY, BYTES, LABEL, RAGGED, STRING, Field, FlatRows

#: Rows turned into Python values at a time (digest, writer blocks).
ROWS_AT_A_TIME = 65_536

_MODULES = ("pyarrow", "polars", "datasets")


def is_arrow_like(data: Any) -> bool:
    """Whether ``data`` is a pyarrow table/batch/reader, a Polars frame or a HF dataset."""
    module = type(data).__module__.split(".")[0]
    return module in _MODULES  # a DatasetDict too (a dict): as_table says what to pass


def require_pyarrow(what: str) -> Any:
    """pyarrow (a core dependency, imported when first needed: ``import datastack`` stays
    light); ``what`` names the caller."""
    import pyarrow

    return pyarrow


class ArrowRows:
    """A :class:`~datastack.canonical.columns.RowSource` over one Arrow array (strings, binary
    or lists of numbers): Python values only for the rows taken."""

    def __init__(self, array: Any, field: Field) -> None:
        self.array = array
        self.field = field

    def __len__(self) -> int:
        return len(self.array)

    def take(self, rows: NDArray[np.int64]) -> list[Any]:
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and bool((np.diff(rows) == 1).all()):
            part = self.array.slice(int(rows[0]), len(rows))
        else:
            part = self.array.take(rows)
        if self.field.kind != RAGGED:
            return list(part.to_pylist())
        lengths = part.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
        flat = part.flatten().to_numpy(zero_copy_only=False).astype(self.field.dtype, copy=False)
        return list(np.split(flat, np.cumsum(lengths)[:-1])) if len(lengths) else []

    def take_flat(self, rows: NDArray[np.int64]) -> Any:
        """Rows of a string/bytes column as flat values + offsets (``None`` otherwise)."""
        if self.field.kind not in (STRING, BYTES) or len(rows) == 0:
            return None
        rows = np.asarray(rows, dtype=np.int64)
        if bool((np.diff(rows) == 1).all()):
            return FlatRows.of(self.array.slice(int(rows[0]), len(rows)))
        return FlatRows.of(self.array.take(rows))

    def flat_blocks(self) -> Iterator[Any]:
        """Every row as :class:`~datastack.canonical.columns.FlatRows` blocks (strings and
        bytes; ``None`` once for other kinds)."""
        for lo in range(0, len(self), ROWS_AT_A_TIME):
            hi = min(lo + ROWS_AT_A_TIME, len(self))
            yield self.take_flat(np.arange(lo, hi, dtype=np.int64))

    @property
    def values(self) -> Iterator[Any]:
        """Every value in order, a block of rows at a time (what a content digest reads)."""
        for lo in range(0, len(self), ROWS_AT_A_TIME):
            hi = min(lo + ROWS_AT_A_TIME, len(self))
            yield from self.take(np.arange(lo, hi, dtype=np.int64))


def _null_error(name: str, array: Any) -> FormatError:
    import pyarrow.compute as pc

    first = int(pc.index(array.is_null(), True).as_py())
    return FormatError(
        f"publish: column {name!r} has {array.null_count} missing values (first at row "
        f"{first}); expected none: fill them (or use a float column, where NaN is allowed)"
    )


def _numbers(name: str, array: Any, pa: Any) -> NDArray[Any]:
    """A primitive numeric or boolean column as numpy (a view when it has no nulls)."""
    if array.null_count:
        if not pa.types.is_floating(array.type):
            raise _null_error(name, array)
        return np.asarray(array.to_numpy(zero_copy_only=False))
    if pa.types.is_boolean(array.type):
        return np.asarray(array.to_numpy(zero_copy_only=False))
    return np.asarray(array.to_numpy(zero_copy_only=True))


def _fixed(name: str, array: Any, pa: Any) -> tuple[Field, NDArray[Any]]:
    """A (nested) ``fixed_size_list`` of numbers -> an ``array`` field of that shape."""
    shape: list[int] = []
    values = array
    while pa.types.is_fixed_size_list(values.type):
        if values.null_count:
            raise _null_error(name, values)
        shape.append(values.type.list_size)
        values = values.flatten()
    if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)
            or pa.types.is_boolean(values.type)):
        raise FormatError(f"publish: column {name!r} is a fixed-size list of {values.type}; "
                          "expected numbers")
    flat = _numbers(name, values, pa)
    matrix = flat.reshape(len(array), *shape)
    return Field(name, ARRAY, matrix.dtype.name, tuple(shape)), matrix


def _label(name: str, codes: Any, names: Sequence[str]) -> tuple[Field, NDArray[Any]]:
    out = np.asarray(codes, dtype=np.int64)
    if len(out) and (int(out.min()) < 0 or int(out.max()) >= len(names)):
        raise FormatError(f"publish: column {name!r} has class codes outside 0..{len(names) - 1}")
    return Field(name, LABEL, "int64", (), names=tuple(str(n) for n in names)), out


def _string_target(name: str, array: Any, pa: Any,
                   known: Sequence[str] | None = None) -> tuple[Field, NDArray[Any]]:
    import pyarrow.compute as pc

    names = continued(known, pc.unique(array).to_pylist())
    return _label(name, pc.index_in(array, value_set=pa.array(names)).to_numpy(), names)


def _dictionary(name: str, array: Any, pa: Any) -> tuple[Field, NDArray[Any]]:
    if not pa.types.is_string(array.dictionary.type) and not pa.types.is_large_string(
            array.dictionary.type):
        raise FormatError(f"publish: column {name!r} is a dictionary of {array.dictionary.type}; "
                          "expected class names (strings)")
    if array.null_count:
        raise _null_error(name, array)
    return _label(name, array.indices.to_numpy(zero_copy_only=False), array.dictionary.to_pylist())


def arrow_field(name: str, array: Any, is_target: bool,
                class_names: Sequence[str] | None = None,
                known: Sequence[str] | None = None) -> tuple[Field, Any]:
    """The field and column of one Arrow array (one chunk); see the module docstring.
    ``known``: the class names a string target continues (the dataset's last version's)."""
    import pyarrow as pa

    kind = array.type
    if class_names is not None:
        return _label(name, _numbers(name, array, pa), class_names)
    if pa.types.is_dictionary(kind):
        return _dictionary(name, array, pa)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        values = _numbers(name, array, pa)
        if is_target and pa.types.is_integer(kind):
            return Field(name, ARRAY, "int64", ()), values.astype(np.int64)
        return Field(name, ARRAY, values.dtype.name, ()), values
    if pa.types.is_fixed_size_list(kind):
        return _fixed(name, array, pa)
    if array.null_count:
        raise _null_error(name, array)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        if is_target:
            return _string_target(name, array, pa, known)
        return Field(name, STRING), ArrowRows(array, Field(name, STRING))
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return Field(name, BYTES), ArrowRows(array, Field(name, BYTES))
    if (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and (
            pa.types.is_integer(kind.value_type) or pa.types.is_floating(kind.value_type)):
        fld = Field(name, RAGGED, kind.value_type.to_pandas_dtype().__name__, (None,))
        return fld, ArrowRows(array, fld)
    raise FormatError(
        f"publish: column {name!r} has Arrow type {kind}; expected numbers, fixed-size lists, "
        "lists of numbers, strings, binary or a dictionary of class names: cast it first"
    )


def _spooled(reader: Any, pa: Any) -> Any:
    """A reader's batches written one at a time to an unlinked, memory-mapped IPC file."""
    handle, path = tempfile.mkstemp(prefix="datastack-publish-", suffix=".arrow")
    os.close(handle)
    try:
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, reader.schema) as writer:
            for batch in reader:
                writer.write_batch(batch)
        return pa.ipc.open_file(pa.memory_map(path, "r")).read_all()
    finally:
        os.unlink(path)  # the mapping stays valid (POSIX); nothing is left behind


def _hf_table(data: Any) -> tuple[Any, dict[str, list[str]], set[str]]:
    """A Hugging Face dataset's Arrow table (its indices applied), its ClassLabel names and
    its Image columns (their encoded bytes)."""
    from datasets import ClassLabel, Image

    if getattr(data, "_indices", None) is not None:
        data = data.flatten_indices()
    table = data.data.table
    names = {k: list(f.names) for k, f in data.features.items() if isinstance(f, ClassLabel)}
    images = set()
    for key, feature in data.features.items():
        if isinstance(feature, Image):  # struct<bytes, path> -> the encoded bytes
            column = table.column(key).combine_chunks()
            if column.field("bytes").null_count:
                raise FormatError(f"publish: image column {key!r} has images given by path "
                                  "only; load them into bytes first (datasets' Image())")
            index = table.schema.get_field_index(key)
            table = table.set_column(index, key, column.field("bytes"))
            images.add(key)
    return table, names, images


def image_field(name: str, array: Any) -> tuple[Field, ArrowRows]:
    """Encoded images (binary) -> an ``image`` field: each one verified with Pillow (a bomb
    or a corrupt image is a FormatError naming the row), its decoded mode collected."""
    from datastack.fields import IMAGE, image_shape, verify_image

    if array.null_count:
        raise _null_error(name, array)
    modes = set()
    for lo in range(0, len(array), ROWS_AT_A_TIME):
        for k, data in enumerate(array.slice(lo, ROWS_AT_A_TIME).to_pylist()):
            modes.add(verify_image(data, f"publish: column {name!r} row {lo + k}"))
    found = tuple(sorted(modes))
    fld = Field(name, IMAGE, "uint8", image_shape(found), modes=found)
    return fld, ArrowRows(array, fld)


def as_table(data: Any) -> tuple[Any, dict[str, list[str]], set[str]]:
    """``data`` as one ``pyarrow.Table``, the class names its metadata gives per column and
    its image columns."""
    pa = require_pyarrow("publishing Arrow data")
    module = type(data).__module__.split(".")[0]
    if module == "datasets":
        if not hasattr(data, "features") or not hasattr(data, "data"):
            raise ConfigurationError(
                f"publish: data is a datasets.{type(data).__name__}; expected one "
                "datasets.Dataset (publish each split of a DatasetDict, e.g. dd['train'])"
            )
        return _hf_table(data)
    if module == "polars":
        data = data.collect() if hasattr(data, "collect") else data
        data = data.to_arrow()
    if isinstance(data, pa.RecordBatchReader):
        data = _spooled(data, pa)
    elif isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if not isinstance(data, pa.Table):
        raise ConfigurationError(
            f"publish: data is a {type(data).__module__}.{type(data).__name__}; expected a "
            "pyarrow Table, RecordBatch or RecordBatchReader, a Polars DataFrame or a "
            "datasets.Dataset"
        )
    return data, _names_in_metadata(data.schema), _images_in_metadata(data.schema)


def _described(fld: Any) -> dict[str, Any]:
    raw = (fld.metadata or {}).get(b"datastack")
    try:
        described = json.loads(raw) if raw is not None else {}
    except ValueError:
        return {}
    return described if isinstance(described, dict) else {}


def _images_in_metadata(schema: Any) -> set[str]:
    """Binary columns that ``to_arrow`` wrote from image fields."""
    return {fld.name for fld in schema if _described(fld).get("kind") == "image"}


def _names_in_metadata(schema: Any) -> dict[str, list[str]]:
    """Class names that ``to_arrow`` wrote into field metadata (int label columns)."""
    out: dict[str, list[str]] = {}
    for fld in schema:
        described = _described(fld)
        if described.get("kind") == LABEL and described.get("names") and \
                not str(fld.type).startswith("dictionary"):
            out[fld.name] = list(described["names"])
    return out


def _chunked_field(name: str, array: Any, is_target: bool,
                   class_names: Sequence[str] | None,
                   known: Sequence[str] | None = None) -> tuple[Field, Any]:
    """:func:`arrow_field` of a column of many chunks (a spooled reader) without gathering
    it in the heap: numbers chunk by chunk into an unlinked memory-mapped scratch file,
    strings and bytes read from their chunks; other kinds are combined first."""
    import pyarrow as pa

    kind = array.type
    if array.num_chunks <= 1 or class_names is not None:
        return arrow_field(name, array.combine_chunks(), is_target, class_names, known)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        fld, _ = arrow_field(name, array.chunk(0), is_target)
        out = _scratch(len(array), np.dtype(fld.dtype))
        at = 0
        for chunk in array.chunks:
            _, values = arrow_field(name, chunk, is_target)  # each chunk checked (nulls)
            out[at : at + len(chunk)] = values
            at += len(chunk)
        return fld, out
    text = pa.types.is_string(kind) or pa.types.is_large_string(kind)
    if text and is_target and not array.null_count:  # unique / index_in read the chunks
        return _string_target(name, array, pa, known)
    plain = pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or (
        not is_target and text)
    if plain and not array.null_count:
        fld = Field(name, STRING if "string" in str(kind) else BYTES)
        return fld, ArrowRows(array, fld)
    return arrow_field(name, array.combine_chunks(), is_target, class_names, known)


def _scratch(rows: int, dtype: np.dtype[Any]) -> NDArray[Any]:
    """A writable array of ``rows`` backed by an unlinked temporary file (page cache)."""
    with tempfile.TemporaryFile(prefix="datastack-publish-") as handle:
        handle.truncate(max(1, rows * dtype.itemsize))
        return np.memmap(handle, dtype=dtype, mode="r+", shape=(rows,))


def arrow_columns(
    data: Any, target: str | None, text: Sequence[str] = (), known: KnownCodes | None = None
) -> tuple[list[Field], dict[str, Any], dict[str, list[str]]]:
    """Fields (target last), columns and label encodings of Arrow-shaped ``data``; a string
    target continues the class names ``known`` has for it (docs/living.md)."""
    table, class_names, images = as_table(data)
    names = [str(n) for n in table.column_names]
    if len(set(names)) != len(names):
        raise FormatError(f"publish: the table has duplicate column names {names}")
    for key in (*([target] if target is not None else []), *text):
        if key not in names:
            raise ConfigurationError(f"publish: column {key!r} is not one of {names}")
    if table.num_rows == 0:
        raise FormatError("publish: the table has no rows")
    order = [n for n in names if n != target] + ([target] if target is not None else [])
    fields, columns = [], {}
    for name in order:
        array = table.column(name)
        array = array.unify_dictionaries() if str(array.type).startswith("dictionary") else array
        if name in images:
            fld, column = image_field(name, array.combine_chunks())
        else:
            fld, column = _chunked_field(name, array, name == target, class_names.get(name),
                                         known_for(known, name))
        fields.append(fld)
        columns[name] = column
    encodings = {f.name: list(f.names) for f in fields if f.names}
    return fields, columns, encodings


__all__ = ["ArrowRows", "arrow_columns", "arrow_field", "as_table", "is_arrow_like"]
