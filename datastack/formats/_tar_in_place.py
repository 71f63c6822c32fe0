"""The members of an uncompressed tar read where they lie, without an extracted copy.

A plain (uncompressed) tar keeps the bytes of each regular member in one run of the archive,
so a member is a window of the archive file. :func:`tar_spans` lists those windows after the
same checks :func:`~datastack.formats.archives.extract_archive` makes before writing anything
(member names, links, devices, member count, declared sizes; a name twice, a file where a
folder is) and one more (a member that runs past the end of the file is a truncated archive);
:class:`SpanReader` reads one. Preparation reads a tar source this way (a folder source is
stored as one), so its bytes are read once to parse instead of being copied out first.
Compressed tars, zips and GNU sparse members are not plain windows: :func:`tar_spans` answers
None and they are extracted as before.

>>> import io, pathlib, tarfile, tempfile
>>> path = pathlib.Path(tempfile.mkdtemp()) / "a.tar"
>>> with tarfile.open(path, "w") as tf:
...     info = tarfile.TarInfo("cat/1.txt"); info.size = 3
...     tf.addfile(info, io.BytesIO(b"abc"))
>>> [(s.name, s.size) for s in tar_spans(path)]
[('cat/1.txt', 3)]
>>> with SpanReader(path, tar_spans(path)[0]) as stream:
...     stream.read()
b'abc'
"""

from __future__ import annotations

import bisect
import io
import os
import posixpath
import tarfile
import threading
import weakref
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from datastack.errors import FormatError, UnsafeArchiveError
from datastack.formats.archives import DEFAULT_LIMITS, ArchiveLimits, _scan_tar

#: Leading bytes of the compressions ``tarfile`` opens transparently (gzip, bzip2, xz, zstd).
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")


@dataclass(frozen=True)
class TarSpan:
    """A regular member of a plain tar: its checked name, where its bytes start, its size."""

    name: str
    offset: int
    size: int


def _plain_tar(stream: Any) -> bool:
    head = stream.read(6)
    stream.seek(0)
    plain = not head.startswith(_COMPRESSED) and not zipfile.is_zipfile(stream)
    stream.seek(0)
    return plain


def _open_whole(archive: str | os.PathLike[str]) -> Any:
    """The whole archive as one buffered stream: a local file, or the local files of a
    :class:`SharedArchive` made of pieces, read through its one descriptor."""
    if isinstance(archive, SharedArchive) and archive.pieces:
        whole = TarSpan(os.fspath(archive), 0, archive.size)
        return io.BufferedReader(SpanReader(archive, whole), 1 << 16)
    return open(archive, "rb")


def tar_spans(
    path: str | os.PathLike[str], *, name: str | None = None,
    limits: ArchiveLimits = DEFAULT_LIMITS,
) -> list[TarSpan] | None:
    """The regular members of the plain tar at ``path`` in archive order (see the module
    docstring), or None when it is not one (compressed, a zip, unreadable as a tar, sparse
    members): extract it then, which reports what is wrong with it."""
    label = name or Path(path).name
    with _open_whole(path) as stream:
        return stream_spans(stream, label, limits)


def stream_spans(stream: Any, label: str, limits: ArchiveLimits = DEFAULT_LIMITS
                 ) -> list[TarSpan] | None:
    """:func:`tar_spans` of a seekable stream of the archive (offsets in the stream)."""
    if not _plain_tar(stream):
        return None
    total = stream.seek(0, io.SEEK_END)
    stream.seek(0)
    try:
        with tarfile.open(fileobj=stream, mode="r:") as tf:
            members = _scan_tar(tf, label, limits, total)  # the checks of extract_archive
    except (tarfile.TarError, EOFError):
        return None
    if any(m.key.issparse() for m in members if isinstance(m.key, tarfile.TarInfo)):
        return None
    _check_names(label, [(m.name, m.is_dir) for m in members])
    spans = []
    for member in members:
        info = member.key
        if member.is_dir or not isinstance(info, tarfile.TarInfo):
            continue
        if info.offset_data + info.size > total:
            raise FormatError(
                f"{label}: corrupt or truncated archive (member {member.name!r} ends after the "
                f"end of the file, {total} bytes); re-download it"
            )
        spans.append(TarSpan(member.name, info.offset_data, info.size))
    return spans


def _check_names(label: str, members: list[tuple[str, bool]]) -> None:
    """Refuse what extraction refuses: a name twice, a file that is also a folder."""
    seen: set[str] = set()
    folders: set[str] = set()
    for name, _is_dir in members:
        if name in seen:
            raise UnsafeArchiveError(f"{label}: member {name!r} appears twice; refusing")
        seen.add(name)
        parent = posixpath.dirname(name)
        while parent and parent not in folders:
            folders.add(parent)
            parent = posixpath.dirname(parent)
    for name, is_dir in members:
        if not is_dir and name in folders:
            raise UnsafeArchiveError(
                f"{label}: member {name!r} clashes with another member of the same name "
                "(a file and a folder); refused"
            )


class SharedArchive(os.PathLike[str]):
    """A plain tar opened once for the readers of all its members, so that opening a member
    costs no system call (an image folder opens each of its thousands of members twice).
    Reads seek and read under a lock; the file closes when the inputs holding this are gone.

    With ``pieces`` (``[(local path, size), ...]``: the chunk files of a raw copy stored as
    chunks) the archive is those files one after the other, ``path`` only its name; one
    piece is open at a time (members are read in archive order).
    """

    def __init__(
        self, path: str | os.PathLike[str], pieces: Sequence[tuple[str, int]] = ()
    ) -> None:
        self.path = os.fspath(path)
        self.pieces = list(pieces)
        self._starts = [0]
        for _, size in self.pieces:
            self._starts.append(self._starts[-1] + size)
        self._open: list[Any] = [None, None]  # (file, its path), closed by the finalizer
        weakref.finalize(self, _close_first, self._open)
        self._lock = threading.Lock()

    def __fspath__(self) -> str:
        return self.path

    def __str__(self) -> str:
        return self.path

    @property
    def size(self) -> int:
        return self._starts[-1] if self.pieces else os.path.getsize(self.path)

    def read_at(self, offset: int, view: memoryview) -> int:
        """Read into ``view`` from ``offset``; the count read (0 at the end of the file;
        fewer than asked at the end of a piece)."""
        with self._lock:
            path = self.path
            if self.pieces:
                index = bisect.bisect_right(self._starts, offset) - 1
                if index >= len(self.pieces):
                    return 0
                view = view[: self._starts[index + 1] - offset]
                path, offset = self.pieces[index][0], offset - self._starts[index]
            if self._open[0] is None or self._open[1] != path:
                _close_first(self._open)
                self._open[:] = [open(path, "rb", buffering=0), path]  # noqa: SIM115
            handle = self._open[0]
            handle.seek(offset)
            return int(handle.readinto(view) or 0)


def _close_first(holder: list[Any]) -> None:
    if holder[0] is not None:
        holder[0].close()
        holder[0] = None


class SpanReader(io.RawIOBase):
    """One member of a plain tar as a seekable read-only stream of exactly its bytes (read
    through ``archive``'s own descriptor when it is a :class:`SharedArchive`)."""

    def __init__(self, archive: str | os.PathLike[str], span: TarSpan) -> None:
        super().__init__()
        self._span = span
        self._archive = os.fspath(archive)
        self._shared = archive if isinstance(archive, SharedArchive) else None
        self._file = None if self._shared is not None else open(  # noqa: SIM115 - close()
            self._archive, "rb", buffering=0)
        self._pos = 0
        self._at = -1  # where the file is positioned (-1: unknown, seek before reading)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._span.size - self._pos)
        if want <= 0:
            return 0
        where = self._span.offset + self._pos
        if self._shared is not None:
            got = self._shared.read_at(where, view[:want])
        else:
            own = cast("io.FileIO", self._file)  # opened in __init__ when not shared
            if self._at != where:
                own.seek(where)
            got = own.readinto(view[:want]) or 0
            self._at = where + got
        if got == 0:
            raise FormatError(
                f"{self._archive}: member {self._span.name!r} ends early (the archive shrank "
                "while it was read)"
            )
        self._pos += got
        return got

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._span.size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readall(self) -> bytes:
        """The rest of the member in one read (not in 8 KiB steps)."""
        buffer = bytearray(max(0, self._span.size - self._pos))
        view, done = memoryview(buffer), 0
        while done < len(buffer):
            done += self.readinto(view[done:])
        return bytes(buffer)

    def close(self) -> None:
        if not self.closed and self._file is not None:
            self._file.close()
        super().close()


def open_span(archive: str | os.PathLike[str], span: TarSpan) -> io.BufferedReader:
    """A buffered stream of one member (what a raw input's ``open()`` returns)."""
    return io.BufferedReader(SpanReader(archive, span), 1 << 16)


__all__ = ["SharedArchive", "SpanReader", "TarSpan", "open_span", "tar_spans"]
