"""``format: idx``: the IDX files of MNIST and its relatives (images + labels, often gzipped).

The header is parsed here, once, for preprocessing and for the raw-stream iterator. Inputs
without a role are told apart by their dimensions (1-D: labels).

>>> import io, struct
>>> read_idx_header(io.BytesIO(b"\\0\\0\\x08\\x03" + struct.pack(">3I", 2, 28, 28)), "x")
((2, 28, 28), dtype('uint8'))
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from datastack.errors import FormatError
from datastack.formats._arrays import Counting, Reader, check_payload, pick_roles, read_exact, stage
from datastack.formats.archives import DEFAULT_LIMITS, ArchiveLimits
from datastack.formats.base import ArrayLike, Decoded, Format, SplitArrays, group_by_split
from datastack.formats.inputs import RawInput

if TYPE_CHECKING:  # pragma: no cover
    from datastack.iterators.base import DatasetIterator
    from datastack.resources import StreamedResource
    from datastack.specs import DatasetSpec

IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx_header(stream: Reader, name: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """Parse an IDX header: ``(shape, big-endian dtype)``; the data follows at byte
    ``4 + 4 * len(shape)``."""
    magic = read_exact(stream, 4, name, "IDX header")
    if magic[0] != 0 or magic[1] != 0 or magic[2] not in IDX_DTYPES or not 1 <= magic[3] <= 8:
        raise FormatError(
            f"{name}: not an IDX file (magic {magic.hex()}; expected 0000, a type code in "
            f"{[hex(k) for k in IDX_DTYPES]} and 1-8 dimensions)"
        )
    dims = struct.unpack(f">{magic[3]}I", read_exact(stream, 4 * magic[3], name, "IDX dims"))
    return tuple(int(d) for d in dims), np.dtype(IDX_DTYPES[magic[2]])


def header_size(shape: tuple[int, ...]) -> int:
    """Bytes of an IDX header for an array of ``len(shape)`` dimensions."""
    return 4 + 4 * len(shape)


def read_idx(raw: RawInput, workdir: Path, limits: ArchiveLimits = DEFAULT_LIMITS) -> ArrayLike:
    """Read one IDX input for preprocessing, validating dims against the size."""
    with raw.open() as opened:
        stream = Counting(opened)
        shape, dtype = read_idx_header(stream, raw.name)
        available = None if raw.size is None else raw.size - stream.count
        nbytes = check_payload(raw.name, shape, dtype, available, limits.max_total_bytes)
        if raw.path is not None and nbytes:
            return np.memmap(raw.path, dtype=dtype, mode="r", offset=stream.count, shape=shape)
        return stage(stream, raw.name, dtype, shape, nbytes, workdir)


def idx_ndim(raw: RawInput) -> int:
    """Number of dimensions of an IDX input (reads only its header)."""
    with raw.open() as stream:
        return len(read_idx_header(stream, raw.name)[0])


class IdxFormat(Format):
    """Images and labels per split, by role or by dimensions (1-D inputs are labels)."""

    name = "idx"

    def decode(
        self,
        spec: DatasetSpec,
        inputs: list[RawInput],
        workdir: Path,
        limits: ArchiveLimits,
        *,
        probe: bool = True,
    ) -> Decoded:
        parts: SplitArrays = {}
        for group, members in group_by_split(inputs).items():
            roles = [
                raw.role or ("targets" if idx_ndim(raw) == 1 else "samples") for raw in members
            ]
            samples, targets = pick_roles(group, members, roles)
            parts[group] = (
                read_idx(samples, workdir, limits),
                None if targets is None else read_idx(targets, workdir, limits),
            )
        return Decoded(parts)

    def iterator(
        self, resources: Sequence[StreamedResource], options: Any = None
    ) -> DatasetIterator:
        from datastack.formats.array_iterators import IDXDatasetIterator

        return IDXDatasetIterator(*resources[:2])


FORMAT = IdxFormat()

__all__ = ["FORMAT", "IDX_DTYPES", "IdxFormat", "header_size", "read_idx", "read_idx_header"]
