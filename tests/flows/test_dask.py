"""refresh_all on prefect-dask's DaskTaskRunner: a LocalCluster of 2 worker processes, whose
workers also prepare the parts of a dataset cut into parts (#25.2)."""

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

    # dask-2 (~40 KB) is cut into parts of 8 KiB
    served = [serve_csv(f"dask-{i}", rows=(20 + i, 20 + i, 3000)[i], offset=i) for i in range(3)]
    spec = write_spec(tmp_path / "spec.yaml", served)
    monkeypatch.setenv("DATASTACK_STORAGE", str(storage_dir))
    monkeypatch.setenv("DATASTACK_PART_BYTES", "8K")  # the workers start after this
    state = refresh_all_flow(str(spec), task_runner="dask", dask_workers=2, return_state=True)
    assert state.is_completed(), state.message
    assert sorted((r["name"], r["status"], r["version"]) for r in state.result()) == [
        (f"dask-{i}", "published", 1) for i in range(3)]
    catalog = open_catalog(str(storage_dir))
    _prepared_in_parts_on_the_cluster(catalog.latest("dask-2"), spec, tmp_path, monkeypatch)
    pids = {catalog.latest(f"dask-{i}").producer["pid"] for i in range(3)}
    assert os.getpid() not in pids  # the work ran in the Dask worker processes
    assert 1 <= len(pids) <= 2
    runs = [r for r in task_runs(prefect_client, flow_run_id(state))
            if r.name.startswith(("refresh-dataset", "publish-version"))]
    assert len(runs) == 6 and all(r.state.is_completed() for r in runs)


def _prepared_in_parts_on_the_cluster(record: Any, spec: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The big dataset's shards were prepared part by part by the flow's Dask workers, and its
    version equals the one one process prepares from the same spec."""
    import numpy as np

    import datastack
    from datastack.canonical.layout import shards_of
    from datastack.catalog import open_catalog

    entries = [e for es in shards_of(record).values() for e in es]
    assert len({e["part"] for e in entries}) >= 3
    assert {str(e["worker"].get("dask_worker", ""))[:6] for e in entries} == {"tcp://"}
    monkeypatch.delenv("DATASTACK_PART_BYTES")
    one = str(tmp_path / "one")
    [result] = datastack.refresh(spec, ["dask-2"], storage=one)
    assert result.status == "published"
    alone = open_catalog(one).latest("dask-2")
    assert len({e.get("part") for es in shards_of(alone).values() for e in es}) == 1
    for split in record.splits:
        got = [datastack.load("dask-2", split, storage=s) for s in (one, None)]
        assert len(got[0]) == len(got[1]) == record.splits[split]
        assert all(np.array_equal(a, b) for i in range(len(got[0]))
                   for a, b in zip(got[0][i], got[1][i], strict=True))
