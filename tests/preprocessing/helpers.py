"""Helpers: write raw files, a spec pointing at them, and run preprocess."""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import tarfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import h5py
import numpy as np
import yaml

from datastack.preprocessing import PreparedData, preprocess
from datastack.resources import StreamedResource
from datastack.specs import DatasetSpec, parse_spec


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_spec(tmp_path: Path, files: list[str | dict[str, Any]], **fields: Any) -> DatasetSpec:
    """A dataset 'ds' whose sources are files under ``tmp_path`` (checksums computed)."""
    sources = []
    for entry in files:
        item = {"name": entry} if isinstance(entry, str) else dict(entry)
        name = item.pop("name")
        sources.append({"url": name, "sha256": sha256(tmp_path / name), **item})
    document = {"datasets": {"ds": {"sources": sources, **fields}}}
    return parse_spec(
        yaml.safe_load(yaml.safe_dump(document, sort_keys=False)), "test.yaml", tmp_path
    )["ds"]


def resources(spec: DatasetSpec) -> list[tuple[Any, StreamedResource]]:
    return [(s, StreamedResource.from_path(s.filename, urlsplit(s.url).path)) for s in spec.sources]


def run(spec: DatasetSpec, out: Path, *, in_memory: bool = False, **kwargs: Any) -> PreparedData:
    """Preprocess; ``in_memory`` feeds bytes resources (no local path) instead of files."""
    srcs = resources(spec)
    if in_memory:
        srcs = [(s, StreamedResource.from_bytes(r.identifier, r.read())) for s, r in srcs]
    return preprocess(spec, srcs, out, **kwargs)


def read_h5(path: Path) -> dict[str, dict[str, np.ndarray]]:
    with h5py.File(path, "r") as f:
        assert f.attrs["datastack_format"] == 1
        out = {}
        for split, group in f.items():
            out[split] = {name: group[name][()] for name in group}
            assert group.attrs["length"] == len(out[split]["samples"])
        return out


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    codes = {
        np.dtype("u1"): 0x08,
        np.dtype("i1"): 0x09,
        np.dtype(">i2"): 0x0B,
        np.dtype(">i4"): 0x0C,
        np.dtype(">f4"): 0x0D,
        np.dtype(">f8"): 0x0E,
    }
    big = array.astype(array.dtype.newbyteorder(">")) if array.dtype.itemsize > 1 else array
    header = bytes([0, 0, codes[big.dtype], array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    data = header + big.tobytes()
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


def write_tar(
    path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz"
) -> Path:
    """A tar at ``path`` of ``(TarInfo, bytes or None)`` members (sizes set from the bytes)."""
    with tarfile.open(path, mode) as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path

