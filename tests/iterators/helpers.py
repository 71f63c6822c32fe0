"""Helpers for the iterator tests: canonical HDF5 files and array payloads."""

from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path
from typing import Any

import numpy as np


def write_h5(
    path: Path,
    splits: dict[str, tuple[np.ndarray, np.ndarray | None]],
    *,
    chunk_rows: int | None = 16,
    compression: str | None = "lzf",
    name: str = "demo",
) -> Path:
    """The canonical layout: /<split>/samples and /<split>/targets chunked along axis 0."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["name"] = name
        for split, (x, y) in splits.items():
            g = f.create_group(split)
            chunks = (min(chunk_rows, len(x)), *x.shape[1:]) if chunk_rows else None
            g.create_dataset(
                "samples", data=x, chunks=chunks, compression=compression if chunks else None
            )
            if y is not None:
                g.create_dataset("targets", data=y)
    return path


def mnist_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((n, 4, 3), dtype=np.float32)
    y = rng.integers(0, 10, size=n).astype(np.int64)
    return x, y


def npy_bytes(array: np.ndarray, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, **kwargs)
    return buf.getvalue()


def idx_bytes(array: np.ndarray, compress: bool = False) -> bytes:
    codes = {np.dtype("uint8"): 0x08, np.dtype("int32"): 0x0C, np.dtype("float32"): 0x0D}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    return gzip.compress(data) if compress else data


def add_one(sample: tuple[Any, ...]) -> tuple[Any, ...]:
    """A picklable map function: sample + 1, target unchanged."""
    return (sample[0] + 1, *sample[1:])
