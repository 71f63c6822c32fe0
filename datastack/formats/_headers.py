"""The headers of the array formats (IDX, NPY), parsed and checked here, once, for the formats'
preprocessing (:mod:`~datastack.formats.idx`, :mod:`~datastack.formats.npy`) and for their
raw-stream iterators (:mod:`~datastack.formats.array_iterators`).

>>> import io, struct
>>> read_idx_header(io.BytesIO(b"\\0\\0\\x08\\x03" + struct.pack(">3I", 2, 28, 28)), "x")
((2, 28, 28), dtype('uint8'))
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from datastack.errors import FormatError
from datastack.formats._arrays import Reader, read_exact

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


#: Largest ``.npy`` header accepted (numpy's own default guard is 10 000 too).
MAX_NPY_HEADER = 10_000
def read_npy_header(
    stream: Reader, name: str, *, numeric_only: bool = True
) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """Parse an ``.npy`` header at the stream's position: ``(shape, fortran_order, dtype)``.

    Refuses object arrays (they need pickle) and, with ``numeric_only``, anything but plain
    bool/int/uint/float/complex dtypes.
    """
    fmt = np.lib.format
    try:
        version = fmt.read_magic(stream)  # type: ignore[no-untyped-call]
        if version == (1, 0):
            header = fmt.read_array_header_1_0(stream, max_header_size=MAX_NPY_HEADER)
        elif version in ((2, 0), (3, 0)):
            header = fmt.read_array_header_2_0(stream, max_header_size=MAX_NPY_HEADER)
        else:  # pragma: no cover - read_magic accepts only known majors
            raise ValueError(f"unsupported version {version}")
        shape, fortran, dtype = header
    except (ValueError, EOFError, SyntaxError, TypeError, OSError) as exc:
        raise FormatError(f"{name}: not a valid .npy file ({exc})") from None
    if dtype.hasobject:
        raise FormatError(
            f"{name}: the array holds Python objects, which needs pickle; refused "
            "(allow_pickle is never enabled). Save a plain numeric array instead"
        )
    if numeric_only and (dtype.kind not in "biufc" or dtype.names is not None):
        raise FormatError(f"{name}: dtype {dtype} is not a plain numeric type")
    return tuple(int(d) for d in shape), bool(fortran), dtype


__all__ = ["IDX_DTYPES", "MAX_NPY_HEADER", "header_size", "read_idx_header", "read_npy_header"]
