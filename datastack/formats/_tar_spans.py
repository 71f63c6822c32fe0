"""The members of an uncompressed tar read in place, as byte ranges of the archive.

Extracting a tar of many small files (an image folder: a folder source is copied as one
uncompressed tar) costs a file creation, a write, a later open and an unlink per member,
more than reading them. Formats that read each input once as a stream (image folders)
take the members of an uncompressed tar as :class:`TarSpan` ranges instead, read with
``pread`` on one shared descriptor.

The checks are those of :func:`~datastack.formats.archives.extract_archive`, made without
the filesystem: the same pre-scan (names, links, special files, member count, declared
sizes), a member listed twice (after name normalisation) and a file that is also a folder
of another member are refused with the same errors, and every member's bytes must lie
inside the archive (a truncated archive is a :class:`FormatError`). Anything else (a zip,
a compressed tar, GNU sparse members) returns ``None``: the caller extracts as before.
"""

from __future__ import annotations

import io
import os
import tarfile
import weakref
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datastack.errors import FormatError, UnsafeArchiveError
from datastack.formats.archives import ArchiveLimits, _scan_tar


@dataclass(frozen=True)
class TarSpan:
    """One regular member: its normalised name, where its bytes start, their count."""

    name: str
    offset: int
    size: int


def _check_layout(label: str, members: list[tuple[str, bool]]) -> None:
    """Duplicates and file/folder clashes, found (and worded) as extraction into a folder
    finds them, member after member."""
    seen: set[str] = set()
    folders: set[str] = set()
    files: set[str] = set()
    for name, is_dir in members:
        if name in seen:
            raise UnsafeArchiveError(f"{label}: member {name!r} appears twice; refusing")
        seen.add(name)
        parts = name.split("/")
        made = ["/".join(parts[:i]) for i in range(1, len(parts))] + ([name] if is_dir else [])
        if any(folder in files for folder in made):
            raise UnsafeArchiveError(
                f"{label}: member {name!r} clashes with another member of the same name "
                "(a file and a folder); refused"
            )
        folders.update(made)
        if not is_dir:
            if name in folders:
                raise UnsafeArchiveError(f"{label}: member {name!r} clashes with a folder")
            files.add(name)


def tar_spans(path: Path, label: str, limits: ArchiveLimits) -> list[TarSpan] | None:
    """The regular members of the uncompressed tar at ``path`` in archive order (see the
    module docstring), or ``None`` when it is not one (then extract it)."""
    size = path.stat().st_size
    if not hasattr(os, "pread") or zipfile.is_zipfile(path):
        return None  # no pread (Windows), or a zip: extract
    try:
        tf = tarfile.open(path, "r:")  # noqa: SIM115  (closed below: two kinds of failure)
    except (tarfile.TarError, EOFError, OSError):
        return None  # compressed, or not a tar: extraction reads (or refuses) it
    try:
        with tf:
            members = _scan_tar(tf, label, limits, size)
    except (tarfile.TarError, EOFError) as exc:
        raise FormatError(f"{label}: corrupt or truncated archive ({exc}); re-download it") \
            from None
    infos = [m.key for m in members]
    if any(isinstance(i, tarfile.TarInfo) and i.issparse() for i in infos):
        return None
    _check_layout(label, [(m.name, m.is_dir) for m in members])
    out: list[TarSpan] = []
    for member, info in zip(members, infos, strict=True):
        if member.is_dir or not isinstance(info, tarfile.TarInfo):
            continue
        if info.offset_data + info.size > size:
            raise FormatError(
                f"{label}: corrupt or truncated archive (member {member.name!r} needs bytes "
                f"up to {info.offset_data + info.size}, the file has {size}); re-download it"
            )
        out.append(TarSpan(member.name, info.offset_data, info.size))
    return out


class SharedFile:
    """One read-only descriptor of a file, read with ``pread`` (closed with the object)."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDONLY)
        self._closer = weakref.finalize(self, os.close, self.fd)

    def close(self) -> None:
        self._closer()

    def reader(self, span: TarSpan) -> SpanReader:
        return SpanReader(self, span.offset, span.size)


class SpanReader(io.RawIOBase):
    """A seekable read-only stream of ``size`` bytes of a :class:`SharedFile` at ``start``."""

    def __init__(self, shared: SharedFile, start: int, size: int) -> None:
        super().__init__()
        self._shared, self._start, self._size, self._at = shared, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._at

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._at = base + offset
        return self._at

    def _pread(self, want: int) -> bytes:
        want = max(0, min(want, self._size - self._at))
        data = os.pread(self._shared.fd, want, self._start + self._at) if want else b""
        if len(data) < want:
            raise FormatError("an archive member ends early: the archive changed or is truncated")
        self._at += len(data)
        return data

    def readall(self) -> bytes:
        return self._pread(self._size - self._at)

    def read(self, size: int | None = -1) -> bytes:
        return self.readall() if size is None or size < 0 else self._pread(size)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._pread(len(view))
        view[: len(data)] = data
        return len(data)


__all__ = ["SharedFile", "SpanReader", "TarSpan", "tar_spans"]
