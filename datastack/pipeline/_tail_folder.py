"""Folder sources that gain files, prepared from the new files only (``docs/living.md``).

A tracked folder source is stored as one tar (``retrieval.folder``: its files sorted by path,
stored as content-addressed chunks). When a refresh finds that the folder only *gained* files
(none removed, none changed), the tar it just stored is the previous version's tar with the
new members' blocks inserted. :func:`folder_plan` decides so from the two tars' member
headers (names, offsets and sizes: a header walk, no file read) and proves it with the
recorded hashes: the new tar without the added blocks must give the old tar's bytes, chunk
by chunk (``chunks`` of the old source record: sha256 of each chunk). Chunks are cut where
the content says (``storage._boundaries``), so the new record lists every old chunk but
those around the added files, at the offset the old bytes moved to: those are equal without
reading anything; the few others are read from the new copy and hashed (the old copy is
never read beyond its headers and its end-of-archive bytes). Any mismatch (a file
removed, rewritten, renamed, resized, or an archive not written this way) gives ``None``: the
refresh prepares every file.

The preparation then reads a tar of the added members only (:func:`folder_input`: their
blocks of the new copy, read in place, and an end-of-archive marker), decoded with the
version's class codes (a new class folder takes the next code) and its splits continued.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import math
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from datastack.errors import DatastackError

if TYPE_CHECKING:  # pragma: no cover
    from datastack.resources import StreamedResource
    from datastack.specs import DatasetSpec
    from datastack.storage.base import StorageConnector

#: Formats that read each file of a folder (tar) source as rows of its own.
FOLDER_FORMATS = ("imagefolder",)
#: The most bytes after the last member of the old tar (its end-of-archive marker and
#: padding) read to check it.
MAX_TRAILER_BYTES = 1 << 20
_READ = 1 << 20
_END = bytes(2 * tarfile.BLOCKSIZE)


@dataclass(frozen=True)
class FolderPlan:
    """Prepare only the members added to the folder's tar: ``ranges`` are their blocks in the
    new tar (``(offset, length)``, in archive order), ``files`` how many files they hold."""

    ranges: tuple[tuple[int, int], ...]
    files: int

    @property
    def size(self) -> int:
        return sum(length for _, length in self.ranges) + len(_END)


@dataclass(frozen=True)
class _TarBlock:
    name: str
    start: int  # its first header block (a pax header's, if any)
    end: int  # the end of its data blocks
    regular: bool


def folder_plan(
    spec: DatasetSpec, before: Mapping[str, Any], now: Mapping[str, Any],
    raw: StreamedResource, storage: StorageConnector, max_members: int,
) -> FolderPlan | None:
    """A :class:`FolderPlan` when the tar ``raw`` (source record ``now``) is the tar of the
    source record ``before`` with members added (see the module docstring), else ``None``."""
    from datastack.storage.chunked import open_raw

    source = spec.sources[0]
    if (getattr(spec.options, "manifest", None) is not None or source.compression != "tar"
            or source.member is not None):
        return None
    size, sha256 = before.get("size"), before.get("sha256")
    if (isinstance(size, bool) or not isinstance(size, int) or not isinstance(sha256, str)
            or now.get("sha256") == sha256):
        return None
    new = _members(raw, max_members)
    if new is None:
        return None
    try:
        with open_raw(storage, before) as old_raw:
            old = _members(old_raw, max_members)
            end = old[-1].end if old else 0
            if old is None or not 0 <= size - end <= MAX_TRAILER_BYTES:
                return None
            old_raw.seek(end)
            trailer = old_raw.read(size - end)
    except DatastackError:  # the old copy is gone: prepare everything
        return None
    if len(trailer) != size - end:
        return None
    return _checked_plan(before, now, old, new, trailer, raw)


def _checked_plan(
    before: Mapping[str, Any], now: Mapping[str, Any], old: list[_TarBlock],
    new: list[_TarBlock], trailer: bytes, raw: StreamedResource,
) -> FolderPlan | None:
    """The plan when every old member is in the new tar, in order, with the same bytes."""
    known = {m.name: m for m in old}
    if len(known) != len(old):
        return None
    kept = [m for m in new if m.name in known]
    added = [m for m in new if m.name not in known]
    if not _has_image(added) or [m.name for m in kept] != [m.name for m in old]:
        return None
    pieces: list[tuple[int, int, int]] = []  # (old offset, new offset, length)
    for mine, theirs in zip(kept, old, strict=True):
        length = mine.end - mine.start
        if length != theirs.end - theirs.start:
            return None
        if pieces and pieces[-1][0] + pieces[-1][2] == theirs.start and (
                pieces[-1][1] + pieces[-1][2] == mine.start):
            last = pieces.pop()
            pieces.append((last[0], last[1], last[2] + length))
        else:
            pieces.append((theirs.start, mine.start, length))
    if sum(p[2] for p in pieces) != (old[-1].end if old else 0):
        return None  # the old tar has bytes between its members
    if not _same_bytes(before, now, pieces, trailer, raw):
        return None
    ranges: list[tuple[int, int]] = []
    for member in added:
        if ranges and sum(ranges[-1]) == member.start:
            ranges[-1] = (ranges[-1][0], ranges[-1][1] + member.end - member.start)
        else:
            ranges.append((member.start, member.end - member.start))
    return FolderPlan(tuple(ranges), sum(m.regular for m in added))


def _has_image(added: Sequence[_TarBlock]) -> bool:
    """Whether an added member is an image file (other files prepare nothing new)."""
    from datastack.formats.imagefolder import IMAGE_EXTENSIONS

    return any(m.regular and m.name.lower().endswith(IMAGE_EXTENSIONS) for m in added)


def _members(resource: StreamedResource, limit: int) -> list[_TarBlock] | None:
    """The members of the plain tar ``resource`` in archive order, from their headers only;
    ``None`` when it is not one (compressed, a zip, damaged), holds more than ``limit``
    members, or members other than files and folders (the full preparation says why)."""
    from datastack.resources import StreamedResource

    fresh = StreamedResource(resource.identifier, resource.opener, size=resource.size)
    members: list[_TarBlock] = []
    try:
        with io.BufferedReader(fresh, 8192) as stream, tarfile.open(
                fileobj=stream, mode="r:") as tf:
            while (info := tf.next()) is not None:
                if len(members) >= limit or not (info.isreg() or info.isdir()) or (
                        info.issparse()):
                    return None
                data = -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
                end = info.offset_data + (data if info.isreg() else 0)
                members.append(_TarBlock(info.name, info.offset, end, info.isreg()))
    except (tarfile.TarError, EOFError, OSError, ValueError):
        return None
    return members


def _same_bytes(
    before: Mapping[str, Any], now: Mapping[str, Any], pieces: Sequence[tuple[int, int, int]],
    trailer: bytes, raw: StreamedResource,
) -> bool:
    """Whether the new tar's ``pieces`` followed by ``trailer`` are the old tar's bytes:
    each old chunk's sha256 (the whole copy's for a copy stored whole) against the bytes
    they map to. An old chunk that lies within one piece and that the new record lists, same
    hash and size, at the offset it maps to is equal without reading anything (chunk cuts
    follow the content: every old chunk but those around the added files)."""
    chunks = [(str(h), int(n)) for h, n in before.get("chunks") or []] or [
        (str(before["sha256"]), int(before["size"]))]
    same = {}
    offset = 0
    for digest, size in now.get("chunks") or []:
        same[offset] = (str(digest), int(size))
        offset += int(size)
    offset = 0
    for digest, size in chunks:
        mapped = _mapped(pieces, offset, size)
        if mapped is None or same.get(mapped) != (digest, size):
            hasher = hashlib.sha256()
            for data in _old_bytes(pieces, trailer, raw, offset, offset + size):
                hasher.update(data)
            if hasher.hexdigest() != digest:
                return False
        offset += size
    return offset == int(before["size"])


def _mapped(pieces: Sequence[tuple[int, int, int]], offset: int, size: int) -> int | None:
    """Where the old bytes ``offset:offset + size`` begin in the new tar, when one piece
    holds them all, else None (``pieces`` are in the order of their old offsets)."""
    index = bisect.bisect_right(pieces, (offset, math.inf, math.inf)) - 1
    if index < 0:
        return None
    old, new, length = pieces[index]
    return new + offset - old if offset + size <= old + length else None


def _old_bytes(
    pieces: Sequence[tuple[int, int, int]], trailer: bytes, raw: StreamedResource,
    lo: int, hi: int,
) -> Iterator[bytes]:
    """The old tar's bytes ``lo:hi``, read from where they lie in the new tar."""
    body = sum(p[2] for p in pieces)
    for old, new, length in pieces:
        start, stop = max(lo, old), min(hi, old + length)
        while start < stop:
            raw.seek(new + start - old)
            data = raw.read(min(_READ, stop - start))
            if not data:
                return  # a short copy: the hash will not match
            yield data
            start += len(data)
    if hi > body:
        yield trailer[max(lo, body) - body : hi - body]


def folder_input(plan: FolderPlan, raw: StreamedResource) -> StreamedResource:
    """The source as the preparation of the added files reads it: a plain tar of the added
    members' blocks of ``raw`` (read where they lie), then an end-of-archive marker."""
    from datastack.resources import spliced

    pieces: list[bytes | tuple[int, int]] = [(start, start + n) for start, n in plan.ranges]
    return spliced(f"{raw.identifier}#added-{plan.files}", raw, [*pieces, _END])


def joined_schema(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The schema of the added files' preparation as the grown version's: its image fields
    (and their entries under ``splits``) hold the modes of the old images too (the field a
    preparation of every file gives), and the skipped files are counted over both."""
    from datastack.fields import IMAGE, Field, image_dtype, image_shape

    before = {str(f.get("name")): f for f in old.get("fields") or []}
    fields, joined = [], {}
    for entry in new.get("fields") or []:
        was = before.get(str(entry.get("name")))
        if entry.get("kind") == IMAGE and was is not None and was.get("kind") == IMAGE:
            modes = tuple(sorted({*(was.get("modes") or ()), *(entry.get("modes") or ())}))
            entry = {**entry, **Field(str(entry["name"]), IMAGE, image_dtype(modes),
                                      image_shape(modes), modes=modes).to_dict()}
            joined[str(entry["name"])] = entry
        fields.append(entry)
    out = {**new, "fields": fields} if "fields" in new else dict(new)
    if isinstance(new.get("splits"), dict):
        out["splits"] = {split: {name: _split_entry(info, joined.get(name)) for name, info
                                 in (arrays or {}).items()}
                         for split, arrays in new["splits"].items()}
    skipped_old, skipped_new = old.get("skipped"), new.get("skipped")
    if isinstance(skipped_old, dict) and isinstance(skipped_new, dict):
        out["skipped"] = {
            "count": int(skipped_old.get("count") or 0) + int(skipped_new.get("count") or 0),
            "files": [*(skipped_old.get("files") or []), *(skipped_new.get("files") or [])][:20],
        }
    return out


def _split_entry(info: Any, field: Mapping[str, Any] | None) -> Any:
    """A ``splits`` entry of a field (``{shape: [rows, ...], dtype, kind}``) for ``field``."""
    if field is None or not isinstance(info, dict) or not info.get("shape"):
        return info
    shape = field.get("shape")
    return {**info, "shape": [info["shape"][0], *(shape or [])], "dtype": field["dtype"]}


__all__ = ["FOLDER_FORMATS", "FolderPlan", "folder_input", "folder_plan", "joined_schema"]
