"""Garbage collection: old versions, their resources, and leftovers of crashed writers.

Per dataset, while holding that dataset's lease (so no refresh of it is writing; a held lease
makes GC skip the dataset and say so):

1. published versions beyond the newest ``keep`` are marked *deleted* (the latest never is),
   unless they were published less than ``grace_seconds`` ago (they stay loadable, records and
   files, and are listed in ``kept_versions_in_grace``); pending versions are aborted when
   their writer's lease is gone (written under an older token than the one GC holds now: the
   writer died or lost its lease -- at once), or when they are older than ``grace_seconds``
   (written without a lease);
2. resources under ``datasets/<name>/`` are deleted unless *protected*: referenced by (or
   under the resource prefix, ``datasets/<name>/v<N>-<attempt>/``, of) a published version, a
   pending version younger than the grace period, or a version that was published and deleted
   less than ``grace_seconds`` ago -- a reader that opened it before the deletion may still be
   reading. A second GC after the grace period removes those. A raw chunk of a tracked
   source (``raw/chunks/<sha256>``) is referenced by every version whose source record lists
   it, so it goes only when no protected version lists it any more; ``bytes_freed`` sums
   the sizes of what is deleted;
3. the storage's own sweep runs (:meth:`StorageConnector.sweep`: GridFS chunks without a files
   document, temporary files of crashed writers), with the same grace period.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from datastack._format import fmt_size
from datastack.canonical.layout import DATASETS_PREFIX, dataset_prefix, version_prefix
from datastack.catalog.leases import default_owner
from datastack.catalog.record import (
    DELETED,
    PENDING,
    PUBLISHED,
    VersionRecord,
    resource_prefix,
    utcnow,
)
from datastack.errors import (
    ConfigurationError,
    InvalidIdentifierError,
    LockHeldError,
    ResourceNotFoundError,
)
from datastack.identifiers import validate_dataset_name

if TYPE_CHECKING:  # pragma: no cover
    from datastack.catalog.base import Catalog
    from datastack.storage.base import StorageConnector

#: Lease duration GC takes per dataset (renewed between steps).
GC_LEASE_TTL = 300.0


@dataclasses.dataclass
class GCReport:
    """What a GC run did (or, with ``dry_run``, would do)."""

    deleted_versions: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    aborted_versions: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    deleted_resources: list[str] = dataclasses.field(default_factory=list)
    #: Bytes of the resources deleted (or that would be, with ``dry_run``).
    bytes_freed: int = 0
    kept_in_grace: list[str] = dataclasses.field(default_factory=list)
    kept_versions_in_grace: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    storage_sweep: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: Bytes of resources (shards, raw copies) that versions deleted by this run referenced
    #: and a kept version references too: kept, shared (``docs/living.md``).
    bytes_shared: int = 0
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for ``datastack gc --json``)."""
        data = dataclasses.asdict(self)
        data["deleted_versions"] = [list(v) for v in self.deleted_versions]
        data["aborted_versions"] = [list(v) for v in self.aborted_versions]
        data["kept_versions_in_grace"] = [list(v) for v in self.kept_versions_in_grace]
        return data

    def summary(self) -> str:
        """One line for people."""
        verb = "would delete" if self.dry_run else "deleted"
        text = (
            f"{verb} {len(self.deleted_versions)} version(s) and "
            f"{len(self.deleted_resources)} resource(s) ({fmt_size(self.bytes_freed)}); aborted "
            f"{len(self.aborted_versions)} stale pending version(s); kept "
            f"{len(self.kept_in_grace)} resource(s) and {len(self.kept_versions_in_grace)} "
            "version(s) within the grace period"
        )
        if self.skipped:
            text += f"; skipped (lease held): {', '.join(sorted(self.skipped))}"
        return text


def _protected(record: VersionRecord, cutoff: dt.datetime) -> bool:
    """Whether ``record``'s resources must stay: published; pending and younger than the
    cutoff (a writer is at work); published, then deleted after the cutoff (a reader may
    still be using them)."""
    if record.status == PUBLISHED:
        return True
    if record.status == PENDING:
        return record.created_at is None or record.created_at > cutoff
    return (
        record.published_at is not None
        and record.deleted_at is not None
        and record.deleted_at > cutoff
    )


def _storage_names(storage: StorageConnector) -> set[str]:
    names = set()
    for identifier in storage.list_resources(DATASETS_PREFIX):
        parts = identifier.split("/")
        if len(parts) >= 3:
            try:
                names.add(validate_dataset_name(parts[1]))
            except InvalidIdentifierError:
                continue
    return names


def _refs(records: Iterable[VersionRecord], cutoff: dt.datetime) -> tuple[set[str], set[str]]:
    """(identifiers, prefixes) protected by ``records``."""
    ids: set[str] = set()
    prefixes: set[str] = set()
    for record in records:
        if _protected(record, cutoff):
            ids.update(record.resource_identifiers)
            # the attempt's folder, and v<N>/ for writers that follow the older layout
            prefixes.update((resource_prefix(record), version_prefix(record.name, record.version)))
    return ids, prefixes


def collect_garbage(
    catalog: Catalog,
    storage: StorageConnector,
    *,
    keep: int = 3,
    grace_seconds: float = 3600.0,
    names: Iterable[str] | None = None,
    dry_run: bool = False,
) -> GCReport:
    """Delete versions beyond the newest ``keep`` per dataset and unreferenced resources.

    Parameters
    ----------
    keep:
        Published versions to keep per dataset (>= 1: the latest is never deleted).
    grace_seconds:
        Resources of versions deleted less than this long ago stay (readers may use them);
        pending versions younger than this are in progress; storage sweeps use it too.
    names:
        Only these datasets (default: every dataset in the catalog or under ``datasets/``).
    dry_run:
        Report without changing anything.

    Example
    -------
    >>> import tempfile
    >>> from datastack.catalog import FileCatalog
    >>> from datastack.storage import connect
    >>> root = tempfile.mkdtemp()
    >>> FileCatalog(root).gc(connect(root), keep=2).deleted_versions
    []
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ConfigurationError(f"gc keep must be an int >= 1 (the latest stays), got {keep!r}")
    if grace_seconds < 0:
        raise ConfigurationError(f"gc grace_seconds must be >= 0, got {grace_seconds!r}")
    report = GCReport(dry_run=dry_run)
    now = utcnow()
    cutoff = now - dt.timedelta(seconds=grace_seconds)
    if names is None:
        targets = sorted(set(catalog.datasets(include_unpublished=True)) | _storage_names(storage))
    else:
        targets = sorted({validate_dataset_name(n) for n in names})
    # Protected identifiers of every dataset: a record may reference another dataset's files.
    all_records = {
        n: catalog.versions(n, include_all=True) for n in catalog.datasets(include_unpublished=True)
    }
    owner = default_owner("gc")
    for name in targets:
        try:
            lease = catalog.lease(name, owner=owner, ttl=GC_LEASE_TTL)
        except LockHeldError as exc:
            report.skipped[name] = str(exc)
            continue
        with lease:
            records = _mark(catalog, name, keep, cutoff, report, dry_run, lease.token)
            all_records[name] = records
            lease.renew()
            # Grace is measured from now, after marking: with grace 0 what this run deleted goes.
            cutoff = utcnow() - dt.timedelta(seconds=grace_seconds)
            _delete_unreferenced(storage, name, records, all_records, cutoff, report)
            if not dry_run:  # GC holds the lease: no live writer of this dataset remains
                swept = storage.sweep(0, prefix=dataset_prefix(name))
                for kind, count in swept.items():
                    report.storage_sweep[kind] = report.storage_sweep.get(kind, 0) + count
    if not dry_run:
        from datastack._workdirs import sweep_work_dirs

        for kind, count in storage.sweep(grace_seconds).items():
            report.storage_sweep[kind] = report.storage_sweep.get(kind, 0) + count
        report.storage_sweep["work_dirs"] = sweep_work_dirs()
    return report


def _delete_unreferenced(
    storage: StorageConnector,
    name: str,
    records: list[VersionRecord],
    all_records: dict[str, list[VersionRecord]],
    cutoff: dt.datetime,
    report: GCReport,
) -> None:
    """Delete the resources under ``datasets/<name>/`` that no protected record references."""
    ids: set[str] = set()
    prefixes: set[str] = set()
    for recs in all_records.values():
        more_ids, more_prefixes = _refs(recs, cutoff)
        ids |= more_ids
        prefixes |= more_prefixes
    report.bytes_shared += _shared_bytes(name, records, all_records, report)
    in_grace = {
        i
        for r in records
        if r.status not in (PUBLISHED, PENDING) and _protected(r, cutoff)
        for i in r.resource_identifiers
    }
    for identifier in storage.list_resources(dataset_prefix(name)):
        if identifier in ids or any(identifier.startswith(p) for p in prefixes):
            if identifier in in_grace:
                report.kept_in_grace.append(identifier)
            continue
        report.bytes_freed += _size_of(storage, identifier)
        if not report.dry_run:
            storage.delete_resource(identifier, missing_ok=True)
        report.deleted_resources.append(identifier)


def _size_of(storage: StorageConnector, identifier: str) -> int:
    """The size of a stored resource (0 when it went meanwhile): a stat or one lookup."""
    try:
        return int(storage.get_resource(identifier).size)
    except ResourceNotFoundError:
        return 0


def _shared_bytes(
    name: str,
    records: list[VersionRecord],
    all_records: dict[str, list[VersionRecord]],
    report: GCReport,
) -> int:
    """Bytes of the resources of the versions of ``name`` this run deleted that a published
    version still references (each resource once, its size as its record lists it)."""
    gone = {v for n, v in report.deleted_versions if n == name}
    kept = {i for recs in all_records.values() for r in recs if r.status == PUBLISHED
            for i in r.resource_identifiers}
    sizes = {str(e.get("identifier")): int(e.get("size") or 0)
             for r in records if r.version in gone for e in r.resources}
    return sum(size for identifier, size in sizes.items() if identifier in kept)


def _abandoned(record: VersionRecord, cutoff: dt.datetime, lease_token: int) -> bool:
    """A pending version no writer will finish: written under a lease older than the one GC
    holds now (its writer died or lost it), or older than the grace period."""
    if record.status != PENDING:
        return False
    if record.lease_token is not None and record.lease_token < lease_token:
        return True
    return record.created_at is not None and record.created_at <= cutoff


def _mark(
    catalog: Catalog,
    name: str,
    keep: int,
    cutoff: dt.datetime,
    report: GCReport,
    dry_run: bool,
    lease_token: int,
) -> list[VersionRecord]:
    """Mark old published and abandoned pending versions deleted; return the updated records.

    A published version beyond ``keep`` is deleted only once it is older than the grace period
    (``--grace``: "do not delete anything newer than this"); until then pinned loads of it work.
    """
    records = catalog.versions(name, include_all=True)
    published = [r for r in records if r.status == PUBLISHED]
    beyond = published[:-keep] if len(published) > keep else []
    doomed = {r.version for r in beyond if r.published_at is None or r.published_at <= cutoff}
    report.kept_versions_in_grace.extend(
        (name, r.version) for r in beyond if r.version not in doomed
    )
    updated = []
    for record in records:
        if record.version in doomed:
            report.deleted_versions.append((name, record.version))
            if dry_run:
                record = record.replace(status=DELETED, deleted_at=utcnow())
            else:
                record = catalog.delete_version(name, record.version)
        elif _abandoned(record, cutoff, lease_token):
            report.aborted_versions.append((name, record.version))
            if dry_run:
                record = record.replace(status=DELETED, deleted_at=utcnow())
            else:
                catalog.abort(name, record.version, attempt=record.attempt or None)
                record = catalog.get(name, record.version, include_all=True)
        updated.append(record)
    return updated


def abort_fenced(catalog: Catalog, name: str, token: int) -> None:
    """Abort pending attempts written under a lease older than ``token`` (``begin`` under a
    lease calls it): their writer lost the lease (it crashed or was taken over) and can no
    longer publish, so their numbers are free for the attempt that begins now."""
    for r in catalog.versions(name, include_all=True):
        if r.status == PENDING and r.lease_token is not None and r.lease_token < token:
            catalog.abort(name, r.version, attempt=r.attempt or None)


def delete_dataset(catalog: Catalog, name: str) -> list[int]:
    """Remove a dataset: every version becomes *deleted* and its status document goes, at
    once (``ls``, ``status``, ``load`` no longer see it); GC removes its files after the
    grace period, as for any deleted version. Returns the versions deleted now. Holds the
    dataset's lease (:class:`LockHeldError` while a refresh runs);
    :class:`DatasetNotFoundError` for a name with no record and no status.
    """
    from datastack.errors import DatasetNotFoundError

    name = validate_dataset_name(name)
    with catalog.lease(name, owner=default_owner("delete"), ttl=GC_LEASE_TTL):
        records = catalog.versions(name, include_all=True)
        if not records and catalog.status(name) is None:
            known = ", ".join(catalog.datasets(include_unpublished=True)[:20]) or "none"
            raise DatasetNotFoundError(
                f"no dataset {name!r} in the catalog at {catalog.location} (no version, no "
                f"status); known datasets: {known}"
            )
        deleted = []
        for record in records:
            if record.status == PENDING:
                catalog.abort(name, record.version, attempt=record.attempt or None)
            elif record.status == PUBLISHED:
                catalog.delete_version(name, record.version)
                deleted.append(record.version)
        catalog._status_delete(name)
    return deleted


__all__ = ["GCReport", "abort_fenced", "collect_garbage", "delete_dataset"]
