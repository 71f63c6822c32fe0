"""The prepare half of a refresh: a pending version, its validation gates, its publication.

``prepare_version`` reserves the next version number (a *pending* record, invisible to
readers), prepares the raw sources into the canonical HDF5 file in a forked child and uploads
it; ``validate_version`` runs the gates (``datastack.pipeline.gates``); ``publish_version``
flips the record to published in one atomic catalog step. A failed attempt is dropped at once
(:func:`drop_version`): its record aborted, its files deleted.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datastack._isolation import run_isolated
from datastack._workdirs import work_dir
from datastack.canonical.layout import (
    DATA_FILE,
    LABELS_KIND,
    attempt_prefix,
    is_sharded,
    labels_identifier,
    shard_identifier,
    shards_of,
    version_prefix,
)
from datastack.canonical.published import data_file, known_codes
from datastack.canonical.rowids import AppendRefused, PreviousVersion, continuing
from datastack.canonical.shards import ShardFile, shard_bytes_setting, shard_entry
from datastack.errors import DatastackError, FormatError, ResourceNotFoundError, StorageError
from datastack.pipeline import gates
from datastack.pipeline._parallel import prepare_in_parts
from datastack.pipeline._part_tasks import worker_identity
from datastack.pipeline._tail import (
    TailPlan,
    compact,
    describe,
    grown,
    tail_input,
    tail_plan,
)
from datastack.pipeline._tail_folder import FolderPlan
from datastack.pipeline.retrieve import latest_record, source_checksums
from datastack.storage.chunked import open_raw

if TYPE_CHECKING:  # pragma: no cover
    from datastack.catalog.record import VersionRecord
    from datastack.factory import DatasetFactory
    from datastack.specs import DatasetSpec
    from datastack.store import Store

log = logging.getLogger("datastack.pipeline")


def default_producer() -> dict[str, Any]:
    """Lineage of an in-process run (engines add their own, e.g. the flow run id)."""
    from datastack import __version__

    return {
        "flow_run_id": None,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "datastack_version": __version__,
        "engine": "local",
    }


@dataclass
class PreparedVersion:
    """A version whose resources are written and verified, reserved but not yet published."""

    name: str
    version: int
    resources: list[dict[str, Any]]
    splits: dict[str, int]
    schema: dict[str, Any]
    encodings: dict[str, Any]
    format: str
    stats: dict[str, Any] = field(default_factory=dict)
    attempt: str = ""  # the attempt's own id: its files are under resource_prefix(record)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreparedVersion:
        return cls(**data)


def _prepare_in_child(
    factory: DatasetFactory, inputs: Any, out: Path, with_stats: bool,
    known: dict[str, list[str]] | None, previous: PreviousVersion | None = None,
) -> tuple[Any, dict[str, Any]]:
    try:
        with continuing(previous):  # splits never move (docs/living.md)
            prepared = (factory.prepare(inputs, out) if known is None
                        else factory.prepare_continuing(inputs, out, known))
    except DatastackError:
        raise
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise StorageError(
                f"{factory.spec.name}: no space to write the HDF5 file ({exc}); nothing was "
                "published, free space and retry"
            ) from None
        raise FormatError(
            f"{factory.spec.name}: preprocessing failed reading the sources ({type(exc).__name__}"
            f": {exc}); the input is corrupt or unsupported"
        ) from None
    except (ValueError, TypeError, KeyError, RuntimeError, MemoryError) as exc:
        raise FormatError(
            f"{factory.spec.name}: preprocessing failed ({type(exc).__name__}: {exc}); the "
            "input is corrupt or of an unexpected shape"
        ) from None
    if not with_stats:
        return prepared, {}
    target = (prepared.schema or {}).get("target")
    labels = (prepared.encodings or {}).get(target) if target else None
    return prepared, gates.file_stats(out, labels)


def _prepare_and_cut(
    factory: DatasetFactory, inputs: Any, out: Path, with_stats: bool,
    known: dict[str, list[str]] | None, previous: PreviousVersion | None, shard_bytes: int,
) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
    """In the child: prepare the whole canonical file, then cut it into shards beside it."""
    from datastack.canonical.shards import cut_shards

    prepared, stats = _prepare_in_child(factory, inputs, out, with_stats, known, previous)
    try:
        shards = cut_shards(out, out.parent / "shards", shard_bytes)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise StorageError(f"{factory.spec.name}: no space to write the shards ({exc}); "
                               "nothing was published, free space and retry") from None
        raise FormatError(f"{factory.spec.name}: the prepared file cannot be cut into shards "
                          f"({exc}); re-run the refresh") from None
    finally:
        out.unlink(missing_ok=True)  # the shards hold every row now
    worker = worker_identity()  # the shards' lineage: who prepared them
    return prepared, stats, [{**s.to_dict(), "worker": worker} for s in shards]


def prepare_version(
    factory: DatasetFactory,
    sources: Sequence[dict[str, Any]],
    store: Store,
    *,
    producer: dict[str, Any] | None = None,
    lease_token: int | None = None,
) -> PreparedVersion:
    """Prepare the raw sources into a version's HDF5 file, reserve its number, store it.

    Preparation runs first, in a forked child (``datastack._isolation``) and a temporary
    folder: content that fails to parse (or an HTML/XML page served instead of the data,
    refused by the format gate before parsing) leaves the catalog untouched. Only then is the
    next version reserved as *pending* (readers do not see it until :func:`publish_version`)
    and the file uploaded.

    A dataset with a published version continues its category codes (``docs/living.md``):
    the last version's labels by column (:func:`~datastack.canonical.published.known_codes`)
    are handed to the child as a plain value.
    """
    spec = factory.spec
    last = latest_record(spec, store)  # once: codes and splits continue from it
    known = None if last is None else known_codes(last, store)
    inputs = [
        (source, open_raw(store.storage, stored))  # whole or chunked (storage.chunked)
        for source, stored in zip(spec.sources, sources, strict=True)
    ]
    with work_dir() as tmp:
        try:
            for (_, resource), stored in zip(inputs, sources, strict=True):
                gates.check_markup(spec, str(stored.get("url")), resource)
            plan = None if len(inputs) != 1 else tail_plan(
                factory, sources, last, gates.needs_stats(spec), inputs[0][1], store.storage)
            prepared, stats, shards, manifest = _prepare_all_or_tail(
                factory, inputs, tmp / DATA_FILE, known, last, store, plan, sources)
        finally:
            for _, resource in inputs:
                resource.close()
        _fit_catalog_document(spec.name, prepared)  # before anything is written
        record = store.catalog.begin(
            spec.name,
            spec_hash=spec.fingerprint(),
            sources=list(sources),
            format=spec.format or "custom",
            description=spec.description,
            extra={"license": spec.license} if spec.license else {},
            producer=producer or default_producer(),
            lease_token=lease_token,
        )
        try:
            written = store_shards(store, spec.name, shards)
            written = (manifest or written) + _labels_entry(store, spec.name, prepared)
        except BaseException:
            drop_version(store, spec.name, record.version, record.attempt)
            raise
    raw = [
        {"identifier": s["identifier"], "size": s.get("size"),
         "sha256": s.get("sha256") or s.get("sha256_computed")}
        for s in sources
    ]
    return PreparedVersion(
        name=spec.name,
        version=record.version,
        resources=[*written, *raw],
        splits=dict(prepared.splits),
        schema=dict(prepared.schema),
        encodings=dict(getattr(prepared, "encodings", {}) or {}),
        format=spec.format or "custom",
        stats=stats,
        attempt=record.attempt,
    )


def _prepare_all_or_tail(
    factory: DatasetFactory, inputs: list[tuple[Any, Any]], out: Path,
    known: dict[str, list[str]] | None, last: VersionRecord | None, store: Store,
    plan: TailPlan | FolderPlan | None, sources: Sequence[dict[str, Any]],
) -> tuple[Any, dict[str, Any], list[ShardFile], list[dict[str, Any]] | None]:
    """Prepare the appended rows (or a folder's added files) only when ``plan`` says so
    (``pipeline._tail``), else (or when the tail cannot stand on its own) every row, in
    parts on the pool the settings name (``pipeline._parallel``) or in one child:
    ``(prepared, stats, shards to store, the manifest of an append or of parts, else
    None)``. A folder's added files that fail to prepare on their own (none readable, with
    ``on_error: skip``) are prepared with every file, which reports what is wrong if
    anything is."""
    spec = factory.spec
    if plan is not None and last is not None:
        previous = previous_version(spec, store, last, tail=True)
        tail = [(inputs[0][0], tail_input(plan, inputs[0][1]))]
        try:
            prepared, stats, shards = _run_preparation(factory, tail, out, known, previous)
            new = [shard_entry(sh, shard_identifier(spec.name, sh.sha256)) for sh in shards]
            splits, schema, manifest = grown(last, prepared, new)
            prepared.splits, prepared.schema = splits, schema
            manifest, shards = compact(store, spec.name, manifest, shards,
                                       shard_bytes_setting(spec.shard_bytes), out.parent)
            log.info("%s: prepared %s only", spec.name, describe(plan, inputs[0][1]))
            return prepared, stats, shards, manifest
        except FormatError as exc:
            if not isinstance(exc, AppendRefused) and not isinstance(plan, FolderPlan):
                raise
            log.info("%s: %s; preparing every row", spec.name, exc)
        finally:
            if previous is not None:
                previous.close()
    previous = previous_version(spec, store, last)
    try:
        parts = prepare_in_parts(factory, sources, store, known, previous,
                                 shard_bytes_setting(spec.shard_bytes), gates.needs_stats(spec))
        if parts is not None:  # the workers stored the shards
            return parts[0], {}, [], parts[1]
        return (*_run_preparation(factory, inputs, out, known, previous), None)
    finally:
        if previous is not None:
            previous.close()


def _run_preparation(
    factory: DatasetFactory, inputs: list[tuple[Any, Any]], out: Path,
    known: dict[str, list[str]] | None, previous: PreviousVersion | None,
) -> tuple[Any, dict[str, Any], list[ShardFile]]:
    spec = factory.spec
    prepared, stats, shards = run_isolated(
        _prepare_and_cut, factory, inputs, out, gates.needs_stats(spec), known, previous,
        shard_bytes_setting(spec.shard_bytes), what=f"{spec.name}: preprocessing",
    )
    return prepared, stats, [_Prepared(**sh) for sh in shards]


@dataclass(frozen=True)
class _Prepared(ShardFile):
    """A shard written by a preparation, with the worker that prepared it (lineage)."""

    worker: dict[str, Any] = field(default_factory=dict)


def store_shards(store: Store, name: str, shards: Sequence[ShardFile]) -> list[dict[str, Any]]:
    """Upload the shards a storage does not hold yet (by the sha256 of their bytes, which
    names them: a shard another version has is shared, not stored again); their entries,
    with the worker that prepared each."""
    entries = []
    for shard in shards:
        identifier = shard_identifier(name, shard.sha256)
        if not store.storage.has_resource(identifier):  # moved in where it can be
            store.storage.adopt_file(identifier, shard.path, sha256=shard.sha256)
        entry = shard_entry(shard, identifier)
        if getattr(shard, "worker", None):
            entry["worker"] = dict(getattr(shard, "worker", {}))
        entries.append(entry)
    return entries


def _labels_entry(store: Store, name: str, prepared: Any) -> list[dict[str, Any]]:
    """The whole category labels, stored beside the shards when the record keeps only the
    first of each very long list (a shard holds no names)."""
    import hashlib
    import json

    whole = getattr(prepared, "whole_encodings", None)
    if not whole:
        return []
    data = json.dumps(whole, sort_keys=True).encode()
    digest = hashlib.sha256(data).hexdigest()
    identifier = labels_identifier(name, digest)
    if not store.storage.has_resource(identifier):
        store.storage.set_resource(identifier, io.BytesIO(data), sha256=digest)
    return [{"identifier": identifier, "size": len(data), "sha256": digest, "kind": LABELS_KIND}]


def previous_version(
    spec: DatasetSpec, store: Store, record: VersionRecord | None, *, tail: bool = False
) -> PreviousVersion | None:
    """The last published version of ``spec`` (``record``), whose splits the next
    preparation continues (its files are opened lazily, only if the preparation cuts
    ``splits:``). Its data file or a shard missing fails the refresh: never re-cut silently."""
    if not spec.splits or spec.preprocessor is not None:
        return None
    if record is None or not record.splits:
        return None
    opened: list[Any] = []
    try:
        if is_sharded(record):
            shards = {split: [store.storage.get_resource(str(e["identifier"])) for e in entries]
                      for split, entries in shards_of(record).items()}
            opened = [r for rs in shards.values() for r in rs]
            return PreviousVersion(record.name, record.version, None, dict(record.splits),
                                   dict(record.schema or {}), shards=shards,
                                   encodings=dict(record.encodings or {}), tail=tail)
        resource = store.storage.get_resource(data_file(record))
    except (FormatError, ResourceNotFoundError) as exc:
        for r in opened:
            r.close()
        raise FormatError(
            f"{spec.name}: cannot read version {record.version}'s data to keep every "
            f"sample in its split ({exc}); nothing was published. Restore the file, or "
            f"`datastack delete {spec.name}` to start the dataset afresh"
        ) from None
    return PreviousVersion(record.name, record.version, resource, dict(record.splits),
                           dict(record.schema or {}))


#: A catalog record is one MongoDB document (at most 16 MB): label lists larger than this are
#: kept in the data file only, the record holds their first labels and the count.
MAX_RECORD_LABELS_BYTES = 2 * 1024 * 1024
RECORD_LABELS_KEPT = 1000
MAX_RECORD_BYTES = 12 * 1024 * 1024


def _fit_catalog_document(name: str, prepared: Any) -> None:
    """Make the version's record fit in one catalog document, before anything is uploaded."""
    import json

    encodings = dict(getattr(prepared, "encodings", {}) or {})
    size = len(json.dumps(encodings, default=str))
    if size > MAX_RECORD_LABELS_BYTES:
        truncated = {col: len(labels) for col, labels in encodings.items()}
        prepared.whole_encodings = encodings  # stored beside the shards (_labels_entry)
        prepared.encodings = {col: list(v[:RECORD_LABELS_KEPT]) for col, v in encodings.items()}
        schema = dict(prepared.schema or {})
        schema.pop("encodings", None)
        schema["encodings_truncated"] = truncated
        prepared.schema = schema
        log.warning(
            "%s: %d bytes of category labels: the catalog keeps the first %d per column, the "
            "data file all of them", name, size, RECORD_LABELS_KEPT,
        )
    total = len(json.dumps([prepared.schema, prepared.encodings, prepared.splits], default=str))
    if total > MAX_RECORD_BYTES:
        raise FormatError(
            f"{name}: the version's schema and labels take {total} bytes, more than a catalog "
            f"record can hold ({MAX_RECORD_BYTES}); reduce the number of columns or classes"
        )


def drop_version(store: Store, name: str, version: int, attempt: str = "") -> None:
    """Remove what a failed attempt wrote (its pending record and files), best effort; its
    version number is free again for the next attempt."""
    prefix = attempt_prefix(name, version, attempt) if attempt else version_prefix(name, version)
    try:
        store.catalog.abort(name, version, attempt=attempt or None)
        for identifier in store.storage.list_resources(prefix):
            store.storage.delete_resource(identifier, missing_ok=True)
    except DatastackError as exc:  # GC removes it later
        log.warning("%s: could not remove the failed version %d: %s", name, version, exc)


def validate_version(
    factory: DatasetFactory, prepared: PreparedVersion, store: Store
) -> None:
    """The validation gates (``datastack.pipeline.gates``); on a failure the sequence drops the
    pending version (:func:`drop_version`)."""
    spec = factory.spec
    gates.check_version(
        spec, prepared.splits, prepared.schema, prepared.stats, latest_record(spec, store)
    )


def publish_version(
    factory: DatasetFactory,
    sources: Sequence[dict[str, Any]],
    prepared: PreparedVersion,
    store: Store,
    *,
    lease_token: int | None = None,
    force: bool = False,
) -> dict[str, Any] | None:
    """Publish a prepared version in one atomic catalog step; returns the record as a dict.

    Returns None (and drops the pending version) when the latest published version already has
    identical content (same spec hash and source checksums), unless ``force``.
    """
    spec = factory.spec
    catalog = store.catalog
    if not force:
        checksums = source_checksums(list(sources))
        same = catalog.find_identical(spec.name, spec.fingerprint(), checksums)
        if same is not None:  # the attempt's record and files go at once, its number is free
            drop_version(store, spec.name, prepared.version, prepared.attempt)
            return None
    record = catalog.publish(
        spec.name,
        prepared.version,
        lease_token=lease_token,
        splits=prepared.splits,
        schema=prepared.schema,
        encodings=prepared.encodings,
        resources=prepared.resources,
        attempt=prepared.attempt or None,
    )
    log.info("%s: published version %d", spec.name, record.version)
    return dict(record.to_dict())


__all__ = [
    "PreparedVersion",
    "default_producer",
    "drop_version",
    "prepare_version",
    "previous_version",
    "publish_version",
    "validate_version",
]
