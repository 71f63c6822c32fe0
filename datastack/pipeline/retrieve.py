"""The retrieve half of a refresh: has anything changed upstream, and bring the sources in.

Two kinds of source (``docs/specs.md``):

- **pinned** (``sha256:``/``md5:``): the checksum is the content. An unchanged spec means
  unchanged data; the raw copy is content-addressed (``datasets/<name>/raw/<algo>-<hex>/``)
  and reused. If upstream changed anyway (its ETag / Last-Modified moved), the refresh says
  so in a warning (run logs, artifact, ``datastack status``) and keeps serving the pinned data.
- **tracked** (``track: true``): follows upstream. Each refresh asks with a conditional request
  (``If-None-Match`` / ``If-Modified-Since``; a file's mtime); when the answer is "not
  modified" nothing is downloaded. When the server cannot answer that, the source is
  downloaded and its sha256 compared with the one recorded for the latest version. Each
  download is stored as content-addressed chunks (``datasets/<name>/raw/chunks/<sha256>``,
  listed in order in the source record; ``raw/fetched-<id>/<file>`` names the download),
  so an append upstream stores only its new chunks; its sha256 is recorded, and whether it
  begins with the latest version's copy (``appended_to``: the sha256 of its first N bytes,
  taken in the same pass, equals the recorded one).

Validators (ETag, Last-Modified) are recorded for every source of every version, also when a
raw copy is reused (carried over, or asked with a HEAD request), so change detection never
switches itself off.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from datastack._uri import redact
from datastack.canonical.layout import (
    fetched_identifier,
    is_fetched,
    raw_chunk_identifier,
    raw_identifier,
)
from datastack.errors import DatastackError, NotFoundError
from datastack.specs import DatasetSpec, SourceSpec

if TYPE_CHECKING:  # pragma: no cover
    from datastack.catalog.record import VersionRecord
    from datastack.factory import DatasetFactory
    from datastack.store import Store

log = logging.getLogger("datastack.sources")


@dataclass
class SourcesCheck:
    """Whether a dataset needs a new version.

    ``changed`` False: the latest published version was built from the same spec and no
    tracked source moved. ``compare``: a tracked source could not answer a conditional request,
    so it must be downloaded and its sha256 compared before deciding.
    """

    changed: bool
    reason: str
    latest_version: int | None = None
    warnings: list[str] = field(default_factory=list)
    compare: bool = False


def latest_record(spec: DatasetSpec, store: Store) -> VersionRecord | None:
    try:
        return store.catalog.latest(spec.name)
    except NotFoundError:
        return None


def recorded_source(
    record: VersionRecord | None, spec: DatasetSpec, index: int
) -> dict[str, Any] | None:
    """What ``record`` holds for the ``index``-th source of ``spec`` (matched by filename)."""
    if record is None:
        return None
    name = spec.sources[index].filename
    matches = [s for s in record.sources if str(s.get("identifier", "")).endswith("/" + name)]
    if len(matches) == 1:
        return matches[0]
    if len(record.sources) == len(spec.sources):
        return record.sources[index]
    return None


def _ask_upstream(source: SourceSpec, recorded: dict[str, Any]) -> bool | None:
    """Conditional request: True changed, False unchanged, None cannot tell."""
    from datastack.retrieval import check_changed

    etag, modified = recorded.get("etag"), recorded.get("last_modified")
    if not (etag or modified):
        return None
    # a tracked file with the same size and mtime is hashed to decide (#26.6)
    sha256 = recorded.get("sha256") if source.track else None
    return check_changed(source.url, etag=etag, last_modified=modified, sha256=sha256).changed


def check_sources(factory: DatasetFactory, store: Store) -> SourcesCheck:
    """Decide whether the dataset needs a new version, downloading nothing.

    Pinned sources are unchanged when the spec is; a conditional request only produces a
    warning when upstream moved. Tracked sources are asked with a conditional request.
    """
    spec = factory.spec
    latest = latest_record(spec, store)
    if latest is None:
        return SourcesCheck(True, "no published version yet")
    if latest.spec_hash != spec.fingerprint():
        return SourcesCheck(True, "spec changed (sources, checksums or options)", latest.version)
    warnings: list[str] = []
    moved: list[str] = []
    unknown: list[str] = []
    for index, source in enumerate(spec.sources):
        recorded = recorded_source(latest, spec, index) or {}
        shown = redact(source.url)
        try:
            answer = _ask_upstream(source, recorded)
        except DatastackError as exc:
            if source.track:
                raise
            warnings.append(f"could not check {shown} upstream: {exc}")
            continue
        if source.track:
            if answer is True:
                moved.append(shown)
            elif answer is None:
                unknown.append(shown)
        elif answer is True:
            warnings.append(
                f"{shown} changed upstream but its pinned checksum did not: the pinned content "
                "stays published; update the checksum in the spec (or use track: true) to "
                "publish the new content"
            )
    for warning in warnings:
        log.warning("%s: %s", spec.name, warning)
    if moved:
        return SourcesCheck(
            True, f"changed upstream: {', '.join(moved)}", latest.version, warnings
        )
    if unknown:
        reason = f"no validators from {', '.join(unknown)}: downloading to compare checksums"
        return SourcesCheck(True, reason, latest.version, warnings, compare=True)
    unchanged = f"unchanged since version {latest.version}"
    return SourcesCheck(False, unchanged, latest.version, warnings)


def _validators(source: SourceSpec, carried: dict[str, Any] | None) -> tuple[Any, Any]:
    """ETag / Last-Modified of a reused raw copy: carried over, else asked upstream."""
    if carried and (carried.get("etag") or carried.get("last_modified")):
        return carried.get("etag"), carried.get("last_modified")
    if not source.url.startswith(("http://", "https://")):
        return None, None
    from datastack.retrieval import check_changed

    try:
        answer = check_changed(source.url)
    except DatastackError as exc:
        log.warning("could not read validators of %s: %s", redact(source.url), redact(str(exc)))
        return None, None
    return answer.etag, answer.last_modified


def _retrieve_one(
    spec: DatasetSpec, source: SourceSpec, store: Store, deadline_s: float | None,
    before: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Download one source: a pinned one whole under its checksum, a tracked one as chunks
    (``storage.chunked.ChunkSink``), checking on the way whether it begins with ``before``
    (what the latest version recorded of it)."""
    from datastack.retrieval import ResourceDefinition, Retriever, retriever_for
    from datastack.storage.chunked import ChunkSink

    identifier = fetched_identifier(spec, source) if source.track else raw_identifier(spec, source)
    definition = ResourceDefinition(
        identifier, source.url, sha256=source.sha256, md5=source.md5, tracked=source.track
    )
    options = {} if deadline_s is None else {"deadline": deadline_s}
    sink: ChunkSink | None = None
    target: Any = store.storage
    if source.track:
        target = sink = ChunkSink(
            store.storage, functools.partial(raw_chunk_identifier, spec.name),
            prefix=_previous_copy(before),
        )
    try:
        retriever: Retriever = retriever_for(definition, target, **options)
        (info,) = retriever.retrieve_with_info([definition])
    except DatastackError as exc:
        text = str(exc).replace("`datastack refresh NAME`", f"`datastack refresh {spec.name}`")
        raise type(exc)(f"dataset {spec.name!r}: {text}") from None
    out = {
        "identifier": identifier,
        "size": info.size,
        "etag": info.etag,
        "last_modified": info.last_modified,
        "reused": False,
        "sha256_computed": info.sha256,
    }
    if sink is not None:
        out["chunks"] = sink.chunks
        out["stored_bytes"] = sink.written
        if sink.prefix is not None and info.size > sink.prefix[0] and sink.prefix_sha256 == (
            sink.prefix[1]
        ):
            out["appended_to"] = {"size": sink.prefix[0], "sha256": sink.prefix[1]}
    return out


def _previous_copy(before: dict[str, Any] | None) -> tuple[int, str] | None:
    """``(size, sha256)`` of the latest version's copy of a tracked source, when it recorded
    both and is not empty (the prefix an append would begin with)."""
    if not before:
        return None
    size, sha256 = before.get("size"), before.get("sha256")
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        return None
    if not isinstance(sha256, str) or len(sha256) != 64:
        return None
    return size, sha256.lower()


def retrieve_sources(
    factory: DatasetFactory, store: Store, *, deadline_s: float | None = None
) -> list[dict[str, Any]]:
    """Store every raw source (pinned ones verified by checksum); return their records.

    Pinned sources already stored under their content-addressed identifier are not
    downloaded again; tracked sources are always fetched. ``deadline_s`` bounds each download
    (headers, body and retries).
    """
    spec = factory.spec
    latest = latest_record(spec, store)
    records: list[dict[str, Any]] = []
    for index, source in enumerate(spec.sources):
        record: dict[str, Any] = {
            "url": redact(source.url),
            "sha256": source.sha256,
            "md5": source.md5,
            "track": source.track,
            "role": source.role,
            "split": source.split,
        }
        identifier = raw_identifier(spec, source)
        if not source.track and store.storage.has_resource(identifier):
            carried = recorded_source(latest, spec, index)
            if carried is not None and carried.get("identifier") != identifier:
                carried = None
            etag, modified = _validators(source, carried)
            size = store.storage.get_resource(identifier).size
            record.update(
                identifier=identifier, size=size, etag=etag, last_modified=modified, reused=True
            )
        else:
            before = recorded_source(latest, spec, index) if source.track else None
            record.update(_retrieve_one(spec, source, store, deadline_s, before))
        if source.track:
            record["sha256"] = record.pop("sha256_computed")
        records.append(record)
        log.info("%s: source %s stored as %s", spec.name, record["url"], record["identifier"])
    return records


def same_tracked_content(
    spec: DatasetSpec, sources: list[dict[str, Any]], store: Store
) -> int | None:
    """The latest version when every tracked source downloaded the bytes it already has."""
    latest = latest_record(spec, store)
    if latest is None or latest.spec_hash != spec.fingerprint():
        return None
    for index, (source, record) in enumerate(zip(spec.sources, sources, strict=True)):
        if not source.track:
            continue
        before = recorded_source(latest, spec, index) or {}
        if not before.get("sha256") or before.get("sha256") != record.get("sha256"):
            return None
    return latest.version


def discard_fetched(sources: list[dict[str, Any]], store: Store) -> None:
    """Delete the downloads of tracked sources that will not be used (best effort).

    A chunked download's chunks are left to ``datastack gc``: a chunk may hold content a
    kept version shares, and GC deletes only what no kept version references.
    """
    for record in sources:
        whole = "chunks" not in record
        if record.get("track") and whole and is_fetched(record.get("identifier")):
            try:
                store.storage.delete_resource(record["identifier"], missing_ok=True)
            except DatastackError as exc:  # GC removes it later
                log.warning("could not delete %s: %s", record["identifier"], exc)


def source_checksums(sources: list[dict[str, Any]]) -> list[str]:
    """One checksum per retrieved source (what identifies the content of a version)."""
    out = []
    for record in sources:
        if record.get("sha256"):
            out.append(f"sha256:{str(record['sha256']).lower()}")
        elif record.get("md5"):
            out.append(f"md5:{str(record['md5']).lower()}")
        else:
            out.append(f"sha256:{str(record.get('sha256_computed', '')).lower()}")
    return out


__all__ = [
    "SourcesCheck",
    "check_sources",
    "discard_fetched",
    "retrieve_sources",
    "same_tracked_content",
    "source_checksums",
]
