"""Streamed resources: lazily opened binary (and text) streams with an identifier.

A :class:`StreamedResource` wraps a binary file-like object produced by an *opener* callable.
Creating one reads nothing; the opener runs on first access (``read``, ``seek``, ``tell``...).
The opener should be picklable (a bound method of a picklable connector, ``functools.partial``)
so that a resource can be sent to DataLoader workers: a pickled resource reopens its stream in
the receiving process and seeks back to where it was.

>>> res = StreamedResource.from_bytes("example/hello.txt", b"hello world")
>>> res.read(5)
b'hello'
>>> _ = res.seek(6); res.read()
b'world'
>>> [len(chunk) for chunk in StreamedResource.from_bytes("x", b"abcdefgh").iter_chunks(3)]
[3, 3, 2]
"""

from __future__ import annotations

import io
import mmap
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from datastack.errors import StorageError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

DEFAULT_CHUNK_SIZE = 1024 * 1024

Opener = Callable[[], IO[bytes]]


class _BytesOpener:
    """Picklable opener over an in-memory payload."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __call__(self) -> IO[bytes]:
        return io.BytesIO(self.data)


class _PathOpener:
    """Picklable opener over a local file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self) -> IO[bytes]:
        return open(self.path, "rb")


class StreamedResource(io.RawIOBase):
    """A lazily opened, binary, seekable (where the backend is) stream with an identifier.

    Parameters
    ----------
    identifier:
        The name of the resource in its storage (``"mnist/v3/data.h5"``).
    opener:
        Zero-argument callable returning a binary file-like object. Called at first access.
    size:
        Total size in bytes when known up front (saves opening the stream for ``len``).
    """

    def __init__(self, identifier: str, opener: Opener, size: int | None = None) -> None:
        super().__init__()
        self.identifier = identifier
        self._opener = opener
        self._size = size
        self._stream: IO[bytes] | None = None
        self._pos_on_unpickle = 0

    # -- construction helpers --------------------------------------------------------------
    @classmethod
    def from_bytes(cls, identifier: str, data: bytes) -> StreamedResource:
        """A resource over an in-memory payload."""
        return cls(identifier, _BytesOpener(bytes(data)), size=len(data))

    @classmethod
    def from_path(cls, identifier: str, path: str | os.PathLike[str]) -> StreamedResource:
        """A resource over a local file (opened lazily)."""
        path = os.fspath(path)
        return cls(identifier, _PathOpener(path), size=os.path.getsize(path))

    # -- lazy stream -----------------------------------------------------------------------
    @property
    def opener(self) -> Opener:
        """The callable that opens a new stream over this resource (picklable)."""
        return self._opener

    @property
    def is_open(self) -> bool:
        """Whether the underlying stream has been opened yet."""
        return self._stream is not None

    @property
    def stream(self) -> IO[bytes]:
        """The underlying stream, opened on first use."""
        if self.closed:
            raise ValueError(f"I/O operation on closed resource {self.identifier!r}")
        if self._stream is None:
            self._stream = self._opener()
            if self._pos_on_unpickle:
                self._stream.seek(self._pos_on_unpickle)
                self._pos_on_unpickle = 0
        return self._stream

    @property
    def size(self) -> int:
        """Total size in bytes."""
        if self._size is None:
            stream = self.stream
            here = stream.tell()
            self._size = stream.seek(0, io.SEEK_END)
            stream.seek(here)
        return self._size

    def __len__(self) -> int:
        return self.size

    # -- io.RawIOBase ----------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return bool(self.stream.seekable())

    def writable(self) -> bool:
        return False

    def read(self, size: int | None = -1) -> bytes:
        return self.stream.read(-1 if size is None else size)

    def readall(self) -> bytes:
        return self.stream.read()

    def readinto(self, buffer: Any) -> int:
        stream = self.stream
        readinto = getattr(stream, "readinto", None)
        if readinto is not None:
            return int(readinto(buffer))
        view = memoryview(buffer).cast("B")
        data = stream.read(len(view))
        view[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.stream.seek(offset, whence)

    def tell(self) -> int:
        if self._stream is None:
            return self._pos_on_unpickle
        return self._stream.tell()

    def close(self) -> None:
        if self._stream is not None:
            try:
                self._stream.close()
            finally:
                self._stream = None
        super().close()

    def prefetch(
        self, ranges: list[tuple[int, int]], *, wait: bool = True, ahead: bool = False
    ) -> None:
        """Hint that the byte ranges ``[(start, end), ...]`` will be read soon.

        Backends with a block cache (GridFS) fetch all missing blocks in one round trip
        (on a read-ahead thread with ``wait=False``; ``ahead=True``: as the read-ahead of a
        sequential pass that starts there); for other streams this is a no-op.
        """
        hook = getattr(self.stream, "prefetch", None)
        if hook is not None and ranges:
            if wait:
                hook(ranges)
            elif ahead:
                hook(ranges, wait=False, ahead=True)
            else:
                hook(ranges, wait=False)

    def read_rows(self, offsets: NDArray[np.int64], row_bytes: int, out: memoryview) -> int:
        """Rows of ``row_bytes`` bytes at ``offsets`` (sorted for local files) into ``out``
        one after the other; returns the bytes read (less only at the end of the stream).

        The stream's own ``read_rows`` when it has one (GridFS: vectorised over its
        blocks), else :meth:`read_at` with one piece per run of rows adjacent in the file.
        """
        hook = getattr(self.stream, "read_rows", None)
        if hook is not None:
            return int(hook(offsets, row_bytes, out))
        import numpy as np

        apart = np.flatnonzero(offsets[1:] != offsets[:-1] + row_bytes) + 1
        firsts = np.concatenate([[0], apart])
        rows = np.diff(np.append(firsts, len(offsets)))  # rows per run adjacent in the file
        return self.read_ranges(offsets[firsts], rows * row_bytes, out)

    def read_ranges(
        self, offsets: NDArray[np.int64], sizes: NDArray[np.int64], out: memoryview
    ) -> int:
        """The byte ranges ``offsets[i] .. offsets[i] + sizes[i]`` one after the other into
        ``out`` (:meth:`read_at`, one piece per range); returns the bytes read."""
        import numpy as np

        ends = np.cumsum(sizes).tolist()
        pieces = [
            (offset, out[end - size : end])
            for offset, size, end in zip(offsets.tolist(), sizes.tolist(), ends, strict=True)
        ]
        return self.read_at(pieces)

    def read_at(self, pieces: Sequence[tuple[int, memoryview]]) -> int:
        """Fill each ``(offset, view)`` with the bytes at ``offset``; returns the bytes read
        (less than asked only at the end of the stream). Does not move the position.

        A gather of scattered rows: the stream's own ``read_at`` when it has one (GridFS: one
        fetch for all missing blocks), ``preadv`` on a local file, else seek and read.
        """
        stream = self.stream
        hook = getattr(stream, "read_at", None)
        if hook is not None:
            return int(hook(pieces))
        fd = _regular_fd(stream)
        done = 0
        if fd is not None:
            for offset, view in pieces:
                got = 0
                while got < len(view):
                    n = os.preadv(fd, [view[got:]], offset + got)
                    if not n:
                        break
                    got += n
                done += got
            return done
        here = stream.tell()
        try:
            for offset, view in pieces:
                stream.seek(offset)
                got = 0
                while got < len(view):
                    n = self.readinto(view[got:])
                    if not n:
                        break
                    got += n
                done += got
        finally:
            stream.seek(here)
        return done

    def memory_map(self) -> mmap.mmap | None:
        """A read-only memory map of the whole stream when it is a regular local file (else
        None). The map stays valid after the stream is closed or the file unlinked."""
        fd = _regular_fd(self.stream)
        if fd is None:
            return None
        try:
            return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # an empty file, a file system without mmap
            return None

    # -- chunks ----------------------------------------------------------------------------
    def iter_chunks(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        """Yield the rest of the stream in chunks of at most ``chunk_size`` bytes."""
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        while True:
            chunk = self.read(chunk_size)
            if not chunk:
                return
            yield chunk

    def __iter__(self) -> Iterator[bytes]:  # type: ignore[override]
        return self.iter_chunks()

    def __next__(self) -> bytes:
        chunk = self.read(DEFAULT_CHUNK_SIZE)
        if not chunk:
            raise StopIteration
        return chunk

    def __enter__(self) -> StreamedResource:
        return self

    def copy_to(self, path: str | os.PathLike[str], chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
        """Write the rest of the stream to ``path``; return the number of bytes written."""
        written = 0
        with open(path, "wb") as out:
            for chunk in self.iter_chunks(chunk_size):
                out.write(chunk)
                written += len(chunk)
        return written

    def text(self, encoding: str = "utf-8", errors: str = "strict") -> StreamedTextResource:
        """A text view of this resource."""
        return StreamedTextResource(self, encoding=encoding, errors=errors)

    # -- pickling --------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        if self.closed:
            raise StorageError(f"cannot pickle closed resource {self.identifier!r}")
        return {
            "identifier": self.identifier,
            "opener": self._opener,
            "size": self._size,
            "pos": self.tell(),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["identifier"], state["opener"], state["size"])  # type: ignore[misc]
        self._pos_on_unpickle = state["pos"]

    def __repr__(self) -> str:
        state = "open" if self.is_open else ("closed" if self.closed else "not opened")
        return f"<{type(self).__name__} {self.identifier!r} ({state})>"


class StreamedTextResource(io.TextIOWrapper):
    """A text stream over a :class:`StreamedResource` (decoding lazily, line by line).

    >>> res = StreamedResource.from_bytes("a.csv", b"a,b\\n1,2\\n")
    >>> list(StreamedTextResource(res))
    ['a,b\\n', '1,2\\n']
    """

    def __init__(
        self, resource: StreamedResource, encoding: str = "utf-8", errors: str = "strict"
    ) -> None:
        self.resource = resource
        self.identifier = resource.identifier
        super().__init__(
            io.BufferedReader(resource, DEFAULT_CHUNK_SIZE), encoding=encoding, errors=errors
        )


#: A piece of a spliced stream: literal bytes, or the window ``[start, end)`` of the resource.
Piece = bytes | tuple[int, int]


class _Splice(io.RawIOBase):
    """``pieces`` one after the other as one seekable stream, the windows read from a copy
    of ``resource`` of its own (never the caller's stream: splices of one resource may be
    read in turns)."""

    def __init__(self, resource: StreamedResource, pieces: Sequence[Piece]) -> None:
        import copy

        super().__init__()
        self._res = copy.copy(resource)
        self._pieces = list(pieces)
        self._starts = [0]
        for piece in self._pieces:
            width = len(piece) if isinstance(piece, bytes) else piece[1] - piece[0]
            self._starts.append(self._starts[-1] + width)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._starts[-1]}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        import bisect

        view = memoryview(buffer).cast("B")
        index = bisect.bisect_right(self._starts, self._pos) - 1
        if index >= len(self._pieces) or not len(view):
            return 0
        piece, within = self._pieces[index], self._pos - self._starts[index]
        want = min(len(view), self._starts[index + 1] - self._pos)
        if isinstance(piece, bytes):
            data = piece[within : within + want]
        else:
            self._res.seek(piece[0] + within)
            data = self._res.read(want)
            if len(data) < want:
                raise StorageError(f"{self._res.identifier!r} ended before byte {piece[1]} "
                                   "(it is shorter than when it was cut)")
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        self._res.close()
        super().close()


class _SpliceOpener:
    def __init__(self, resource: StreamedResource, pieces: Sequence[Piece]) -> None:
        self.resource, self.pieces = resource, list(pieces)

    def __call__(self) -> IO[bytes]:
        return io.BufferedReader(_Splice(self.resource, self.pieces), 4 << 20)  # type: ignore[return-value]


def spliced(identifier: str, resource: StreamedResource, pieces: Sequence[Piece]
            ) -> StreamedResource:
    """``pieces`` (literal bytes, or ``(start, end)`` windows of ``resource``) read as one
    lazy, seekable, picklable stream: an append's tail after its header, a part of a file.

    >>> res = StreamedResource.from_bytes("t.csv", b"a,b\\n1,2\\n3,4\\n")
    >>> spliced("t.csv#part", res, [b"a,b\\n", (8, 12), b"!"]).read()
    b'a,b\\n3,4\\n!'
    """
    size = sum(len(p) if isinstance(p, bytes) else p[1] - p[0] for p in pieces)
    return StreamedResource(identifier, _SpliceOpener(resource, pieces), size=size)


def as_binary_stream(data: StreamedResource | IO[bytes] | bytes | bytearray | Path) -> IO[bytes]:
    """Coerce bytes, a path, or a binary file-like object into a readable binary stream."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(data))
    if isinstance(data, Path):
        return open(data, "rb")
    if hasattr(data, "read"):
        return data  # type: ignore[return-value]
    raise TypeError(
        f"expected bytes, a pathlib.Path or a binary file-like object, got {type(data).__name__}"
    )


def _regular_fd(stream: Any) -> int | None:
    """The descriptor of a regular local file under ``stream`` (plain file objects only)."""
    if not isinstance(stream, (io.BufferedReader, io.FileIO)):
        return None
    try:
        fd = stream.fileno()
        return fd if stat.S_ISREG(os.fstat(fd).st_mode) else None
    except (OSError, ValueError):
        return None
