"""The refresh pipeline as plain functions: check -> retrieve -> prepare -> publish.

Each step is a function of (spec, storage URI, plain data) so that Prefect tasks (``flows/``)
and tests call exactly the same code; :func:`refresh_dataset` runs them all in-process under
the dataset's lease. Nothing here imports prefect.

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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from datastack._uri import default_storage_uri, redact
from datastack.errors import (
    ConfigurationError,
    DatastackError,
    LockHeldError,
    NotFoundError,
    SpecError,
    StorageError,
)
from datastack.identifiers import validate_identifier
from datastack.specs import DatasetSpec, SourceSpec, load_spec

log = logging.getLogger("datastack.pipeline")

DEFAULT_LEASE_TTL = 300.0  # renewed every ttl/3 by LeaseKeeper while the refresh runs


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


# -- helpers -------------------------------------------------------------------------------
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


def data_identifier(name: str, version: int) -> str:
    """Identifier of the canonical HDF5 file of ``name`` version ``version``."""
    return f"datasets/{name}/v{version}/data.h5"


def default_producer() -> dict[str, Any]:
    """Lineage of an in-process run (flows add their flow run id)."""
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


def _isolated_child(conn: Any, func: Any, args: tuple[Any, ...]) -> None:
    try:
        conn.send(("ok", func(*args)))
    except BaseException as exc:
        try:
            conn.send(("error", exc))
        except Exception:  # unpicklable exception: send its text
            conn.send(("error", StorageError(f"{type(exc).__name__}: {exc}")))
    finally:
        conn.close()


def run_isolated(func: Any, *args: Any, what: str) -> Any:
    """Run ``func(*args)`` in a forked child process and return its result.

    HDF5 (through h5py) can crash the whole process on hostile files or when the disk fills up
    mid-write (measured: a segfault while closing a half-written file); in a child, such a crash
    becomes a :class:`StorageError` and the caller cleans up. Set ``DATASTACK_ISOLATE=0`` to run
    in-process (debugging); it always does on platforms without ``fork`` and inside daemonic
    processes (Dask workers), which may not start children.
    """
    import multiprocessing

    if (
        os.environ.get("DATASTACK_ISOLATE", "1") == "0"
        or "fork" not in multiprocessing.get_all_start_methods()
        or multiprocessing.current_process().daemon  # e.g. a Dask worker: no children allowed
    ):
        return func(*args)
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_isolated_child, args=(child, func, args), daemon=True)
    process.start()
    child.close()
    try:
        status, payload = parent.recv()
    except EOFError:
        process.join()
        code = process.exitcode
        detail = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        raise StorageError(
            f"{what} crashed ({detail}) while writing the HDF5 file: is the disk full or an "
            "input file corrupt? Nothing was published; free space or fix the input and retry"
        ) from None
    finally:
        parent.close()
    process.join()
    if status == "error":
        raise payload
    return payload


# -- steps ---------------------------------------------------------------------------------
def check_sources(spec: DatasetSpec, storage: str | None = None) -> SourcesCheck:
    """Decide whether ``spec`` needs a new version, without downloading anything.

    The checksums in the spec pin the content, so an unchanged spec means unchanged data. For
    HTTP sources whose previous retrieval recorded an ETag / Last-Modified, a conditional request
    checks upstream: if upstream changed while the spec did not, a warning says to update the
    checksum (the old version stays current).
    """
    from datastack.catalog import open_catalog

    catalog = open_catalog(storage)
    try:
        latest = catalog.latest(spec.name)
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


def _spec_url(spec: DatasetSpec, redacted_url: str) -> str:
    """The URL (with credentials) of the spec source whose redacted form is ``redacted_url``."""
    for source in spec.sources:
        if redact(source.url) == redacted_url:
            return source.url
    return redacted_url


def retrieve_sources(spec: DatasetSpec, storage: str | None = None) -> list[dict[str, Any]]:
    """Store every raw source of ``spec`` (verified by checksum); return their records.

    Sources already stored under their content-addressed identifier are not downloaded again.
    """
    from datastack.retrieval import ResourceDefinition, retriever_for
    from datastack.storage import connect

    store = connect(storage)
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
        if store.has_resource(identifier):
            record.update(
                size=store.get_resource(identifier).size, etag=None, last_modified=None, reused=True
            )
        else:
            definition = ResourceDefinition(
                identifier, source.url, sha256=source.sha256, md5=source.md5
            )
            try:
                retriever: Any = retriever_for(definition, store)
                infos = retriever.retrieve_with_info([definition])
            except DatastackError as exc:
                raise type(exc)(f"dataset {spec.name!r}: {exc}") from None
            info = infos[0]
            record.update(
                size=info.size, etag=info.etag, last_modified=info.last_modified, reused=False
            )
            if info.sha256 and not record["sha256"]:
                record["sha256_computed"] = info.sha256
        records.append(record)
        log.info("%s: source %s stored as %s", spec.name, record["url"], identifier)
    return records


def prepare_version(
    spec: DatasetSpec,
    sources: Sequence[dict[str, Any]],
    storage: str | None = None,
    *,
    producer: dict[str, Any] | None = None,
) -> PreparedVersion:
    """Reserve the next version, preprocess the raw sources into its HDF5 file and store it.

    The version is recorded as *pending*: readers do not see it until :func:`publish_version`.
    """
    from datastack.catalog import open_catalog
    from datastack.preprocessing import preprocess
    from datastack.storage import connect

    store = connect(storage)
    catalog = open_catalog(storage)
    record = catalog.begin(
        spec.name,
        spec_hash=spec.fingerprint(),
        sources=list(sources),
        format=spec.format or "custom",
        description=spec.description,
        producer=producer or default_producer(),
    )
    version = record.version
    try:
        by_id = {s["identifier"]: s for s in sources}
        inputs = [
            (source, store.get_resource(raw_identifier(spec, source)))
            for source in spec.sources
            if raw_identifier(spec, source) in by_id
        ]
        with tempfile.TemporaryDirectory(prefix="datastack-prepare-") as tmp:
            out = Path(tmp) / "data.h5"
            prepared = run_isolated(
                preprocess, spec, inputs, out, what=f"{spec.name}: preprocessing"
            )
            for _, resource in inputs:
                resource.close()
            info = store.set_resource(data_identifier(spec.name, version), out)
    except BaseException:
        catalog.abort(spec.name, version)
        raise
    return PreparedVersion(
        name=spec.name,
        version=version,
        resources=[
            info.to_dict(),
            *(
                {
                    "identifier": s["identifier"],
                    "size": s.get("size"),
                    "sha256": s.get("sha256") or s.get("sha256_computed"),
                }
                for s in sources
            ),
        ],
        splits=dict(prepared.splits),
        schema=dict(prepared.schema),
        encodings=dict(getattr(prepared, "encodings", {}) or {}),
        format=spec.format or "custom",
    )


def publish_version(
    spec: DatasetSpec,
    sources: Sequence[dict[str, Any]],
    prepared: PreparedVersion,
    storage: str | None = None,
    *,
    lease_token: int | None = None,
    force: bool = False,
) -> dict[str, Any] | None:
    """Publish a prepared version in one atomic catalog step; returns the record as a dict.

    Returns None (and drops the pending version) when the latest published version already has
    identical content (same spec hash and source checksums), unless ``force``.
    """
    from datastack.catalog import open_catalog

    catalog = open_catalog(storage)
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
    name: str,
    storage: str | None = None,
    *,
    owner: str | None = None,
    ttl_s: float = DEFAULT_LEASE_TTL,
    wait_s: float = 0.0,
) -> int:
    """Take the refresh lease of ``name``; returns its fencing token (LockHeldError if held)."""
    from datastack.catalog import open_catalog

    lease = open_catalog(storage).acquire_lease(name, owner=owner, ttl=ttl_s, wait=wait_s)
    return int(lease.token)


def release_lease(name: str, storage: str | None, token: int) -> None:
    """Release the lease taken with ``token`` (a lease already taken over is left alone)."""
    from datastack.catalog import open_catalog

    open_catalog(storage).release_lease(name, token)


class LeaseKeeper:
    """Renews a held lease every ``ttl / 3`` seconds on a daemon thread until stopped.

    A refresh may run longer than its lease TTL (a large download); the heartbeat keeps the
    lease while the process is alive, and a crashed process stops renewing, so the lease
    expires ``ttl`` seconds later and another refresh can take over (with a larger token).
    """

    def __init__(self, lease: Any, interval_s: float) -> None:
        import threading

        self.lease = lease
        self.interval_s = max(0.05, interval_s)
        self.lost: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"datastack-lease-{lease.name}", daemon=True
        )

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.lease.renew()
            except DatastackError as exc:  # lost, or storage unavailable: publish will fence
                self.lost = exc
                log.warning("%s: lease heartbeat stopped: %s", self.lease.name, redact(str(exc)))
                return

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def refresh_dataset(
    spec: DatasetSpec,
    storage: str | None = None,
    *,
    force: bool = False,
    producer: dict[str, Any] | None = None,
    lease_ttl_s: float = DEFAULT_LEASE_TTL,
    wait_s: float = 0.0,
) -> RefreshResult:
    """check -> retrieve -> prepare -> publish ``spec`` under its lease, in this process.

    Never raises for a dataset-level failure: the result says ``failed`` / ``locked`` with a
    one-line reason (credentials redacted). The previous version stays published on failure.
    """
    started = time.monotonic()
    storage = default_storage_uri(storage)

    def result(status: str, version: int | None, reason: str, **kw: Any) -> RefreshResult:
        return RefreshResult(
            spec.name, status, version, redact(reason), round(time.monotonic() - started, 3), **kw
        )

    from datastack.catalog import open_catalog

    try:
        lease = open_catalog(storage).acquire_lease(spec.name, ttl=lease_ttl_s, wait=wait_s)
    except LockHeldError as exc:
        return result("locked", None, str(exc))
    except DatastackError as exc:
        return result("failed", None, f"{type(exc).__name__}: {exc}")
    token = int(lease.token)
    keeper = LeaseKeeper(lease, lease_ttl_s / 3)
    try:
        keeper.__enter__()
        check = check_sources(spec, storage)
        if not check.changed and not force:
            return result("unchanged", check.latest_version, check.reason)
        sources = retrieve_sources(spec, storage)
        prepared = prepare_version(spec, sources, storage, producer=producer)
        record = publish_version(spec, sources, prepared, storage, lease_token=token, force=force)
        if record is None:
            return result("unchanged", check.latest_version, "identical content already published")
        return result(
            "published",
            int(record["version"]),
            f"published version {record['version']}",
            splits=dict(record.get("splits", {})),
        )
    except DatastackError as exc:
        log.error("%s: refresh failed: %s", spec.name, redact(str(exc)))
        return result("failed", None, f"{type(exc).__name__}: {exc}")
    finally:
        keeper.__exit__()
        try:
            release_lease(spec.name, storage, token)
        except DatastackError as exc:  # pragma: no cover - logged, the lease expires anyway
            log.warning("%s: could not release lease: %s", spec.name, redact(str(exc)))


def select_specs(
    spec_path: str | os.PathLike[str], names: Sequence[str] | None = None
) -> list[DatasetSpec]:
    """The datasets of a spec file, restricted to ``names`` (unknown names are a SpecError)."""
    specs = load_spec(Path(spec_path))
    if not names:
        return list(specs.values())
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise SpecError(
            f"{os.fspath(spec_path)}: no dataset named {', '.join(map(repr, unknown))}; the spec "
            f"defines {', '.join(sorted(specs)) or 'nothing'}"
        )
    return [specs[n] for n in names]


def refresh(
    spec_path: str | os.PathLike[str],
    names: Sequence[str] | None = None,
    storage: str | None = None,
    *,
    force: bool = False,
) -> list[RefreshResult]:
    """Refresh datasets of a spec file in this process, without Prefect (library-only path)."""
    specs = select_specs(spec_path, names)
    return [refresh_dataset(spec, storage, force=force) for spec in specs]


def run_refresh(
    spec_path: str | os.PathLike[str],
    names: Sequence[str] | None = None,
    storage: str | None = None,
    *,
    force: bool = False,
    engine: str = "auto",
) -> list[RefreshResult]:
    """What ``datastack refresh`` runs: the Prefect flow (``flows``) or the local pipeline.

    ``engine``: "prefect" (requires the ``flows`` extra), "local", or "auto" (Prefect when
    installed). The spec is validated before any flow starts.
    """
    select_specs(spec_path, names)  # validate first: an invalid spec never reaches a flow
    if engine not in {"auto", "prefect", "local"}:
        raise ConfigurationError(f"engine must be auto, prefect or local, got {engine!r}")
    if engine != "local":
        import importlib

        try:
            flows = importlib.import_module("flows.refresh")
        except ImportError as exc:
            if engine == "prefect":
                raise ConfigurationError(
                    f"the prefect engine needs the flows extra ({exc}): pip install "
                    "'datastack[flows]' and run from the project folder"
                ) from None
        else:
            results: list[RefreshResult] = flows.run_refresh(
                spec_path, names=names, storage=storage, force=force
            )
            return results
    return refresh(spec_path, names, storage, force=force)


def now_utc() -> datetime:
    return datetime.now(UTC)
