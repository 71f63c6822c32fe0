"""Prefect flows that refresh datasets: check sources -> retrieve -> prepare -> publish.

Thin orchestration: each dataset runs :func:`datastack.pipeline.sequence.refresh_dataset` (the same
sequence as the local engine) with its steps as Prefect tasks (:mod:`flows.tasks`). Prefect
adds retries with backoff on the network steps, run logging, one summary artifact per run,
scheduling (``deployments/``) and scale-out (threads or a Dask cluster).

Credentials never travel as parameters: flows take the *name* of an environment variable
(default ``DATASTACK_STORAGE``) or of a Prefect ``Secret`` block holding the storage URI, resolve
it inside the run, and only ever log or display it redacted.

>>> from flows.refresh import run_refresh                     # doctest: +SKIP
>>> results = run_refresh("datasets.yaml", storage="mongodb://u:p@db/team")  # doctest: +SKIP
>>> [(r.name, r.status, r.version) for r in results]          # doctest: +SKIP
[('iris', 'published', 1)]

Deployments load this file by path (``flows/refresh.py:refresh_dataset_flow``); it imports its
tasks from the ``flows`` package, found from the project folder.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.schemas.objects import State
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner

from datastack._uri import STORAGE_ENV, redact
from datastack.errors import ConfigurationError, DatastackError
from datastack.factory import DatasetFactory
from datastack.pipeline.sequence import (
    DEFAULT_LEASE_TTL,
    NotBuilt,
    RefreshResult,
    fail_not_built,
)
from datastack.store import Store

try:
    import flows.tasks  # noqa: F401
except ModuleNotFoundError:  # loaded by file path from outside the project folder
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flows.tasks import (
    RETRIEVE_TIMEOUT_S,
    DatasetRefreshFailed,
    RefreshSettings,
    producer,
    refresh_dataset_task,
    refresh_one,
    resolve_storage,
)

TASK_RUNNERS = ("thread", "dask")
ARTIFACT_KEY = "datastack-refresh"
STATUS_ARTIFACT_KEY = "datastack-status"


# -- summary artifact --------------------------------------------------------------------------
def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def summary_markdown(rows: Sequence[dict[str, Any]], storage: str) -> str:
    """Markdown summary of a refresh run: counts, then one table row per dataset.

    >>> print(summary_markdown([{"name": "iris", "status": "published", "version": 2,
    ...     "splits": {"train": 120}, "duration_s": 1.5, "reason": "etag changed"}],
    ...     "mongodb://u:pw@h/db").splitlines()[0])
    # datastack refresh: 1 published, 0 unchanged, 0 failed
    """
    counts = {key: sum(r["status"] == key for r in rows) for key in ("published", "unchanged")}
    failed = len(rows) - sum(counts.values())
    lines = [
        f"# datastack refresh: {counts['published']} published, {counts['unchanged']} unchanged, "
        f"{failed} failed",
        "",
        f"Storage: `{redact(storage)}`",
        "",
        "| dataset | status | version | splits | duration (s) | reason |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        version = f"v{r['version']}" if r.get("version") is not None else "-"
        splits = ", ".join(f"{k}={v}" for k, v in (r.get("splits") or {}).items()) or "-"
        lines.append(
            f"| {_cell(r['name'])} | {_cell(r['status'])} | {version} | {_cell(splits)} | "
            f"{float(r.get('duration_s') or 0.0):.2f} | {_cell(redact(str(r.get('reason', ''))))} |"
        )
    warnings = [(r["name"], w) for r in rows for w in r.get("warnings") or []]
    if warnings:
        lines += ["", "## Warnings", ""]
        lines += [f"- **{_cell(name)}**: {_cell(redact(str(w)))}" for name, w in warnings]
    return "\n".join(lines) + "\n"


def _publish_summary(rows: Sequence[dict[str, Any]], storage: str) -> str:
    failed = [
        f"{r['name']} ({r['status']})"
        for r in rows
        if r["status"] not in {"published", "unchanged"}
    ]
    create_markdown_artifact(
        summary_markdown(rows, storage),
        key=ARTIFACT_KEY,
        description=f"{len(rows)} dataset(s); failed: {', '.join(failed) or 'none'}",
    )
    return ", ".join(failed)


def _publish_status_table(storage: str) -> None:
    """A table artifact of every dataset's freshness (what ``datastack status`` shows)."""
    from prefect.artifacts import create_table_artifact

    from datastack.store import Store

    try:
        rows = [s.summary() for s in Store.open(storage).catalog.statuses()]
    except DatastackError as exc:
        get_run_logger().warning("could not read the dataset statuses: %s", redact(str(exc)))
        return
    table = [
        {
            "dataset": r["name"],
            "state": r["state"],
            "version": r["version"],
            "schedule": r["schedule"] or "",
            "last success": r["last_success"] or "",
            "last failure": (r["last_failure"] or {}).get("reason", "")[:200],
        }
        for r in rows
    ]
    failing = [r["name"] for r in rows if r["state"] in {"failing", "overdue"}]
    create_table_artifact(
        table,
        key=STATUS_ARTIFACT_KEY,
        description=f"{len(rows)} dataset(s); failing or overdue: {', '.join(failing) or 'none'}",
    )


def _finish(rows: list[dict[str, Any]], storage: str) -> list[dict[str, Any]] | State[Any]:
    failed = _publish_summary(rows, storage)
    if not failed:
        return rows
    message = f"{len(failed.split(', '))} of {len(rows)} dataset(s) did not refresh: {failed}"
    get_run_logger().error(message)
    return Failed(message=message, data=DatasetRefreshFailed(message, rows))


# -- flows -------------------------------------------------------------------------------------
def _all_run_name() -> str:
    """``refresh-<spec>-<names or all>`` for runs of :func:`refresh_all_flow`."""
    from prefect.runtime import flow_run

    params = flow_run.parameters
    names = params.get("names") or []
    label = "+".join(names) if names else "all"
    return f"refresh-{Path(str(params.get('spec_path', 'spec'))).stem}-{label}"[:120]


@flow(
    name="refresh-dataset",
    flow_run_name="refresh-{name}",
    log_prints=False,
    validate_parameters=True,
)
def refresh_dataset_flow(
    name: str,
    spec_path: str,
    storage_env: str = STORAGE_ENV,
    storage_secret: str | None = None,
    force: bool = False,
    lease_ttl_s: float = DEFAULT_LEASE_TTL,
    lease_wait_s: float = 0.0,
    retries: int = 3,
    retry_delay_s: float = 2.0,
    retrieve_timeout_s: float = RETRIEVE_TIMEOUT_S,
) -> list[dict[str, Any]] | State[Any]:
    """Refresh one dataset of a spec: lease -> check -> retrieve -> prepare -> publish.

    ``storage_env`` names the environment variable holding the storage URI (or
    ``storage_secret`` a Prefect Secret block): the URI itself is never a parameter.
    Returns ``[result dict]``; the run ends Failed when the dataset failed or was locked.
    """
    storage = resolve_storage(storage_env, storage_secret)
    get_run_logger().info("refreshing %s from %s into %s", name, spec_path, redact(storage))
    (built,) = _factories(spec_path, [name])  # an unknown name fails the run before any step
    settings = RefreshSettings(
        retries=retries,
        retry_delay_s=retry_delay_s,
        lease_ttl_s=lease_ttl_s,
        lease_wait_s=lease_wait_s,
        retrieve_timeout_s=retrieve_timeout_s,
    )
    if isinstance(built, NotBuilt):  # its factory cannot be built: this dataset's failure
        return _finish([fail_not_built(built, Store.open(storage), producer()).to_dict()], storage)
    row = refresh_one(built, storage_env, storage_secret, force, settings)
    return _finish([row], storage)


def _factories(spec_path: str, names: Sequence[str] | None) -> list[DatasetFactory | NotBuilt]:
    """The datasets of a flow run: its spec read once, each dataset built into its factory
    (or the failed result of one whose factory cannot be built)."""
    from datastack.factory import build_factories
    from datastack.specs import load_selected

    return build_factories(load_selected(Path(spec_path), names))


def _task_runner(
    kind: str,
    dask_address: str | None,
    dask_workers: int,
    max_workers: int,
    worker_env: dict[str, str],
) -> Any:
    if kind == "thread":
        return ThreadPoolTaskRunner(max_workers=max_workers)
    if kind != "dask":
        raise ConfigurationError(f"task_runner must be one of {TASK_RUNNERS}, got {kind!r}")
    try:
        from prefect_dask.task_runners import DaskTaskRunner
    except ImportError:
        from datastack.errors import MissingDependencyError

        raise MissingDependencyError(
            "task_runner='dask' needs prefect-dask: pip install 'datastack[flows]'"
        ) from None
    if dask_address:
        return DaskTaskRunner(address=dask_address)
    return DaskTaskRunner(  # a thread for a dataset's task, one for the parts (docs/scale.md)
        cluster_kwargs={
            "n_workers": dask_workers,
            "threads_per_worker": 2,
            "resources": {DATASET_SLOT: 1},
            "processes": True,
            "dashboard_address": None,
            "env": worker_env,
        }
    )


#: A Dask worker resource of the flow's own cluster: one dataset task per worker at a time,
#: so the worker's other thread is free for the parts that task hands to the cluster (a task
#: waiting on tasks that cannot start would deadlock the cluster).
DATASET_SLOT = "datastack-dataset"


@contextmanager
def _one_dataset_per_worker(own_cluster: bool) -> Iterator[None]:
    """Dataset tasks submitted inside this each need a worker's :data:`DATASET_SLOT`."""
    if not own_cluster:
        yield
        return
    import dask

    with dask.annotate(resources={DATASET_SLOT: 1}):
        yield


def _local_worker_env(storage_env: str) -> dict[str, str]:
    """Environment for local Dask workers: this run's API server and the storage variable."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        env = {"PREFECT_API_URL": str(client.api_url).rstrip("/")}
    if storage_env in os.environ:
        env[storage_env] = os.environ[storage_env]
    return env


@flow(
    name="refresh-all",
    flow_run_name=_all_run_name,
    log_prints=False,
    validate_parameters=True,
)
def refresh_all_flow(
    spec_path: str,
    names: list[str] | None = None,
    storage_env: str = STORAGE_ENV,
    storage_secret: str | None = None,
    force: bool = False,
    task_runner: str = "thread",
    dask_address: str | None = None,
    dask_workers: int = 2,
    max_workers: int = 4,
    lease_ttl_s: float = DEFAULT_LEASE_TTL,
    lease_wait_s: float = 0.0,
    retries: int = 3,
    retry_delay_s: float = 2.0,
    retrieve_timeout_s: float = RETRIEVE_TIMEOUT_S,
) -> list[dict[str, Any]] | State[Any]:
    """Refresh every dataset of a spec (or ``names``) in parallel; one failure stops no other.

    ``task_runner="thread"`` runs datasets on threads of this process; ``"dask"`` on a local
    Dask cluster of ``dask_workers`` processes, or on the scheduler at ``dask_address`` (its
    workers need ``PREFECT_API_URL`` and the storage variable or Secret block). Returns the list
    of result dicts; the run ends Failed naming the datasets that failed or were locked.
    """
    storage = resolve_storage(storage_env, storage_secret)
    built = _factories(spec_path, names)
    logger = get_run_logger()
    logger.info(
        "refreshing %d dataset(s) into %s on %s",
        len(built),
        redact(storage),
        dask_address or task_runner,
    )
    env = _local_worker_env(storage_env) if task_runner == "dask" and not dask_address else {}
    runner = _task_runner(task_runner, dask_address, dask_workers, max_workers, env)
    settings = RefreshSettings(
        retries=retries,
        retry_delay_s=retry_delay_s,
        lease_ttl_s=lease_ttl_s,
        lease_wait_s=lease_wait_s,
        retrieve_timeout_s=retrieve_timeout_s,
    )
    rows: list[dict[str, Any]] = []
    with runner, _one_dataset_per_worker(task_runner == "dask" and not dask_address):
        if task_runner == "dask" and not dask_address:  # its parts go to the same cluster
            settings = dataclasses.replace(
                settings, parts_dask_address=str(runner.client.scheduler.address))
        pending = [
            item if isinstance(item, NotBuilt) else (
                item.spec.name,
                runner.submit(
                    refresh_dataset_task,
                    parameters={
                        "name": item.spec.name,
                        "factory": item,
                        "storage_env": storage_env,
                        "storage_secret": storage_secret,
                        "force": force,
                        "settings": settings,
                    },
                ),
            )
            for item in built
        ]
        for item in pending:
            if isinstance(item, NotBuilt):  # its factory cannot be built: this dataset's failure
                rows.append(fail_not_built(item, Store.open(storage), producer()).to_dict())
                continue
            name, future = item
            outcome = future.result(raise_on_failure=False)
            if isinstance(outcome, DatasetRefreshFailed) and outcome.results:
                rows.append(outcome.results[0])
            elif isinstance(outcome, BaseException):
                reason = f"{type(outcome).__name__}: {redact(str(outcome))}"
                rows.append(RefreshResult(name, "failed", None, reason).to_dict())
            else:
                rows.append(outcome)
    _publish_status_table(storage)
    return _finish(rows, storage)


# -- plain Python entry (the CLI calls this) ---------------------------------------------------
@contextmanager
def _env(name: str, value: str | None) -> Iterator[None]:
    old = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if value is not None:
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def run_flow(
    spec_path: str | os.PathLike[str],
    names: Sequence[str] | None,
    store: Store,
    *,
    force: bool = False,
    **flow_options: Any,
) -> list[RefreshResult]:
    """Refresh datasets of a spec through ``refresh_all_flow``; returns ``RefreshResult`` s.

    The storage URI is handed to the flow run through ``$DATASTACK_STORAGE`` (set for the call
    and restored after: not for concurrent calls with different storages in one process),
    never as a parameter. ``flow_options`` go to :func:`refresh_all_flow` (``task_runner``,
    ``dask_address``, ``retries``, ``retry_delay_s``...).
    """
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    # This call waits for its own run, so Prefect's crash-detection heartbeats (meant for runs
    # on workers) are off: their thread sleeps in 1 s steps and costs up to 1 s at exit.
    no_heartbeats = temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})
    # Without PREFECT_API_URL, Prefect starts a temporary server in this process; its services
    # log harmless CancelledError tracebacks while it shuts down. Keep only real errors.
    if not os.environ.get("PREFECT_API_URL"):
        os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")
    with _env(STORAGE_ENV, store.connection_uri), no_heartbeats:
        state = refresh_all_flow(
            str(Path(spec_path).resolve()),
            list(names) if names else None,
            storage_env=STORAGE_ENV,
            force=force,
            return_state=True,
            **flow_options,
        )
    outcome: Any = state.result(raise_on_failure=False)
    rows: list[dict[str, Any]]
    if isinstance(outcome, DatasetRefreshFailed):
        rows = outcome.results
    elif isinstance(outcome, BaseException):
        raise outcome
    else:
        rows = list(outcome)
    return [RefreshResult.from_dict(row) for row in rows]


def run_refresh(
    spec_path: str | os.PathLike[str],
    names: Sequence[str] | None = None,
    storage: str | None = None,
    *,
    force: bool = False,
    engine: str = "prefect",
    **flow_options: Any,
) -> list[RefreshResult]:
    """Refresh datasets of a spec with an engine (``prefect`` by default): ``datastack.refresh``
    with another default engine.

    >>> results = run_refresh("datasets.yaml", ["iris"], "/data/store")  # doctest: +SKIP
    """
    from datastack.api import refresh

    return refresh(spec_path, names, storage=storage, force=force, engine=engine, **flow_options)
