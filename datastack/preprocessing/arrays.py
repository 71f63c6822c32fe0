"""NPY, NPZ and IDX readers that never trust a header.

Every header is parsed and checked (magic, dtype, dimensions, ``shape x itemsize`` against the
bytes actually available) *before* any allocation: a 150-byte ``.npy`` claiming 1e8 elements
fails at once with :class:`FormatError`. Pickled (object) arrays are refused. Data is copied
block by block into a staging file in the work folder (or memory-mapped in place when the input
is a plain local file), so a large input is never held in memory.
"""

from __future__ import annotations

import io
import math
import struct
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from datastack.errors import FormatError, UnsafeArchiveError
from datastack.preprocessing.archives import DEFAULT_LIMITS, ArchiveLimits
from datastack.preprocessing.inputs import RawInput
from datastack.preprocessing.writer import ArrayLike

_BLOCK = 8 * 1024 * 1024
MAX_NPY_HEADER = 10_000
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

Pools = dict[str | None, tuple[ArrayLike, ArrayLike | None]]


class Reader(Protocol):
    """Anything with ``read(n) -> bytes``."""

    def read(self, size: int = -1, /) -> bytes: ...


class _Counting(io.RawIOBase):
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


def _read_exact(stream: Reader, n: int, name: str, what: str) -> bytes:
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            raise FormatError(f"{name}: truncated {what}: expected {n} bytes, got {len(data)}")
        data += chunk
    return data


def _check_payload(
    name: str, shape: tuple[int, ...], dtype: np.dtype[Any], available: int | None, limit: int
) -> int:
    if not shape:
        raise FormatError(f"{name}: a 0-d array has no samples; expected at least 1 dimension")
    nbytes = math.prod(shape) * dtype.itemsize
    if available is not None and nbytes != available:
        raise FormatError(
            f"{name}: header says shape {shape} of {dtype} ({nbytes} bytes) but the file holds "
            f"{available} data bytes; the file is truncated or corrupt"
        )
    if nbytes > limit:
        raise UnsafeArchiveError(f"{name}: {nbytes} bytes of data is over the cap of {limit}")
    return nbytes


def _stage(
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


# -- NPY -----------------------------------------------------------------------------------------
def read_npy_header(stream: Reader, name: str) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """Parse an ``.npy`` header safely: ``(shape, fortran_order, dtype)``."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(stream)
        if version == (1, 0):
            header = fmt.read_array_header_1_0(stream, max_header_size=MAX_NPY_HEADER)
        elif version in ((2, 0), (3, 0)):
            header = fmt.read_array_header_2_0(stream, max_header_size=MAX_NPY_HEADER)
        else:  # pragma: no cover - read_magic accepts only known majors
            raise ValueError(f"unsupported version {version}")
        shape, fortran, dtype = header
    except (ValueError, EOFError, SyntaxError, TypeError) as exc:
        raise FormatError(f"{name}: not a valid .npy file ({exc})") from None
    if dtype.hasobject:
        raise FormatError(
            f"{name}: the array holds Python objects, which needs pickle; refused "
            "(allow_pickle=False). Save plain numeric arrays instead."
        )
    if dtype.kind not in "biufc" or dtype.names is not None:
        raise FormatError(f"{name}: dtype {dtype} is not a plain numeric type")
    return tuple(int(d) for d in shape), bool(fortran), dtype


def read_npy(
    raw: RawInput, workdir: Path, limits: ArchiveLimits = DEFAULT_LIMITS, size: int | None = None
) -> ArrayLike:
    """Read one ``.npy`` input (see module docstring)."""
    with raw.open() as opened:
        stream = _Counting(opened)
        shape, fortran, dtype = read_npy_header(stream, raw.name)
        total = raw.size if size is None else size
        available = None if total is None else total - stream.count
        nbytes = _check_payload(raw.name, shape, dtype, available, limits.max_total_bytes)
        if fortran:
            if nbytes > 1024**3:
                raise FormatError(f"{raw.name}: Fortran-order arrays over 1 GiB are not supported")
            data = _read_exact(stream, nbytes, raw.name, "array data")
            return np.ndarray(shape, dtype, buffer=data, order="F").copy(order="C")
        if raw.path is not None and nbytes:
            return np.memmap(raw.path, dtype=dtype, mode="r", offset=stream.count, shape=shape)
        return _stage(stream, raw.name, dtype, shape, nbytes, workdir)


# -- IDX -----------------------------------------------------------------------------------------
def read_idx_header(stream: Reader, name: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """Parse an IDX header (MNIST family): ``(shape, big-endian dtype)``."""
    magic = _read_exact(stream, 4, name, "IDX header")
    if magic[0] != 0 or magic[1] != 0 or magic[2] not in IDX_DTYPES or not 1 <= magic[3] <= 8:
        raise FormatError(
            f"{name}: not an IDX file (magic {magic.hex()}; expected 0000 + type code in "
            f"{sorted(IDX_DTYPES)} + 1-8 dimensions)"
        )
    dims = struct.unpack(f">{magic[3]}I", _read_exact(stream, 4 * magic[3], name, "IDX dims"))
    return tuple(int(d) for d in dims), np.dtype(IDX_DTYPES[magic[2]])


def read_idx(raw: RawInput, workdir: Path, limits: ArchiveLimits = DEFAULT_LIMITS) -> ArrayLike:
    """Read one IDX input, validating dims against the size."""
    with raw.open() as opened:
        stream = _Counting(opened)
        shape, dtype = read_idx_header(stream, raw.name)
        available = None if raw.size is None else raw.size - stream.count
        nbytes = _check_payload(raw.name, shape, dtype, available, limits.max_total_bytes)
        if raw.path is not None and nbytes:
            return np.memmap(raw.path, dtype=dtype, mode="r", offset=stream.count, shape=shape)
        return _stage(stream, raw.name, dtype, shape, nbytes, workdir)


def idx_ndim(raw: RawInput) -> int:
    """Number of dimensions of an IDX input (reads only its header)."""
    with raw.open() as stream:
        return len(read_idx_header(stream, raw.name)[0])


# -- grouping ------------------------------------------------------------------------------------
def _by_split(inputs: Sequence[RawInput]) -> dict[str | None, list[RawInput]]:
    groups: dict[str | None, list[RawInput]] = {}
    for raw in inputs:
        groups.setdefault(raw.split, []).append(raw)
    return groups


def _pick_roles(
    group: str | None, inputs: list[RawInput], roles: list[str]
) -> tuple[RawInput, RawInput | None]:
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


def npy_pools(inputs: Sequence[RawInput], workdir: Path, limits: ArchiveLimits) -> Pools:
    """Samples/targets per split group from ``.npy`` inputs with roles."""
    pools: Pools = {}
    for group, members in _by_split(inputs).items():
        roles = [raw.role or "samples" for raw in members]
        samples, targets = _pick_roles(group, members, roles)
        pools[group] = (
            read_npy(samples, workdir, limits),
            None if targets is None else read_npy(targets, workdir, limits),
        )
    return pools


def idx_pools(inputs: Sequence[RawInput], workdir: Path, limits: ArchiveLimits) -> Pools:
    """Images/labels per split group from IDX inputs, by role or by dimensions (1-D: labels)."""
    pools: Pools = {}
    for group, members in _by_split(inputs).items():
        roles = [
            raw.role or ("targets" if idx_ndim(raw) == 1 else "samples") for raw in members
        ]
        samples, targets = _pick_roles(group, members, roles)
        pools[group] = (
            read_idx(samples, workdir, limits),
            None if targets is None else read_idx(targets, workdir, limits),
        )
    return pools


def npz_pools(
    inputs: Sequence[RawInput],
    workdir: Path,
    limits: ArchiveLimits,
    samples_name: str,
    targets_name: str | None,
) -> Pools:
    """Named arrays from one ``.npz`` per split group (never unpickled)."""
    pools: Pools = {}
    for group, members in _by_split(inputs).items():
        if len(members) != 1:
            raise FormatError(
                f"npz: expected one file per split, got {[m.name for m in members]}"
            )
        raw = members[0]
        path = raw.local_path(workdir)
        try:
            with zipfile.ZipFile(path) as zf:
                samples = _npz_member(zf, raw, samples_name, workdir, limits)
                targets = (
                    None
                    if targets_name is None
                    else _npz_member(zf, raw, targets_name, workdir, limits)
                )
        except (zipfile.BadZipFile, EOFError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise
            raise FormatError(f"{raw.name}: not a valid .npz (zip) file ({exc})") from None
        pools[group] = (samples, targets)
    return pools


def _npz_member(
    zf: zipfile.ZipFile, raw: RawInput, name: str, workdir: Path, limits: ArchiveLimits
) -> ArrayLike:
    try:
        info = zf.getinfo(f"{name}.npy")
    except KeyError:
        present = sorted(n.removesuffix(".npy") for n in zf.namelist())
        raise FormatError(f"{raw.name}: no array {name!r} in the npz; it holds {present}") from None
    if info.file_size > limits.max_total_bytes or (
        info.file_size > limits.ratio_floor
        and info.file_size > limits.max_ratio * max(info.compress_size, 1)
    ):
        raise UnsafeArchiveError(f"{raw.name}: array {name!r} expands past the caps; refused")
    member = RawInput(raw.source, f"{raw.name}!{name}", lambda: zf.open(info), info.file_size)
    return read_npy(member, workdir, limits, size=info.file_size)


__all__ = [
    "IDX_DTYPES",
    "Pools",
    "idx_pools",
    "npy_pools",
    "npz_pools",
    "read_idx",
    "read_idx_header",
    "read_npy",
    "read_npy_header",
]
