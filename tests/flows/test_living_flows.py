"""Under Prefect: upstream changes of a pinned source reach the run logs (read back through
the API) and the artifacts; one artifact per dataset; a status table after refresh_all; flow
run names carry the dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.flows.conftest import artifacts, flow_run_id, run_logs, write_spec

pytest.importorskip("prefect")


def test_upstream_change_of_a_pinned_source_reaches_logs_artifacts_and_status(
    prefect_harness: str, prefect_client: Any, httpserver: Any, storage_dir: Path,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.refresh import STATUS_ARTIFACT_KEY, refresh_all_flow, refresh_dataset_flow
    from tests.flows.conftest import Served
    from tests.living.upstream import Upstream, table

    upstream = Upstream("/drift.csv", table(30))
    httpserver.expect_request("/drift.csv").respond_with_handler(upstream.handle)
    served = Served("drift", "/drift.csv", upstream.data, httpserver.url_for("/drift.csv"))
    spec = write_spec(tmp_path / "spec.yaml", [served])
    monkeypatch.setenv("DATASTACK_STORAGE", str(storage_dir))
    first = refresh_all_flow(str(spec), return_state=True)
    assert first.is_completed(), first.message

    upstream.set(table(31))  # upstream moved; the spec still pins the old checksum
    state = refresh_all_flow(str(spec), return_state=True)
    assert state.is_completed()  # the pinned content is still what the spec asks for
    [row] = state.result()
    assert row["status"] == "unchanged" and "changed upstream" in row["warnings"][0]
    logs = run_logs(prefect_client, flow_run_id(state))
    assert any("changed upstream" in line and "drift" in line for line in logs), logs
    by_key = {a.key: a for a in artifacts(prefect_client, flow_run_id(state))}
    assert "changed upstream" in by_key["datastack-refresh"].data  # the run's summary
    assert "changed upstream" in by_key["datastack-refresh-drift"].data  # the dataset's own
    status_table = by_key[STATUS_ARTIFACT_KEY]
    assert status_table.type == "table" and "drift" in str(status_table.data)
    run = prefect_client.read_flow_run(flow_run_id(state))
    assert run.name == "refresh-spec-all"

    single = refresh_dataset_flow("drift", str(spec), return_state=True)
    assert prefect_client.read_flow_run(flow_run_id(single)).name == "refresh-drift"

    from datastack.store import Store

    status = Store.open(storage_dir).catalog.status("drift")
    assert status is not None and status.state() == "fresh"
    assert "changed upstream" in status.last_check["warnings"][0]
    assert status.last_check["flow_run"] == str(flow_run_id(single))
