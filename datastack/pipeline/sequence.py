"""The refresh sequence, written once: lease -> check -> retrieve -> prepare -> publish.

Every step is a plain function of objects -- a :class:`~datastack.factory.DatasetFactory`
(what the dataset is) and a :class:`~datastack.store.Store` (where it lives) -- so tests call
them directly. :func:`refresh_dataset` runs them under the dataset's lease, makes every
status decision and records the dataset's status (freshness) in the catalog; an *engine*
only chooses how each step executes: here in this process (:func:`run_here`), or as a Prefect
task with retries (``flows/``, through ``run_step``). Nothing here imports Prefect; every
refresh comes in through :func:`datastack.pipeline.engines.run_refresh`.

Steps: ``acquire-lease`` -> ``check-sources`` (``datastack.pipeline.retrieve``)
-> ``retrieve-sources`` -> ``prepare-version`` -> ``validate-version``
(``datastack.pipeline.gates``) -> ``publish-version`` -> ``release-lease``.

Where the raw sources and a version's files are stored: :mod:`datastack.canonical.layout`.
A version becomes visible only when :func:`~datastack.pipeline.build.publish_version` flips
its catalog record from pending to published, after every resource was written and verified.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from datastack._retry import Backoff, call_with_retries
from datastack._uri import redact
from datastack._workdirs import sweep_work_dirs
from datastack.errors import (
    ConfigurationError,
    DatastackError,
    LockHeldError,
    StorageUnavailableError,
)
from datastack.pipeline._parallel import warm_parallel
from datastack.pipeline.build import (
    drop_version,
    prepare_version,
    publish_version,
    validate_version,
)
from datastack.pipeline.retrieve import (
    SourcesCheck,
    check_sources,
    discard_fetched,
    latest_record,
    retrieve_sources,
    same_tracked_content,
)

if TYPE_CHECKING:  # pragma: no cover
    from datastack.factory import DatasetFactory
    from datastack.specs.model import DatasetSpec
    from datastack.store import Store

log = logging.getLogger("datastack.pipeline")

T = TypeVar("T")

#: Lease TTL of a refresh (seconds); a heartbeat renews it every ``ttl / 3`` while the refresh
#: runs, so a killed refresh blocks its dataset for at most a minute (at once on the same host).
DEFAULT_LEASE_TTL = 60.0
#: Retries of a step that failed because the storage was unreachable (local engine).
LOCAL_STORAGE_RETRIES = 2
_STORAGE_BACKOFF = Backoff(initial=1.0, maximum=2.0, jitter=0.0)  # 1 s, then 2 s


@dataclass
class RefreshResult:
    """Outcome of refreshing one dataset."""

    name: str
    status: str  # "published" | "unchanged" | "failed" | "locked"
    version: int | None = None
    reason: str = ""
    duration_s: float = 0.0
    splits: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in {"published", "unchanged"}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RefreshResult:
        fields = {"name", "status", "version", "reason", "duration_s", "splits", "warnings"}
        return cls(**{k: v for k, v in data.items() if k in fields})


class StepRunner(Protocol):
    """How an engine executes one step: ``run_step("retrieve-sources", fn, *args)``."""

    def __call__(self, step: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T: ...


def run_here(step: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """The local engine's step runner: call the step in this thread.

    A step that found the storage unreachable is retried twice (after 1 s and 2 s), so a
    short MongoDB outage does not fail a refresh; ``prepare-version`` is never retried here.
    """
    def retrying(exc: BaseException, attempt: int, wait: float) -> None:
        log.warning("%s: storage unavailable, retry %d: %s", step, attempt, redact(str(exc)))

    retries = 0 if step == "prepare-version" else LOCAL_STORAGE_RETRIES
    return call_with_retries(
        lambda: fn(*args, **kwargs), retry_on=StorageUnavailableError, max_retries=retries,
        backoff=_STORAGE_BACKOFF, on_retry=retrying,
    )


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
@dataclass
class _Run:
    """One refresh in progress: what the steps need, and how to word the outcome."""

    factory: DatasetFactory
    store: Store
    run_step: StepRunner
    started: float = field(default_factory=time.monotonic)
    warnings: list[str] = field(default_factory=list)

    def result(self, status: str, version: int | None, reason: str, **kw: Any) -> RefreshResult:
        elapsed = round(time.monotonic() - self.started, 3)
        name = self.factory.spec.name
        return RefreshResult(
            name, status, version, redact(reason), elapsed, warnings=self.warnings, **kw
        )


def _sequence(run: _Run, lease: Any, force: bool, producer: Any, deadline: Any) -> RefreshResult:
    """check -> retrieve -> prepare -> validate -> publish, under a held lease."""
    factory, store, step = run.factory, run.store, run.run_step
    check: SourcesCheck = step("check-sources", check_sources, factory, store)
    run.warnings.extend(check.warnings)
    if not check.changed and not force:
        return run.result("unchanged", check.latest_version, check.reason)
    warm_parallel(factory)  # the pool's workers get ready while the sources are fetched
    sources = step("retrieve-sources", retrieve_sources, factory, store, deadline_s=deadline)
    if check.compare and not force:
        same = same_tracked_content(factory.spec, sources, store)
        if same is not None:
            discard_fetched(sources, store)
            return run.result("unchanged", same, f"content unchanged since version {same}")
    prepared = None
    try:
        prepared = step(
            "prepare-version", prepare_version, factory, sources, store, producer=producer,
            lease_token=lease.token,
        )
        step("validate-version", validate_version, factory, prepared, store)
        record = step(
            "publish-version", publish_version, factory, sources, prepared, store,
            lease_token=lease.token, force=force,
        )
    except BaseException:
        if prepared is not None:
            drop_version(store, factory.spec.name, prepared.version, prepared.attempt)
        discard_fetched(sources, store)
        raise
    if record is None:
        discard_fetched(sources, store)
        return run.result("unchanged", check.latest_version, "identical content already published")
    why = "forced" if force else check.reason if check.latest_version else "first version"
    splits = dict(record.get("splits", {}))
    return run.result("published", int(record["version"]), why, splits=splits)


def _record_status(
    spec: DatasetSpec, store: Store, result: RefreshResult, producer: dict[str, Any] | None
) -> None:
    version = result.version
    try:
        if result.status == "failed" and version is None:
            previous = latest_record(spec, store)  # the version that stays served
            version = previous.version if previous is not None else None
        store.catalog.record_check(
            spec.name,
            result.status,
            reason=result.reason,
            version=version,
            flow_run=(producer or {}).get("flow_run_id"),
            schedule=spec.schedule,
            warnings=result.warnings,
        )
    except DatastackError as exc:  # the refresh's outcome stands; the status is advisory
        log.warning("%s: could not record the status: %s", spec.name, redact(str(exc)))


def _check_factory(factory: object) -> None:
    if not callable(getattr(factory, "prepare", None)) or not hasattr(factory, "spec"):
        raise ConfigurationError(
            f"refresh_dataset takes a DatasetFactory, got {type(factory).__name__} "
            f"{factory!r:.60}; build one from a spec with datastack.factory.factory_for(spec)"
        )


def refresh_dataset(
    factory: DatasetFactory,
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
    """check -> retrieve -> prepare -> validate -> publish one dataset under its lease.

    The lease is renewed by a heartbeat for the whole refresh (``lease_ttl_s``: a killed
    refresh blocks nobody for longer; a dead holder on this host is replaced at once);
    ``wait_s`` waits for a lease another refresh holds, then checks afresh. Never raises for a
    dataset-level failure: the result says ``failed`` / ``locked`` with a one-line reason
    (credentials redacted); the previous version stays published. The outcome is recorded in
    the catalog's status of the dataset. ``run_step`` executes each step (see
    :class:`StepRunner`); ``owner`` names the lease holder (default ``host:pid.start:random``).
    """
    _check_factory(factory)
    run = _Run(factory, store, run_step)
    sweep_work_dirs()  # what killed refreshes on this host left in the temp folder
    result = _locked_sequence(run, force, producer, lease_ttl_s, wait_s, retrieve_deadline_s, owner)
    _record_status(factory.spec, store, result, producer)
    return result


def _locked_sequence(
    run: _Run,
    force: bool,
    producer: dict[str, Any] | None,
    ttl: float,
    wait: float,
    deadline: float | None,
    owner: str | None,
) -> RefreshResult:
    name = run.factory.spec.name
    try:
        lease = run.run_step(
            "acquire-lease", run.store.catalog.acquire_lease, name, ttl=ttl, wait=wait,
            owner=owner,
        )
    except LockHeldError as exc:
        return run.result("locked", None, str(exc))
    except DatastackError as exc:
        return run.result("failed", None, f"{type(exc).__name__}: {exc}")
    except Exception as exc:
        log.debug("%s: could not take the lease", name, exc_info=True)
        return run.result("failed", None, _foreign_reason(exc))
    try:
        with lease.keep_alive():
            return _sequence(run, lease, force, producer, deadline)
    except DatastackError as exc:
        # reported once, by the caller (the CLI's line, the Prefect task's log)
        log.info("%s: refresh failed: %s", name, redact(str(exc)))
        return run.result("failed", None, f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # any other exception is this dataset's failure too
        # (a malformed input a parser did not foresee, a bug in a custom preprocessor): recorded
        # as this dataset's failure so that the other datasets are refreshed
        log.debug("%s: refresh failed", name, exc_info=True)
        return run.result("failed", None, _foreign_reason(exc))
    finally:
        try:
            run.run_step("release-lease", lease.release)
        except Exception as exc:  # pragma: no cover - logged, the lease expires anyway
            log.warning("%s: could not release lease: %s", name, redact(str(exc)))


def _foreign_reason(exc: BaseException) -> str:
    """The one-line reason of an exception outside the ``DatastackError`` tree."""
    text = " ".join(str(exc).split()) or repr(exc)
    if len(text) > 500:
        text = text[:500].rsplit(" ", 1)[0] + " [...]"
    return (
        f"{type(exc).__name__}: {text}; an unexpected error: the input is malformed in a way "
        "no check caught, or a custom preprocessor failed. Nothing was published, the "
        "previous version stays served"
    )


@dataclass
class NotBuilt:
    """A dataset whose factory could not be built (a bad ``factory:``, a constructor that
    raised): that dataset's failure, recorded in its status like any other."""

    spec: DatasetSpec
    error: Exception

    def result(self) -> RefreshResult:
        exc = self.error
        reason = (f"{type(exc).__name__}: {exc}" if isinstance(exc, DatastackError)
                  else _foreign_reason(exc))
        return RefreshResult(self.spec.name, "failed", None, redact(reason))


def fail_not_built(
    dataset: NotBuilt, store: Store, producer: dict[str, Any] | None = None
) -> RefreshResult:
    """The failed result of a dataset whose factory could not be built, recorded in its
    status (the previous version stays served)."""
    failed = dataset.result()
    _record_status(dataset.spec, store, failed, producer)
    return failed


__all__ = [
    "DEFAULT_LEASE_TTL",
    "NotBuilt",
    "RefreshResult",
    "StepRunner",
    "acquire_lease",
    "fail_not_built",
    "refresh_dataset",
    "release_lease",
    "run_here",
]
