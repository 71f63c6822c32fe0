"""Helpers shared by the array formats (NPY, NPZ, IDX): headers are never trusted.

Every header is parsed and checked (magic, dtype, dimensions, ``shape x itemsize`` against the
bytes actually available) *before* any allocation: a 150-byte ``.npy`` claiming 1e8 elements
fails at once with :class:`FormatError`. Data is copied block by block into a staging file in
the work folder (or memory-mapped in place when the input is a plain local file), so a large
input is never held in memory.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from datastack.errors import FormatError, UnsafeArchiveError
from datastack.formats.base import ArrayLike
from datastack.formats.inputs import RawInput

_BLOCK = 8 * 1024 * 1024


class Reader(Protocol):
    """Anything with ``read(n) -> bytes``."""

    def read(self, size: int = -1, /) -> bytes: ...


class Counting(io.RawIOBase):
    """Counts bytes read from a stream (headers of compressed streams have no ``tell``)."""

    def __init__(self, raw: Reader) -> None:
        super().__init__()
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self.raw.read(-1 if size is None else size)
        self.count += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(memoryview(buffer)))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)


def read_exact(stream: Reader, n: int, name: str, what: str) -> bytes:
    """Exactly ``n`` bytes, or :class:`FormatError` naming what was truncated."""
    parts: list[bytes] = []
    got = 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            raise FormatError(f"{name}: truncated {what}: expected {n} bytes, got {got}")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def check_payload(
    name: str,
    shape: tuple[int, ...],
    dtype: np.dtype[Any],
    available: int | None,
    limit: int = 2**63 - 1,
) -> int:
    """The data size a header declares, checked against the bytes present and a cap."""
    if not shape:
        raise FormatError(f"{name}: a 0-d array has no samples; expected at least 1 dimension")
    nbytes = math.prod(shape) * dtype.itemsize
    if available is not None and nbytes != available:
        raise FormatError(
            f"{name}: header claims shape {shape} of {dtype} ({nbytes} bytes) but the file "
            f"holds {available} data bytes; the file is truncated or the header is wrong"
        )
    if nbytes > limit:
        raise UnsafeArchiveError(f"{name}: {nbytes} bytes of data is over the cap of {limit}")
    return nbytes


def stage(
    stream: Reader,
    name: str,
    dtype: np.dtype[Any],
    shape: tuple[int, ...],
    nbytes: int,
    workdir: Path,
) -> ArrayLike:
    """Copy exactly ``nbytes`` of array data into a staging file; check nothing follows."""
    if nbytes == 0:
        return np.empty(shape, dtype)
    target = workdir / f"stage-{len(list(workdir.iterdir()))}.bin"
    remaining = nbytes
    with open(target, "wb") as out:
        while remaining:
            chunk = stream.read(min(_BLOCK, remaining))
            if not chunk:
                raise FormatError(
                    f"{name}: truncated: {nbytes - remaining} of {nbytes} data bytes present"
                )
            out.write(chunk)
            remaining -= len(chunk)
    if stream.read(1):
        raise FormatError(f"{name}: unexpected bytes after the {nbytes} bytes of array data")
    return np.memmap(target, dtype=dtype, mode="r", shape=shape)


def pick_roles(
    group: str | None, inputs: list[RawInput], roles: list[str]
) -> tuple[RawInput, RawInput | None]:
    """The samples input and the optional targets input of one split group."""
    where = f" (split {group!r})" if group else ""
    by_role: dict[str, list[RawInput]] = {"samples": [], "targets": []}
    for raw, role in zip(inputs, roles, strict=True):
        by_role[role].append(raw)
    if len(by_role["samples"]) != 1 or len(by_role["targets"]) > 1:
        names = {role: [r.name for r in found] for role, found in by_role.items()}
        raise FormatError(
            f"expected one samples input and at most one targets input{where}, got {names}; "
            "set role: (and member: for archives) on the sources"
        )
    targets = by_role["targets"][0] if by_role["targets"] else None
    return by_role["samples"][0], targets


__all__ = ["Counting", "Reader", "check_payload", "pick_roles", "read_exact", "stage"]
