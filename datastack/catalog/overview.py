"""Read-only views of a whole catalog, shared by ``datastack ls/show`` and the web page.

One home for what a listing shows, so that ``datastack ls --json`` and ``/api/datasets`` (and
``show --json`` and ``/api/datasets/NAME``) cannot disagree:

- :func:`catalog_entries`: every dataset (published, or with a status document only) with its
  latest record and its status, read in a fixed number of queries (no per-dataset round trip);
- :func:`ls_row`: the row ``datastack ls --json`` prints for one entry;
- :func:`dataset_details`: what ``datastack show NAME --json`` prints.

>>> import tempfile
>>> from datastack.catalog import FileCatalog
>>> catalog = FileCatalog(tempfile.mkdtemp())
>>> with catalog.lease("iris") as lease:
...     rec = catalog.begin("iris", spec_hash="h", token=lease)
...     _ = catalog.publish("iris", rec.version, token=lease, splits={"train": 150})
>>> [ls_row(e)["splits"] for e in catalog_entries(catalog)]
[{'train': 150}]
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from datastack.catalog.base import Catalog
    from datastack.catalog.record import VersionRecord
    from datastack.catalog.status import DatasetStatus

#: The order of states in a listing that puts problems first.
STATE_ORDER = {"failing": 0, "overdue": 1, "never": 2, "fresh": 3}


@dataclass(frozen=True)
class CatalogEntry:
    """One dataset in a listing: its latest published record (light: no sources, schema,
    encodings or extra; ``None`` when nothing was published yet) and its status."""

    name: str
    record: VersionRecord | None
    status: DatasetStatus
    #: ``status.summary()`` (what ``datastack status --json`` prints), computed once
    summary: dict[str, Any]

    @property
    def state(self) -> str:
        """fresh, overdue, failing or never."""
        return str(self.summary["state"])

    @property
    def size(self) -> int:
        """Bytes of the latest version's stored resources (0 with none)."""
        return 0 if self.record is None else self.record.size


def catalog_entries(catalog: Catalog, now: dt.datetime | None = None) -> list[CatalogEntry]:
    """Every dataset of ``catalog`` with its latest record and status, sorted by name.

    Two reads of the catalog (latest records, status documents): one aggregate query and one
    find on MongoDB, one folder scan on the filesystem.
    """
    records = catalog.latest_records(light=True)
    return [
        CatalogEntry(status.name, records.get(status.name), status, status.summary(now))
        for status in catalog.statuses(latest=records)
    ]


def problems_first(entries: list[CatalogEntry]) -> list[CatalogEntry]:
    """``entries`` with failing, then overdue, then never-refreshed datasets first."""
    return sorted(entries, key=lambda e: (STATE_ORDER.get(e.state, 9), e.name))


def ls_row(entry: CatalogEntry) -> dict[str, Any]:
    """The row of ``datastack ls --json`` (entries with a published version only)."""
    record = entry.record
    if record is None:
        raise ValueError(f"dataset {entry.name!r} has no published version to list")
    return {
        "name": entry.name,
        "state": entry.state,
        "version": record.version,
        "splits": dict(record.splits),
        "size": record.size,
        "published_at": record.published_at,
        "description": record.description,
    }


def ls_rows(entries: list[CatalogEntry]) -> list[dict[str, Any]]:
    """The rows of ``datastack ls --json``: every entry with a published version."""
    return [ls_row(e) for e in entries if e.record is not None]


def dataset_details(catalog: Catalog, name: str, version: int | None = None) -> dict[str, Any]:
    """What ``datastack show NAME [--version V] --json`` prints: the record of that version
    (default: the latest) and ``versions``, one ``{version, status, published_at}`` each."""
    record = catalog.get(name, version) if version is not None else catalog.latest(name)
    return details_of(record, catalog.versions(name))


def sharing(record: VersionRecord, before: VersionRecord | None) -> dict[str, Any] | None:
    """What a sharded version is made of and shares with the version ``before`` it:
    ``{shards, bytes, workers, previous, shared_shards, shared_bytes, new_shards, new_bytes}``
    (``workers``: who prepared its shards, each shard's entry says which one)
    (``None`` for a version stored as one data file)."""
    from datastack.canonical.layout import SHARD_KIND

    own = [r for r in record.resources if r.get("kind") == SHARD_KIND]
    if not own:
        return None
    old = {str(r.get("identifier")) for r in (before.resources if before else [])}
    shared = [r for r in own if str(r.get("identifier")) in old]

    def size(entries: list[dict[str, Any]]) -> int:
        return sum(int(r.get("size") or 0) for r in entries)

    workers = sorted({_worker(r.get("worker")) for r in own if r.get("worker")})
    return {"shards": len(own), "bytes": size(own), "workers": workers,
            "previous": None if before is None else before.version,
            "shared_shards": len(shared), "shared_bytes": size(shared),
            "new_shards": len(own) - len(shared), "new_bytes": size(own) - size(shared)}


def _worker(worker: Any) -> str:
    """One shard's preparer as text: the Dask worker's address, else host:pid."""
    if not isinstance(worker, dict):
        return str(worker)
    return str(worker.get("dask_worker") or f"{worker.get('host')}:{worker.get('pid')}")


def previous_record(
    catalog: Catalog, record: VersionRecord, versions: list[VersionRecord]
) -> VersionRecord | None:
    """The whole record of the published version before ``record`` (``versions`` may be
    summaries, which list no resources), read only when ``record`` is sharded: what
    :func:`sharing` compares it with."""
    from datastack.canonical.layout import is_sharded
    from datastack.errors import DatastackError

    older = [v.version for v in versions if v.version < record.version]
    if not older or not is_sharded(record):
        return None
    try:
        return catalog.get(record.name, max(older))
    except DatastackError:  # deleted meanwhile: nothing to compare with
        return None


def details_of(
    record: VersionRecord, versions: list[VersionRecord], before: VersionRecord | None = None
) -> dict[str, Any]:
    """:func:`dataset_details` from records already read (``storage``: :func:`sharing` with
    ``before``, else with the newest older record of ``versions`` that lists resources)."""
    data = record.to_dict()
    if before is None:
        before = max((v for v in versions if v.version < record.version and v.resources),
                     key=lambda v: v.version, default=None)
    data["storage"] = sharing(record, before)
    data["versions"] = [
        {"version": v.version, "status": v.status, "published_at": v.published_at}
        for v in versions
    ]
    return data


__all__ = [
    "STATE_ORDER",
    "CatalogEntry",
    "catalog_entries",
    "dataset_details",
    "details_of",
    "ls_row",
    "ls_rows",
    "previous_record",
    "problems_first",
    "sharing",
]
