"""Deployments built from a spec, checked through the Prefect API, and run end to end:
``serve`` in a subprocess, and the work-pool route (``prefect deploy`` + a process worker)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.flows.conftest import write_spec

pytest.importorskip("prefect")
pytestmark = [pytest.mark.prefect, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]


def _env(storage: Path, api_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "PREFECT_API_URL": api_url,
        "DATASTACK_STORAGE": str(storage),
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        "PWD": str(ROOT),
    })
    return env


def _wait_for_deployment(client: Any, name: str, timeout: float = 60.0) -> Any:
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.read_deployment_by_name(name)
        except ObjectNotFound:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _stop(process: subprocess.Popen[bytes]) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return (process.stdout.read() if process.stdout else b"").decode(errors="replace")


def test_built_deployments_applied_and_read_back(
    prefect_harness: str, prefect_client: Any, serve_csv: Any, tmp_path: Path
) -> None:
    from deployments.build import build_deployments

    served = [serve_csv("apply-a"), serve_csv("apply-b"), serve_csv("apply-c")]
    spec = write_spec(tmp_path / "spec.yaml", served,
                      schedules={"apply-a": "0 3 * * *", "apply-c": "15 */6 * * 1-5"})
    built = build_deployments(spec, storage_env="TEAM_STORE")
    for deployment in built:
        deployment.apply()
    expected = {"apply-a": "0 3 * * *", "apply-c": "15 */6 * * 1-5"}
    for name, cron in expected.items():
        deployment = prefect_client.read_deployment_by_name(f"refresh-dataset/refresh-{name}")
        assert deployment.entrypoint == "flows/refresh.py:refresh_dataset_flow"
        assert deployment.parameters == {"name": name, "spec_path": str(spec.resolve()),
                                         "storage_env": "TEAM_STORE"}
        (schedule,) = deployment.schedules
        assert schedule.schedule.cron == cron and schedule.schedule.timezone == "UTC"
        assert schedule.active
        assert set(deployment.tags) == {"datastack", "refresh"}
    from prefect.exceptions import ObjectNotFound

    with pytest.raises(ObjectNotFound):
        prefect_client.read_deployment_by_name("refresh-dataset/refresh-apply-b")


@pytest.mark.slow
def test_served_deployment_runs_end_to_end(
    prefect_harness: str, prefect_client: Any, serve_csv: Any, storage_dir: Path,
    tmp_path: Path,
) -> None:
    from prefect.deployments import run_deployment

    from datastack.catalog import open_catalog

    spec = write_spec(tmp_path / "spec.yaml", [serve_csv("served", rows=50)],
                      schedules={"served": "0 4 * * *"})
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "deployments" / "serve.py"), "--spec", str(spec)],
        env=_env(storage_dir, prefect_harness), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, cwd=tmp_path,
    )
    try:
        _wait_for_deployment(prefect_client, "refresh-dataset/refresh-served")
        run = run_deployment("refresh-dataset/refresh-served", timeout=150)
        assert run.state.is_completed(), (run.state, _stop(process)[-3000:])
    finally:
        output = _stop(process)
    assert open_catalog(str(storage_dir)).latest("served").splits == {"train": 40, "test": 10}
    assert "SENTINEL" not in output
    deployment = prefect_client.read_deployment_by_name("refresh-dataset/refresh-served")
    assert not deployment.paused  # pause_on_shutdown=False keeps the schedule


@pytest.mark.slow
def test_prefect_deploy_to_process_pool_and_worker_run(
    prefect_harness: str, prefect_client: Any, serve_csv: Any, storage_dir: Path,
    tmp_path: Path,
) -> None:
    """The documented work-pool route: generate prefect.yaml, `prefect deploy --all`, a
    process worker picks the run up."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.deployments import run_deployment

    from datastack.catalog import open_catalog
    from deployments.generate import prefect_yaml, render

    spec = write_spec(tmp_path / "spec.yaml", [serve_csv("pooled", rows=20)],
                      schedules={"pooled": "45 2 * * 0"})
    prefect_file = tmp_path / "prefect.yaml"
    prefect_file.write_text(render(prefect_yaml(spec, work_pool="ds-test-pool"), spec))
    prefect_client.create_work_pool(WorkPoolCreate(name="ds-test-pool", type="process"),
                                    overwrite=True)
    env = _env(storage_dir, prefect_harness)
    deploy = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all", "--prefect-file",
         str(prefect_file)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert deploy.returncode == 0, deploy.stdout[-2000:] + deploy.stderr[-2000:]
    deployment = prefect_client.read_deployment_by_name("refresh-dataset/refresh-pooled")
    assert deployment.entrypoint == "flows/refresh.py:refresh_dataset_flow"
    assert deployment.work_pool_name == "ds-test-pool"
    assert deployment.parameters["name"] == "pooled"
    assert deployment.schedules[0].schedule.cron == "45 2 * * 0"
    assert deployment.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]

    run = run_deployment("refresh-dataset/refresh-pooled", timeout=0)
    worker = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "ds-test-pool",
         "--type", "process", "--run-once"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while not (state := prefect_client.read_flow_run(run.id).state).is_final():
            assert time.monotonic() < deadline, "worker did not finish the run in 120 s"
            time.sleep(1)
    finally:
        output = _stop(worker)
    assert state.is_completed(), (state, output[-3000:])
    assert open_catalog(str(storage_dir)).latest("pooled").version == 1


def test_alert_automation_file_is_a_valid_prefect_automation() -> None:
    """docs/living.md tells operators to create it with `prefect automation create`."""
    import yaml
    from prefect.events.schemas.automations import AutomationCore

    path = Path(__file__).resolve().parents[2] / "deployments" / "alert-on-failure.yaml"
    [automation] = yaml.safe_load(path.read_text())["automations"]
    model = AutomationCore.model_validate(automation)
    assert model.trigger.expect == {"prefect.flow-run.Failed"}
    assert model.actions[0].type == "send-notification"
