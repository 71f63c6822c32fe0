"""The catalog record: one :class:`VersionRecord` per version of a dataset.

A record is plain data (JSON-serialisable through :meth:`VersionRecord.to_dict`) so that the
filesystem store can keep it as one JSON file and the MongoDB store as one document.

>>> rec = VersionRecord(name="iris", sources=[{"url": "https://u:pw@example.org/iris.csv",
...                                              "sha256": "AB" * 32}])
>>> rec.sources[0]["url"]
'https://u:***@example.org/iris.csv'
>>> VersionRecord.from_dict(rec.to_dict()) == rec
True
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from datastack._uri import redact
from datastack.canonical.layout import (
    RESOURCE_ROOT,
    attempt_prefix,
    data_identifier_of,
    new_attempt_id,
    raw_chunk_identifiers,
    resource_prefix,
    version_prefix,
)
from datastack.errors import CatalogError
from datastack.identifiers import validate_dataset_name

PENDING = "pending"
PUBLISHED = "published"
DELETED = "deleted"
STATUSES = (PENDING, PUBLISHED, DELETED)

def utcnow() -> dt.datetime:
    """Now in UTC, truncated to milliseconds (the precision BSON stores)."""
    now = dt.datetime.now(dt.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def as_utc(value: Any) -> dt.datetime | None:
    """Parse/normalise a datetime (aware, naive UTC as BSON returns, or ISO 8601) to aware UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if not isinstance(value, dt.datetime):
        raise CatalogError(f"expected a datetime or ISO 8601 string, got {value!r}")
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def normalise_checksums(checksums: Iterable[str]) -> list[str]:
    """Lower-case, sorted checksum strings: the order-free identity of a set of sources.

    >>> normalise_checksums(["BB", "sha256:aa"])
    ['aa', 'bb']
    """
    out = []
    for value in checksums:
        text = str(value).strip().lower()
        out.append(text.split(":", 1)[1] if ":" in text else text)
    return sorted(out)


def _redact_sources(sources: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    cleaned = []
    for source in sources:
        item = dict(source)
        if isinstance(item.get("url"), str):
            item["url"] = redact(item["url"])
        cleaned.append(item)
    return cleaned


@dataclasses.dataclass
class VersionRecord:
    """One version of one dataset, as the catalog stores it.

    Attributes
    ----------
    name, version:
        Dataset name (``[a-z0-9][a-z0-9._-]*``) and version number (1, 2, ...; 0 until
        :meth:`Catalog.begin` allocates one).
    status:
        ``"pending"`` (being written, invisible to readers), ``"published"`` or ``"deleted"``.
    created_at, published_at, deleted_at:
        UTC datetimes of :meth:`~Catalog.begin`, :meth:`~Catalog.publish` and deletion.
    sources:
        One dict per source: ``url`` (credentials redacted), ``sha256`` and/or ``md5``,
        ``size``, ``etag``, ``last_modified``, ``identifier`` (where the raw copy is stored;
        for a tracked source, the identity of its download, whose bytes are the ``chunks``
        listed in order, ``[[sha256, size], ...]``), ``appended_to`` (``{size, sha256}`` of
        the previous version's copy when this one begins with it and is longer).
    resources:
        ``{"identifier", "size", "sha256"}`` per stored resource of this version.
    splits, schema, format, spec_hash, encodings, producer, description:
        Split name -> length; shapes/dtypes; source format; hash of the spec; categorical
        encodings; lineage (``flow_run_id``, ``host``, ``datastack_version``); free text.
    lease_token:
        Fencing token of the lease the writer held (``None`` if it held none).
    attempt:
        Id of the attempt that wrote the version (hex; empty for records older than attempt
        ids): its resources live under :func:`resource_prefix`. A version number is held only
        by a pending or published attempt: an aborted attempt frees it for the next one.
    extra:
        Free-form, JSON-serialisable metadata for extensions.
    """

    name: str
    version: int = 0
    status: str = PENDING
    created_at: dt.datetime | None = None
    published_at: dt.datetime | None = None
    deleted_at: dt.datetime | None = None
    sources: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    resources: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    splits: dict[str, int] = dataclasses.field(default_factory=dict)
    schema: dict[str, Any] = dataclasses.field(default_factory=dict)
    format: str = ""
    spec_hash: str = ""
    encodings: dict[str, Any] = dataclasses.field(default_factory=dict)
    producer: dict[str, Any] = dataclasses.field(default_factory=dict)
    description: str = ""
    lease_token: int | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    attempt: str = ""

    def __post_init__(self) -> None:
        self.name = validate_dataset_name(self.name)
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 0:
            raise CatalogError(
                f"dataset {self.name!r}: version must be a non-negative int, got {self.version!r}"
            )
        if self.status not in STATUSES:
            raise CatalogError(
                f"dataset {self.name!r} v{self.version}: status must be one of {STATUSES}, "
                f"got {self.status!r}"
            )
        self.created_at = as_utc(self.created_at)
        self.published_at = as_utc(self.published_at)
        self.deleted_at = as_utc(self.deleted_at)
        self.sources = _redact_sources(self.sources)
        self.resources = [dict(r) for r in self.resources]
        self.splits = {str(k): int(v) for k, v in self.splits.items()}

    # -- derived -------------------------------------------------------------------------------
    @property
    def holds_number(self) -> bool:
        """Whether this record keeps its version number taken: pending, published, or deleted
        after it was published. An aborted attempt (deleted, never published) does not: the
        next attempt reuses the number, so published versions count 1, 2, 3 without gaps."""
        return self.status != DELETED or self.published_at is not None

    @property
    def resource_identifiers(self) -> list[str]:
        """Identifiers of the stored resources (and of raw source copies, each chunk of a
        chunked copy included) of this version."""
        ids = [str(r["identifier"]) for r in self.resources if r.get("identifier")]
        for source in self.sources:
            if source.get("identifier"):
                ids.append(str(source["identifier"]))
                ids += [chunk for chunk, _ in raw_chunk_identifiers(source)]
        return ids

    def source_checksums(self) -> list[str]:
        """Normalised checksums of the sources (sha256, else md5): compared for identity."""
        return normalise_checksums(str(s.get("sha256") or s.get("md5") or "") for s in self.sources)

    def matches_checksums(self, checksums: Iterable[str]) -> bool:
        """Whether ``checksums`` (one per source, any order, ``algo:hex`` or hex) are exactly
        the checksums of this version's sources (each source may match by sha256 or md5).

        >>> rec = VersionRecord(name="x", sources=[{"sha256": "aa", "md5": "bb"}])
        >>> rec.matches_checksums(["md5:BB"]), rec.matches_checksums(["cc"])
        (True, False)
        """
        wanted = normalise_checksums(checksums)
        if len(wanted) != len(self.sources):
            return False
        unmatched = [
            {str(s[k]).lower() for k in ("sha256", "md5") if s.get(k)} for s in self.sources
        ]
        for checksum in wanted:
            hit = next((i for i, known in enumerate(unmatched) if checksum in known), None)
            if hit is None:
                return False
            unmatched.pop(hit)
        return True

    @property
    def size(self) -> int:
        """Total bytes of the stored resources."""
        return sum(int(r.get("size") or 0) for r in self.resources)

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (datetimes as ISO 8601 strings in UTC)."""
        data = dataclasses.asdict(self)
        for key in ("created_at", "published_at", "deleted_at"):
            data[key] = _iso(getattr(self, key))
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VersionRecord:
        """Build a record from :meth:`to_dict` output (unknown keys are ignored)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})

    def replace(self, **changes: Any) -> VersionRecord:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)


#: What a version summary keeps (:meth:`Catalog.version_summaries`, a MongoDB projection):
#: what a list of versions shows and compares (``schema.new_values``: the category labels a
#: version added, at most a hundred per column). Resources, encodings (category labels),
#: ``extra`` and class names or columns inside ``schema.fields`` are left out.
#: What a summary keeps of each source: not the list of its raw chunks (hundreds per GB).
SUMMARY_SOURCE_KEYS = (
    "url", "sha256", "md5", "size", "track", "etag", "last_modified", "identifier", "role",
    "split", "appended_to", "stored_bytes",
)
SUMMARY_PROJECTION = (
    "name", "version", "status", "created_at", "published_at", "producer",
    *(f"sources.{key}" for key in SUMMARY_SOURCE_KEYS), "splits",
    "spec_hash", "format", "schema.fields.name", "schema.fields.kind", "schema.fields.dtype",
    "schema.fields.shape", "schema.features", "schema.splits", "schema.target",
    "schema.new_values",
)


def summarised(record: VersionRecord) -> VersionRecord:
    """``record`` reduced to :data:`SUMMARY_PROJECTION` (the same as the MongoDB projection)."""
    schema = record.schema if isinstance(record.schema, dict) else {}
    slim: dict[str, Any] = {k: schema[k] for k in ("features", "splits", "target", "new_values")
                            if k in schema}
    if isinstance(schema.get("fields"), list):
        keep = ("name", "kind", "dtype", "shape")
        slim["fields"] = [{k: f[k] for k in keep if k in f} for f in schema["fields"]
                          if isinstance(f, dict)]
    return VersionRecord(
        name=record.name, version=record.version, status=record.status,
        created_at=record.created_at, published_at=record.published_at,
        producer=record.producer, splits=record.splits,
        sources=[{k: v for k, v in src.items() if k in SUMMARY_SOURCE_KEYS}
                 for src in record.sources],
        spec_hash=record.spec_hash, format=record.format, schema=slim,
    )


__all__ = [
    "DELETED",
    "PENDING",
    "PUBLISHED",
    "RESOURCE_ROOT",
    "STATUSES",
    "SUMMARY_PROJECTION",
    "VersionRecord",
    "as_utc",
    "attempt_prefix",
    "data_identifier_of",
    "new_attempt_id",
    "normalise_checksums",
    "resource_prefix",
    "summarised",
    "utcnow",
    "version_prefix",
]
