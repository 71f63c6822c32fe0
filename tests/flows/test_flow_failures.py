"""On the Prefect engine too: a foreign exception while preparing one dataset is that dataset's
failure (#26.17), and an unreachable source is neither retried by the downloader nor by the
task retries (#27.3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.flows.conftest import flow_run_id, task_runs
from tests.mongo_server import free_port

pytest.importorskip("prefect")
pytestmark = [pytest.mark.prefect, pytest.mark.timeout(240)]

PREP = '''
class Unforeseen(Exception):
    pass


def prepare(spec, sources, out_path):
    raise Unforeseen("the vendor changed the layout of row 17")
'''


def test_foreign_exception_and_unreachable_source_fail_only_their_dataset(
    prefect_harness: str, prefect_client: Any, serve_csv: Any, storage_dir: Path,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.refresh import refresh_all_flow

    (tmp_path / "flowprep.py").write_text(PREP)
    monkeypatch.syspath_prepend(str(tmp_path))
    good = serve_csv("good", rows=20)
    refused = f"http://127.0.0.1:{free_port()}/x.csv"
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"datasets": {
        "foreign": {"sources": [{"url": good.url, "sha256": good.sha256}],
                    "preprocessor": "flowprep:prepare"},
        "refused": {"sources": [{"url": refused, "sha256": good.sha256}], "format": "csv"},
        "good": {"sources": [{"url": good.url, "sha256": good.sha256}], "format": "csv",
                 "csv": {"target": "label"}},
    }}, sort_keys=False))
    monkeypatch.setenv("DATASTACK_STORAGE", str(storage_dir))
    state = refresh_all_flow(str(spec), retry_delay_s=0.1, return_state=True)
    assert state.is_failed()
    rows = {r["name"]: r for r in state.result(raise_on_failure=False).results}
    assert rows["good"]["status"] == "published"
    assert rows["foreign"]["status"] == "failed"
    assert "Unforeseen: the vendor changed the layout of row 17" in rows["foreign"]["reason"]
    assert rows["refused"]["status"] == "failed"
    assert "refused the connection" in rows["refused"]["reason"]
    runs = {r.name: r for r in task_runs(prefect_client, flow_run_id(state))}
    assert runs["retrieve-sources[refused]"].run_count == 1
    assert runs["prepare-version[foreign]"].run_count == 1

    from datastack.store import Store

    catalog = Store.open(str(storage_dir)).catalog
    assert catalog.status("foreign").state() == "failing"
    assert catalog.status("refused").state() == "failing"
    assert catalog.status("good").state() == "fresh"


def test_default_engine_cli_fails_fast_on_unreachable_sources(
    prefect_harness: str, tmp_path: Path
) -> None:
    """`datastack refresh` with the default engine (Prefect, here against the test server):
    a refused port and a name that does not resolve, each tried once, in well under 20 s."""
    import os
    import subprocess
    import sys
    import time

    pin = "ab" * 32
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"datasets": {
        "refused": {"sources": [{"url": f"http://127.0.0.1:{free_port()}/a.csv",
                                 "sha256": pin}], "format": "csv"},
        "unknown": {"sources": [{"url": "https://mirror.datastack-test.invalid/b.csv",
                                 "sha256": pin}], "format": "csv"},
    }}))
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PREFECT_API_URL": prefect_harness, "PYTHONPATH": str(root)}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "datastack.cli", "refresh", "--spec", str(spec),
         "--storage", str(tmp_path / "store")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 1, (done.stdout, done.stderr)
    err = done.stderr
    assert "refused the connection" in err and "does not resolve" in err, err
    assert "retrying" not in err and "max_retries" not in err
    assert elapsed < 20, f"{elapsed:.1f} s"
