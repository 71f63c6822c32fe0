"""``format: npy``: one ``.npy`` file per role (``samples``, optional ``targets``) and split.

The ``.npy`` header is parsed here, once, for preprocessing and for the raw-stream iterator:
pickled (object) arrays are refused (``allow_pickle`` is never enabled), the claimed
``shape x itemsize`` is checked against the bytes present before anything is allocated.

>>> import io, numpy as np
>>> buf = io.BytesIO(); np.save(buf, np.zeros((3, 2), np.float32)); _ = buf.seek(0)
>>> read_npy_header(buf, "x.npy")
((3, 2), False, dtype('float32'))
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from datastack._checks import Checker
from datastack.errors import FormatError
from datastack.formats._arrays import Counting, Reader, check_payload, pick_roles, read_exact, stage
from datastack.formats.archives import DEFAULT_LIMITS, ArchiveLimits
from datastack.formats.base import ArrayLike, Decoded, Format, SplitArrays, group_by_split
from datastack.formats.inputs import RawInput

if TYPE_CHECKING:  # pragma: no cover
    from datastack.iterators.base import DatasetIterator
    from datastack.resources import StreamedResource
    from datastack.specs import DatasetSpec, SourceSpec

#: Largest ``.npy`` header accepted (numpy's own default guard is 10 000 too).
MAX_NPY_HEADER = 10_000
#: Fortran-order arrays are transposed in memory; larger ones are refused.
MAX_FORTRAN_BYTES = 1024**3
ROLES = ("samples", "targets")


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


def read_npy(
    raw: RawInput, workdir: Path, limits: ArchiveLimits = DEFAULT_LIMITS, size: int | None = None
) -> ArrayLike:
    """Read one ``.npy`` input for preprocessing (memory-mapped or staged, never in RAM)."""
    with raw.open() as opened:
        stream = Counting(opened)
        shape, fortran, dtype = read_npy_header(stream, raw.name)
        total = raw.size if size is None else size
        available = None if total is None else total - stream.count
        nbytes = check_payload(raw.name, shape, dtype, available, limits.max_total_bytes)
        if fortran:
            if nbytes > MAX_FORTRAN_BYTES:
                raise FormatError(
                    f"{raw.name}: Fortran-order arrays over {MAX_FORTRAN_BYTES} bytes are not "
                    "supported; save it with np.save(path, np.ascontiguousarray(a))"
                )
            data = read_exact(stream, nbytes, raw.name, "array data")
            return np.ndarray(shape, dtype, buffer=data, order="F").copy(order="C")
        if raw.path is not None and nbytes:
            return np.memmap(raw.path, dtype=dtype, mode="r", offset=stream.count, shape=shape)
        return stage(stream, raw.name, dtype, shape, nbytes, workdir)


class NpyFormat(Format):
    """``.npy`` arrays with roles: ``role: samples`` (and optionally ``role: targets``)."""

    name = "npy"

    def check_sources(self, sources: Sequence[SourceSpec], check: Checker) -> None:
        groups: dict[str | None, list[str | None]] = {}
        for source in sources:
            groups.setdefault(source.split, []).append(source.role)
        for group, roles in groups.items():
            if sorted(r or "" for r in roles) not in (["samples"], ["samples", "targets"]):
                where = f" of split {group!r}" if group else ""
                raise check.fail(
                    "sources",
                    f"npy sources{where} need role: samples (and optionally one role: "
                    f"targets), got roles {roles}",
                )

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
            roles = [raw.role or "samples" for raw in members]
            samples, targets = pick_roles(group, members, roles)
            parts[group] = (
                read_npy(samples, workdir, limits),
                None if targets is None else read_npy(targets, workdir, limits),
            )
        return Decoded(parts)

    def iterator(
        self, resources: Sequence[StreamedResource], options: Any = None
    ) -> DatasetIterator:
        from datastack.formats.array_iterators import NPYDatasetIterator

        return NPYDatasetIterator(*resources[:2])


FORMAT = NpyFormat()

__all__ = ["FORMAT", "MAX_NPY_HEADER", "ROLES", "NpyFormat", "read_npy", "read_npy_header"]
