"""Raw inputs: a source's bytes after safe decompression / extraction, opened on demand.

``prepare_inputs`` turns each ``(SourceSpec, StreamedResource)`` into one or more
:class:`RawInput`: a plain source is itself (the stored raw copy, read where it lies when it is
a local file); ``*.gz`` is wrapped in a capped gzip reader; each file of an archive (or only
``member:``) becomes an input carrying the archive's role and split. A plain tar (a folder
source is stored as one) is read in place, each member a window of the stored copy
(:mod:`._tar_in_place`; a copy stored as chunk files, across them); a compressed tar or a
zip is extracted safely into the work folder. A
raw copy that is not a local file (a GridFS store) is copied into the work folder once when a
reader needs a file (an archive) or a second pass (a stream that cannot seek).
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from datastack.errors import FormatError
from datastack.formats._tar_in_place import SharedArchive, open_span, tar_spans
from datastack.formats.archives import (
    DEFAULT_LIMITS,
    ArchiveLimits,
    CappedGzipReader,
    extract_archive,
)
from datastack.resources import StreamedResource

if TYPE_CHECKING:  # pragma: no cover
    from datastack.specs import SourceSpec


@dataclass
class RawInput:
    """One file to parse: ``open()`` returns a fresh binary stream of its (decompressed) bytes.

    ``source`` is the spec source it came from (``None`` for a stream read directly, e.g. by
    a raw-stream iterator); ``path`` is set when the bytes are a plain local file
    (memory-mapping and HDF5 use it); ``size`` is the byte size when known without reading.
    """

    source: SourceSpec | None
    name: str
    open: Callable[[], IO[bytes]]
    size: int | None = None
    path: Path | None = None

    @property
    def role(self) -> str | None:
        return None if self.source is None else self.source.role

    @property
    def split(self) -> str | None:
        return None if self.source is None else self.source.split

    @classmethod
    def from_resource(cls, resource: StreamedResource) -> RawInput:
        """A raw input over a stream (each ``open()`` reads a fresh, unopened copy)."""
        import copy

        def opener() -> IO[bytes]:
            fresh = copy.copy(resource)  # opens its own stream (never shares the original's)
            if fresh.seekable():
                fresh.seek(0)
            return fresh  # type: ignore[return-value]

        size: int | None
        try:
            size = resource.size
        except (OSError, ValueError):
            size = None
        return cls(None, resource.identifier, opener, size, _resource_path(resource))

    def local_path(self, workdir: Path) -> Path:
        """A local file with these bytes (copied into ``workdir`` when needed)."""
        if self.path is not None:
            return self.path
        target = workdir / f"input-{len(list(workdir.iterdir()))}-{self.name.replace('/', '_')}"
        with self.open() as stream, open(target, "wb") as out:
            shutil.copyfileobj(stream, out, 1024 * 1024)
        self.path = target
        self.size = target.stat().st_size
        return target


class _Unclosing(io.RawIOBase):
    """A view of a resource that rewinds it and does not close it (the caller owns it)."""

    def __init__(self, resource: StreamedResource) -> None:
        super().__init__()
        self._res = resource
        if resource.seekable():
            resource.seek(0)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        return self._res.readinto(buffer)


class RecordingStream(io.RawIOBase):
    """A stream that keeps what is read from it (a reader's read-ahead of the first records,
    handed on to pyarrow so that the file is read once); closing it leaves ``stream`` open."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.kept = bytearray()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.stream.read(len(buffer))
        buffer[: len(data)] = data
        self.kept += data
        return len(data)

    def close(self) -> None:  # the stream stays open: the data is read from it next
        pass


def _resource_path(resource: StreamedResource) -> Path | None:
    """The local file behind a resource made by ``StreamedResource.from_path``, if any."""
    path = getattr(getattr(resource, "_opener", None), "path", None)
    return Path(path) if isinstance(path, str) and os.path.isfile(path) else None


def _plain_input(source: SourceSpec, resource: StreamedResource) -> RawInput:
    path = _resource_path(resource)
    if path is not None:
        return RawInput(source, source.filename, _path_opener(path), path.stat().st_size, path)
    size: int | None
    try:
        size = resource.size
    except (OSError, ValueError):
        size = None
    return RawInput(source, source.filename, lambda: _Unclosing(resource), size)  # type: ignore[arg-type,return-value]


def prepare_inputs(
    sources: Sequence[tuple[SourceSpec, StreamedResource]],
    workdir: Path,
    limits: ArchiveLimits = DEFAULT_LIMITS,
) -> list[RawInput]:
    """Expand sources into raw inputs (see module docstring)."""
    inputs: list[RawInput] = []
    for index, (source, resource) in enumerate(sources):
        kind = source.compression
        plain = _plain_input(source, resource)
        if plain.path is None and not resource.seekable():
            plain.local_path(workdir)  # readers may open an input twice (header, then data)
            plain.open = _path_opener(plain.local_path(workdir))
        if kind is None:
            inputs.append(plain)
        elif kind == "gzip":
            inputs.append(_gzip_input(source, source.filename, plain.open, limits))
        else:
            entries = _members_in_chunks(source, resource, limits)
            if entries is None:
                entries = _members(
                    source, plain.local_path(workdir), workdir / f"extract-{index}", limits)
            inputs.extend(_archive_inputs(source, entries, limits))
    return inputs


def part_inputs(
    source: SourceSpec, raw: StreamedResource, part: Any,
    window: Callable[[], StreamedResource], workdir: Path,
    limits: ArchiveLimits = DEFAULT_LIMITS,
) -> list[RawInput]:
    """The files of a ``members`` part of a plain tar raw copy (``formats._parts``; ``window``
    opens its bytes, ``_parts.open_part``): read in place from the raw copy's local files (its
    chunk files, or itself) with the part's headers walked, else (a remote storage) from a
    copy of the part's bytes in ``workdir``."""
    from datastack.formats._tar_in_place import TarSpan, stream_spans
    from datastack.storage.chunked import local_chunk_files

    pieces = local_chunk_files(raw)
    path = _resource_path(raw)
    spans = None
    if pieces or path is not None:
        with io.BufferedReader(window(), 1 << 16) as stream:  # type: ignore[arg-type]
            spans = stream_spans(stream, source.filename, limits)
    if spans is None:
        return prepare_inputs([(source, window())], workdir, limits)
    shared = SharedArchive(raw.identifier, pieces) if pieces else SharedArchive(path or "")

    def whole(offset: int) -> int:  # the window is the head, then [start, end) of the tar
        return offset if offset < part.head else offset - part.head + part.start

    entries: list[_Entry] = [
        (s.name, _span_opener(shared, TarSpan(s.name, whole(s.offset), s.size)), s.size, None)
        for s in spans]
    return _archive_inputs(source, entries, limits)


#: One file of an archive: its path in the archive, an opener, its size, its local file if any.
_Entry = tuple[str, Callable[[], IO[bytes]], int, Path | None]


def _members(source: SourceSpec, archive: Path, dest: Path, limits: ArchiveLimits
             ) -> list[_Entry]:
    """The files of an archive: windows of a plain tar (read in place), else extracted."""
    spans = tar_spans(archive, name=source.filename, limits=limits)
    if spans is not None:
        shared = SharedArchive(archive)  # one descriptor for all its members' readers
        return [(s.name, _span_opener(shared, s), s.size, None) for s in spans]
    files = extract_archive(archive, dest, name=source.filename, limits=limits)
    return [(f.relative_to(dest).as_posix(), _path_opener(f), f.stat().st_size, f)
            for f in files]


def _members_in_chunks(
    source: SourceSpec, resource: StreamedResource, limits: ArchiveLimits
) -> list[_Entry] | None:
    """The members of a plain tar stored as local chunk files (a tracked folder source on
    the filesystem storage), read in place across its chunks; None for anything else."""
    from datastack.storage.chunked import local_chunk_files

    pieces = local_chunk_files(resource)
    if not pieces:
        return None
    shared = SharedArchive(resource.identifier, pieces)
    spans = tar_spans(shared, name=source.filename, limits=limits)
    if spans is None:
        return None
    return [(s.name, _span_opener(shared, s), s.size, None) for s in spans]


def _gzip_input(
    source: SourceSpec, name: str, opener: Callable[[], IO[bytes]], limits: ArchiveLimits
) -> RawInput:
    return RawInput(source, name, lambda: CappedGzipReader(opener(), name, limits))  # type: ignore[arg-type,return-value]


def _archive_inputs(
    source: SourceSpec, entries: list[_Entry], limits: ArchiveLimits
) -> list[RawInput]:
    members = {entry[0]: entry for entry in entries}
    if source.member is not None:
        if source.member not in members:
            shown = ", ".join(sorted(members)[:20]) or "(none)"
            raise FormatError(
                f"{source.filename}: member {source.member!r} not found in the archive; "
                f"it holds: {shown}"
            )
        members = {source.member: members[source.member]}
    out = []
    for rel, opener, size, path in members.values():
        label = f"{source.filename}!{rel}"
        if rel.lower().endswith(".gz"):
            out.append(_gzip_input(source, label, opener, limits))
        else:
            out.append(RawInput(source, label, opener, size, path))
    return out


def _path_opener(path: Path) -> Callable[[], IO[bytes]]:
    return lambda: open_local(path)


def _span_opener(archive: SharedArchive, span: Any) -> Callable[[], IO[bytes]]:
    return lambda: open_span(archive, span)


def open_local(path: Path) -> IO[bytes]:
    """Open a local file an input reads (the one place: tests count the bytes read here)."""
    return open(path, "rb")


__all__ = ["RawInput", "RecordingStream", "part_inputs", "prepare_inputs"]
