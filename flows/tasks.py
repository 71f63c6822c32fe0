"""Prefect tasks of the refresh flows: one per pipeline step, plus the per-dataset unit.

Each task is a thin wrapper over a plain function of :mod:`datastack.pipeline`. Tasks receive
the *name* of the environment variable (or Prefect Secret block) that holds the storage URI,
never the URI itself, and resolve it where they run (a thread, a Dask worker, a worker's
subprocess). Network steps retry transient failures with exponential backoff and jitter;
4xx answers, checksum mismatches and spec errors fail at once (:func:`is_transient`).

>>> from flows.tasks import is_transient
>>> from datastack.errors import ChecksumError
>>> is_transient(ChecksumError("x: expected sha256 ab.., got cd.."))
False
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.states import Failed
from prefect.tasks import exponential_backoff

from datastack._uri import STORAGE_ENV, default_storage_uri, redact
from datastack.errors import (
    ConfigurationError,
    DatastackError,
    LockHeldError,
    RetrievalError,
    StorageUnavailableError,
)

CHECK_TIMEOUT_S = 300.0
RETRIEVE_TIMEOUT_S = 4 * 3600.0
PREPARE_TIMEOUT_S = 4 * 3600.0
PUBLISH_TIMEOUT_S = 1800.0
_HTTP_STATUS_RE = re.compile(r"\b(?:HTTP|status)\s*(?:code\s*)?[: ]?\s*(\d{3})\b", re.IGNORECASE)


# -- storage resolution (never a parameter in clear) -------------------------------------------
def _load_secret(block_name: str) -> str:
    from prefect.blocks.system import Secret

    block: Any = Secret.load(block_name)
    value = block.get()
    if not isinstance(value, str) or not value:
        raise ConfigurationError(
            f"Prefect Secret block {block_name!r} must hold the storage URI as a non-empty string"
        )
    return value


def resolve_storage(storage_env: str = STORAGE_ENV, storage_secret: str | None = None) -> str:
    """The storage URI named by a Secret block (when given) or an environment variable.

    Falls back to ``$DATASTACK_STORAGE``, then ``./.datastack`` when ``storage_env`` is unset.

    >>> os.environ["MY_STORE"] = "/tmp/store"
    >>> resolve_storage("MY_STORE")
    '/tmp/store'
    """
    if storage_secret:
        return _load_secret(storage_secret)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", storage_env or ""):
        raise ConfigurationError(
            f"storage_env must be the NAME of an environment variable, got {redact(storage_env)!r}"
            "; put the URI itself in that variable"
        )
    return os.environ.get(storage_env) or default_storage_uri(None)


# -- retry policy ------------------------------------------------------------------------------
_PERMANENT_STATUS = range(400, 500)
_TRANSIENT_4XX = {408, 425, 429}


def _http_status(exc: BaseException) -> int | None:
    for candidate in (exc, exc.__cause__, exc.__context__):
        if candidate is None:
            continue
        for attr in ("status", "status_code", "http_status"):
            value = getattr(candidate, attr, None)
            if isinstance(value, int):
                return value
        response = getattr(candidate, "response", None)
        code = getattr(response, "status_code", None)
        if isinstance(code, int):
            return code
    match = _HTTP_STATUS_RE.search(str(exc))
    return int(match.group(1)) if match else None


def is_transient(exc: BaseException) -> bool:
    """Whether retrying may help: network and storage outages yes; 4xx, checksums, specs no.

    >>> is_transient(StorageUnavailableError("db down"))
    True
    >>> is_transient(RetrievalError("https://x/a.csv: HTTP 404 Not Found"))
    False
    """
    status = _http_status(exc)
    if status in _PERMANENT_STATUS and status not in _TRANSIENT_4XX:
        return False
    if isinstance(exc, StorageUnavailableError | RetrievalError | TimeoutError | ConnectionError):
        return True
    if isinstance(exc, DatastackError):
        return False  # checksum, spec, format, identifiers, configuration, catalog, lock
    return isinstance(exc, OSError)


def _retry_transient(task_: Any, task_run: Any, state: State[Any]) -> bool:
    """``retry_condition_fn``: retry a failed task only when its exception is transient."""
    try:
        state.result()
    except BaseException as exc:
        retry = is_transient(exc)
        if not retry:
            get_run_logger().warning("not retrying %s: %s", type(exc).__name__, redact(str(exc)))
        return retry
    return False


# -- tasks -------------------------------------------------------------------------------------
def _producer() -> dict[str, Any]:
    import prefect
    from prefect.runtime import flow_run

    from datastack.pipeline import default_producer

    return {
        **default_producer(),
        "engine": "prefect",
        "flow_run_id": str(flow_run.id) if flow_run.id else None,
        "flow_run_name": flow_run.name,
        "flow_name": flow_run.flow_name,
        "prefect_version": prefect.__version__,
    }


def _bounded(seconds: float | None, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` and give up after ``seconds``: raises ``TimeoutError`` (transient).

    Prefect's ``timeout_seconds`` cannot interrupt blocking I/O in worker threads (the task
    threads of ``refresh_all``), so network steps run in a helper thread that is abandoned on
    timeout. Only steps that hold no h5py state are bounded this way (an abandoned thread inside
    h5py would hold its global lock).
    """
    if not seconds:
        return fn(*args, **kwargs)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"datastack-{fn.__name__}")
    try:
        return pool.submit(fn, *args, **kwargs).result(timeout=seconds)
    except FutureTimeout:
        raise TimeoutError(
            f"{fn.__name__} did not finish within {seconds:g} s; abandoned. Retry, or raise the "
            "timeout if the source is large or slow"
        ) from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class Tuning:
    """Retry, timeout and lease settings of one refresh (plain data: picklable to Dask)."""

    retries: int = 3
    retry_delay_s: float = 2.0
    lease_ttl_s: float = 3600.0
    lease_wait_s: float = 0.0
    check_timeout_s: float = CHECK_TIMEOUT_S
    retrieve_timeout_s: float = RETRIEVE_TIMEOUT_S
    publish_timeout_s: float = PUBLISH_TIMEOUT_S

    def network(self) -> dict[str, Any]:
        """``with_options`` of the network tasks: retries with exponential backoff + jitter."""
        return {
            "retries": self.retries,
            "retry_delay_seconds": exponential_backoff(backoff_factor=self.retry_delay_s),
        }


@task(name="acquire-lease", task_run_name="acquire-lease[{name}]", cache_policy=NO_CACHE)
def acquire_lease_task(
    name: str, storage_env: str, storage_secret: str | None, tuning: Tuning
) -> int:
    """Take the dataset's refresh lease (raises LockHeldError when another run holds it)."""
    from datastack.pipeline import acquire_lease

    owner = f"{socket.gethostname()}:{os.getpid()}:{_producer()['flow_run_id']}"
    token = _bounded(
        tuning.check_timeout_s + tuning.lease_wait_s,
        acquire_lease,
        name,
        resolve_storage(storage_env, storage_secret),
        owner=owner,
        ttl_s=tuning.lease_ttl_s,
        wait_s=tuning.lease_wait_s,
    )
    get_run_logger().info("%s: lease acquired (token %s)", name, token)
    return int(token)


# Network and storage steps: exponential backoff with jitter, never retrying permanent errors
# (4xx, checksum, spec, format, held lease); side effects, so never cached.
_RETRIED: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": _retry_transient,
    "cache_policy": NO_CACHE,
}


@task(
    name="check-sources",
    task_run_name="check-sources[{spec.name}]",
    **_RETRIED,
)
def check_sources_task(
    spec: Any, storage_env: str, storage_secret: str | None, tuning: Tuning
) -> dict[str, Any]:
    """Ask upstream (conditional requests, no download) whether the sources changed."""
    from datastack.pipeline import check_sources

    check = _bounded(
        tuning.check_timeout_s, check_sources, spec, resolve_storage(storage_env, storage_secret)
    )
    get_run_logger().info("%s: sources changed=%s (%s)", spec.name, check.changed, check.reason)
    return {
        "changed": check.changed,
        "reason": check.reason,
        "latest_version": check.latest_version,
    }


@task(
    name="retrieve-sources",
    task_run_name="retrieve-sources[{spec.name}]",
    **_RETRIED,
)
def retrieve_task(
    spec: Any, storage_env: str, storage_secret: str | None, tuning: Tuning
) -> list[dict[str, Any]]:
    """Download and checksum-verify every source; returns source records (URLs redacted)."""
    from datastack.pipeline import retrieve_sources

    sources: list[dict[str, Any]] = _bounded(
        tuning.retrieve_timeout_s,
        retrieve_sources,
        spec,
        resolve_storage(storage_env, storage_secret),
    )
    size = sum(int(s.get("size") or 0) for s in sources)
    get_run_logger().info("%s: retrieved %d source(s), %d bytes", spec.name, len(sources), size)
    return sources


@task(name="prepare-version", task_run_name="prepare-version[{spec.name}]", cache_policy=NO_CACHE)
def prepare_task(
    spec: Any, sources: list[dict[str, Any]], storage_env: str, storage_secret: str | None
) -> dict[str, Any]:
    """Preprocess into HDF5 and upload the resources (not yet visible in the catalog).

    Not bounded by a timeout: h5py work cannot be abandoned safely (see :func:`_bounded`).
    """
    from datastack.pipeline import prepare_version

    prepared = prepare_version(
        spec, sources, resolve_storage(storage_env, storage_secret), producer=_producer()
    )
    get_run_logger().info("%s: prepared version %s uploaded", spec.name, prepared.version)
    return dict(prepared.to_dict())


@task(
    name="publish-version",
    task_run_name="publish-version[{spec.name}]",
    **{**_RETRIED, "retries": 2},
)
def publish_task(
    spec: Any,
    sources: list[dict[str, Any]],
    prepared: dict[str, Any],
    storage_env: str,
    storage_secret: str | None,
    lease_token: int | None,
    force: bool,
    tuning: Tuning,
) -> dict[str, Any] | None:
    """Flip the catalog to the new version; None when identical content is already published."""
    from datastack.pipeline import PreparedVersion, publish_version

    record = _bounded(
        tuning.publish_timeout_s,
        publish_version,
        spec,
        sources,
        PreparedVersion.from_dict(prepared),
        resolve_storage(storage_env, storage_secret),
        lease_token=lease_token,
        force=force,
    )
    logger = get_run_logger()
    if record is None:
        logger.info("%s: identical content already published; no new version", spec.name)
        return None
    logger.info("%s: published version %s", spec.name, record.get("version"))
    return dict(record)


@task(
    name="release-lease",
    task_run_name="release-lease[{name}]",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=1,
)
def release_lease_task(
    name: str, storage_env: str, storage_secret: str | None, token: int, tuning: Tuning
) -> None:
    """Give the lease back (it also expires by itself after its TTL)."""
    from datastack.pipeline import release_lease

    _bounded(
        tuning.check_timeout_s,
        release_lease,
        name,
        resolve_storage(storage_env, storage_secret),
        token,
    )


# -- one dataset -------------------------------------------------------------------------------
def _splits(record: dict[str, Any] | None) -> dict[str, int]:
    splits = (record or {}).get("splits") or {}
    return {str(k): int(v) for k, v in dict(splits).items()}


def _refresh_one(
    spec: Any, storage_env: str, storage_secret: str | None, force: bool, tuning: Tuning
) -> dict[str, Any]:
    """Run the steps for one dataset as Prefect tasks; never raises, returns a result dict."""
    from datastack.pipeline import RefreshResult

    network = tuning.network()
    logger = get_run_logger()
    start = time.perf_counter()
    token: int | None = None
    record: dict[str, Any] | None = None
    status, version, reason = "failed", None, ""
    try:
        token = acquire_lease_task(spec.name, storage_env, storage_secret, tuning)
        check = check_sources_task.with_options(**network)(
            spec, storage_env, storage_secret, tuning
        )
        version = check["latest_version"]
        if check["changed"] is False and not force:
            status, reason = "unchanged", check["reason"] or "sources unchanged"
        else:
            sources = retrieve_task.with_options(**network)(
                spec, storage_env, storage_secret, tuning
            )
            prepared = prepare_task(spec, sources, storage_env, storage_secret)
            record = publish_task(
                spec, sources, prepared, storage_env, storage_secret, token, force, tuning
            )
            if record is None:
                status, reason = "unchanged", "identical content already published"
            else:
                status, version = "published", record.get("version")
                why = "forced" if force else (check["reason"] or "sources changed")
                reason = f"published version {version}: {why}"
    except LockHeldError as exc:
        status, reason = "locked", redact(str(exc))
    except Exception as exc:
        status, reason = "failed", f"{type(exc).__name__}: {redact(str(exc))}"
    finally:
        if token is not None:
            try:
                release_lease_task(spec.name, storage_env, storage_secret, token, tuning)
            except Exception as exc:
                logger.warning("%s: could not release lease: %s", spec.name, redact(str(exc)))
    result = RefreshResult(
        name=spec.name,
        status=status,
        version=version,
        reason=reason,
        duration_s=round(time.perf_counter() - start, 3),
        splits=_splits(record),
    )
    row = dict(result.to_dict())
    log = logger.error if status in {"failed", "locked"} else logger.info
    log("%s: %s%s %s", spec.name, status, f" v{version}" if version is not None else "", reason)
    return row


class DatasetRefreshFailed(DatastackError):
    """One or more datasets failed or were locked; ``results`` holds every result dict."""

    def __init__(self, message: str = "", results: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.results = list(results or [])

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return (type(self), (self.message, self.results))


@task(name="refresh-dataset", task_run_name="refresh-dataset[{name}]", cache_policy=NO_CACHE)
def refresh_dataset_task(
    name: str,
    spec_path: str,
    storage_env: str,
    storage_secret: str | None,
    force: bool,
    tuning: Tuning,
) -> dict[str, Any] | State[Any]:
    """One dataset as a task (fan-out unit for threads or Dask).

    Returns the result dict, or a Failed state carrying :class:`DatasetRefreshFailed` (with the
    result dict) when the dataset failed or was locked: the task run shows Failed without a
    traceback, and the reason was already logged.
    """
    from datastack.specs import load_spec

    try:
        spec = load_spec(Path(spec_path))[name]
    except KeyError:
        raise ConfigurationError(f"dataset {name!r} is not in spec {spec_path!r}") from None
    row = _refresh_one(spec, storage_env, storage_secret, force, tuning)
    if row["status"] in {"failed", "locked"}:
        message = f"{name}: {row['status']}: {row['reason']}"
        return Failed(message=message, data=DatasetRefreshFailed(message, [row]))
    return row


__all__ = [
    "DatasetRefreshFailed",
    "Tuning",
    "acquire_lease_task",
    "check_sources_task",
    "is_transient",
    "prepare_task",
    "publish_task",
    "refresh_dataset_task",
    "release_lease_task",
    "resolve_storage",
    "retrieve_task",
]
