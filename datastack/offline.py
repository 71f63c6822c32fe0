"""Loads through the local disk cache, and offline: which version, and which bytes.

``datastack.load`` asks two things of this module:

1. :func:`resolve_version` -- the catalog record of ``(name, version or latest)``. Online, from
   the catalog (and the record is kept in the local cache); offline (``DATASTACK_OFFLINE=1``,
   or a remote storage that does not answer a ping within :data:`PROBE_TIMEOUT_S`), from the
   records kept in the local cache: a pinned version if its data is cached, else the newest
   cached version, with a :class:`CachedVersionWarning` naming it. Nothing cached is a
   :class:`~datastack.errors.NotCachedError` that says to ``datastack pull`` it.
2. :func:`open_published` -- the stream of one resource of that record: the verified local
   copy when cached; online and not cached, the storage's stream, while a background thread
   fills the cache (read-through, one process per resource, see
   :mod:`datastack.storage.diskcache`).

Only remote storages (GridFS) go through the cache: a filesystem store is already local.
:func:`pull` fills the cache ahead of time (``datastack pull``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from datastack._env import env_bool, env_float
from datastack._fs import atomic_write
from datastack._uri import storage_for_shell
from datastack.errors import DatastackError, NotCachedError, StorageError, StorageUnavailableError

if TYPE_CHECKING:  # pragma: no cover
    from datastack.catalog.record import VersionRecord
    from datastack.resources import StreamedResource
    from datastack.storage.diskcache import DiskCache
    from datastack.store import Store

OFFLINE_ENV = "DATASTACK_OFFLINE"
#: How long a remote storage may take to answer its first ping before loads go offline.
PROBE_TIMEOUT_S = 2.0
PROBE_TIMEOUT_ENV = "DATASTACK_PROBE_TIMEOUT"
#: Largest accepted ``DATASTACK_PROBE_TIMEOUT`` (seconds).
MAX_PROBE_TIMEOUT_S = 600.0


class CacheFolderError(StorageError):
    """The local cache folder cannot be written (permissions, no space left): ``pull`` fails."""


class CachedVersionWarning(UserWarning):
    """``load(name)`` served the newest *cached* version (the catalog may have newer ones)."""


@dataclass(frozen=True)
class ReadDecision:
    """How ``load`` reads one version: a value handed down to the opener of each resource
    (:func:`open_published`), never state kept on the :class:`~datastack.store.Store`.

    ``record`` is the version's catalog record; ``offline``: read the local cache only (the
    storage is unreachable or ``DATASTACK_OFFLINE=1``); ``fill_cache``: online streams that
    are not cached fill the local cache in the background (the web page reads a few samples
    and turns it off).
    """

    record: VersionRecord
    offline: bool = False
    fill_cache: bool = True


def is_offline(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``$DATASTACK_OFFLINE`` asks for offline mode (``1``, ``true``, ``yes``, ``on``).

    >>> is_offline({"DATASTACK_OFFLINE": "1"}), is_offline({})
    (True, False)
    """
    return env_bool(OFFLINE_ENV, False, environ)


def store_key(store: Store) -> str:
    """A folder name for the records of one storage: host, port and database, no credentials.

    >>> from datastack.store import Store
    >>> store_key(Store.open("mongodb://alice:s3cret@db.example:27017/team"))[:21]
    'db.example_27017_team'
    """
    uri = store.uri
    parts = urlsplit(uri) if "://" in uri else None
    if parts is not None and parts.hostname:
        readable = f"{parts.hostname}_{parts.port or 27017}_{parts.path.strip('/')}"
        identity = f"{parts.scheme}://{parts.hostname}:{parts.port or 27017}/{parts.path}"
    else:
        readable, identity = "store", uri
    digest = hashlib.sha256(identity.encode()).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9._-]", "_", readable)[:80] + f"-{digest}"


# -- records ---------------------------------------------------------------------------------
def save_record(cache: DiskCache, key: str, record: VersionRecord) -> None:
    """Keep ``record`` for offline loads (once per version: published records never change)."""
    path = cache.records_dir / key / record.name / f"v{record.version}.json"
    if not path.exists():
        with atomic_write(path, fsync=False) as out:
            out.write(json.dumps(record.to_dict(), default=str).encode())


def cached_records(cache: DiskCache, key: str, name: str) -> list[VersionRecord]:
    """The records of ``name`` kept for this storage, by increasing version."""
    from datastack.catalog.record import VersionRecord
    from datastack.storage._regular import read_regular

    folder = cache.records_dir / key / name
    records = []
    for path in folder.glob("v*.json") if folder.is_dir() else ():
        try:
            raw = read_regular(path)  # a FIFO or a link in a record's place is skipped
            if raw is not None:
                records.append(VersionRecord.from_dict(json.loads(raw)))
        except (OSError, ValueError):
            continue  # a damaged record is skipped, never trusted
    return sorted(records, key=lambda r: r.version)


def version_resources(record: VersionRecord) -> list[dict[str, Any]]:
    """The resources a load reads: its shards, or those under the version's own prefix
    (``resource_prefix``: its data file), not the raw source copies kept for re-preparing."""
    from datastack.canonical.layout import SHARD_KIND
    from datastack.catalog.record import resource_prefix

    prefix = resource_prefix(record)
    own = [r for r in record.resources if r.get("kind") == SHARD_KIND
           or str(r.get("identifier", "")).startswith(prefix)]
    return own or list(record.resources)


def _is_cached(cache: DiskCache, record: VersionRecord) -> bool:
    digests = [r.get("sha256") for r in version_resources(record)]
    return bool(digests) and all(d and cache.path(str(d)) is not None for d in digests)


# -- resolving a version ---------------------------------------------------------------------
def _probe_timeout() -> float:
    return env_float(PROBE_TIMEOUT_ENV, PROBE_TIMEOUT_S, maximum=MAX_PROBE_TIMEOUT_S)


def _online_record(store: Store, name: str, version: int | None) -> VersionRecord:
    catalog = store.catalog
    return catalog.get(name, version) if version is not None else catalog.latest(name)


def resolve_version(store: Store, name: str, version: int | None) -> ReadDecision:
    """How ``load`` reads ``name`` (``version`` or the latest): the record from the catalog
    (online), or offline from the local cache, and which of the two it is."""
    from datastack.storage.diskcache import default_disk_cache, warn_unusable

    cache = default_disk_cache()
    if not store.storage.remote:
        return ReadDecision(_online_record(store, name, version))
    if cache is None:
        if is_offline():
            raise NotCachedError(
                f"offline ({OFFLINE_ENV}=1) but the local cache is disabled "
                "(DATASTACK_CACHE_DIR_BYTES=0): nothing can be served; give the cache a size "
                f"and `datastack pull {name}` while the storage is reachable"
            )
        return ReadDecision(_online_record(store, name, version))
    if is_offline():
        reason = f"offline ({OFFLINE_ENV}=1)"
    else:
        try:
            store.storage.ping(_probe_timeout())
        except StorageUnavailableError:
            reason = f"storage {store.uri} unreachable"
        else:
            record = _online_record(store, name, version)
            try:
                save_record(cache, store_key(store), record)
            except OSError as exc:  # unwritable or full: the cache is only an optimisation
                warn_unusable(cache, exc)
            return ReadDecision(record)
    return ReadDecision(cached_version(cache, store, name, version, reason), offline=True)


def cached_version(
    cache: DiskCache, store: Store, name: str, version: int | None, reason: str
) -> VersionRecord:
    """The cached record of ``name`` (``version``, else the newest whose data is cached)."""
    records = [r for r in cached_records(cache, store_key(store), name) if _is_cached(cache, r)]
    pull = f"datastack pull {name}{'' if version is None else f' --version {version}'}"
    if version is not None:
        record = next((r for r in records if r.version == version), None)
    else:
        record = records[-1] if records else None
    if record is None:
        what = f"{name!r} version {version}" if version is not None else f"{name!r}"
        known = [r.version for r in records]
        raise NotCachedError(
            f"{reason}, and {what} is not in the local cache {cache.root} (cached versions: "
            f"{known or 'none'}). While the storage is reachable, run `{pull} --storage "
            f"{storage_for_shell(store.uri)}` to make it available offline"
        )
    if version is None:
        warnings.warn(
            f"{reason}: serving {name!r} version {record.version}, the newest version in the "
            f"local cache; the catalog may have newer ones",
            CachedVersionWarning,
            stacklevel=3,
        )
    return record


# -- opening resources -----------------------------------------------------------------------
def _entry(record: VersionRecord, identifier: str) -> Mapping[str, Any]:
    return next((r for r in record.resources if r.get("identifier") == identifier), {})


def open_published(store: Store, read: ReadDecision, identifier: str) -> StreamedResource:
    """The stream of resource ``identifier`` of the version ``read`` decided on (module doc)."""
    from datastack.resources import StreamedResource
    from datastack.storage.diskcache import CachedOpener, default_disk_cache, warn_unusable

    cache, record = default_disk_cache(), read.record
    entry = _entry(record, identifier)
    sha256, size = entry.get("sha256"), entry.get("size")
    if cache is None or not store.storage.remote or not sha256 or size is None:
        return _explained(store, record, store.storage.get_resource(identifier))
    sha256, size = str(sha256), int(size)
    if read.offline:
        opener = CachedOpener(cache, sha256, identifier)
        return StreamedResource(identifier, opener, size=size)
    try:
        cached = cache.path(sha256) is not None
    except OSError as exc:  # an unreadable cache folder: read the storage (#26.18)
        warn_unusable(cache, exc)
        return _explained(store, record, store.storage.get_resource(identifier))
    if cached:
        return StreamedResource(identifier, CachedOpener(cache, sha256, identifier), size=size)
    remote = _explained(store, record, store.storage.get_resource(identifier))
    if not read.fill_cache:
        return remote  # read what is asked, fill nothing
    try:
        cache.fill_in_background(sha256, size, _fill_source(store, identifier),
                                 name=f"{record.name} v{record.version}")
    except OSError as exc:  # unwritable or full: no fill, the stream reads the storage
        warn_unusable(cache, exc)
        return remote
    opener = CachedOpener(cache, sha256, identifier, remote.opener)
    return StreamedResource(identifier, opener, size=size)


def _fill_source(store: Store, identifier: str) -> Any:
    """What a read-through fill copies: the resource as blocks when the storage has them
    (GridFS; the fill and this process's readers then fetch each block once between them),
    else a sequential stream."""
    blocks = getattr(store.storage, "block_source", None)
    if blocks is not None:
        try:
            return blocks(identifier)
        except DatastackError:
            pass  # the stream below reports it when the fill runs
    return functools.partial(store.storage.open_stream, identifier)


def _explained(
    store: Store, record: VersionRecord, resource: StreamedResource
) -> StreamedResource:
    """``resource`` opened so that a block found missing is explained (see :class:`GoneByGc`)."""
    if not store.storage.remote:
        return resource
    from datastack.resources import StreamedResource

    opener = _ExplainingOpener(resource.opener, GoneByGc(store, record.name, record.version))
    return StreamedResource(resource.identifier, opener, size=resource.size)


class GoneByGc:
    """Why blocks of a published version are missing: usually `datastack gc` deleted the
    version while it was read. Called only then; looks at the catalog to say so (picklable)."""

    def __init__(self, store: Store, name: str, version: int) -> None:
        self.store, self.name, self.version = store, name, version

    def __call__(self) -> str:
        from datastack.errors import DatastackError, VersionNotFoundError

        try:
            self.store.catalog.get(self.name, self.version)
        except VersionNotFoundError:
            pass
        except DatastackError:
            return "the catalog could not be asked why (the storage is unreachable); retry later"
        else:
            return ("the resource is missing or corrupt although version "
                    f"{self.version} of {self.name!r} is still in the catalog; republish it")
        try:
            current = f"the current version is {self.store.catalog.latest(self.name).version}"
        except DatastackError:
            current = "no version of it is published now"
        return (
            f"version {self.version} of {self.name!r} was deleted by `datastack gc` while this "
            f"iterator read it ({current}). A pinned version survives only as long as "
            "`datastack gc --keep N --grace DURATION` keeps it: load the current version "
            f"(datastack.load({self.name!r})), or keep more versions or a longer grace. "
            "Every further read of this iterator fails the same way"
        )


class _ExplainingOpener:
    """Opens a remote stream whose reader explains missing blocks with ``explain``."""

    def __init__(self, inner: Any, explain: GoneByGc) -> None:
        self.inner, self.explain = inner, explain

    def __call__(self) -> Any:
        stream = self.inner()
        if hasattr(stream, "explain_gone"):
            stream.explain_gone = self.explain
        return stream


# -- pulling ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PullResult:
    """What :func:`pull` did for one dataset version."""

    name: str
    version: int
    size: int
    status: str  # "pulled" | "cached" (already there) | "local" (storage on this machine)


def pull(store: Store, name: str, version: int | None = None) -> PullResult:
    """Copy every resource of ``name`` (``version`` or the latest) into the local cache."""
    from datastack.errors import ConfigurationError
    from datastack.storage.diskcache import CACHE_DIR_BYTES_ENV, default_disk_cache

    cache = default_disk_cache()
    if cache is None:
        raise ConfigurationError(
            f"the local cache is disabled ({CACHE_DIR_BYTES_ENV}=0); set it to a size such "
            "as 20G to pull datasets"
        )
    if not store.storage.remote:
        record = _online_record(store, name, version)
        return PullResult(record.name, record.version, _read_bytes(record), "local")
    store.storage.ping(_probe_timeout())
    record = _online_record(store, name, version)
    try:
        fetched = _pull_files(store, cache, record)
        save_record(cache, store_key(store), record)
    except OSError as exc:
        if isinstance(exc, DatastackError):
            raise
        from datastack.storage.diskcache import CACHE_DIR_ENV

        raise CacheFolderError(
            f"cannot pull {name!r} version {record.version} into the local cache {cache.root}: "
            f"{type(exc).__name__}: {exc}. Free space or fix the folder's permissions, or "
            f"choose another folder with {CACHE_DIR_ENV}"
        ) from None
    status = "pulled" if fetched else "cached"
    return PullResult(record.name, record.version, _read_bytes(record), status)


def _pull_files(store: Store, cache: DiskCache, record: VersionRecord) -> bool:
    """Fill the cache with the version's files; whether anything was fetched."""
    fetched = False
    for entry in version_resources(record):
        sha256, identifier = str(entry.get("sha256") or ""), str(entry["identifier"])
        if not sha256 or cache.path(sha256) is not None:
            continue
        source = functools.partial(store.storage.open_stream, identifier)
        cache.fill(sha256, int(entry.get("size") or 0), source,
                   name=f"{record.name} {identifier}")
        fetched = True
    return fetched


def _read_bytes(record: VersionRecord) -> int:
    """Bytes of what a reader opens (the data files), not of the raw source copies."""
    return sum(int(entry.get("size") or 0) for entry in version_resources(record))


__all__ = [
    "OFFLINE_ENV",
    "CacheFolderError",
    "CachedVersionWarning",
    "GoneByGc",
    "PullResult",
    "ReadDecision",
    "cached_version",
    "is_offline",
    "open_published",
    "pull",
    "resolve_version",
    "store_key",
    "version_resources",
]
