"""refresh_all / refresh_dataset flows on the real Prefect engine (one harness per session).

Datasets are CSV files served by a local HTTP server (pytest-httpserver); storage is a
temporary folder or a fresh SecantusDB database. Runs, task runs, artifacts and logs are read
back through the Prefect API.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.flows.conftest import (
    SENTINEL,
    artifacts,
    flow_run_id,
    run_logs,
    task_runs,
    write_spec,
)

pytest.importorskip("prefect")
pytestmark = [pytest.mark.prefect, pytest.mark.timeout(240)]


def _catalog(storage: str | Path) -> Any:
    from datastack.catalog import open_catalog

    return open_catalog(str(storage))


def _by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in rows}


def test_refresh_all_into_filesystem_then_unchanged(
    prefect_harness: str, prefect_client: Any, serve_csv: Any, storage_dir: Path,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.refresh import ARTIFACT_KEY, refresh_all_flow

    served = [serve_csv("alpha", rows=40), serve_csv("beta", rows=25, offset=100)]
    spec = write_spec(tmp_path / "spec.yaml", served)
    monkeypatch.setenv("DATASTACK_STORAGE", str(storage_dir))

    state = refresh_all_flow(str(spec), return_state=True)
    assert state.is_completed(), state.message
    rows = _by_name(state.result())
    assert {n: (r["status"], r["version"]) for n, r in rows.items()} == {
        "alpha": ("published", 1), "beta": ("published", 1)}
    assert rows["alpha"]["splits"] == {"train": 32, "test": 8}

    catalog = _catalog(storage_dir)
    latest = catalog.latest("alpha")
    assert latest.version == 1
    assert sum(latest.splits.values()) == 40
    assert latest.producer["engine"] == "prefect"
    assert latest.producer["flow_run_id"] == str(flow_run_id(state))

    run = prefect_client.read_flow_run(flow_run_id(state))
    assert run.state.is_completed()
    assert run.parameters["storage_env"] == "DATASTACK_STORAGE"
    runs = task_runs(prefect_client, flow_run_id(state))
    names = sorted(r.name for r in runs)
    for step in ("acquire-lease", "check-sources", "retrieve-sources", "prepare-version",
                 "publish-version", "release-lease", "refresh-dataset"):
        assert [n for n in names if n.startswith(step)] == [f"{step}[alpha]", f"{step}[beta]"]
    assert all(r.state.is_completed() for r in runs)

    (artifact,) = summary_artifacts(prefect_client, flow_run_id(state))
    assert artifact.key == ARTIFACT_KEY and artifact.type == "markdown"
    assert artifact.data.startswith("# datastack refresh: 2 published, 0 unchanged, 0 failed")
    assert "| alpha | published | v1 | train=32, test=8 |" in artifact.data

    again = refresh_all_flow(str(spec), return_state=True)
    assert again.is_completed()
    assert {r["status"] for r in again.result()} == {"unchanged"}
    assert [v.version for v in catalog.versions("alpha")] == [1]
    (artifact,) = summary_artifacts(prefect_client, flow_run_id(again))
    assert "0 published, 2 unchanged, 0 failed" in artifact.data
    later = task_runs(prefect_client, flow_run_id(again))
    assert not [r for r in later if r.name.startswith("retrieve-sources")]


@pytest.mark.mongo
def test_run_refresh_into_secantus(
    prefect_harness: str, serve_csv: Any, mongo_uri: str, tmp_path: Path
) -> None:
    from flows.refresh import run_refresh

    served = [serve_csv("gamma", rows=30), serve_csv("delta", rows=20, offset=7)]
    spec = write_spec(tmp_path / "spec.yaml", served)
    results = run_refresh(spec, storage=mongo_uri)
    assert [(r.name, r.status, r.version) for r in results] == [
        ("gamma", "published", 1), ("delta", "published", 1)]
    catalog = _catalog(mongo_uri)
    assert catalog.latest("gamma").splits == {"train": 24, "test": 6}
    assert sorted(catalog.datasets()) == ["delta", "gamma"]
    forced = run_refresh(spec, ["delta"], storage=mongo_uri, force=True)
    assert [(r.name, r.status, r.version) for r in forced] == [("delta", "published", 2)]
    assert catalog.latest("delta").version == 2


@pytest.mark.parametrize(("status", "prefect_attempts"), [(408, 1), (503, 1)])
def test_retries_after_server_fails_twice(
    prefect_harness: str, prefect_client: Any, serve_csv: Any, storage_dir: Path,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: int, prefect_attempts: int,
) -> None:
    """408 and 503 are transient: retried inside the HTTP retriever, one layer only (#27.3),
    so the task runs once and the server is asked three times."""
    from flows.refresh import refresh_all_flow

    flaky = serve_csv(f"flaky{status}", rows=20, fail_first=2, status=status)
    spec = write_spec(tmp_path / "spec.yaml", [flaky])
    monkeypatch.setenv("DATASTACK_STORAGE", str(storage_dir))
    state = refresh_all_flow(str(spec), retry_delay_s=0.1, return_state=True)
    assert state.is_completed(), state.message
    assert [(r["status"], r["version"]) for r in state.result()] == [("published", 1)]
    assert flaky.calls["n"] == 3
    (retrieve,) = [r for r in task_runs(prefect_client, flow_run_id(state))
                   if r.name == f"retrieve-sources[flaky{status}]"]
    assert retrieve.run_count == prefect_attempts
    assert retrieve.state.is_completed()


def test_one_failing_dataset_leaves_the_others_published(
    prefect_harness: str, prefect_client: Any, serve_csv: Any, storage_dir: Path,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.refresh import DatasetRefreshFailed, refresh_all_flow

    good = [serve_csv("one", rows=20), serve_csv("three", rows=20, offset=3)]
    missing = serve_csv("two", missing=True)
    spec = write_spec(tmp_path / "spec.yaml", [good[0], missing, good[1]])
    monkeypatch.setenv("DATASTACK_STORAGE", str(storage_dir))

    state = refresh_all_flow(str(spec), retry_delay_s=0.1, return_state=True)
    assert state.is_failed()
    assert state.message == "1 of 3 dataset(s) did not refresh: two (failed)"
    outcome = state.result(raise_on_failure=False)
    assert isinstance(outcome, DatasetRefreshFailed)
    rows = _by_name(outcome.results)
    assert rows["one"]["status"] == rows["three"]["status"] == "published"
    assert rows["two"]["status"] == "failed" and "404" in rows["two"]["reason"]
    assert missing.calls["n"] == 1  # a 404 is never retried
    catalog = _catalog(storage_dir)
    assert catalog.latest("one").version == catalog.latest("three").version == 1
    assert "two" not in catalog.datasets()

    run = prefect_client.read_flow_run(flow_run_id(state))
    assert run.state.is_failed() and "two (failed)" in run.state.message
    states = {r.name: r.state.type.value for r in task_runs(prefect_client, flow_run_id(state))}
    assert states["refresh-dataset[one]"] == states["refresh-dataset[three]"] == "COMPLETED"
    assert states["refresh-dataset[two]"] == "FAILED"
    assert states["retrieve-sources[two]"] == "FAILED"
    assert states["release-lease[two]"] == "COMPLETED"  # released in `finally`
    assert "prepare-version[two]" not in states
    (retrieve_two,) = [r for r in task_runs(prefect_client, flow_run_id(state))
                       if r.name == "retrieve-sources[two]"]
    assert retrieve_two.run_count == 1
    (artifact,) = summary_artifacts(prefect_client, flow_run_id(state))
    assert "2 published, 0 unchanged, 1 failed" in artifact.data
    assert "| two | failed | - |" in artifact.data


def test_refresh_dataset_flow_reads_storage_from_secret_block(
    prefect_harness: str, prefect_client: Any, serve_csv: Any, storage_dir: Path,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.blocks.system import Secret

    from flows.refresh import refresh_dataset_flow

    Secret(value=str(storage_dir)).save("datastack-test-store", overwrite=True)
    monkeypatch.delenv("DATASTACK_STORAGE", raising=False)
    spec = write_spec(tmp_path / "spec.yaml", [serve_csv("epsilon", rows=15)])
    state = refresh_dataset_flow("epsilon", str(spec), storage_secret="datastack-test-store",
                                 return_state=True)
    assert state.is_completed(), state.message
    assert [(r["status"], r["version"]) for r in state.result()] == [("published", 1)]
    assert _catalog(storage_dir).latest("epsilon").version == 1
    run = prefect_client.read_flow_run(flow_run_id(state))
    assert run.parameters["storage_secret"] == "datastack-test-store"
    assert str(storage_dir) not in str(run.parameters)


@pytest.mark.mongo
def test_credentials_never_appear_in_parameters_logs_or_artifacts(
    prefect_harness: str, prefect_client: Any, serve_csv: Any, mongo_uri: str, tmp_path: Path,
) -> None:
    """A URI with user:SENTINELPASSWORD: whatever the server makes of the credentials
    (SecantusDB runs without auth), the password shows up nowhere the API exposes."""
    from datastack.store import Store
    from flows.refresh import run_flow

    host_and_db = mongo_uri.split("://", 1)[1]
    secret_uri = f"mongodb://reader:{SENTINEL}@{host_and_db}"
    spec = write_spec(tmp_path / "spec.yaml", [serve_csv("zeta", rows=12)])
    # The flow itself (the CLI would refuse the failing login before starting it, exit 2).
    results = run_flow(spec, None, Store.open(secret_uri), retry_delay_s=0.1)
    assert len(results) == 1
    assert SENTINEL not in repr(results)

    (run,) = prefect_client.read_flow_runs(limit=1, **_latest_refresh_all_filter())
    exposed = [repr(run.parameters), repr(run.state.message), repr(run.name)]
    exposed += [a.data or "" for a in artifacts(prefect_client, run.id)]
    exposed += [a.description or "" for a in artifacts(prefect_client, run.id)]
    logs = run_logs(prefect_client, run.id)
    assert any("reader:***@" in line for line in logs)  # the logs were read, redacted
    exposed += logs
    for tr in task_runs(prefect_client, run.id):
        exposed += [tr.name, repr(tr.task_inputs), repr(tr.state.message)]
    text = "\n".join(exposed)
    assert SENTINEL not in text
    assert "reader:***@" in text  # the redacted form is what is shown


def summary_artifacts(client: Any, run_id: Any) -> list[Any]:
    """The run's summary artifact (beside it: one per dataset and the status table)."""
    from flows.refresh import ARTIFACT_KEY

    return [a for a in artifacts(client, run_id) if a.key == ARTIFACT_KEY]


def _latest_refresh_all_filter() -> dict[str, Any]:
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    return {"flow_filter": FlowFilter(name=FlowFilterName(any_=["refresh-all"])),
            "sort": FlowRunSort.EXPECTED_START_TIME_DESC}


def test_slow_source_times_out_and_is_retried(
    prefect_harness: str, prefect_client: Any, serve_csv: Any, storage_dir: Path,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.refresh import refresh_all_flow

    slow = serve_csv("slow", rows=10, delay=1.5)
    spec = write_spec(tmp_path / "spec.yaml", [slow])
    monkeypatch.setenv("DATASTACK_STORAGE", str(storage_dir))
    state = refresh_all_flow(str(spec), retries=1, retry_delay_s=0.1, retrieve_timeout_s=0.4,
                             return_state=True)
    assert state.is_failed()
    (row,) = state.result(raise_on_failure=False).results
    # The download's own overall deadline (headers, body, retries) bounds the step: no helper
    # thread is abandoned. The retriever retried within that deadline, so Prefect does not
    # retry the step on top of it (one layer retries, #27.3).
    assert row["status"] == "failed" and row["reason"].startswith("RetrievalError: ")
    assert "deadline of 0.4 s" in row["reason"]
    (retrieve,) = [r for r in task_runs(prefect_client, flow_run_id(state))
                   if r.name == "retrieve-sources[slow]"]
    assert retrieve.run_count == 1 and retrieve.state.is_failed()
    # The abandoned downloads finish in the background: let them, before the server goes away.
    deadline = time.monotonic() + 10
    while slow.calls.get("slept", 0) < slow.calls["n"] and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)


def test_held_lease_reports_locked_and_fails_the_run(
    prefect_harness: str, serve_csv: Any, storage_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datastack.pipeline.sequence import acquire_lease, release_lease
    from datastack.store import Store
    from flows.refresh import refresh_all_flow

    spec = write_spec(tmp_path / "spec.yaml", [serve_csv("held", rows=10),
                                               serve_csv("free", rows=10)])
    monkeypatch.setenv("DATASTACK_STORAGE", str(storage_dir))
    token = acquire_lease(Store.open(storage_dir), "held", owner="someone-else", ttl_s=60)
    try:
        state = refresh_all_flow(str(spec), return_state=True)
    finally:
        release_lease(Store.open(storage_dir), "held", token)
    assert state.is_failed()
    assert state.message == "1 of 2 dataset(s) did not refresh: held (locked)"
    rows = _by_name(state.result(raise_on_failure=False).results)
    assert rows["held"]["status"] == "locked" and rows["free"]["status"] == "published"
    assert "held" not in _catalog(storage_dir).datasets()
