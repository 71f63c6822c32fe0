"""The refresh sequence, written once: lease -> check -> retrieve -> prepare -> publish.

Every step is a plain function of objects -- a :class:`~datastack.factory.DatasetFactory`
(what the dataset is) and a :class:`~datastack.store.Store` (where it lives) -- so tests call
them directly. :func:`refresh_dataset` runs them under the dataset's lease and makes every
status decision; an *engine* only chooses how each step executes: here in this process
(:func:`run_here`), or as a Prefect task with retries (``flows/``, through ``run_step``).
Nothing here imports Prefect.

Resource layout in a storage::

    datasets/<name>/raw/<algo>-<digest>/<filename>   raw sources, content-addressed (shared
                                                      by every version that uses them)
    datasets/<name>/v<version>/data.h5               the canonical HDF5 of one version

A version becomes visible only when :func:`publish_version` flips its catalog record from
pending to published, after every resource was written and verified.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

from datastack._isolation import run_isolated
from datastack._uri import redact
from datastack.errors import DatastackError, LockHeldError, NotFoundError
from datastack.factory import DatasetFactory, data_identifier, factory_for
from datastack.identifiers import validate_identifier
from datastack.specs import DatasetSpec, SourceSpec, load_selected
from datastack.store import Store

log = logging.getLogger("datastack.pipeline")

T = TypeVar("T")

#: Lease TTL of a refresh (seconds); the lease is renewed every ``ttl / 3`` while it runs.
DEFAULT_LEASE_TTL = 300.0


@dataclass
class RefreshResult:
    """Outcome of refreshing one dataset."""

    name: str
    status: str  # "published" | "unchanged" | "failed" | "locked"
    version: int | None = None
    reason: str = ""
    duration_s: float = 0.0
    splits: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in {"published", "unchanged"}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RefreshResult:
        fields = {"name", "status", "version", "reason", "duration_s", "splits"}
        return cls(**{k: v for k, v in data.items() if k in fields})


@dataclass
class SourcesCheck:
    """Whether a dataset needs a new version: ``changed`` is False when the latest published
    version was built from the same spec (same sources and checksums)."""

    changed: bool
    reason: str
    latest_version: int | None = None
    warnings: list[str] = field(default_factory=list)


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreparedVersion:
        return cls(**data)


class StepRunner(Protocol):
    """How an engine executes one step: ``run_step("retrieve-sources", fn, *args)``."""

    def __call__(self, step: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T: ...


def run_here(step: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """The local engine's step runner: call the step in this thread."""
    return fn(*args, **kwargs)


# -- helpers -------------------------------------------------------------------------------
def as_factory(dataset: DatasetFactory | DatasetSpec) -> DatasetFactory:
    """A factory for ``dataset`` (a spec gets the factory its ``factory:`` key names)."""
    return dataset if isinstance(dataset, DatasetFactory) else factory_for(dataset)


def _filename(source: SourceSpec) -> str:
    name = source.filename or unquote(urlsplit(source.url).path).rsplit("/", 1)[-1] or "source"
    try:
        return validate_identifier(name)
    except DatastackError:
        return "source"


def raw_identifier(spec: DatasetSpec, source: SourceSpec) -> str:
    """Content-addressed identifier of a raw source (by its expected checksum)."""
    algo, digest = source.checksum
    return f"datasets/{spec.name}/raw/{algo}-{digest.lower()}/{_filename(source)}"


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


def _source_checksums(spec: DatasetSpec) -> list[str]:
    return [f"{s.checksum[0]}:{s.checksum[1].lower()}" for s in spec.sources]


def _spec_url(spec: DatasetSpec, redacted_url: str) -> str:
    """The URL (with credentials) of the spec source whose redacted form is ``redacted_url``."""
    for source in spec.sources:
        if redact(source.url) == redacted_url:
            return source.url
    return redacted_url


# -- steps ---------------------------------------------------------------------------------
def check_sources(dataset: DatasetFactory | DatasetSpec, store: Store) -> SourcesCheck:
    """Decide whether the dataset needs a new version, without downloading anything.

    The checksums in the spec pin the content, so an unchanged spec means unchanged data. For
    HTTP sources whose previous retrieval recorded an ETag / Last-Modified, a conditional
    request checks upstream: if upstream changed while the spec did not, a warning says to
    update the checksum (the old version stays current).
    """
    spec = as_factory(dataset).spec
    try:
        latest = store.catalog.latest(spec.name)
    except NotFoundError:
        return SourcesCheck(True, "no published version yet")
    if latest.spec_hash != spec.fingerprint():
        return SourcesCheck(True, "spec changed (sources, checksums or options)", latest.version)
    warnings: list[str] = []
    for recorded in latest.sources:
        etag, modified = recorded.get("etag"), recorded.get("last_modified")
        url = str(recorded.get("url", ""))
        if not (etag or modified) or not url.startswith(("http://", "https://")):
            continue
        try:
            from datastack.retrieval import check_changed

            answer = check_changed(_spec_url(spec, url), etag=etag, last_modified=modified)
        except DatastackError as exc:
            warnings.append(f"could not check {redact(url)}: {exc}")
            continue
        if answer.changed:
            warnings.append(
                f"{redact(url)} changed upstream but the spec's checksum did not: update the "
                "checksum in the spec to publish the new content"
            )
    for warning in warnings:
        log.warning("%s: %s", spec.name, warning)
    return SourcesCheck(
        False, f"unchanged since version {latest.version}", latest.version, warnings
    )


def retrieve_sources(
    dataset: DatasetFactory | DatasetSpec, store: Store, *, deadline_s: float | None = None
) -> list[dict[str, Any]]:
    """Store every raw source (verified by checksum); return their records.

    Sources already stored under their content-addressed identifier are not downloaded again.
    ``deadline_s`` bounds each download (headers, body and retries).
    """
    from datastack.retrieval import ResourceDefinition, Retriever, retriever_for

    spec = as_factory(dataset).spec
    records: list[dict[str, Any]] = []
    for source in spec.sources:
        identifier = raw_identifier(spec, source)
        record: dict[str, Any] = {
            "url": redact(source.url),
            "sha256": source.sha256,
            "md5": source.md5,
            "role": source.role,
            "split": source.split,
            "identifier": identifier,
        }
        if store.storage.has_resource(identifier):
            size = store.storage.get_resource(identifier).size
            record.update(size=size, etag=None, last_modified=None, reused=True)
        else:
            definition = ResourceDefinition(
                identifier, source.url, sha256=source.sha256, md5=source.md5
            )
            options = {} if deadline_s is None else {"deadline": deadline_s}
            try:
                retriever: Retriever = retriever_for(definition, store.storage, **options)
                (info,) = retriever.retrieve_with_info([definition])
            except DatastackError as exc:
                raise type(exc)(f"dataset {spec.name!r}: {exc}") from None
            record.update(
                size=info.size, etag=info.etag, last_modified=info.last_modified, reused=False
            )
            if info.sha256 and not record["sha256"]:
                record["sha256_computed"] = info.sha256
        records.append(record)
        log.info("%s: source %s stored as %s", spec.name, record["url"], identifier)
    return records


def _prepare_in_child(factory: DatasetFactory, inputs: Any, out: Path) -> Any:
    return factory.prepare(inputs, out)


def prepare_version(
    dataset: DatasetFactory | DatasetSpec,
    sources: Sequence[dict[str, Any]],
    store: Store,
    *,
    producer: dict[str, Any] | None = None,
) -> PreparedVersion:
    """Reserve the next version, prepare the raw sources into its HDF5 file and store it.

    The version is recorded as *pending*: readers do not see it until :func:`publish_version`.
    Preparation runs in a forked child (``datastack._isolation``).
    """
    factory = as_factory(dataset)
    spec = factory.spec
    record = store.catalog.begin(
        spec.name,
        spec_hash=spec.fingerprint(),
        sources=list(sources),
        format=spec.format or "custom",
        description=spec.description,
        producer=producer or default_producer(),
    )
    version = record.version
    try:
        stored = {s["identifier"] for s in sources}
        inputs = [
            (source, store.storage.get_resource(raw_identifier(spec, source)))
            for source in spec.sources
            if raw_identifier(spec, source) in stored
        ]
        with tempfile.TemporaryDirectory(prefix="datastack-prepare-") as tmp:
            out = Path(tmp) / "data.h5"
            prepared = run_isolated(
                _prepare_in_child, factory, inputs, out, what=f"{spec.name}: preprocessing"
            )
            for _, resource in inputs:
                resource.close()
            info = store.storage.set_resource(data_identifier(spec.name, version), out)
    except BaseException:
        store.catalog.abort(spec.name, version)
        raise
    raw = [
        {
            "identifier": s["identifier"],
            "size": s.get("size"),
            "sha256": s.get("sha256") or s.get("sha256_computed"),
        }
        for s in sources
    ]
    return PreparedVersion(
        name=spec.name,
        version=version,
        resources=[info.to_dict(), *raw],
        splits=dict(prepared.splits),
        schema=dict(prepared.schema),
        encodings=dict(getattr(prepared, "encodings", {}) or {}),
        format=spec.format or "custom",
    )


def publish_version(
    dataset: DatasetFactory | DatasetSpec,
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
    spec = as_factory(dataset).spec
    catalog = store.catalog
    if not force:
        same = catalog.find_identical(spec.name, spec.fingerprint(), _source_checksums(spec))
        if same is not None:
            catalog.abort(spec.name, prepared.version)
            return None
    record = catalog.publish(
        spec.name,
        prepared.version,
        lease_token=lease_token,
        splits=prepared.splits,
        schema=prepared.schema,
        encodings=prepared.encodings,
        resources=prepared.resources,
    )
    log.info("%s: published version %d", spec.name, record.version)
    return dict(record.to_dict())


def acquire_lease(
    store: Store,
    name: str,
    *,
    owner: str | None = None,
    ttl_s: float = DEFAULT_LEASE_TTL,
    wait_s: float = 0.0,
) -> int:
    """Take the refresh lease of ``name``; returns its fencing token (LockHeldError if held)."""
    return int(store.catalog.acquire_lease(name, owner=owner, ttl=ttl_s, wait=wait_s).token)


def release_lease(store: Store, name: str, token: int) -> None:
    """Release the lease taken with ``token`` (a lease already taken over is left alone)."""
    store.catalog.release_lease(name, token)


# -- the sequence --------------------------------------------------------------------------
def refresh_dataset(
    dataset: DatasetFactory | DatasetSpec,
    store: Store,
    *,
    force: bool = False,
    producer: dict[str, Any] | None = None,
    lease_ttl_s: float = DEFAULT_LEASE_TTL,
    wait_s: float = 0.0,
    retrieve_deadline_s: float | None = None,
    owner: str | None = None,
    run_step: StepRunner = run_here,
) -> RefreshResult:
    """check -> retrieve -> prepare -> publish one dataset under its lease.

    The lease is renewed by a heartbeat for the whole refresh. Never raises for a
    dataset-level failure: the result says ``failed`` / ``locked`` with a one-line reason
    (credentials redacted). The previous version stays published on failure. ``run_step``
    executes each step (see :class:`StepRunner`); ``owner`` names the lease holder (default
    ``host:pid:random``).
    """
    started = time.monotonic()
    name = dataset.name if isinstance(dataset, DatasetSpec) else dataset.spec.name

    def result(status: str, version: int | None, reason: str, **kw: Any) -> RefreshResult:
        elapsed = round(time.monotonic() - started, 3)
        return RefreshResult(name, status, version, redact(reason), elapsed, **kw)

    try:
        factory = as_factory(dataset)
        lease = run_step(
            "acquire-lease",
            store.catalog.acquire_lease,
            name,
            ttl=lease_ttl_s,
            wait=wait_s,
            owner=owner,
        )
    except LockHeldError as exc:
        return result("locked", None, str(exc))
    except DatastackError as exc:
        return result("failed", None, f"{type(exc).__name__}: {exc}")
    try:
        with lease.keep_alive():
            check = run_step("check-sources", check_sources, factory, store)
            if not check.changed and not force:
                return result("unchanged", check.latest_version, check.reason)
            sources = run_step(
                "retrieve-sources", retrieve_sources, factory, store,
                deadline_s=retrieve_deadline_s,
            )
            prepared = run_step(
                "prepare-version", prepare_version, factory, sources, store, producer=producer
            )
            record = run_step(
                "publish-version", publish_version, factory, sources, prepared, store,
                lease_token=lease.token, force=force,
            )
        if record is None:
            return result("unchanged", check.latest_version, "identical content already published")
        why = "forced" if force else check.reason if check.latest_version else "first version"
        return result(
            "published", int(record["version"]), why, splits=dict(record.get("splits", {}))
        )
    except DatastackError as exc:
        log.error("%s: refresh failed: %s", name, redact(str(exc)))
        return result("failed", None, f"{type(exc).__name__}: {exc}")
    finally:
        try:
            run_step("release-lease", lease.release)
        except DatastackError as exc:  # pragma: no cover - logged, the lease expires anyway
            log.warning("%s: could not release lease: %s", name, redact(str(exc)))


def refresh(
    spec_path: str | os.PathLike[str],
    names: Sequence[str] | None = None,
    storage: Store | str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
) -> list[RefreshResult]:
    """Refresh datasets of a spec file in this process, without an orchestrator."""
    specs = load_selected(spec_path, names)
    store = Store.open(storage)
    return [refresh_dataset(spec, store, force=force) for spec in specs]


__all__ = [
    "DEFAULT_LEASE_TTL",
    "PreparedVersion",
    "RefreshResult",
    "SourcesCheck",
    "StepRunner",
    "acquire_lease",
    "as_factory",
    "check_sources",
    "data_identifier",
    "default_producer",
    "prepare_version",
    "publish_version",
    "raw_identifier",
    "refresh",
    "refresh_dataset",
    "release_lease",
    "retrieve_sources",
    "run_here",
]
