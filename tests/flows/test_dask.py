"""refresh_all on prefect-dask's DaskTaskRunner: a LocalCluster of 2 worker processes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.flows.conftest import flow_run_id, task_runs, write_spec

pytest.importorskip("prefect_dask")
pytestmark = [pytest.mark.prefect, pytest.mark.slow, pytest.mark.timeout(240)]


def test_refresh_all_on_a_local_dask_cluster(
    prefect_harness: str, prefect_client: Any, serve_csv: Any, storage_dir: Path,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datastack.catalog import open_catalog
    from flows.refresh import refresh_all_flow

    served = [serve_csv(f"dask-{i}", rows=20 + i, offset=i) for i in range(3)]
    spec = write_spec(tmp_path / "spec.yaml", served)
    monkeypatch.setenv("DATASTACK_STORAGE", str(storage_dir))
    state = refresh_all_flow(str(spec), task_runner="dask", dask_workers=2, return_state=True)
    assert state.is_completed(), state.message
    assert sorted((r["name"], r["status"], r["version"]) for r in state.result()) == [
        (f"dask-{i}", "published", 1) for i in range(3)]
    catalog = open_catalog(str(storage_dir))
    pids = {catalog.latest(f"dask-{i}").producer["pid"] for i in range(3)}
    assert os.getpid() not in pids  # the work ran in the Dask worker processes
    assert 1 <= len(pids) <= 2
    runs = [r for r in task_runs(prefect_client, flow_run_id(state))
            if r.name.startswith(("refresh-dataset", "publish-version"))]
    assert len(runs) == 6 and all(r.state.is_completed() for r in runs)
