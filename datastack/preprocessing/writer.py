"""The canonical stored form: one HDF5 file per dataset version.

Layout (``datastack_format = 1``)::

    /                       attrs: datastack_format=1, name, schema (JSON), encodings (JSON)
    /<split>/               attrs: length
    /<split>/samples        (N, ...) chunked along axis 0, compressed
    /<split>/targets        (N, ...) same (absent for unlabelled data)

Chunks hold about :data:`SAMPLE_CHUNK_BYTES` of samples, but at least :data:`MIN_CHUNK_ROWS`
samples while staying under :data:`MAX_CHUNK_BYTES` (and at least one sample), so a random read
decompresses one small chunk; targets use larger chunks since readers load them eagerly.
Compression is ``lzf`` (see ``docs/preprocessing.md`` for the measurement).

Arrays are copied in blocks of about :data:`COPY_BLOCK_BYTES`, so a source larger than memory is
never held in full.

>>> import tempfile, pathlib, numpy as np
>>> out = pathlib.Path(tempfile.mkdtemp()) / "d.h5"
>>> prepared = write_arrays(out, "demo", {"train": (np.zeros((3, 2)), np.arange(3))})
>>> prepared.splits
{'train': 3}
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from datastack.errors import FormatError

FORMAT_VERSION = 1
SAMPLE_CHUNK_BYTES = 32 * 1024
MIN_CHUNK_ROWS = 4
MAX_CHUNK_BYTES = 1024 * 1024
TARGET_CHUNK_BYTES = 1024 * 1024
COPY_BLOCK_BYTES = 16 * 1024 * 1024
COMPRESSION = "lzf"


class ArrayLike(Protocol):
    """What the writer needs from an input array: numpy, memmap or an h5py dataset."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype[Any]: ...

    def __getitem__(self, key: Any) -> Any: ...


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
    """

    def __init__(self, path: str | os.PathLike[str], name: str, compression: str = COMPRESSION):
        import h5py

        self.path = Path(path)
        self.name = name
        self.compression = compression
        self._file = h5py.File(self.path, "w")
        self._file.attrs["datastack_format"] = FORMAT_VERSION
        self._file.attrs["name"] = name
        self.splits: dict[str, int] = {}
        self.arrays: dict[str, dict[str, dict[str, Any]]] = {}

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
                compression=self.compression,
                shuffle=False,  # measured: slower and larger for image data (docs)
            )
            _copy(array, dset, indices, dtype)
            self.arrays[split][role] = {"shape": [n, *item], "dtype": dtype.str.lstrip("<>=|")}
        self.splits[split] = n
        return n

    def prepared(
        self,
        features: Sequence[str] | None = None,
        target: str | None = None,
        encodings: Mapping[str, Sequence[str]] | None = None,
    ) -> PreparedData:
        """The :class:`PreparedData` for what was written (also stored as file attrs)."""
        enc = {k: [str(v) for v in vals] for k, vals in (encodings or {}).items()}
        schema: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "splits": self.arrays,
            "features": list(features) if features is not None else None,
            "target": target,
            "encodings": enc,
        }
        if self._file.id.valid:
            self._file.attrs["schema"] = json.dumps(schema, sort_keys=True)
            self._file.attrs["encodings"] = json.dumps(enc, sort_keys=True)
        return PreparedData(dict(self.splits), schema, enc)


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
) -> PreparedData:
    """Write ready-made arrays per split in the canonical form, atomically; the easy path for
    custom preprocessors.
    """
    out = Path(out_path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with CanonicalWriter(tmp, name) as writer:
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
    preprocessor's output is checked with this).
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            version = f.attrs.get("datastack_format")
            if version != FORMAT_VERSION:
                raise FormatError(
                    f"{path}: datastack_format attr is {version!r}, expected {FORMAT_VERSION}"
                )
            splits: dict[str, int] = {}
            arrays: dict[str, dict[str, dict[str, Any]]] = {}
            for split, group in f.items():
                if not isinstance(group, h5py.Group) or "samples" not in group:
                    raise FormatError(f"{path}: /{split} is not a group with a samples dataset")
                length = int(group.attrs.get("length", -1))
                arrays[split] = {}
                for role in ("samples", "targets"):
                    if role in group:
                        dset = group[role]
                        if dset.shape[0] != length:
                            raise FormatError(
                                f"{path}: /{split}/{role} has {dset.shape[0]} rows, but the "
                                f"split's length attr says {length}"
                            )
                        arrays[split][role] = {
                            "shape": list(dset.shape),
                            "dtype": dset.dtype.str.lstrip("<>=|"),
                        }
                splits[split] = length
            schema = json.loads(f.attrs.get("schema", "{}"))
            encodings = json.loads(f.attrs.get("encodings", "{}"))
    except OSError as exc:
        raise FormatError(f"{path}: not a readable HDF5 file ({exc})") from None
    schema.setdefault("format_version", FORMAT_VERSION)
    schema["splits"] = arrays
    return PreparedData(splits, schema, encodings)


__all__ = [
    "COMPRESSION",
    "FORMAT_VERSION",
    "SAMPLE_CHUNK_BYTES",
    "CanonicalWriter",
    "PreparedData",
    "chunk_rows",
    "read_prepared",
    "write_arrays",
]
