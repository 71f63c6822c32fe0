"""Safe decompression and archive extraction for untrusted sources.

Nothing here trusts a member name, a member type or a declared size:

* every member is pre-scanned before anything is written: ``..`` segments, absolute paths,
  backslashes, NUL, symlinks, hard links, devices and FIFOs raise :class:`UnsafeArchiveError`
  (the stdlib's ``filter="data"`` silently rewrites some of these; we refuse instead);
* member count, total expanded size and expansion ratio are capped (:class:`ArchiveLimits`);
  bytes are counted while streaming, so a lying header does not help;
* gzip streams are decompressed with ``decompressobj().decompress(data, max_length)``;
* truncated or corrupt archives raise :class:`FormatError`; the extraction folder is removed on
  any error.

>>> import io, gzip
>>> stream = CappedGzipReader(io.BytesIO(gzip.compress(b"hello")), name="hello.gz")
>>> stream.read()
b'hello'
"""

from __future__ import annotations

import io
import os
import posixpath
import shutil
import stat
import struct
import tarfile
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from datastack._env import env_float, env_int
from datastack.errors import FormatError, UnsafeArchiveError

_READ_SIZE = 1024 * 1024
#: Longest member name part and path (bytes), as on Linux filesystems.
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
#: Zip compression methods the standard library decodes (deflate64 and others are refused).
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps applied to every decompression and extraction.

    ``max_ratio`` applies once more than ``ratio_floor`` bytes have been expanded, so small,
    highly compressible files (a column of zeros) pass while bombs do not.
    """

    max_members: int = 10_000
    max_total_bytes: int = 16 * 1024**3
    max_ratio: float = 250.0
    ratio_floor: int = 64 * 1024**2


def limits_from_env(environ: Mapping[str, str] | None = None) -> ArchiveLimits:
    """The caps, with ``DATASTACK_MAX_EXPANDED_BYTES``, ``DATASTACK_MAX_EXPANSION_RATIO`` and
    ``DATASTACK_MAX_ARCHIVE_MEMBERS`` overriding the defaults (read once, at import)."""
    base = ArchiveLimits()
    return ArchiveLimits(
        max_members=env_int("DATASTACK_MAX_ARCHIVE_MEMBERS", base.max_members, minimum=1,
                            environ=environ),
        max_total_bytes=env_int("DATASTACK_MAX_EXPANDED_BYTES", base.max_total_bytes,
                                minimum=1, environ=environ),
        max_ratio=env_float("DATASTACK_MAX_EXPANSION_RATIO", base.max_ratio, minimum=0.0,
                            maximum=1e9, unit="times", environ=environ),
        ratio_floor=base.ratio_floor,
    )


DEFAULT_LIMITS = limits_from_env()


def _check_expansion(name: str, expanded: int, compressed: int, limits: ArchiveLimits) -> None:
    if expanded > limits.max_total_bytes:
        raise UnsafeArchiveError(
            f"{name}: expands to more than {limits.max_total_bytes} bytes (the cap); refusing a "
            "possible decompression bomb. Raise ArchiveLimits.max_total_bytes if this is expected."
        )
    if expanded > limits.ratio_floor and expanded > limits.max_ratio * max(compressed, 1):
        raise UnsafeArchiveError(
            f"{name}: expansion ratio over {limits.max_ratio:g} ({expanded} bytes from "
            f"{compressed}); refusing a possible decompression bomb. Raise "
            "ArchiveLimits.max_ratio if this is expected."
        )


class CappedGzipReader(io.RawIOBase):
    """A read-only stream decompressing gzip from ``raw`` with bounded output.

    Concatenated gzip members are supported; trailing garbage, truncation and corrupt data
    raise :class:`FormatError`, too much output raises :class:`UnsafeArchiveError`.
    """

    def __init__(
        self, raw: IO[bytes], name: str = "<gzip>", limits: ArchiveLimits = DEFAULT_LIMITS
    ) -> None:
        super().__init__()
        self._raw = raw
        self.name = name
        self._limits = limits
        self._decomp = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._pending = b""
        self._compressed = 0
        self._expanded = 0
        self._eof = False
        self._started = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        data = self._read_some(len(view))
        view[: len(data)] = data
        return len(data)

    def _read_some(self, size: int) -> bytes:
        while not self._eof:
            if self._decomp.eof:
                # Next gzip member, or trailing garbage (zero padding is tolerated).
                rest = self._decomp.unused_data + self._pending
                self._pending = b""
                if rest.startswith(b"\x1f\x8b"):
                    self._decomp = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    self._pending = rest
                elif rest.strip(b"\x00"):
                    raise FormatError(f"{self.name}: unexpected data after the gzip stream")
            if not self._pending:
                chunk = self._raw.read(_READ_SIZE)
                if not chunk:
                    if not self._decomp.eof or not self._started:
                        raise FormatError(
                            f"{self.name}: gzip stream is truncated or empty (no end-of-stream "
                            f"marker after {self._compressed} compressed bytes); re-download it"
                        )
                    self._eof = True
                    break
                self._compressed += len(chunk)
                self._pending = chunk
                if self._decomp.eof:
                    continue
            try:
                out = self._decomp.decompress(self._pending, size)
            except zlib.error as exc:
                raise FormatError(f"{self.name}: corrupt gzip data ({exc})") from None
            self._started = True
            self._pending = self._decomp.unconsumed_tail
            if out:
                self._expanded += len(out)
                _check_expansion(self.name, self._expanded, self._compressed, self._limits)
                return out
        return b""

    @property
    def expanded(self) -> int:
        """Number of bytes produced so far."""
        return self._expanded

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


# -- archives ------------------------------------------------------------------------------------
def safe_member_name(archive: str, name: str) -> str:
    """Return a normalised relative member name, or raise :class:`UnsafeArchiveError`."""
    if not name or "\x00" in name or "\\" in name:
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an empty name, NUL or backslash")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"{archive}: member {name!r} is an absolute path; refusing it")
    if ".." in name.split("/"):
        raise UnsafeArchiveError(f"{archive}: member {name!r} escapes the folder ('..'); refusing")
    normalised = unicodedata.normalize("NFC", posixpath.normpath(name))
    if normalised in ("", ".") and not name.endswith("/"):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has no usable name")
    if any(ord(ch) < 32 for ch in normalised):
        raise UnsafeArchiveError(f"{archive}: member {name!r} contains control characters")
    encoded = normalised.encode("utf-8", "surrogateescape")
    if len(encoded) > MAX_PATH_BYTES or any(
        len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES
        for part in normalised.split("/")
    ):
        raise UnsafeArchiveError(
            f"{archive}: member {name[:80]!r}... has a name over {MAX_NAME_BYTES} bytes per "
            f"part or {MAX_PATH_BYTES} in all; refused"
        )
    return normalised


@dataclass(frozen=True)
class _Member:
    name: str
    size: int
    is_dir: bool
    key: object  # TarInfo or ZipInfo


def _scan_tar(
    tf: tarfile.TarFile, archive: str, limits: ArchiveLimits, compressed: int
) -> list[_Member]:
    """Pre-scan the members; the declared sizes are summed as they come, so an archive
    declaring more than the caps is refused at the member that passes them (reading the next
    header of a compressed tar decompresses the whole member before it)."""
    members: list[_Member] = []
    declared = 0
    for info in tf:
        if len(members) >= limits.max_members:
            raise UnsafeArchiveError(
                f"{archive}: more than {limits.max_members} members (the cap); refusing it"
            )
        declared += max(0, info.size)
        try:
            _check_expansion(archive, declared, compressed, limits)
        except UnsafeArchiveError as exc:
            raise UnsafeArchiveError(
                f"{exc} (the first {len(members) + 1} members declare {declared} bytes; "
                "refused before reading further)"
            ) from None
        name = safe_member_name(archive, info.name)
        if info.issym() or info.islnk():
            raise UnsafeArchiveError(
                f"{archive}: member {info.name!r} is a {'symbolic' if info.issym() else 'hard'} "
                f"link (to {info.linkname!r}); links are refused"
            )
        if not (info.isreg() or info.isdir()):
            raise UnsafeArchiveError(
                f"{archive}: member {info.name!r} is a device, FIFO or special file; refused"
            )
        members.append(_Member(name, info.size, info.isdir(), info))
    return members


_CENTRAL = b"PK\x01\x02"


def _zip_private(name: str) -> Any:
    return getattr(zipfile, name)

_CENTRAL_FIXED = 46  # bytes of a central directory entry before its name, extra and comment


def check_zip_directory(stream: Any, archive: str, max_members: int) -> None:
    """Count a zip's central directory entries *before* :class:`zipfile.ZipFile` builds one
    object per entry (a 1M-entry listing costs ~0.5 GiB): the end-of-central-directory count
    must be within ``max_members``, and so must the entries really listed (walked header by
    header in the raw directory, at most ``max_members + 1`` reads of 46 bytes, so memory
    stays constant). Leaves the stream at its start."""
    try:
        end = _zip_private("_EndRecData")(stream)  # the stdlib's own EOCD (and zip64) reader
    except (OSError, EOFError, struct.error):
        end = None
    stream.seek(0)
    if not end:
        return  # not a zip: ZipFile reports it
    count = int(end[_zip_private("_ECD_ENTRIES_TOTAL")])
    size = int(end[_zip_private("_ECD_SIZE")])
    limit = max_members * (_CENTRAL_FIXED + 3 * 0xFFFF)
    if count > max_members or size > limit:
        raise UnsafeArchiveError(
            f"{archive}: the zip directory lists {count} members in {size} bytes; at most "
            f"{max_members} members are accepted (DATASTACK_MAX_ARCHIVE_MEMBERS); refused "
            "before reading the listing"
        )
    start = int(end[_zip_private("_ECD_LOCATION")]) - size
    if end[_zip_private("_ECD_SIGNATURE")] == _zip_private("stringEndArchive64"):
        start -= _zip_private("sizeEndCentDir64") + _zip_private("sizeEndCentDir64Locator")
    if start < 0:
        return  # inconsistent: ZipFile reports it
    entries, at = 0, start
    try:
        while at + _CENTRAL_FIXED <= start + size:  # one fixed header read per entry
            stream.seek(at)
            header = stream.read(_CENTRAL_FIXED)
            if len(header) < _CENTRAL_FIXED or header[:4] != _CENTRAL:
                break  # inconsistent: ZipFile reports it
            entries += 1
            if entries > max_members:
                raise UnsafeArchiveError(
                    f"{archive}: the zip directory lists more than {max_members} members (its "
                    f"end record says {count}); at most {max_members} are accepted "
                    "(DATASTACK_MAX_ARCHIVE_MEMBERS); refused"
                )
            name, extra, comment = struct.unpack_from("<HHH", header, 28)
            at += _CENTRAL_FIXED + name + extra + comment
    finally:
        stream.seek(0)


def _scan_zip(zf: zipfile.ZipFile, archive: str, limits: ArchiveLimits) -> list[_Member]:
    infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise UnsafeArchiveError(
            f"{archive}: {len(infos)} members, more than the cap of {limits.max_members}"
        )
    members = []
    for info in infos:
        name = safe_member_name(archive, info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is a symbolic link")
        if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is a special file")
        if info.flag_bits & 0x1:
            raise FormatError(f"{archive}: member {info.filename!r} is encrypted; not supported")
        if info.compress_type not in _ZIP_METHODS:
            raise FormatError(
                f"{archive}: member {info.filename!r} uses zip compression method "
                f"{info.compress_type} (e.g. deflate64), which is not supported; re-pack it "
                "with deflate"
            )
        members.append(_Member(name, info.file_size, info.is_dir(), info))
    return members


def archive_kind(path: Path) -> str | None:
    """``"tar"``, ``"zip"`` or ``None`` by content (magic bytes), not by name."""
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        return "tar" if tarfile.is_tarfile(path) else None
    except (OSError, EOFError, zlib.error, tarfile.TarError):
        return None


def extract_archive(
    path: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    name: str | None = None,
    limits: ArchiveLimits = DEFAULT_LIMITS,
) -> list[Path]:
    """Safely extract a tar (any compression) or zip archive into the new folder ``dest``.

    Returns the extracted regular files in archive order. ``dest`` must not exist; it is
    created, and removed again on any error. Raises :class:`UnsafeArchiveError` for hostile
    members or bombs, :class:`FormatError` for corrupt or truncated archives.
    """
    path, dest = Path(path), Path(dest)
    label = name or path.name
    dest.mkdir(parents=True)
    try:
        return _extract(path, dest, label, limits)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def _extract(path: Path, dest: Path, label: str, limits: ArchiveLimits) -> list[Path]:
    compressed = path.stat().st_size
    try:
        if zipfile.is_zipfile(path):
            with _open_zip(path, label, limits.max_members) as zf:
                members = _scan_zip(zf, label, limits)
                _check_declared(label, members, compressed, limits)
                return _write_members(
                    members, dest, label, compressed, limits, lambda m: _zip_open(zf, m)
                )
        with tarfile.open(path, "r:*") as tf:
            members = _scan_tar(tf, label, limits, compressed)  # checks the declared sizes
            return _write_members(
                members, dest, label, compressed, limits, lambda m: _tar_open(tf, m, label)
            )
    except (UnsafeArchiveError, FormatError):
        raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # a real I/O error (disk full...), not a corrupt archive
        raise FormatError(
            f"{label}: corrupt or truncated archive ({exc}); re-download it"
        ) from None


def _open_zip(path: Path, label: str, max_members: int = DEFAULT_LIMITS.max_members
              ) -> zipfile.ZipFile:
    with open(path, "rb") as stream:
        check_zip_directory(stream, label, max_members)
    try:
        return zipfile.ZipFile(path)
    except UnicodeDecodeError:
        raise FormatError(
            f"{label}: a member name is flagged UTF-8 but is not valid UTF-8; corrupt archive"
        ) from None


def _zip_open(zf: zipfile.ZipFile, member: _Member) -> IO[bytes]:
    info = member.key
    if not isinstance(info, zipfile.ZipInfo):  # pragma: no cover - internal invariant
        raise TypeError("expected a ZipInfo")
    return zf.open(info)


def _tar_open(tf: tarfile.TarFile, member: _Member, label: str) -> IO[bytes]:
    info = member.key
    stream = tf.extractfile(info) if isinstance(info, tarfile.TarInfo) else None
    if stream is None:  # pragma: no cover - only regular files reach here
        raise FormatError(f"{label}: cannot read member {member.name!r}")
    return stream


def _check_declared(
    label: str, members: list[_Member], compressed: int, limits: ArchiveLimits
) -> None:
    _check_expansion(label, sum(m.size for m in members), compressed, limits)


def _write_members(
    members: list[_Member],
    dest: Path,
    label: str,
    compressed: int,
    limits: ArchiveLimits,
    opener: Callable[[_Member], IO[bytes]],
) -> list[Path]:
    seen: set[str] = set()
    files: list[Path] = []
    total = 0
    for member in members:
        if member.name in seen:
            raise UnsafeArchiveError(f"{label}: member {member.name!r} appears twice; refusing")
        seen.add(member.name)
        target = dest / member.name
        if member.is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists() or target.is_symlink():
                raise UnsafeArchiveError(f"{label}: member {member.name!r} clashes with a folder")
            with opener(member) as source, open(target, "xb") as out:
                for chunk in iter(lambda: source.read(_READ_SIZE), b""):
                    total += len(chunk)
                    _check_expansion(label, total, compressed, limits)
                    out.write(chunk)
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            raise UnsafeArchiveError(
                f"{label}: member {member.name!r} clashes with another member of the same name "
                "(a file and a folder); refused"
            ) from None
        except NotImplementedError as exc:
            raise FormatError(f"{label}: member {member.name!r}: {exc}") from None
        files.append(target)
    return files


def iter_regular_files(root: Path) -> Iterator[Path]:
    """Regular files under ``root``, sorted, never following links."""
    for folder, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for filename in sorted(filenames):
            candidate = Path(folder) / filename
            if candidate.is_file() and not candidate.is_symlink():
                yield candidate


__all__ = [
    "DEFAULT_LIMITS",
    "ArchiveLimits",
    "CappedGzipReader",
    "archive_kind",
    "check_zip_directory",
    "extract_archive",
    "iter_regular_files",
    "safe_member_name",
]
