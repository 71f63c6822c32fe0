"""Raw copies kept as content-addressed chunks: written while a download streams, read back
as one seekable stream.

:class:`ChunkSink` has the one verb a retriever uses, ``set_resource(identifier, stream)``:
it cuts the stream into chunks where its *content* says (``storage._boundaries``: a rolling
window sum, about ``chunk_bytes`` per chunk on average, at least a quarter and at most four
times that), hashes the whole (sha256, md5 when asked) and each chunk in the same pass, and
stores each chunk under the identifier ``chunk_identifier(sha256 of the chunk)`` unless one
is stored there already. Because a cut depends on the bytes around it and not on its offset,
an append stores its new bytes and the old last chunk, and an insertion or a deletion
anywhere (a file added in the middle of a folder's tar, a row edited in a CSV) stores only
the chunks around it: every later chunk is found stored. A pinned checksum that does not
match raises :class:`ChecksumError` after the last byte, and nothing refers to what was
written (the chunks are garbage for ``datastack gc``). With ``prefix=(N, sha256)`` it also
snapshots the hasher at byte ``N``, so the caller learns whether the new content begins with
an old one of ``N`` bytes without reading anything again.

:func:`open_raw` opens a source record's raw copy, whatever its form: the chunks it lists, in
order, as one lazy, seekable, picklable :class:`StreamedResource` (:class:`ChunkedStream`), or
the whole file at its ``identifier`` (copies written before chunks, pinned sources). The list
records each chunk's size, so copies cut at fixed offsets (before content-defined cuts) read
the same way.

>>> import tempfile
>>> from datastack.storage import connect
>>> storage = connect(tempfile.mkdtemp())
>>> sink = ChunkSink(storage, lambda d: f"datasets/x/raw/chunks/{d}", chunk_bytes=1024)
>>> data = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(1000))  # 32,000 bytes
>>> sink.set_resource("datasets/x/raw/fetched-1/a.bin", data).size
32000
>>> len(sink.chunks), sink.written
(31, 32000)
>>> source = {"identifier": "datasets/x/raw/fetched-1/a.bin", "chunks": sink.chunks}
>>> open_raw(storage, source).read() == data
True
>>> edited = data[:9000] + b"inserted" + data[9000:]  # 8 bytes in the middle
>>> sink.set_resource("datasets/x/raw/fetched-2/a.bin", edited).size
32008
>>> sink.written < 3000  # the chunk around the edit; every other chunk is shared
True
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import hmac
import io
from collections.abc import Callable, Generator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from datastack.canonical.layout import RAW_CHUNK_BYTES, raw_chunk_identifiers
from datastack.errors import ChecksumError, ResourceNotFoundError, StorageError
from datastack.resources import StreamedResource, as_binary_stream
from datastack.storage._boundaries import Boundaries
from datastack.storage.base import InOrder, ResourceInfo

if TYPE_CHECKING:  # pragma: no cover
    from datastack.storage.base import StorageConnector, Writable

#: Bytes read from the stream at a time (the chunks do not depend on it).
READ_BYTES = 1 << 20
#: Chunks cut and not yet stored at most (memory: that many times the largest chunk).
CHUNKS_WAITING = 4


class _WholeHash:
    """sha256 (and md5) of the whole stream, with the sha256 of its first ``prefix`` bytes
    taken on the way (a copy of the hasher at that byte)."""

    def __init__(self, md5: bool, prefix: int | None) -> None:
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False) if md5 else None
        self.size = 0
        self.prefix = prefix
        self.prefix_sha256: str | None = "" if prefix is None else None
        if prefix == 0:
            self.prefix_sha256 = hashlib.sha256().hexdigest()

    def update(self, data: memoryview) -> None:
        if self.prefix is not None and self.prefix_sha256 is None:
            cut = self.prefix - self.size
            if cut <= len(data):  # the prefix ends inside this block
                self.sha256.update(data[:cut])
                self.prefix_sha256 = self.sha256.copy().hexdigest()
                self.sha256.update(data[cut:])
            else:
                self.sha256.update(data)
        else:
            self.sha256.update(data)
        if self.md5 is not None:
            self.md5.update(data)
        self.size += len(data)


class ChunkSink:
    """Stores what a retriever streams as content-addressed chunks (module docstring).

    ``chunk_bytes`` is the average chunk size (``RAW_CHUNK_BYTES``); ``block_bytes`` how
    much is read from the stream at a time (the chunks do not depend on it). ``chunks``
    (``[[sha256, size], ...]``, in order), ``written`` (bytes of chunks stored by this sink,
    not found stored already) and ``prefix_sha256`` (sha256 of the first ``prefix[0]``
    bytes, None when the content is shorter) describe the last write that succeeded.
    """

    def __init__(
        self,
        storage: StorageConnector,
        chunk_identifier: Callable[[str], str],
        *,
        chunk_bytes: int | None = None,
        prefix: tuple[int, str] | None = None,
        block_bytes: int = READ_BYTES,
    ) -> None:
        size = RAW_CHUNK_BYTES if chunk_bytes is None else int(chunk_bytes)
        if size <= 0:
            raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes!r}")
        if block_bytes <= 0:
            raise ValueError(f"block_bytes must be positive, got {block_bytes!r}")
        self.storage = storage
        self.chunk_identifier = chunk_identifier
        self.chunk_bytes = size
        self.block_bytes = int(block_bytes)
        self.prefix = prefix
        self.chunks: list[list[Any]] = []
        self.written = 0
        self.prefix_sha256: str | None = None
        Boundaries(size)  # imports numpy now, not in the middle of a download

    def set_resource(
        self, identifier: str, data: Writable, *, sha256: str | None = None,
        md5: str | None = None,
    ) -> ResourceInfo:
        """Store ``data`` as chunks; ``identifier`` names the download (it is not stored).
        The chunks are hashed and stored in order on a thread of their own while the next
        ones are cut here (hashing, boundaries and writes let go of the GIL: a 1 GB tracked
        copy 6.6 -> 3.3 s on 2 cores), at most :data:`CHUNKS_WAITING` of them waiting."""
        stream = as_binary_stream(data)
        whole = _WholeHash(md5 is not None, None if self.prefix is None else self.prefix[0])
        boundaries = Boundaries(self.chunk_bytes)
        buffer = bytearray(self.block_bytes)
        view = memoryview(buffer)
        try:
            with InOrder(CHUNKS_WAITING, "datastack-chunks") as writer, \
                    contextlib.closing(_cut(stream, view, whole, boundaries)) as cut:
                for chunk in cut:  # closed on an error: its block lets go of the buffer
                    writer.submit(self._store, chunk)
                chunks = writer.results()
        finally:
            view.release()
            if isinstance(data, Path):
                stream.close()
        _verify(identifier, whole, sha256, md5)
        self.chunks = [[digest, size] for digest, size, _ in chunks]
        self.written = sum(stored for _, _, stored in chunks)
        self.prefix_sha256 = whole.prefix_sha256 or None
        digest_md5 = whole.md5.hexdigest() if whole.md5 is not None else None
        return ResourceInfo(identifier, whole.size, whole.sha256.hexdigest(), digest_md5)

    def _store(self, chunk: bytes) -> tuple[str, int, int]:
        """Store one chunk unless its content is stored already: ``(sha256, size, bytes
        written)``."""
        digest = hashlib.sha256(chunk).hexdigest()
        identifier = self.chunk_identifier(digest)
        if self.storage.has_resource(identifier):
            return digest, len(chunk), 0
        self.storage.set_resource(identifier, chunk, sha256=digest, hashed=True)
        return digest, len(chunk), len(chunk)


def _cut(stream: Any, view: memoryview, whole: _WholeHash, boundaries: Boundaries
         ) -> Generator[bytes, None, None]:
    """The chunks of ``stream`` in order, read into ``view`` block after block (each block
    also hashed whole)."""
    pending = bytearray()  # the current chunk's bytes read in earlier blocks
    while True:
        filled = _fill(stream, view)
        if filled:
            block = view[:filled]
            whole.update(block)
            start = 0
            for end in boundaries.cuts(block):
                if pending:
                    pending += block[start:end]
                    yield bytes(pending)
                    pending.clear()
                else:
                    yield bytes(block[start:end])
                start = end
            pending += block[start:]
            block.release()
        if filled < len(view):
            break
    if pending:
        yield bytes(pending)


def _fill(stream: Any, view: memoryview) -> int:
    """Read from ``stream`` until ``view`` is full or the stream ends; the bytes read."""
    filled = 0
    while filled < len(view):
        data = stream.read(len(view) - filled)
        if not data:
            break
        view[filled : filled + len(data)] = data
        filled += len(data)
    return filled


def _verify(identifier: str, whole: _WholeHash, sha256: str | None, md5: str | None) -> None:
    actual = {"sha256": whole.sha256.hexdigest(),
              "md5": whole.md5.hexdigest() if whole.md5 is not None else None}
    for algo, expected in (("sha256", sha256), ("md5", md5)):
        if expected is not None and not hmac.compare_digest(
            expected.lower(), str(actual[algo])
        ):
            raise ChecksumError(
                f"{algo} mismatch for {identifier!r}: expected {expected.lower()}, got "
                f"{actual[algo]} ({whole.size} bytes). Nothing refers to the chunks written; "
                "check the source or update the checksum."
            )


class ChunkedStream(io.RawIOBase):
    """The chunks ``pieces`` (``[(identifier, size), ...]``) of ``storage`` read as one
    seekable stream: one chunk open at a time, each opened when the position reaches it."""

    def __init__(self, storage: StorageConnector, pieces: Sequence[tuple[str, int]]) -> None:
        super().__init__()
        self._storage = storage
        self._pieces = list(pieces)
        self._starts = [0]
        for _, size in self._pieces:
            self._starts.append(self._starts[-1] + size)
        self._pos = 0
        self._index = -1
        self._current: StreamedResource | None = None

    @property
    def size(self) -> int:
        return self._starts[-1]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self.size:
            index = bisect.bisect_right(self._starts, self._pos) - 1
            chunk = self._open(index)
            within = self._pos - self._starts[index]
            if chunk.tell() != within:
                chunk.seek(within)
            want = min(len(view) - done, self._starts[index + 1] - self._pos)
            got = chunk.readinto(view[done : done + want])
            if not got:
                raise StorageError(
                    f"raw chunk {self._pieces[index][0]!r} ended at byte {within}, expected "
                    f"{self._pieces[index][1]}: the raw copy is damaged; refresh the dataset "
                    "with --force to download it again"
                )
            done += got
            self._pos += got
        return done

    def readall(self) -> bytes:
        out = bytearray(max(self.size - self._pos, 0))
        return bytes(out[: self.readinto(out)])

    def _open(self, index: int) -> StreamedResource:
        if index == self._index and self._current is not None:
            return self._current
        if self._current is not None:
            self._current.close()
            self._current = None
        identifier, size = self._pieces[index]
        self._current = _open_chunk(self._storage, identifier, size)
        self._index = index
        return self._current

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None
        super().close()


def _open_chunk(storage: StorageConnector, identifier: str, size: int) -> StreamedResource:
    try:
        chunk = storage.get_resource(identifier)
    except ResourceNotFoundError:
        raise ResourceNotFoundError(
            f"raw chunk {identifier!r} is missing from {storage.uri}: the raw copy cannot be "
            "read (was the version deleted by gc?); refresh the dataset with --force to "
            "download it again"
        ) from None
    if chunk.size != size:
        chunk.close()
        raise StorageError(
            f"raw chunk {identifier!r} holds {chunk.size} bytes, expected {size}: the raw "
            "copy is damaged; refresh the dataset with --force to download it again"
        )
    return chunk


class _ChunksOpener:
    """Picklable opener of a chunked raw copy (the storage connector pickles its config)."""

    def __init__(self, storage: StorageConnector, pieces: Sequence[tuple[str, int]]) -> None:
        self.storage = storage
        self.pieces = list(pieces)

    def __call__(self) -> IO[bytes]:
        return ChunkedStream(self.storage, self.pieces)  # type: ignore[return-value]


def open_raw(storage: StorageConnector, source: Mapping[str, Any]) -> StreamedResource:
    """The raw copy of one source record (a version's ``sources`` entry), for reading.

    Chunked copies read chunk after chunk (one chunk: that chunk itself, so a local file is
    read in place); copies stored whole open at their ``identifier`` as before. Seekable,
    lazy and picklable; ``size`` is known without opening anything. Reading needs no
    network beyond the storage: re-preparing a version reads only this.
    """
    identifier = str(source.get("identifier") or "")
    pieces = raw_chunk_identifiers(source)
    if not pieces:
        if source.get("chunks") is not None:  # an empty download: no chunk at all
            return StreamedResource.from_bytes(identifier, b"")
        return storage.get_resource(identifier)
    if len(pieces) == 1:
        chunk = _open_chunk(storage, *pieces[0])
        return StreamedResource(identifier, chunk.opener, size=chunk.size)
    size = sum(size for _, size in pieces)
    return StreamedResource(identifier, _ChunksOpener(storage, pieces), size=size)


def local_chunk_files(resource: StreamedResource) -> list[tuple[str, int]] | None:
    """``[(local path, size), ...]`` of the chunks of a chunked raw copy (from
    :func:`open_raw`) whose chunks are local files (the filesystem storage), else None:
    what reads an archive's members in place across its chunks."""
    opener = resource.opener
    if not isinstance(opener, _ChunksOpener) or opener.storage.remote:
        return None
    files = []
    for identifier, size in opener.pieces:
        chunk = _open_chunk(opener.storage, identifier, size)
        path = getattr(chunk.opener, "path", None)
        if not isinstance(path, str):
            return None
        files.append((path, size))
    return files


def open_raw_tail(
    storage: StorageConnector, source: Mapping[str, Any], offset: int
) -> StreamedResource:
    """:func:`open_raw` positioned at byte ``offset`` (an append's tail: ``offset`` is
    ``source["appended_to"]["size"]``)."""
    resource = open_raw(storage, source)
    if not 0 <= offset <= resource.size:
        raise ValueError(f"offset {offset} is outside the raw copy ({resource.size} bytes)")
    resource.seek(offset)
    return resource


__all__ = ["ChunkSink", "ChunkedStream", "local_chunk_files", "open_raw", "open_raw_tail"]
