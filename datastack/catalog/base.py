"""The :class:`Catalog` interface: versions, atomic publish, leases and GC over two stores.

The public methods validate their arguments and hold the protocol; a store implements a few
primitives (insert a record if absent, load records, one conditional status update, and the
lease operations). See ``docs/catalog.md`` for the publish protocol and its guarantees.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from datastack.catalog.leases import LeaseBook, Token, token_value
from datastack.catalog.record import (
    DELETED,
    PENDING,
    PUBLISHED,
    VersionRecord,
    new_attempt_id,
    summarised,
    utcnow,
)
from datastack.catalog.status import DatasetStatus, StatusBook
from datastack.errors import (
    CatalogError,
    DatasetNotFoundError,
    InvalidIdentifierError,
    PublishError,
    VersionNotFoundError,
)
from datastack.identifiers import validate_dataset_name, validate_identifier

if TYPE_CHECKING:  # pragma: no cover
    from datastack.catalog.gc import GCReport
    from datastack.storage.base import StorageConnector

log = logging.getLogger("datastack.catalog")

#: Resources of a version deleted less than this many seconds ago are kept (readers may still
#: be using them); pending versions younger than this are treated as in progress.
DEFAULT_GRACE_SECONDS = 3600.0


def _validate_version(name: str, version: object) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version < 2**63:
        raise InvalidIdentifierError(
            f"invalid version {version!r} of dataset {name!r}: expected an int >= 1"
        )
    return version


#: The fields a light record (:meth:`Catalog.latest_records` with ``light=True``) keeps; the
#: others are left empty, and ``resources`` keep only their ``size``: enough for a listing.
LIGHT_FIELDS = ("name", "version", "status", "splits", "resources", "published_at",
                "description")


def _lightened(record: VersionRecord) -> VersionRecord:
    sizes = [{"size": r.get("size")} for r in record.resources]
    return VersionRecord(name=record.name, version=record.version, status=record.status,
                         splits=record.splits, resources=sizes,
                         published_at=record.published_at, description=record.description)


def _validate_resources(items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for item in items:
        entry = dict(item)
        entry["identifier"] = validate_identifier(entry.get("identifier"))
        out.append(entry)
    return out


class Catalog(StatusBook, LeaseBook, abc.ABC):
    """Versioned dataset records with atomic publish, refresh leases and garbage collection.

    Use :func:`datastack.catalog.open_catalog` to get the catalog of a storage URI.

    Example
    -------
    >>> import tempfile
    >>> from datastack.catalog import FileCatalog, VersionRecord
    >>> catalog = FileCatalog(tempfile.mkdtemp())
    >>> with catalog.lease("iris") as lease:
    ...     rec = catalog.begin(VersionRecord(name="iris", spec_hash="h"), token=lease)
    ...     # ... write and verify every resource under datasets/iris/v1/ ...
    ...     catalog.publish("iris", rec.version, token=lease).status
    'published'
    >>> catalog.latest("iris").version
    1
    """

    # -- primitives (implemented by stores) ---------------------------------------------------
    @property
    @abc.abstractmethod
    def location(self) -> str:
        """Where the catalog lives, for messages (credentials redacted)."""

    @abc.abstractmethod
    def _insert(self, record: VersionRecord) -> bool:
        """Store ``record`` unless (name, version) is held (``VersionRecord.holds_number``),
        atomically, replacing an aborted attempt's record; return False if it is held."""

    @abc.abstractmethod
    def _records(self, name: str) -> list[VersionRecord]:
        """Every record of ``name`` (any status), sorted by version."""

    @abc.abstractmethod
    def _names(self) -> list[str]:
        """Every dataset name with at least one record."""

    @abc.abstractmethod
    def _transition(
        self,
        name: str,
        version: int,
        from_status: Sequence[str],
        changes: Mapping[str, Any],
        attempt: str | None = None,
    ) -> VersionRecord | None:
        """Atomically apply ``changes`` if the record's status is in ``from_status`` (and it is
        ``attempt``'s, if given).

        Returns the updated record, or None when no record matched.
        """

    # -- overridable fast paths ---------------------------------------------------------------
    def _get(self, name: str, version: int) -> VersionRecord | None:
        return next((r for r in self._records(name) if r.version == version), None)

    def _latest_published(self, name: str) -> VersionRecord | None:
        published = [r for r in self._records(name) if r.status == PUBLISHED]
        return published[-1] if published else None

    def _max_version(self, name: str) -> int:
        """The highest version number held (see :attr:`VersionRecord.holds_number`)."""
        held = [r.version for r in self._records(name) if r.holds_number]
        return max(held, default=0)

    def _latest_published_all(self, *, light: bool) -> dict[str, VersionRecord]:
        """The newest published record of every dataset (stores may read them in one query);
        with ``light``, records holding only :data:`LIGHT_FIELDS` (see ``_lightened``)."""
        found = {}
        for name in self._names():
            record = self._latest_published(name)
            if record is not None:
                found[name] = _lightened(record) if light else record
        return found

    def _published_names(self) -> list[str]:
        return [n for n in self._names() if self._latest_published(n) is not None]

    # -- reading ------------------------------------------------------------------------------
    def latest(self, name: str) -> VersionRecord:
        """The newest published version of ``name``.

        Raises :class:`DatasetNotFoundError` (naming the catalog and the known datasets) when
        ``name`` has no published version.
        """
        name = validate_dataset_name(name)
        record = self._latest_published(name)
        if record is None:
            raise self._dataset_not_found(name)
        return record

    def get(self, name: str, version: int, *, include_all: bool = False) -> VersionRecord:
        """Version ``version`` of ``name``; only published ones unless ``include_all``."""
        name = validate_dataset_name(name)
        version = _validate_version(name, version)
        record = self._get(name, version)
        if record is None or (not include_all and record.status != PUBLISHED):
            known = [r.version for r in self._records(name) if r.status == PUBLISHED]
            if not known and not include_all:
                raise self._dataset_not_found(name)
            state = "" if record is None else f" (it is {record.status})"
            raise VersionNotFoundError(
                f"dataset {name!r} has no published version {version}{state} in "
                f"{self.location}; published versions: {known or 'none'}"
            )
        return record

    def versions(self, name: str, *, include_all: bool = False) -> list[VersionRecord]:
        """Records of ``name`` by increasing version: published only, or all statuses."""
        name = validate_dataset_name(name)
        records = self._records(name)
        return records if include_all else [r for r in records if r.status == PUBLISHED]

    def version_summaries(self, name: str) -> list[VersionRecord]:
        """Published records of ``name`` by increasing version, reduced to what a list of
        versions shows (:func:`~datastack.catalog.record.summarised`: no resources, category
        labels or ``extra``): the web page's version list reads these, not every full record.
        """
        return self._published_summaries(validate_dataset_name(name))

    def _published_summaries(self, name: str) -> list[VersionRecord]:
        return [summarised(r) for r in self._records(name) if r.status == PUBLISHED]

    def latest_records(self, *, light: bool = False) -> dict[str, VersionRecord]:
        """The newest published record of every dataset, by name in sorted order.

        One read of the whole catalog (one query on MongoDB), for listings. With ``light``,
        only :data:`LIGHT_FIELDS` are filled (resources: their sizes only): enough for a table
        of datasets, not for reading one.
        """
        return dict(sorted(self._latest_published_all(light=light).items()))

    def datasets(self, *, include_unpublished: bool = False) -> list[str]:
        """Sorted names of datasets with a published version (or with any record)."""
        if include_unpublished:
            return sorted(self._names())
        return sorted(self._published_names())

    def next_version(self, name: str) -> int:
        """The next version number of ``name``: one above the highest held. Published numbers
        are never reused; the number of an aborted attempt is (no gaps)."""
        return self._max_version(validate_dataset_name(name)) + 1

    def find_identical(
        self, name: str, spec_hash: str, source_checksums: Iterable[str]
    ) -> VersionRecord | None:
        """The latest published version if it has this spec hash and these source checksums.

        The refresh asks this before retrieving anything: identical content is not published
        again. Only the *latest* version counts: content that reverts to an older version is
        published anew so that "latest" always reflects the sources.
        """
        name = validate_dataset_name(name)
        record = self._latest_published(name)
        if record is None:
            return None
        if record.spec_hash == spec_hash and record.matches_checksums(source_checksums):
            return record
        return None

    def statuses(
        self,
        names: Iterable[str] | None = None,
        *,
        latest: Mapping[str, VersionRecord] | None = None,
    ) -> list[DatasetStatus]:
        """The freshness of each dataset (all with a published version or a status document,
        or ``names``), sorted by name. A dataset published before status documents existed
        gets one derived from its latest version; an unknown name is DatasetNotFoundError.

        ``latest`` is :meth:`latest_records` when the caller has read it already (a listing
        reads the catalog once); without ``names`` the whole catalog takes two queries on
        MongoDB (status documents, latest records), not one per dataset.
        """
        records: Mapping[str, VersionRecord] | None = latest
        if names is None:
            docs = self._status_all()
            if records is None:
                records = self.latest_records(light=True)
            wanted = sorted(set(docs) | set(records))
        else:
            wanted = [validate_dataset_name(n) for n in names]
            docs = {n: d for n in wanted if (d := self._status_get(n)) is not None}
        out = []
        for name in wanted:
            if name in docs:
                out.append(DatasetStatus.from_dict({**docs[name], "name": name}))
                continue
            record = records.get(name) if records is not None else self._latest_published(name)
            if record is None:
                raise self._dataset_not_found(name)
            published = record.published_at.isoformat() if record.published_at else None
            success = {"at": published, "version": record.version, "outcome": "published"}
            out.append(DatasetStatus(name, last_success=success))
        return out

    # -- writing ------------------------------------------------------------------------------
    def begin(
        self,
        record: VersionRecord | str,
        *,
        token: Token = None,
        lease_token: Token = None,
        **fields: Any,
    ) -> VersionRecord:
        """Reserve a version: store ``record`` as *pending* (invisible to readers).

        ``record`` is a :class:`VersionRecord`, or a dataset name with the record's fields as
        keywords (``begin("iris", spec_hash=..., sources=[...])``). With version 0 (the
        default) the next number is allocated; an explicit number that is held raises
        :class:`CatalogError`. The attempt gets an id (``record.attempt``; its files go under
        ``resource_prefix(record)``). With ``token`` (alias ``lease_token``) the lease must be
        held, and attempts pending under older tokens are aborted first (no gaps).
        """
        if isinstance(record, str):
            record = VersionRecord(name=record, **fields)
        elif fields:
            record = record.replace(**fields)
        value = token_value(token if token is not None else lease_token)
        name = record.name
        if value is not None:
            self._check_token(name, value, "begin a version")
            from datastack.catalog.gc import abort_fenced

            abort_fenced(self, name, value)
        explicit = record.version != 0
        attempt = record.attempt or new_attempt_id()
        for _ in range(100):
            version = record.version if explicit else self.next_version(name)
            pending = record.replace(
                version=version,
                status=PENDING,
                created_at=utcnow(),
                published_at=None,
                deleted_at=None,
                lease_token=value,
                resources=_validate_resources(record.resources),
                attempt=attempt,
            )
            if self._insert(pending):
                return pending
            if explicit:
                existing = self._get(name, version)
                status = existing.status if existing else "unknown"
                raise CatalogError(
                    f"version {version} of dataset {name!r} already exists in {self.location} "
                    f"(status {status}); another writer reserved it. Hold the dataset's lease "
                    "while refreshing, or let begin() allocate the number (version=0)"
                )
        raise CatalogError(f"could not allocate a version of {name!r} in {self.location}")

    def publish(
        self,
        name: str,
        version: int,
        *,
        token: Token = None,
        lease_token: Token = None,
        resources: Iterable[Mapping[str, Any]] | None = None,
        splits: Mapping[str, int] | None = None,
        schema: Mapping[str, Any] | None = None,
        encodings: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        description: str | None = None,
        attempt: str | None = None,
    ) -> VersionRecord:
        """Flip a pending version to published: one atomic update of one record.

        Call it only after every resource of the version is written and verified. The keyword
        arguments fill in what was learnt while writing (they are part of the same update).
        With ``token``, the lease must still be current: a writer whose lease expired and was
        taken over gets :class:`LockHeldError` and nothing changes (``lease_token`` is an
        alias of ``token``). With ``attempt``, only that attempt's record is published.
        """
        name = validate_dataset_name(name)
        version = _validate_version(name, version)
        value = token_value(token if token is not None else lease_token)
        changes: dict[str, Any] = {"status": PUBLISHED, "published_at": utcnow()}
        given = {
            "resources": None if resources is None else _validate_resources(resources),
            "splits": None if splits is None else {str(k): int(v) for k, v in splits.items()},
            "schema": None if schema is None else dict(schema),
            "encodings": None if encodings is None else dict(encodings),
            "extra": None if extra is None else dict(extra),
            "description": description,
        }
        changes.update({k: v for k, v in given.items() if v is not None})
        if value is not None:
            self._check_token(name, value, f"publish version {version}")
        updated = self._transition(name, version, (PENDING,), changes, attempt)
        if updated is None:
            existing = self._get(name, version)
            if existing is not None and attempt and existing.attempt != attempt:
                raise PublishError(
                    f"cannot publish version {version} of {name!r}: attempt {attempt} was "
                    f"aborted and the number is now attempt {existing.attempt}'s "
                    f"({existing.status}); the previous version is unchanged"
                )
            if existing is None:
                raise VersionNotFoundError(
                    f"cannot publish version {version} of {name!r}: no such version in "
                    f"{self.location}; call begin() first"
                )
            raise PublishError(
                f"cannot publish version {version} of {name!r}: it is {existing.status}, "
                "expected pending (aborted by GC or another writer?); the previous version "
                "is unchanged"
            )
        return updated

    def abort(self, name: str, version: int, *, attempt: str | None = None) -> None:
        """Give up a pending version: it becomes *deleted*, and its number is free for the
        next attempt (published versions count 1, 2, 3 without gaps).

        Aborting a version that is already deleted does nothing; a published one raises. With
        ``attempt``, only that attempt is aborted (a number reused since is left alone).
        """
        name = validate_dataset_name(name)
        version = _validate_version(name, version)
        changes = {"status": DELETED, "deleted_at": utcnow()}
        if self._transition(name, version, (PENDING,), changes, attempt):
            return
        existing = self._get(name, version)
        if existing is not None and attempt and existing.attempt != attempt:
            return  # that attempt is gone already: its number serves another one now
        if existing is None:
            raise VersionNotFoundError(f"dataset {name!r} has no version {version} to abort")
        if existing.status == PUBLISHED:
            raise CatalogError(
                f"version {version} of {name!r} is published; use delete_version() to remove it"
            )

    def delete_version(self, name: str, version: int) -> VersionRecord:
        """Mark a version deleted; GC removes its resources after the grace period."""
        name = validate_dataset_name(name)
        version = _validate_version(name, version)
        updated = self._transition(
            name, version, (PENDING, PUBLISHED), {"status": DELETED, "deleted_at": utcnow()}
        )
        if updated is not None:
            return updated
        existing = self._get(name, version)
        if existing is None:
            raise VersionNotFoundError(
                f"dataset {name!r} has no version {version} in {self.location}"
            )
        return existing

    def delete_dataset(self, name: str) -> list[int]:
        """Remove a dataset at once (versions deleted, status gone; GC removes its files after
        the grace period); returns the versions deleted. See ``datastack.catalog.gc``."""
        from datastack.catalog.gc import delete_dataset

        return delete_dataset(self, name)

    # -- garbage collection -------------------------------------------------------------------
    def gc(
        self,
        storage: StorageConnector,
        keep: int = 3,
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
        *,
        names: Iterable[str] | None = None,
        dry_run: bool = False,
    ) -> GCReport:
        """Delete versions beyond the newest ``keep`` and unreferenced resources.

        See :func:`datastack.catalog.gc.collect_garbage` for the rules.
        """
        from datastack.catalog.gc import collect_garbage

        return collect_garbage(
            self, storage, keep=keep, grace_seconds=grace_seconds, names=names, dry_run=dry_run
        )

    # -- helpers ------------------------------------------------------------------------------
    def _dataset_not_found(self, name: str) -> DatasetNotFoundError:
        known = self.datasets()
        listing = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "") if known else "none"
        return DatasetNotFoundError(
            f"no published dataset {name!r} in the catalog at {self.location}; known datasets: "
            f"{listing}. Refresh it first: `datastack refresh {name} --spec FILE` (or without "
            "--spec for a built-in dataset such as mnist)"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"


__all__ = ["DEFAULT_GRACE_SECONDS", "LIGHT_FIELDS", "Catalog", "Token"]
