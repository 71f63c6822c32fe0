"""(#27.11) A gate failure is an expected outcome: one log line with the reason in the flow
run's logs (read back through the Prefect API), not tracebacks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.flows.conftest import flow_run_id, run_logs, write_spec

pytest.importorskip("prefect")


def test_gate_failure_logs_one_line_with_the_reason_and_no_traceback(
    prefect_harness: str, prefect_client: Any, serve_csv: Any, storage_dir: Path,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.refresh import refresh_dataset_flow

    served = serve_csv("gated", rows=30)
    spec = write_spec(tmp_path / "spec.yaml", [served])
    doc = yaml.safe_load(spec.read_text())
    doc["datasets"]["gated"]["expect"] = {"min_samples": 1000}
    spec.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("DATASTACK_STORAGE", str(storage_dir))
    state = refresh_dataset_flow("gated", str(spec), return_state=True)
    assert state.is_failed()
    logs = run_logs(prefect_client, flow_run_id(state))
    assert not [line for line in logs if "Traceback" in line], logs
    reason = "gate min_samples: expected at least 1000 samples, got 30"
    with_reason = [line for line in logs if reason in line]
    assert 1 <= len(with_reason) <= 2, with_reason  # the task's state, the dataset's outcome
    assert all("\n" not in line for line in with_reason), with_reason
    assert not [line for line in logs if "not retrying" in line], logs
    from datastack.store import Store

    status = Store.open(storage_dir).catalog.status("gated")
    assert status is not None and reason in status.last_failure["reason"]
