"""Prefect tasks of the refresh flows: the pipeline's own steps, each run as a task.

The refresh sequence is :func:`datastack.pipeline.sequence.refresh_dataset` -- the same function the
local engine runs -- with a step runner (:class:`PrefectSteps`) that executes each step as a
Prefect task: ``acquire-lease[name]``, ``check-sources[name]``, ``retrieve-sources[name]``,
``prepare-version[name]``, ``publish-version[name]``, with retries (exponential backoff and
jitter) on the network and storage steps. Status decisions, the lease heartbeat and the
result are the pipeline's.

Tasks receive the *name* of the environment variable (or Prefect Secret block) that holds the
storage URI, never the URI itself, and resolve it where they run (a thread, a Dask worker, a
worker's subprocess). 4xx answers, checksum mismatches and spec errors are not retried
(:func:`is_transient`).

>>> from flows.tasks import is_transient
>>> from datastack.errors import ChecksumError
>>> is_transient(ChecksumError("x: expected sha256 ab.., got cd.."))
False
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.states import Failed
from prefect.tasks import Task, exponential_backoff
from prefect.utilities.annotations import quote

from datastack._uri import STORAGE_ENV, default_storage_uri, redact
from datastack.errors import (
    ConfigurationError,
    DatastackError,
    RetrievalError,
    StorageUnavailableError,
)
from datastack.factory import DatasetFactory
from datastack.pipeline.sequence import DEFAULT_LEASE_TTL

T = TypeVar("T")

#: Overall deadline of one source download (headers, body and retries), seconds.
RETRIEVE_TIMEOUT_S = 4 * 3600.0
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
    """Whether retrying may help: storage outages yes; downloads (retried by the retriever
    itself), 4xx, checksums, specs no.

    >>> is_transient(StorageUnavailableError("db down"))
    True
    >>> is_transient(RetrievalError("https://x/a.csv: HTTP 404 Not Found"))
    False
    """
    if isinstance(exc, RetrievalError):
        # one layer retries downloads: the retriever already retried transient failures within
        # its budget, and fails at once on the permanent ones (4xx, unknown host, refused)
        return False
    status = _http_status(exc)
    if status in _PERMANENT_STATUS and status not in _TRANSIENT_4XX:
        return False
    if isinstance(exc, StorageUnavailableError | TimeoutError | ConnectionError):
        return True
    if isinstance(exc, DatastackError):
        return False  # checksum, spec, format, identifiers, configuration, catalog, lock
    return isinstance(exc, OSError)


def _retry_transient(task_: Any, task_run: Any, state: State[Any]) -> bool:
    """``retry_condition_fn``: retry a failed step only when its exception is transient and
    the step is one that is retried.

    Every step task has at least one retry, so that Prefect asks this function instead of
    logging each failure with a traceback: an expected failure (a non-transient
    :class:`DatastackError`: a gate, a checksum, a 4xx) is reported once by the pipeline, as
    the dataset's outcome; an unexpected exception is logged here with its traceback.
    """
    try:
        state.result()
    except BaseException as exc:
        transient = is_transient(exc)
        if not transient and not isinstance(exc, DatastackError):
            get_run_logger().error(
                "%s: unexpected %s: %s", task_.name, type(exc).__name__, redact(str(exc)),
                exc_info=exc,
            )
        return transient and task_.name in _RETRIED_STEPS
    return False


# -- steps as tasks ----------------------------------------------------------------------------
@dataclass(frozen=True)
class RefreshSettings:
    """Retry, deadline and lease settings of one refresh (plain data: picklable to Dask)."""

    retries: int = 3
    retry_delay_s: float = 2.0
    lease_ttl_s: float = DEFAULT_LEASE_TTL
    lease_wait_s: float = 0.0
    retrieve_timeout_s: float = RETRIEVE_TIMEOUT_S
    #: The scheduler of the flow's Dask task runner: a dataset's parts are prepared on the
    #: same cluster (``DATASTACK_DASK_ADDRESS``, docs/scale.md); None: as the settings say.
    parts_dask_address: str | None = None


#: Steps that talk to the network or the storage: retried when the failure is transient.
_RETRIED_STEPS = {
    "acquire-lease",
    "check-sources",
    "retrieve-sources",
    "publish-version",
    "release-lease",
}


_NETWORK_STEPS = {"check-sources", "retrieve-sources"}


def _run_step(dataset: str, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    """The body of every step task: call the pipeline's step.

    An expected failure (a :class:`DatastackError` that retrying cannot fix: a validation
    gate, a checksum, a format or spec error, a 4xx) ends the task Failed with its reason as
    one line, not a traceback; :class:`PrefectSteps` raises it again for the pipeline, which
    reports the dataset's outcome. Transient errors raise (Prefect retries them).
    """
    try:
        return fn(*args, **kwargs)
    except DatastackError as exc:
        if is_transient(exc):
            raise
        return Failed(message=f"{type(exc).__name__}: {redact(str(exc))}", data=exc)


_TASKS: dict[str, Task[..., Any]] = {}


def _step_task(step: str) -> Task[..., Any]:
    if step not in _TASKS:
        _TASKS[step] = task(
            _run_step,
            name=step,
            task_run_name=f"{step}[{{dataset}}]",
            cache_policy=NO_CACHE,
            retry_condition_fn=_retry_transient,
        )
    return _TASKS[step]


class PrefectSteps:
    """A :class:`datastack.pipeline.sequence.StepRunner` running each step as a Prefect task."""

    def __init__(self, dataset: str, settings: RefreshSettings) -> None:
        self.dataset = dataset
        self.settings = settings

    def __call__(self, step: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        runner = _step_task(step)
        if step in _RETRIED_STEPS:
            retries = self.settings.retries if step in _NETWORK_STEPS else 2
            runner = runner.with_options(
                retries=retries,
                retry_delay_seconds=exponential_backoff(backoff_factor=self.settings.retry_delay_s),
                retry_jitter_factor=0.5,
            )
        else:  # never retried (_retry_transient says no), but failures go through it
            runner = runner.with_options(retries=1)
        state = runner(self.dataset, quote(fn), quote(args), quote(kwargs), return_state=True)
        outcome: Any = state.result(raise_on_failure=False)
        if isinstance(outcome, BaseException):  # an expected failure, or retries exhausted
            raise outcome
        if state.is_failed():  # pragma: no cover - a failed state always carries its exception
            raise DatastackError(f"{step} of {self.dataset!r} failed: {state.message}")
        result: T = outcome
        return result


def producer() -> dict[str, Any]:
    """Lineage of a run under Prefect: the local lineage plus the flow run."""
    import prefect
    from prefect.runtime import flow_run

    from datastack.pipeline.build import default_producer

    return {
        **default_producer(),
        "engine": "prefect",
        "flow_run_id": str(flow_run.id) if flow_run.id else None,
        "flow_run_name": flow_run.name,
        "flow_name": flow_run.flow_name,
        "prefect_version": prefect.__version__,
    }


# -- one dataset -------------------------------------------------------------------------------
class DatasetRefreshFailed(DatastackError):
    """One or more datasets failed or were locked; ``results`` holds every result dict."""

    def __init__(self, message: str = "", results: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.results = list(results or [])

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return (type(self), (self.message, self.results))


def refresh_one(
    factory: DatasetFactory,
    storage_env: str,
    storage_secret: str | None,
    force: bool,
    settings: RefreshSettings,
) -> dict[str, Any]:
    """Refresh one dataset of a spec with the pipeline, its steps as Prefect tasks.

    Never raises for a dataset-level failure; returns the result dict (logged once).
    """
    from datastack.pipeline.sequence import refresh_dataset
    from datastack.store import Store

    name = factory.spec.name
    if settings.parts_dask_address:  # the flow's Dask cluster prepares the parts too
        from datastack.pipeline import DASK_ENV

        os.environ[DASK_ENV] = settings.parts_dask_address
    store = Store.open(resolve_storage(storage_env, storage_secret))
    lineage = producer()
    result = refresh_dataset(
        factory,
        store,
        force=force,
        producer=lineage,
        lease_ttl_s=settings.lease_ttl_s,
        wait_s=settings.lease_wait_s,
        retrieve_deadline_s=settings.retrieve_timeout_s,
        owner=f"{socket.gethostname()}:{os.getpid()}:{lineage['flow_run_id']}",
        run_step=PrefectSteps(name, settings),
    )
    logger = get_run_logger()
    version = f" v{result.version}" if result.version is not None else ""
    log = logger.error if not result.ok else logger.info
    log("%s: %s%s: %s", name, result.status, version, result.reason)
    for warning in result.warnings:  # logged from the task thread: shipped to the API
        logger.warning("%s: %s", name, redact(warning))
    row = result.to_dict()
    _dataset_artifact(row, store)
    return row


def artifact_key(name: str) -> str:
    """The artifact key of one dataset (Prefect keys: lower-case letters, digits, dashes).

    >>> artifact_key("fashion_mnist.v2")
    'datastack-refresh-fashion-mnist-v2'
    """
    return "datastack-refresh-" + re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")


def _dataset_artifact(row: dict[str, Any], store: Any) -> None:
    from prefect.artifacts import create_markdown_artifact

    from flows.refresh import summary_markdown

    create_markdown_artifact(
        summary_markdown([row], store.uri),
        key=artifact_key(row["name"]),
        description=f"{row['name']}: {row['status']} {row.get('reason', '')}"[:500],
    )


@task(name="refresh-dataset", task_run_name="refresh-dataset[{name}]", cache_policy=NO_CACHE)
def refresh_dataset_task(
    name: str,
    factory: DatasetFactory,
    storage_env: str,
    storage_secret: str | None,
    force: bool,
    settings: RefreshSettings,
) -> dict[str, Any] | State[Any]:
    """One dataset as a task (fan-out unit for threads or Dask).

    Returns the result dict, or a Failed state carrying :class:`DatasetRefreshFailed` (with the
    result dict) when the dataset failed or was locked: the task run shows Failed without a
    traceback, and the reason was already logged.
    """
    row = refresh_one(factory, storage_env, storage_secret, force, settings)
    if row["status"] in {"failed", "locked"}:
        message = f"{name}: {row['status']}: {row['reason']}"
        return Failed(message=message, data=DatasetRefreshFailed(message, [row]))
    return row


__all__ = [
    "RETRIEVE_TIMEOUT_S",
    "DatasetRefreshFailed",
    "PrefectSteps",
    "RefreshSettings",
    "is_transient",
    "producer",
    "refresh_dataset_task",
    "refresh_one",
    "resolve_storage",
]
