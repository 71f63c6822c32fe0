"""NPY, NPZ and IDX format iterators that seek to each sample instead of loading the file.

Headers are parsed with :mod:`numpy.lib.format` (``.npy``) or by hand (IDX) and checked
before anything is allocated: the claimed ``shape x itemsize`` must match the bytes the
resource actually has, object arrays (which need pickle) are refused, Fortran-order arrays of
more than one dimension are refused (their samples are not contiguous). Every failure is a
:class:`~datastack.errors.FormatError` naming the resource.

Costs: ``.npy``, *stored* ``.npz`` members and plain IDX files read one sample per seek. A
*compressed* ``.npz`` member (``np.savez_compressed``) or a gzipped IDX file cannot be seeked:
it is decompressed completely into memory on first access (cost: its uncompressed size in RAM
and one full read); prefer the HDF5 form that preprocessing writes for large data.

>>> import io, numpy as np
>>> from datastack.resources import StreamedResource
>>> buf = io.BytesIO(); np.save(buf, np.arange(6).reshape(3, 2))
>>> it = NPYDatasetIterator(StreamedResource.from_bytes("x.npy", buf.getvalue()))
>>> len(it), it[-1][0].tolist()
(3, [4, 5])
"""

from __future__ import annotations

import gzip
import math
import struct
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from datastack.errors import FormatError, UnsafeArchiveError
from datastack.formats import idx, npy
from datastack.formats._arrays import Reader as Readable
from datastack.formats._arrays import check_payload
from datastack.formats._arrays import read_exact as _read_exact
from datastack.formats.archives import DEFAULT_LIMITS, check_zip_directory
from datastack.iterators._process import ProcessLocalIterator, private_copy
from datastack.iterators.base import Batch, Indices, Sample
from datastack.resources import StreamedResource

#: Upper bound on what a compressed member / gzipped IDX file may inflate to in memory.
MAX_DECOMPRESSED_BYTES = 8 * 1024**3
_COALESCE_GAP_BYTES = 64 * 1024


class _Rows:
    """Rows of an array stored contiguously (C order) at ``offset`` of a seekable stream."""

    def __init__(
        self, stream: StreamedResource, offset: int, shape: tuple[int, ...], dtype: np.dtype[Any]
    ) -> None:
        self.stream = stream
        self.offset = offset
        self.shape = shape
        self.dtype = dtype
        self.native = dtype.newbyteorder("=") if dtype.byteorder not in "=|" else dtype
        self.row_bytes = math.prod(shape[1:]) * dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, start: int, count: int) -> NDArray[Any]:
        out = np.empty((count, *self.shape[1:]), dtype=self.dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
        self.stream.seek(self.offset + start * self.row_bytes)
        done = 0
        while done < len(view):
            got = self.stream.readinto(view[done:])
            if not got:
                raise FormatError(
                    f"{self.stream.identifier}: truncated while reading rows {start}..."
                    f"{start + count - 1} (the file changed or is corrupt)"
                )
            done += got
        return out if self.native is self.dtype else np.asarray(out.astype(self.native))

    def row(self, index: int) -> NDArray[Any]:
        return np.asarray(self._read(index, 1)[0])

    def rows(self, uniq: Indices) -> NDArray[Any]:
        """Rows ``uniq`` (sorted, unique), reading nearby rows in one go, after a prefetch."""
        gap = max(1, _COALESCE_GAP_BYTES // max(1, self.row_bytes))
        cuts = np.flatnonzero(np.diff(uniq) > gap) + 1
        runs = np.split(uniq, cuts)
        self.stream.prefetch(
            [
                (
                    self.offset + int(r[0]) * self.row_bytes,
                    self.offset + (int(r[-1]) + 1) * self.row_bytes,
                )
                for r in runs
            ]
        )
        parts = []
        for run in runs:
            lo, hi = int(run[0]), int(run[-1]) + 1
            block = self._read(lo, hi - lo)
            parts.append(block if hi - lo == len(run) else block[run - lo])
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def all(self) -> NDArray[Any]:
        return self._read(0, self.shape[0])


class _MemoryRows:
    """Rows of an array held in memory (decompressed members)."""

    def __init__(self, array: NDArray[Any]) -> None:
        self.array = array

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def row(self, index: int) -> NDArray[Any]:
        return np.array(self.array[index])

    def rows(self, uniq: Indices) -> NDArray[Any]:
        return self.array[uniq]

    def all(self) -> NDArray[Any]:
        return self.array


Rows = _Rows | _MemoryRows


@dataclass
class _OpenArrays:
    """What an array iterator holds open in one process."""

    streams: list[StreamedResource]
    samples: Rows
    targets: NDArray[Any] | None


# -- headers (parsed by the format modules) ---------------------------------------------------
def read_npy_header(stream: Readable, name: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """``(shape, dtype)`` of a ``.npy`` whose rows can be read by seek (see
    :func:`datastack.formats.npy.read_npy_header`; 0-d and Fortran-order arrays refused)."""
    shape, fortran, dtype = npy.read_npy_header(stream, name, numeric_only=False)
    if not shape:
        raise FormatError(f"{name}: a 0-d array has no samples; expected shape (N, ...)")
    if fortran and len(shape) > 1:
        raise FormatError(
            f"{name}: Fortran-order arrays cannot be read sample by sample; save it with "
            "np.save(path, np.ascontiguousarray(a))"
        )
    return shape, dtype


def _npy_rows(stream: StreamedResource, start: int, available: int, name: str) -> _Rows:
    stream.seek(start)
    shape, dtype = read_npy_header(stream, name)
    header = stream.tell() - start
    check_payload(name, shape, dtype, available - header)
    return _Rows(stream, start + header, shape, dtype)


def _read_capped(stream: Readable, limit: int, name: str) -> bytes:
    out = bytearray()
    while True:
        chunk = stream.read(min(8 << 20, limit + 1 - len(out)))
        if not chunk:
            return bytes(out)
        out += chunk
        if len(out) > limit:
            raise FormatError(f"{name}: decompresses to more than {limit} bytes; refused")


def _memory_npy(data: bytes, name: str) -> _MemoryRows:
    import io

    stream = io.BytesIO(data)
    shape, dtype = read_npy_header(stream, name)
    check_payload(name, shape, dtype, len(data) - stream.tell())
    array = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=stream.tell())
    return _MemoryRows(array.reshape(shape).astype(dtype.newbyteorder("="), copy=True))


def _idx_header(stream: Readable, name: str) -> tuple[tuple[int, ...], np.dtype[Any], int]:
    shape, dtype = idx.read_idx_header(stream, name)
    return shape, dtype, idx.header_size(shape)


# -- iterators -----------------------------------------------------------------------------------
class _ArrayIterator(ProcessLocalIterator[_OpenArrays]):
    """Shared reads of the array formats: samples by seek, targets eagerly."""

    name = ""

    def __len__(self) -> int:
        return len(self._state().samples)

    def _get(self, index: int) -> Sample:
        state = self._state()
        if state.targets is None:
            return (state.samples.row(index),)
        return (state.samples.row(index), state.targets[index])

    def _get_batch(self, indices: Indices) -> Batch:
        state = self._state()
        uniq, inverse = np.unique(indices, return_inverse=True)
        samples = state.samples.rows(uniq)[inverse]
        if state.targets is None:
            return (samples,)
        return (samples, state.targets[indices])

    def _get_targets(self, target_pos: int) -> NDArray[Any]:
        state = self._state()
        if target_pos == 1 and state.targets is not None:
            return state.targets
        return super()._get_targets(target_pos)

    def _close_state(self, state: _OpenArrays) -> None:
        for stream in state.streams:
            stream.close()

    def _pair(
        self, streams: list[StreamedResource], samples: Rows, targets: Rows | None
    ) -> _OpenArrays:
        values = None
        if targets is not None:
            values = targets.all()
            if len(values) != len(samples):
                raise FormatError(
                    f"{self.name}: {len(samples)} samples but {len(values)} targets; they "
                    "must have the same length"
                )
        return _OpenArrays(streams, samples, values)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class NPYDatasetIterator(_ArrayIterator):
    """Samples from one ``.npy`` resource (rows read by seek), targets from an optional second.

    >>> import io, numpy as np
    >>> from datastack.resources import StreamedResource
    >>> def npy(a):
    ...     b = io.BytesIO(); np.save(b, a)
    ...     return StreamedResource.from_bytes("a.npy", b.getvalue())
    >>> NPYDatasetIterator(npy(np.ones((2, 3))), npy(np.array([4, 5])))[1][1]
    np.int64(5)
    """

    def __init__(self, samples: StreamedResource, targets: StreamedResource | None = None) -> None:
        self.samples = samples
        self.targets = targets
        self.name = samples.identifier

    def _open(self) -> _OpenArrays:
        streams = [private_copy(r) for r in (self.samples, self.targets) if r is not None]
        rows = [_npy_rows(s, 0, s.size, s.identifier) for s in streams]
        return self._pair(streams, rows[0], rows[1] if len(rows) > 1 else None)


class NPZDatasetIterator(_ArrayIterator):
    """Samples and targets from two members of a ``.npz`` archive.

    Stored (``np.savez``) members are read lazily by offset; compressed
    (``np.savez_compressed``) members are decompressed fully into memory on first access.
    ``targets=None`` yields 1-tuples.
    """

    def __init__(
        self,
        resource: StreamedResource,
        samples: str = "samples",
        targets: str | None = "targets",
    ) -> None:
        self.resource = resource
        self.samples_name = samples
        self.targets_name = targets
        self.name = resource.identifier

    def _member(self, stream: StreamedResource, zf: zipfile.ZipFile, key: str) -> Rows:
        names = zf.namelist()
        member = key if key in names else f"{key}.npy"
        if member not in names:
            raise FormatError(
                f"{self.name}: no member {key!r} in the archive (members: "
                f"{', '.join(n.removesuffix('.npy') for n in names) or 'none'})"
            )
        info = zf.getinfo(member)
        where = f"{self.name}:{member}"
        if info.flag_bits & 0x1:
            raise FormatError(f"{where} is encrypted; not supported")
        if info.compress_type == zipfile.ZIP_STORED:
            stream.seek(info.header_offset)
            local = _read_exact(stream, 30, where, "zip local header")
            if local[:4] != b"PK\x03\x04":
                raise FormatError(f"{where}: bad zip local header signature")
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            start = info.header_offset + 30 + name_len + extra_len
            if start + info.file_size > stream.size:
                raise FormatError(f"{where}: member runs past the end of the archive (truncated)")
            return _npy_rows(stream, start, info.file_size, where)
        try:
            with zf.open(info) as member_stream:
                data = _read_capped(member_stream, MAX_DECOMPRESSED_BYTES, where)
        except (zipfile.BadZipFile, EOFError, OSError) as exc:
            raise FormatError(f"{where}: corrupt compressed member ({exc})") from None
        return _memory_npy(data, where)

    def _open(self) -> _OpenArrays:
        stream = private_copy(self.resource)
        try:
            check_zip_directory(stream, self.name, DEFAULT_LIMITS.max_members)
            zf = zipfile.ZipFile(stream)
        except UnsafeArchiveError:
            stream.close()
            raise
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            stream.close()
            raise FormatError(f"{self.name}: not a valid .npz archive ({exc})") from None
        samples = self._member(stream, zf, self.samples_name)
        targets = None
        if self.targets_name is not None:
            targets = self._member(stream, zf, self.targets_name)
        return self._pair([stream], samples, targets)


class IDXDatasetIterator(_ArrayIterator):
    """The IDX format of MNIST: images from one resource, labels from an optional second.

    Plain files are read by seek; gzipped ones (detected by magic) are decompressed into
    memory on first access. Values come back in native byte order.
    """

    def __init__(self, samples: StreamedResource, targets: StreamedResource | None = None) -> None:
        self.samples = samples
        self.targets = targets
        self.name = samples.identifier

    @staticmethod
    def _rows(stream: StreamedResource) -> Rows:
        name = stream.identifier
        stream.seek(0)
        if stream.read(2) == b"\x1f\x8b":
            stream.seek(0)
            try:
                with gzip.GzipFile(fileobj=stream, mode="rb") as gz:
                    shape, dtype, _ = _idx_header(gz, name)
                    nbytes = math.prod(shape) * dtype.itemsize
                    if nbytes > MAX_DECOMPRESSED_BYTES:
                        raise FormatError(f"{name}: claims {nbytes} bytes of data; refused")
                    data = _read_capped(gz, nbytes, name)
            except (EOFError, OSError, gzip.BadGzipFile) as exc:
                raise FormatError(f"{name}: corrupt or truncated gzip ({exc})") from None
            check_payload(name, shape, dtype, len(data))
            array = np.frombuffer(data, dtype=dtype).reshape(shape)
            return _MemoryRows(array.astype(dtype.newbyteorder("=")))
        stream.seek(0)
        shape, dtype, header = _idx_header(stream, name)
        check_payload(name, shape, dtype, stream.size - header)
        return _Rows(stream, header, shape, dtype)

    def _open(self) -> _OpenArrays:
        streams = [private_copy(r) for r in (self.samples, self.targets) if r is not None]
        rows = [self._rows(s) for s in streams]
        return self._pair(streams, rows[0], rows[1] if len(rows) > 1 else None)
