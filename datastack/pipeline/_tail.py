"""Appends prepared from the new tail only (``docs/living.md``).

A refresh prepares only the rows a tracked source gained when the source's new content begins
with its old content (the retrieval checked the prefix's sha256 against the recorded one while
streaming: ``appended_to`` in the source's record) and nothing else changed: the same spec, one
source, a line-based format (CSV, JSON Lines) whose old content ended at a line end, a factory
that prepares from its spec (``tail_appends``), no gate that needs statistics of every row.
The tail is read as a file of its own (CSV: the header line, then the bytes after the old
end), prepared with the version's category codes and splits continued, and cut into new
shards; the version's manifest is the old shards followed by the new ones, split by split.
When the prepared tail does not have the old version's fields (a column would be typed
differently), :class:`~datastack.canonical.rowids.AppendRefused` makes the refresh prepare
everything instead: the result is the same version, only slower.

A folder source (``imagefolder``) that only gained files is planned by
:mod:`datastack.pipeline._tail_folder` (:class:`FolderPlan`): the preparation reads a tar of
the added files only; the manifest grows the same way.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datastack.canonical.layout import is_sharded, shards_of
from datastack.canonical.rowids import AppendRefused
from datastack.pipeline._tail_folder import (
    FOLDER_FORMATS,
    FolderPlan,
    folder_input,
    folder_plan,
    joined_schema,
)

if TYPE_CHECKING:  # pragma: no cover
    from datastack.canonical.shards import ShardFile
    from datastack.catalog.record import VersionRecord
    from datastack.factory import DatasetFactory
    from datastack.resources import StreamedResource
    from datastack.specs import DatasetSpec
    from datastack.storage.base import StorageConnector
    from datastack.store import Store

log = logging.getLogger("datastack.pipeline")

#: Formats whose rows are lines (a tail starting at a line end is rows of its own).
LINE_FORMATS = ("csv", "jsonl")
#: The most bytes of a CSV header line read to prefix the tail.
MAX_HEADER_BYTES = 1024 * 1024


@dataclass(frozen=True)
class TailPlan:
    """Prepare only the bytes of the one source after ``offset`` (``header``: the lines read
    before them, a CSV header)."""

    offset: int
    header: bytes


def tail_plan(
    factory: DatasetFactory, sources: Sequence[dict[str, Any]], last: VersionRecord | None,
    needs_stats: bool, raw: StreamedResource, storage: StorageConnector | None = None,
) -> TailPlan | FolderPlan | None:
    """A :class:`TailPlan` (a line-based table that grew at its end) or a
    :class:`~datastack.pipeline._tail_folder.FolderPlan` (a folder that gained files, read
    through ``storage``) when this refresh can prepare from the new content only, else
    ``None`` (see the module docstring for the conditions)."""
    spec = factory.spec
    if (last is None or not is_sharded(last) or not getattr(factory, "tail_appends", False)
            or spec.preprocessor is not None or needs_stats or len(spec.sources) != 1
            or spec.format not in (*LINE_FORMATS, *FOLDER_FORMATS)
            or last.spec_hash != spec.fingerprint() or len(last.sources) != 1
            or not spec.sources[0].track):
        return None
    if spec.format in FOLDER_FORMATS:
        if storage is None:
            return None
        from datastack.formats.archives import DEFAULT_LIMITS

        return folder_plan(spec, last.sources[0], sources[0], raw, storage,
                           DEFAULT_LIMITS.max_members)
    return _line_plan(spec, sources[0], last.sources[0], raw)


def _line_plan(
    spec: DatasetSpec, now: dict[str, Any], before: dict[str, Any], raw: StreamedResource
) -> TailPlan | None:
    """The plan of a CSV or JSON Lines source whose new content begins with its old one."""
    appended = now.get("appended_to") or {}
    size = appended.get("size")
    if (not isinstance(size, int) or size <= 0
            or appended.get("sha256") != before.get("sha256") or size != before.get("size")):
        return None
    raw.seek(size - 1)
    if raw.read(1) != b"\n":
        return None  # the old last line may have grown: not rows of their own
    header = b""
    options = spec.options
    if spec.format == "csv":
        if getattr(options, "skip_rows", 0) or not getattr(options, "header", True):
            return None
        raw.seek(0)
        header = raw.readline(MAX_HEADER_BYTES)
        if not header.endswith(b"\n") or header.count(b'"') % 2:
            return None  # a header with a quoted line break: prepare everything
    return TailPlan(size, header)


def describe(plan: TailPlan | FolderPlan, raw: StreamedResource) -> str:
    """What a plan prepares, for the log: ``the 120 bytes appended upstream``."""
    if isinstance(plan, FolderPlan):
        return f"the {plan.files} file{'' if plan.files == 1 else 's'} added upstream"
    return f"the {int(raw.size) - plan.offset} bytes appended upstream"


def tail_input(plan: TailPlan | FolderPlan, raw: StreamedResource) -> StreamedResource:
    """The source as the preparation of the tail reads it: the header, then the new bytes
    (a folder: a tar of the added files, :func:`~datastack.pipeline._tail_folder.
    folder_input`)."""
    from datastack.resources import spliced

    if isinstance(plan, FolderPlan):
        return folder_input(plan, raw)
    return spliced(f"{raw.identifier}#tail-{plan.offset}", raw,
                   [plan.header, (plan.offset, int(raw.size))])


def same_fields(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether a prepared tail has the fields of the version it extends (category names may
    only grow at the end: codes never move)."""
    def shape(schema: dict[str, Any]) -> list[dict[str, Any]]:
        return [{k: v for k, v in f.items() if k != "names"} for f in schema.get("fields") or []]

    if not old.get("fields") or shape(old) != shape(new):
        return False
    for before, after in zip(old["fields"], new["fields"], strict=True):
        names = list(before.get("names") or [])
        if list(after.get("names") or [])[: len(names)] != names:
            return False
    return old.get("features") == new.get("features") and old.get("target") == new.get(
        "target")


def grown(last: VersionRecord, prepared: Any, tail: list[dict[str, Any]]) -> tuple[
        dict[str, int], dict[str, Any], list[dict[str, Any]]]:
    """The appended version's split sizes, schema and shard entries: the last version's
    shards of each split, then the tail's (within a split: the previous version's rows in
    their order, then the new ones)."""
    prepared.schema = joined_schema(dict(last.schema or {}), dict(prepared.schema or {}))
    coded = set(getattr(prepared, "encodings", None) or {})
    if not same_fields(dict(last.schema or {}), dict(prepared.schema or {})) or coded != set(
            last.encodings or {}):
        raise AppendRefused("the prepared tail's fields or category columns differ from the "
                            "version's")
    splits = {s: int(n) + int(last.splits.get(s, 0)) for s, n in prepared.splits.items()}
    for split, n in last.splits.items():  # in the tail's (the spec's) order, then the rest
        splits.setdefault(split, int(n))
    schema = dict(prepared.schema)
    per_split = {}
    for split, arrays in (schema.get("splits") or {}).items():
        per_split[split] = {name: {**info, "shape": [splits[split], *info["shape"][1:]]}
                            if isinstance(info, dict) and info.get("shape") else info
                            for name, info in arrays.items()}
    for split, arrays in ((last.schema or {}).get("splits") or {}).items():
        per_split.setdefault(split, arrays)  # a split only the old version has
    if per_split:
        schema["splits"] = per_split
    old = shards_of(last)
    entries = []
    for split in splits:
        kept = old.get(split, [])
        entries += kept + [e for e in tail if e.get("split") == split
                           and (int(e.get("rows") or 0) or not kept)]
    return splits, schema, entries


def compact(
    store: Store, name: str, manifest: list[dict[str, Any]], shards: list[ShardFile],
    shard_bytes: int, folder: Path,
) -> tuple[list[dict[str, Any]], list[ShardFile]]:
    """Merge the runs of small shards appends left (:func:`~datastack.canonical.shards.
    merge_runs`): the manifest with merged shards in their place, and the shards to upload
    (new ones only: the tail's that were not merged away, and the merged)."""
    from datastack.canonical.layout import shard_identifier
    from datastack.canonical.shards import merge_runs, merge_shards, shard_entry

    local = {shard_identifier(name, s.sha256): s for s in shards}
    out: list[dict[str, Any]] = []
    merged: list[ShardFile] = []
    splits = list(dict.fromkeys(str(e["split"]) for e in manifest))
    for split in splits:
        entries = [e for e in manifest if e["split"] == split]
        runs = dict(merge_runs(entries, shard_bytes))
        k = 0
        while k < len(entries):
            if k not in runs:
                out.append(entries[k])
                k += 1
                continue
            paths = [_local_copy(store, local, e, folder) for e in entries[k : runs[k]]]
            shard = merge_shards(paths, split, folder / f"merged-{len(merged)}.h5")
            merged.append(shard)
            out.append(shard_entry(shard, shard_identifier(name, shard.sha256)))
            log.info("%s: merged %d small shards of %s", name, len(paths), split)
            k = runs[k]
    kept = {str(e["identifier"]) for e in out}
    upload = [s for i, s in local.items() if i in kept] + merged
    return out, upload


def _local_copy(store: Store, local: dict[str, ShardFile], entry: dict[str, Any],
                folder: Path) -> Path:
    identifier = str(entry["identifier"])
    if identifier in local:
        return Path(local[identifier].path)
    path = folder / f"{identifier.rsplit('/', 1)[-1]}"
    resource = store.storage.get_resource(identifier)
    try:
        resource.copy_to(path)
    finally:
        resource.close()
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    if digest != entry.get("sha256"):
        from datastack.errors import FormatError

        raise FormatError(f"{identifier}: read back with sha256 {digest}, its record says "
                          f"{entry.get('sha256')}; the stored shard is damaged, nothing was "
                          "published (restore it, or delete the dataset and refresh)")
    return path


__all__ = [
    "LINE_FORMATS",
    "TailPlan",
    "compact",
    "describe",
    "grown",
    "same_fields",
    "tail_input",
    "tail_plan",
]
