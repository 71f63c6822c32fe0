"""``datastack.publish``: a DataFrame, a dict of arrays or a ``(samples, targets)`` pair from
Python into the catalog, as a versioned, atomically published dataset exactly like a refresh.

The data is described as fields and hashed over everything a reader gets back (values as
stored, dtype and shape of every row, field names and kinds, category labels, text/target
options); the hash is the dataset's fingerprint, so publishing identical content again
publishes nothing and returns the current record, and anything a reader could tell apart
publishes a new version. The version goes through the same pipeline as a spec (lease, pending
version, preparation in a child process, one atomic publish); the record's lineage says it
came from Python: ``engine: python``, the calling file and line, the user, the host.

A DataFrame goes through the same table policy as CSV, Parquet and Excel files (features as
float32, categorical codes over sorted labels, NaN for missing values), so the same table
gives the same samples whichever way it arrives. pandas is optional (only needed to pass
a DataFrame). Publishing again to a dataset that has a version continues its category codes
(``docs/living.md``): the class names of a string target (and a DataFrame's categorical
columns) keep the codes of the last version, new ones take the next codes.

>>> import tempfile, numpy as np, datastack
>>> store = tempfile.mkdtemp()
>>> arrays = {"x": np.arange(6, dtype=np.float32).reshape(3, 2), "label": np.array([0, 1, 0])}
>>> record = datastack.publish("toy", arrays, target="label", storage=store)
>>> record.version, datastack.publish("toy", arrays, target="label", storage=store).version
(1, 1)
>>> datastack.load("toy", storage=store).as_dict()[1]["x"].tolist()
[2.0, 3.0]
"""

from __future__ import annotations

import getpass
import hashlib
import inspect
import json
import os
import sys
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from datastack._codes import KnownCodes, continued, known_for, new_labels, new_values_schema
from datastack.errors import ConfigurationError, FormatError, PublishError
from datastack.factory import DatasetFactory
from datastack.fields import ARRAY, BYTES, LABEL, RAGGED, STRING, Field
from datastack.identifiers import validate_dataset_name
from datastack.specs.model import DatasetSpec

if TYPE_CHECKING:  # pragma: no cover
    from datastack.canonical.writer import PreparedData
    from datastack.catalog.record import VersionRecord
    from datastack.store import Store


class _Columns:
    """Data from Python as fields + one column per field (+ what the schema should say)."""

    def __init__(self, fields: list[Field], columns: dict[str, Any],
                 encodings: dict[str, list[str]] | None = None,
                 transforms: dict[str, Any] | None = None,
                 new_values: dict[str, dict[str, int]] | None = None) -> None:
        self.fields = fields
        self.columns = columns
        self.encodings = encodings or {}
        self.transforms = transforms or {}
        #: ``{column: {label: rows}}``: labels the dataset's last version did not have
        self.new_values = new_values or {}

    def digest(self) -> str:
        """sha256 over everything a reader gets back: field descriptions (names, kinds, dtypes,
        shapes, labels, feature columns), the category labels of every column, and each value
        as it will be stored (after the table transforms), with its type, dtype and shape."""
        h = hashlib.sha256()
        _feed(h, "encodings")
        _feed(h, json.dumps(self.encodings, sort_keys=True, ensure_ascii=True))
        for fld in self.fields:
            _feed(h, json.dumps(fld.to_dict(), sort_keys=True, ensure_ascii=True))
            column = self.columns[fld.name]
            values = column.values if hasattr(column, "values") else column
            transform = self.transforms.get(fld.name)
            if transform is not None and isinstance(values, np.ndarray):
                values = transform(values)
            if isinstance(values, np.ndarray) and values.dtype != object:
                _feed(h, values)
                continue
            _feed(h, f"rows:{len(column)}")  # values may be a generator (Arrow columns)
            if fld.kind in (STRING, BYTES) and hasattr(column, "flat_blocks"):
                for flat in column.flat_blocks():
                    _feed_flat(h, b"s" if fld.kind == STRING else b"b", flat)
                continue
            for value in values:
                _feed(h, value)
        return h.hexdigest()


def _feed(h: Any, value: Any) -> None:
    """Add ``value`` to ``h`` unambiguously: a type tag, then (dtype, shape and) bytes, each
    length-prefixed, so that no two different values (a reshaped ragged row, an int32 row with
    the bytes of a float32 one, ``"ab"`` + ``"c"`` vs ``"a"`` + ``"bc"``) feed the same bytes."""
    if value is None:
        tag, data = b"n", b""
    elif isinstance(value, str):
        tag, data = b"s", value.encode("utf-8", "surrogatepass")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        tag, data = b"b", bytes(value)
    else:
        array = np.asarray(value)
        if array.dtype == object:
            _feed(h, f"objects:{array.shape}")
            for item in array.reshape(-1):
                _feed(h, item)
            return
        _feed(h, f"array:{array.dtype.str}:{array.shape}")
        tag, data = b"a", np.ascontiguousarray(array).tobytes()
    h.update(tag + len(data).to_bytes(8, "little"))
    h.update(data)


def _feed_flat(h: Any, tag: bytes, rows: Any) -> None:
    """:func:`_feed` of every string (``tag`` ``s``) or bytes (``b``) row of a flat block, in
    one buffer: the very bytes the rows fed one by one would give."""
    flat, sizes = rows.flat()
    n = len(sizes)
    if n == 0:
        return
    ends = np.cumsum(sizes)
    heads = 9 * np.arange(n, dtype=np.int64) + ends - sizes  # where each row's tag goes
    out = np.empty(9 * n + int(ends[-1]), np.uint8)
    data = np.ones(len(out), bool)
    data[heads[:, None] + np.arange(9)] = False
    out[heads] = tag[0]
    out[heads[:, None] + 1 + np.arange(8)] = sizes.astype("<u8").view(np.uint8).reshape(n, 8)
    out[data] = flat
    h.update(out)


def _check_text(values: Sequence[Any], what: str) -> None:
    """Refuse strings that are not Unicode text (a lone surrogate such as ``"\\ud800"``,
    which has no UTF-8 form), naming the row."""
    strings = [v for v in values if isinstance(v, str)]
    try:
        "".join(strings).encode("utf-8")
        return
    except UnicodeEncodeError:
        pass
    for row, value in enumerate(values):
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                bad = value[exc.start]
                raise FormatError(
                    f"publish: {what}, row {row}: the string {value[:40]!r} holds a lone "
                    f"surrogate (U+{ord(bad):04X} at position {exc.start}), which is not "
                    "Unicode text and has no UTF-8 form; expected valid text. Decode the "
                    "source with errors='replace' (or 'surrogateescape' -> bytes) first"
                ) from None


def _check_names(keys: Sequence[Any], strict: bool) -> list[str]:
    """Column names as strings: unique, valid text (and strings, when ``strict``)."""
    if strict:
        for key in keys:
            if not isinstance(key, str):
                raise ConfigurationError(
                    f"publish: column names must be strings; got {key!r} "
                    f"({type(key).__name__}); rename it, e.g. {{str(key): values}}"
                )
    names = [str(k) for k in keys]
    _check_text(names, "column names")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ConfigurationError(
                f"publish: column name {name!r} appears more than once ({names[:20]}); "
                "expected unique names: rename or drop the duplicates"
            )
        seen.add(name)
    return names


def _field_of(name: str, values: Any, is_target: bool,
              known: Sequence[str] | None = None) -> tuple[Field, Any]:
    from datastack.canonical.records import ListRows

    if isinstance(values, np.ndarray) and values.dtype.kind in "biufc":
        if is_target and values.ndim == 1 and values.dtype.kind in "iu":
            return Field(name, ARRAY, "int64", ()), values.astype(np.int64)
        return Field(name, ARRAY, values.dtype.name, values.shape[1:]), values
    items = list(values)
    if not items:
        raise FormatError(f"publish: column {name!r} is empty")
    if all(isinstance(v, str) for v in items):
        _check_text(items, f"column {name!r}")
        if is_target:
            names = continued(known, set(items))
            code = {label: i for i, label in enumerate(names)}
            codes = np.array([code[v] for v in items], dtype=np.int64)
            return Field(name, LABEL, "int64", (), names=tuple(names)), codes
        return _flat_column(Field(name, STRING), items)
    if all(isinstance(v, bytes) for v in items):
        return _flat_column(Field(name, BYTES), items)
    arrays = [np.asarray(v) for v in items]
    if all(a.dtype.kind in "biufc" and a.ndim == 0 for a in arrays):  # a list of numbers
        return _field_of(name, np.array(arrays), is_target)
    if all(a.dtype.kind in "biufc" for a in arrays) and len({a.ndim for a in arrays}) == 1:
        dtype = np.result_type(*arrays).name
        shape: tuple[int | None, ...] = (None,) * arrays[0].ndim
        return Field(name, RAGGED, dtype, shape), ListRows(arrays)
    raise FormatError(
        f"publish: column {name!r} holds {type(items[0]).__name__} values; expected numbers, "
        "arrays, strings or bytes"
    )


def _flat_column(fld: Field, items: list[Any]) -> tuple[Field, Any]:
    """Strings or bytes as one Arrow array: stored and hashed from its buffers, no Python
    step per value after this one."""
    import pyarrow as pa

    from datastack._arrow_in import ArrowRows

    kind = pa.large_string() if fld.kind == STRING else pa.large_binary()
    return fld, ArrowRows(pa.array(items, kind), fld)


def _from_arrays(data: Mapping[str, Any], target: str | None,
                 known: KnownCodes | None = None) -> _Columns:
    names = _check_names(list(data), strict=True)
    if target is not None:
        if target not in names:
            raise ConfigurationError(f"publish: target {target!r} is not a key of {names}")
        names = [n for n in names if n != target] + [target]
    fields, columns, lengths = [], {}, set()
    for name in names:
        fld, column = _field_of(name, data[name], name == target, known_for(known, name))
        fields.append(fld)
        columns[name] = column
        lengths.add(len(column))
    if len(lengths) != 1:
        raise FormatError(f"publish: columns have different lengths {sorted(lengths)}")
    encodings = {f.name: list(f.names) for f in fields if f.names}
    return _Columns(fields, columns, encodings, None, _new_labels(fields, columns, known))


def _new_labels(fields: Sequence[Field], columns: Mapping[str, Any],
                known: KnownCodes | None) -> dict[str, dict[str, int]]:
    """``{label field: {new class: rows}}``: the classes ``known`` did not have."""
    out: dict[str, dict[str, int]] = {}
    for fld in fields:
        before = known_for(known, fld.name)
        if fld.kind != LABEL or before is None or not fld.names:
            continue
        fresh = new_labels(before, list(fld.names))
        if fresh:
            rows = np.bincount(np.asarray(columns[fld.name], np.int64), minlength=len(fld.names))
            first = len(fld.names) - len(fresh)
            out[fld.name] = {label: int(rows[first + i]) for i, label in enumerate(fresh)}
    return out


def _from_frame(frame: Any, target: str | None, text: Sequence[str] = (),
                known: KnownCodes | None = None) -> _Columns:
    from datastack._arrow_in import ArrowRows
    from datastack.formats._table_policy import Block, TableOptions, TablePolicy
    from datastack.formats.tables import classic_names

    names = _check_names(list(frame.columns), strict=False)
    cells: list[Any] = []
    for index, name in enumerate(names):
        series = frame.iloc[:, index]
        if series.dtype.kind in "biuf":
            cells.append(series.to_numpy(dtype="float64", na_value=np.nan))
        elif (column := _arrow_of(series)) is not None:
            cells.append(column)
        else:
            cells.append([None if _missing(v) else _scalar(v) for v in series.tolist()])
            _check_text(cells[-1], f"column {name!r}")
    policy = TablePolicy(TableOptions(target=target, text=tuple(text)))
    staged = policy.convert(Block(names, cells, range(1, len(frame) + 1)), "DataFrame")
    fields, transforms, encodings = policy.finish(known)
    columns = {f.name: ArrowRows(staged[f.name], f) if f.variable else staged[f.name]
               for f in fields}
    return _Columns(classic_names(fields), columns, encodings, transforms,
                    policy.new_values(known))


def _arrow_of(series: Any) -> Any:
    """A DataFrame column of one type as an Arrow array (no Python object per value), or
    ``None`` for a mixed column (converted cell by cell, which names a bad value)."""
    import pyarrow as pa

    try:
        column = pa.array(series, from_pandas=True)
    except (pa.ArrowException, UnicodeError, OverflowError, TypeError, ValueError):
        return None
    kind = column.type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    plain = (pa.types.is_string(kind) or pa.types.is_large_string(kind)
             or pa.types.is_boolean(kind) or pa.types.is_integer(kind)
             or pa.types.is_floating(kind) or pa.types.is_temporal(kind))
    return column if plain else None


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or (
        type(value).__name__ in ("NAType", "NaTType")
    )


def _scalar(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def _columns_of(data: Any, target: str | None, text: Sequence[str] = (),
                known: KnownCodes | None = None) -> _Columns:
    """``data`` as fields and columns; ``known``: the category codes of the dataset's last
    version, continued (class names of a string target, a DataFrame's categorical columns)."""
    from datastack._arrow_in import arrow_columns, is_arrow_like

    if is_arrow_like(data):  # pyarrow, Polars, Hugging Face datasets (docs/arrow.md)
        fields, columns, encodings = arrow_columns(data, target, text, known)
        return _Columns(fields, columns, encodings, None, _new_labels(fields, columns, known))
    if type(data).__module__.startswith("pandas") and hasattr(data, "columns"):
        return _from_frame(data, target, text, known)
    if isinstance(data, Mapping):
        return _from_arrays(data, target, known)
    if isinstance(data, tuple) and len(data) == 2:
        samples, targets = (np.asarray(part) for part in data)
        return _from_arrays({"samples": samples, "targets": targets}, "targets", known)
    raise ConfigurationError(
        f"publish: data is a {type(data).__name__}; expected a pandas DataFrame, a Polars "
        "DataFrame, a pyarrow Table or RecordBatchReader, a datasets.Dataset, a dict of "
        "arrays or a (samples, targets) pair"
    )


class PythonDataFactory(DatasetFactory):
    """The factory of data published from Python: ``prepare`` writes the columns it holds.

    It runs in the forked preparation child, which inherits the data (nothing is pickled)."""

    def __init__(self, spec: DatasetSpec, data: _Columns) -> None:
        super().__init__(spec)
        self.data = data

    def prepare(self, sources: Sequence[Any], out_path: Path) -> PreparedData:
        from datastack.canonical.writer import CanonicalWriter
        from datastack.pipeline.prepare import write_field_splits

        data = self.data
        decoded_fields = data.fields
        with CanonicalWriter(out_path, self.spec.name, self.spec.compression) as writer:
            write_field_splits(self.spec, decoded_fields, {None: data.columns}, data.transforms,
                               writer, data.encodings)
            target = decoded_fields[-1].name
            features = decoded_fields[0].columns
            extra = {"origin": "python", **new_values_schema(data.new_values)}
            return writer.prepared(list(features) if features else None, target,
                                   data.encodings, extra)


def _known_codes(store: Store, name: str) -> dict[str, list[str]] | None:
    """The category labels of the dataset's last published version (``None``: none yet)."""
    from datastack.canonical.published import known_codes
    from datastack.errors import NotFoundError

    try:
        record = store.catalog.latest(name)
    except NotFoundError:
        return None
    return known_codes(record, store)


def _caller() -> str:
    for frame in inspect.stack()[2:]:
        if not frame.filename.startswith(os.path.dirname(__file__)):
            return f"{frame.filename}:{frame.lineno}"
    return "<unknown>"


def publish(
    name: str,
    data: Any,
    *,
    target: str | None = None,
    splits: Mapping[str, float] | None = None,
    storage: Store | str | os.PathLike[str] | None = None,
    description: str = "",
    seed: int = 0,
    text: Sequence[str] = (),
) -> VersionRecord:
    """Publish ``data`` (pandas or Polars DataFrame, pyarrow Table or RecordBatchReader,
    ``datasets.Dataset``, dict of arrays, ``(samples, targets)``) as dataset ``name``.

    ``target`` names the target column (last in the sample tuple; strings become a label);
    ``splits`` are ratios as in a spec (``{"train": 0.8, "test": 0.2}``, seeded by ``seed``);
    ``text`` lists DataFrame columns kept as strings (others typed like a CSV's columns).
    Returns the catalog record of the published (or, for identical content, the current)
    version. See the module docstring for an example.
    """
    from datastack.pipeline.build import default_producer
    from datastack.pipeline.engines import run_refresh
    from datastack.splits import check_ratios
    from datastack.store import Store

    name = validate_dataset_name(name)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not (
        0 <= int(seed) < 2**64
    ):
        big = isinstance(seed, int) and abs(seed).bit_length() > 96
        shown = f"an integer of {abs(seed).bit_length()} bits" if big else repr(seed)[:40]
        raise ConfigurationError(
            f"publish {name!r}: seed must be an integer from 0 to 2^64 - 1, got {shown}"
        )
    store = Store.open(storage)
    columns = _columns_of(data, target, text, _known_codes(store, name))
    spec = DatasetSpec(
        name=name, sources=(), format=None, description=description,
        splits=check_ratios(splits) if splits else None, seed=seed,
        extra={"origin": "python", "content_sha256": columns.digest()},
        origin="<datastack.publish>",
    )
    producer = {**default_producer(), "engine": "python", "caller": _caller(),
                "user": getpass.getuser()}
    [result] = run_refresh([PythonDataFactory(spec, columns)], store, producer=producer)
    if not result.ok or result.version is None:
        raise PublishError(f"publish {name!r}: {result.reason}; the catalog is unchanged")
    return store.catalog.get(name, result.version)


class _CallableModule(types.ModuleType):
    """``datastack.publish`` names both this module and its function. Once the module has been
    imported by name (``from datastack.publish import PythonDataFactory``), the package
    attribute is the module: calling it still publishes."""

    def __call__(self, *args: Any, **kwargs: Any) -> VersionRecord:
        return publish(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["PythonDataFactory", "publish"]
