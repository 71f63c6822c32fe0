"""The canonical stored form: one HDF5 file per dataset version.

Layout (``datastack_format = 1``)::

    /                       attrs: datastack_format=1, name, schema (JSON), encodings (JSON)
    /<split>/               attrs: length
    /<split>/samples        (N, ...) chunked along axis 0, uncompressed by default
    /<split>/targets        (N, ...) same (absent for unlabelled data)

Chunks hold about :data:`SAMPLE_CHUNK_BYTES` of samples, but at least :data:`MIN_CHUNK_ROWS`
samples while staying under :data:`MAX_CHUNK_BYTES` (and at least one sample), so a random read
touches one small chunk; targets use larger chunks since readers load them eagerly.
Compression is one of :data:`COMPRESSIONS`: ``"none"`` by default (reads are 3-10x faster and
a full pass ~7x faster than ``lzf``, at ~4x the size on mostly-zero images), ``"lzf"`` or
``"gzip"`` when a dataset's spec asks (``compression:``); see ``docs/preprocessing.md``.
Never with the shuffle filter (measured: slower and larger for image data). The file uses the
HDF5 1.10 format (:data:`LIBVER`): a compact chunk index (one round trip per uncached
remote read, not two).

A custom preprocessor calling :func:`write_arrays` or :class:`CanonicalWriter` without a
``compression`` argument gets its spec's setting: the pipeline sets it for the duration of
the call (:func:`default_compression`).

Arrays are copied in blocks of about :data:`COPY_BLOCK_BYTES`, so a source larger than memory is
never held in full.

>>> import tempfile, pathlib, numpy as np
>>> out = pathlib.Path(tempfile.mkdtemp()) / "d.h5"
>>> prepared = write_arrays(out, "demo", {"train": (np.zeros((3, 2)), np.arange(3))})
>>> prepared.splits
{'train': 3}
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from datastack.canonical.columns import FieldAppender, Transform, copy_fields, is_classic
from datastack.canonical.layout import COMPRESSIONS, DEFAULT_COMPRESSION, FIELDS_LAYOUT
from datastack.errors import ConfigurationError, FormatError
from datastack.fields import ARRAY, LABEL, Field, fields_from_schema, fields_to_schema

if TYPE_CHECKING:  # pragma: no cover
    from datastack.formats.base import ArrayLike

FORMAT_VERSION = 1
#: Layout version of files with fields beyond the classic (samples, targets) pair.
FIELDS_FORMAT_VERSION = FIELDS_LAYOUT
SAMPLE_CHUNK_BYTES = 32 * 1024
MIN_CHUNK_ROWS = 4
MAX_CHUNK_BYTES = 1024 * 1024
TARGET_CHUNK_BYTES = 1024 * 1024
COPY_BLOCK_BYTES = 16 * 1024 * 1024
#: The default storage compression: uncompressed (docs/preprocessing.md has the measurements).
COMPRESSION = DEFAULT_COMPRESSION
#: HDF5 file format bounds of the canonical file (see CanonicalWriter).
LIBVER = ("v110", "v110")
#: gzip level when ``"gzip"`` is chosen (h5py's default; level 9 writes 3x slower for ~2%).
GZIP_LEVEL = 4

_CURRENT_DEFAULT: ContextVar[str] = ContextVar("datastack_compression", default=COMPRESSION)


def check_compression(value: str | None) -> str:
    """``value`` as one of :data:`COMPRESSIONS` (``None`` means ``"none"``).

    >>> check_compression("lzf"), check_compression(None)
    ('lzf', 'none')
    """
    name = "none" if value is None else value
    if name not in COMPRESSIONS:
        raise ConfigurationError(
            f"canonical HDF5 compression {value!r} is not supported; expected one of "
            f"{', '.join(COMPRESSIONS)}"
        )
    return name


@contextlib.contextmanager
def default_compression(value: str) -> Iterator[None]:
    """Within the block, writers created without ``compression=`` use ``value``.

    The pipeline wraps custom preprocessors in it, so their ``write_arrays`` calls follow the
    spec's ``compression:`` key (same thread / context only).

    >>> with default_compression("lzf"):
    ...     current_default_compression()
    'lzf'
    """
    token = _CURRENT_DEFAULT.set(check_compression(value))
    try:
        yield
    finally:
        _CURRENT_DEFAULT.reset(token)


def current_default_compression() -> str:
    """The compression a writer uses when none is given (``"none"`` outside the pipeline)."""
    return _CURRENT_DEFAULT.get()


def _h5_filter(compression: str) -> dict[str, Any]:
    if compression == "none":
        return {}
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": GZIP_LEVEL}
    return {"compression": compression}


@dataclass
class PreparedData:
    """What a preprocessor produced: split lengths, schema and categorical encodings.

    ``schema`` is JSON-ready: ``{"format_version": 1, "splits": {split: {array: {"shape",
    "dtype"}}}, "features": [...] | None, "target": name | None, "encodings": {...}}``.
    ``encodings`` maps a column name to its labels: code ``i`` means ``labels[i]``.
    """

    splits: dict[str, int]
    schema: dict[str, Any] = field(default_factory=dict)
    encodings: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for catalog records)."""
        return {"splits": dict(self.splits), "schema": self.schema, "encodings": self.encodings}


def _native(dtype: np.dtype[Any], what: str) -> np.dtype[Any]:
    if dtype.kind not in "biufc":
        raise FormatError(
            f"{what}: dtype {dtype} is not numeric (bool, int, uint, float, complex); "
            "convert it or use a custom preprocessor"
        )
    return dtype.newbyteorder("=")


def chunk_rows(item_shape: tuple[int, ...], itemsize: int, n: int, target_bytes: int) -> int:
    """Samples per chunk: ``target_bytes`` of whole samples, at least ``MIN_CHUNK_ROWS`` unless
    that passes ``MAX_CHUNK_BYTES``; always between 1 and ``n``.

    >>> chunk_rows((28, 28), 1, 60000, SAMPLE_CHUNK_BYTES)  # MNIST
    41
    >>> chunk_rows((3, 32, 32), 1, 50000, SAMPLE_CHUNK_BYTES)  # CIFAR-10
    10
    """
    row = max(1, math.prod(item_shape) * itemsize)
    rows = max(target_bytes // row, min(MIN_CHUNK_ROWS, MAX_CHUNK_BYTES // row))
    return max(1, min(max(n, 1), rows))


class CanonicalWriter:
    """Write the canonical HDF5 file incrementally; use as a context manager.

    >>> import tempfile, pathlib, numpy as np
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.h5"
    >>> with CanonicalWriter(path, "x") as w:
    ...     _ = w.add_split("train", np.ones((4, 2)), np.arange(4))
    >>> w.prepared().splits
    {'train': 4}

    ``compression`` is one of :data:`COMPRESSIONS`; ``None`` (the default) takes the current
    default (the spec's setting inside the pipeline, else ``"none"``).
    """

    def __init__(
        self, path: str | os.PathLike[str], name: str, compression: str | None = None
    ) -> None:
        import h5py

        self.path = Path(path)
        self.name = name
        self.compression = (
            current_default_compression() if compression is None else check_compression(compression)
        )
        # HDF5 1.10 file format: the chunk index of a fixed-size dataset is one compact array
        # (not a B-tree whose nodes end up spread between the data), so an uncached remote
        # read costs one round trip instead of two. Readable by HDF5 >= 1.10 (2016).
        self._file = h5py.File(self.path, "w", libver=LIBVER)
        self._file.attrs["datastack_format"] = FORMAT_VERSION
        self._file.attrs["name"] = name
        self.splits: dict[str, int] = {}
        self.arrays: dict[str, dict[str, dict[str, Any]]] = {}
        #: The fields of a version-2 file (set by :meth:`add_fields`), else ``None``.
        self.fields: list[Field] | None = None

    def __enter__(self) -> CanonicalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._file.id.valid:
            self._file.close()

    def add_split(
        self,
        split: str,
        samples: ArrayLike,
        targets: ArrayLike | None,
        indices: NDArray[np.int64] | None = None,
    ) -> int:
        """Copy ``samples[indices]`` (and targets) into group ``/<split>``; return its length.

        ``indices`` must be sorted ascending (``None`` copies everything, in order).
        """
        n_total = samples.shape[0]
        if targets is not None and targets.shape[0] != n_total:
            raise FormatError(
                f"{self.name}: {n_total} samples but {targets.shape[0]} targets; they must "
                "have the same length"
            )
        if split in self.splits:
            raise FormatError(f"{self.name}: split {split!r} written twice")
        n = n_total if indices is None else len(indices)
        group = self._file.create_group(split)
        group.attrs["length"] = n
        self.arrays[split] = {}
        for role, array, target_bytes in (
            ("samples", samples, SAMPLE_CHUNK_BYTES),
            ("targets", targets, TARGET_CHUNK_BYTES),
        ):
            if array is None:
                continue
            dtype = _native(np.dtype(array.dtype), f"{self.name}/{split}/{role}")
            item = tuple(int(d) for d in array.shape[1:])
            rows = chunk_rows(item, dtype.itemsize, n, target_bytes)
            dset = group.create_dataset(
                role,
                shape=(n, *item),
                dtype=dtype,
                chunks=(rows, *item),
                shuffle=False,  # measured: slower and larger for image data (docs)
                **_h5_filter(self.compression),
            )
            _copy(array, dset, indices, dtype)
            self.arrays[split][role] = {"shape": [n, *item], "dtype": dtype.str.lstrip("<>=|")}
        self.splits[split] = n
        return n

    def add_fields(
        self,
        split: str,
        fields: Sequence[Field],
        columns: Mapping[str, Any],
        indices: NDArray[np.int64] | None = None,
        transforms: Mapping[str, Transform] | None = None,
    ) -> int:
        """Copy rows ``indices`` (sorted; ``None``: all) of named fields into ``/<split>``.

        ``columns[name]`` is an array-like for a fixed field, a
        :class:`~datastack.canonical.columns.RowSource` for a variable one. Every split
        of a file must have the same fields. The file becomes layout version 2
        (``docs/fields.md``), unless the fields are the classic ``samples``/``targets`` pair.
        """
        appender = self.begin_split(split, fields)
        copy_fields(appender, columns, indices, transforms)
        return self.end_split(split, appender)

    def begin_split(self, split: str, fields: Sequence[Field]) -> FieldAppender:
        """Start ``/<split>`` for incremental writes: ``append`` blocks, then :meth:`end_split`."""
        if split in self.splits or split in self._file:
            raise FormatError(f"{self.name}: split {split!r} written twice")
        if self.fields is not None and [f.to_dict() for f in fields] != [
            f.to_dict() for f in self.fields
        ]:
            raise FormatError(f"{self.name}: split {split!r} has other fields than the first")
        self.fields = list(fields)
        return FieldAppender(self._file.create_group(split), fields, _h5_filter(self.compression))

    def group(self, split: str) -> Any:
        """The h5py group of a split written (for datasets beside its fields: row ids)."""
        return self._file[split]

    def end_split(self, split: str, appender: FieldAppender) -> int:
        """Record the length of a split written with :meth:`begin_split`."""
        appender.group.attrs["length"] = appender.length
        self.splits[split] = appender.length
        self.arrays[split] = appender.described(is_classic(appender.fields))
        return appender.length

    def prepared(
        self,
        features: Sequence[str] | None = None,
        target: str | None = None,
        encodings: Mapping[str, Sequence[str]] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> PreparedData:
        """The :class:`PreparedData` for what was written (also stored as file attrs)."""
        enc = {k: [str(v) for v in vals] for k, vals in (encodings or {}).items()}
        fields = self.fields or classic_fields(self.arrays, features, target, enc)
        schema: dict[str, Any] = {
            "format_version": FORMAT_VERSION
            if self.fields is None or is_classic(self.fields)
            else FIELDS_FORMAT_VERSION,
            "splits": self.arrays,
            "features": list(features) if features is not None else None,
            "target": target,
            "encodings": enc,
            "fields": fields_to_schema(fields),
            **dict(extra or {}),
        }
        if self._file.id.valid:
            self._file.attrs["datastack_format"] = schema["format_version"]
            self._file.attrs["schema"] = json.dumps(schema, sort_keys=True)
            self._file.attrs["encodings"] = json.dumps(enc, sort_keys=True)
        return PreparedData(dict(self.splits), schema, enc)


def classic_fields(
    arrays: Mapping[str, Mapping[str, Mapping[str, Any]]],
    features: Sequence[str] | None,
    target: str | None,
    encodings: Mapping[str, Sequence[str]],
) -> list[Field]:
    """The fields of a version-1 file: its ``samples`` and ``targets`` datasets, named after
    the table's features / target column when it has them.

    >>> [f.name for f in classic_fields({"train": {"samples": {"shape": [3, 2], "dtype": "f4"}}},
    ...                                 ["a", "b"], None, {})]
    ['features']
    """
    first = next(iter(arrays.values()), {})
    out: list[Field] = []
    for role in ("samples", "targets"):
        info = first.get(role)
        if info is None:
            continue
        dtype = np.dtype(str(info["dtype"])).name
        shape = tuple(int(d) for d in info["shape"][1:])
        if role == "samples":
            name = "features" if features else "samples"
            columns = tuple(features) if features else None
            out.append(Field(name, ARRAY, dtype, shape, columns=columns, dataset=role))
        elif target is not None and target in encodings and not shape:
            out.append(Field(target, LABEL, dtype, (), names=tuple(encodings[target]),
                             dataset=role))
        else:
            out.append(Field(target or role, ARRAY, dtype, shape, dataset=role))
    return out


def _copy(source: ArrayLike, dset: Any, indices: NDArray[np.int64] | None, dtype: Any) -> None:
    row_bytes = max(1, math.prod(source.shape[1:]) * np.dtype(source.dtype).itemsize)
    block = max(1, COPY_BLOCK_BYTES // row_bytes)
    if indices is None:
        for start in range(0, source.shape[0], block):
            stop = min(start + block, source.shape[0])
            dset[start:stop] = np.asarray(source[start:stop], dtype=dtype)
        return
    for start in range(0, len(indices), block):
        wanted = indices[start : start + block]
        lo, hi = int(wanted[0]), int(wanted[-1]) + 1
        if (hi - lo) * row_bytes <= 4 * COPY_BLOCK_BYTES:  # read the span, select in memory
            data = np.asarray(source[lo:hi])[wanted - lo]
        else:  # sparse: fancy indexing (sorted, unique: fine for numpy and h5py)
            data = np.asarray(source[wanted])
        dset[start : start + len(wanted)] = np.asarray(data, dtype=dtype)


def write_arrays(
    out_path: str | os.PathLike[str],
    name: str,
    splits: Mapping[str, tuple[ArrayLike, ArrayLike | None]],
    *,
    features: Sequence[str] | None = None,
    target: str | None = None,
    encodings: Mapping[str, Sequence[str]] | None = None,
    compression: str | None = None,
) -> PreparedData:
    """Write ready-made arrays per split in the canonical form, atomically; the easy path for
    custom preprocessors.

    ``compression`` (``"none"``, ``"lzf"``, ``"gzip"``) defaults to the spec's setting when
    called from a preprocessor run by the pipeline, else ``"none"``.

    >>> import tempfile, pathlib, numpy as np
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "d.h5"
    >>> write_arrays(out, "demo", {"train": (np.ones((4, 2)), None)}, compression="lzf").splits
    {'train': 4}
    """
    out = Path(out_path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with CanonicalWriter(tmp, name, compression) as writer:
            for split, (samples, targets) in splits.items():
                writer.add_split(split, samples, targets)
            prepared = writer.prepared(features, target, encodings)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return prepared


def read_prepared(path: str | os.PathLike[str]) -> PreparedData:
    """Read and check the canonical layout of ``path``; return its :class:`PreparedData`.

    Raises :class:`FormatError` when the file is not in the canonical form (a custom
    preprocessor's output is checked with this). Reads layout versions 1 and 2.
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            version = f.attrs.get("datastack_format")
            if version not in (FORMAT_VERSION, FIELDS_FORMAT_VERSION):
                raise FormatError(
                    f"{path}: datastack_format attr is {version!r}, expected "
                    f"{FORMAT_VERSION} or {FIELDS_FORMAT_VERSION}"
                )
            schema = json.loads(f.attrs.get("schema", "{}"))
            encodings = json.loads(f.attrs.get("encodings", "{}"))
            splits: dict[str, int] = {}
            arrays: dict[str, dict[str, dict[str, Any]]] = {}
            for split, group in f.items():
                if version == FORMAT_VERSION:
                    arrays[split] = _check_classic(path, split, group, h5py)
                else:
                    arrays[split] = _check_fields(path, split, group, schema, h5py)
                splits[split] = int(group.attrs.get("length", -1))
    except OSError as exc:
        raise FormatError(f"{path}: not a readable HDF5 file ({exc})") from None
    schema.setdefault("format_version", FORMAT_VERSION)
    if version == FORMAT_VERSION:
        schema["splits"] = arrays
    return PreparedData(splits, schema, encodings)


def _rows_of(path: Any, where: str, rows: int, length: int) -> None:
    if rows != length:
        raise FormatError(
            f"{path}: {where} has {rows} rows, but the split's length attr says {length}"
        )


def _check_classic(path: Any, split: str, group: Any, h5py: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(group, h5py.Group) or "samples" not in group:
        raise FormatError(f"{path}: /{split} is not a group with a samples dataset")
    length = int(group.attrs.get("length", -1))
    out: dict[str, dict[str, Any]] = {}
    for role in ("samples", "targets"):
        if role in group:
            dset = group[role]
            _rows_of(path, f"/{split}/{role}", dset.shape[0], length)
            out[role] = {"shape": list(dset.shape), "dtype": dset.dtype.str.lstrip("<>=|")}
    return out


def _check_fields(
    path: Any, split: str, group: Any, schema: Mapping[str, Any], h5py: Any
) -> dict[str, dict[str, Any]]:
    fields = fields_from_schema(schema.get("fields") or [])
    if not isinstance(group, h5py.Group) or not fields:
        raise FormatError(f"{path}: /{split} is not a split group of a file with fields")
    length = int(group.attrs.get("length", -1))
    for fld in fields.values():
        where = f"/{split}/{fld.stored_name}"
        if fld.stored_name not in group:
            raise FormatError(f"{path}: field {fld.name!r} missing: no {where}")
        node = group[fld.stored_name]
        if fld.variable:
            if not isinstance(node, h5py.Group) or "offsets" not in node or "values" not in node:
                raise FormatError(f"{path}: {where} needs 'values' and 'offsets' datasets")
            _rows_of(path, f"{where}/offsets", node["offsets"].shape[0] - 1, length)
        else:
            _rows_of(path, where, node.shape[0], length)
    return dict(schema.get("splits", {}).get(split, {}))


__all__ = [
    "COMPRESSION", "COMPRESSIONS", "FIELDS_FORMAT_VERSION", "FORMAT_VERSION",
    "SAMPLE_CHUNK_BYTES", "CanonicalWriter", "PreparedData", "check_compression", "chunk_rows",
    "classic_fields", "current_default_compression", "default_compression", "read_prepared",
    "write_arrays",
]
