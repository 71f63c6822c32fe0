"""Fixtures for the Prefect flow tests: one harness server per session, HTTP datasets, specs.

The harness (``prefect_harness``) is session-scoped and NOT autouse: unit tests in this folder
run without it. Tests that need it request it; subprocesses and Dask workers reach it through
``prefect_api_url`` (exported as ``PREFECT_API_URL`` where needed).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SENTINEL = "SENTINELPASSWORD"


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start ``prefect_test_harness`` once (15-20 s) with a temporary PREFECT_HOME; yields the
    API URL."""
    home = tmp_path_factory.mktemp("prefect-home")
    saved = {k: os.environ.get(k) for k in ("PREFECT_HOME", "PREFECT_SERVER_ANALYTICS_ENABLED",
                                             "PREFECT_API_URL")}
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.pop("PREFECT_API_URL", None)
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    try:
        with prefect_test_harness(server_startup_timeout=90):
            url = str(PREFECT_API_URL.value())
            # Subprocesses (serve, Dask workers, the prefect CLI) find the server through the env.
            os.environ["PREFECT_API_URL"] = url
            yield url
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def prefect_client(prefect_harness: str) -> Iterator[Any]:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        yield client


def csv_bytes(rows: int = 30, offset: int = 0) -> bytes:
    lines = ["x1,x2,label"]
    lines += [f"{i + offset},{(i * 7) % 11},{'ab'[i % 2]}" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


@dataclass
class Served:
    """A CSV file on the test HTTP server."""

    name: str
    path: str
    data: bytes
    url: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@pytest.fixture
def serve_csv(httpserver: Any) -> Callable[..., Served]:
    """Serve a CSV under ``/<name>.csv``; ``fail_first=N`` answers ``status`` N times first."""

    def _serve(name: str, rows: int = 30, *, fail_first: int = 0, status: int = 503,
               offset: int = 0, missing: bool = False, delay: float = 0.0) -> Served:
        from werkzeug import Response

        data = csv_bytes(rows, offset)
        path = f"/{name}.csv"
        calls = {"n": 0}

        def handler(request: Any) -> Response:
            calls["n"] += 1
            if delay:
                time.sleep(delay)
                calls["slept"] = calls.get("slept", 0) + 1
            if missing:
                return Response("not here", status=404)
            if calls["n"] <= fail_first:
                return Response("try later", status=status)
            return Response(data, status=200, content_type="text/csv",
                            headers={"ETag": f'"{hashlib.md5(data).hexdigest()}"'})

        httpserver.expect_request(path).respond_with_handler(handler)
        served = Served(name, path, data, httpserver.url_for(path))
        served.calls = calls  # type: ignore[attr-defined]
        return served

    return _serve


def write_spec(path: Path, served: list[Served], schedules: dict[str, str] | None = None) -> Path:
    """A spec with one CSV dataset per served file (train/test split)."""
    import yaml

    datasets: dict[str, Any] = {}
    for s in served:
        entry: dict[str, Any] = {
            "description": f"test dataset {s.name}",
            "sources": [{"url": s.url, "sha256": s.sha256}],
            "format": "csv",
            "csv": {"header": True, "target": "label"},
            "splits": {"train": 0.8, "test": 0.2},
            "seed": 0,
        }
        if schedules and s.name in schedules:
            entry["schedule"] = schedules[s.name]
        datasets[s.name] = entry
    path.write_text(yaml.safe_dump({"datasets": datasets}, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def storage_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ds-flows-") as tmp:
        yield Path(tmp) / "store"


# -- reading runs back through the Prefect API --------------------------------------------------
def flow_run_id(state: Any) -> Any:
    return state.state_details.flow_run_id


def task_runs(client: Any, run_id: Any, settle_s: float = 20.0) -> list[Any]:
    """The task runs of a flow run, once the API has caught up with them.

    Prefect 3 records task runs from events, asynchronously: right after a flow returns, a
    task run may still read RUNNING, or keep its generated name. Poll until every task run is
    in a final state (or ``settle_s`` passes)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + settle_s
    while True:
        runs = list(client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        ))
        if all(r.state is not None and r.state.is_final() for r in runs) or (
            time.monotonic() > deadline
        ):
            return runs
        time.sleep(0.25)


def artifacts(client: Any, run_id: Any) -> list[Any]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    return list(client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
    ))


def run_logs(client: Any, run_id: Any) -> list[str]:
    """Every log message of a flow run (its tasks included), after flushing the log worker."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    logs = client.read_logs(
        log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])), limit=200
    )
    return [log.message for log in logs]
