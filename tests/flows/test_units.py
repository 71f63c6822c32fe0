"""Fast tests of the flow helpers and deployment definitions: no Prefect server needed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from datastack.errors import (
    ChecksumError,
    ConfigurationError,
    LockHeldError,
    RetrievalError,
    SpecError,
    StorageUnavailableError,
)
from tests.flows.conftest import SENTINEL, Served, write_spec

pytest.importorskip("prefect")

from flows.refresh import summary_markdown
from flows.tasks import is_transient, resolve_storage


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (RetrievalError("dataset 'a': http://h/a.csv answered HTTP 404 NOT FOUND; not retried"),
         False),
        (RetrievalError("http://h/a.csv answered HTTP 403 Forbidden"), False),
        # the retriever retried these itself (#27.3: one layer retries, not both)
        (RetrievalError("http://h/a.csv answered HTTP 408 Request Timeout"), False),
        (RetrievalError("http://h/a.csv: connection reset after 5 retries"), False),
        (RetrievalError("the host name 'h.invalid' does not resolve; not retried"), False),
        (StorageUnavailableError("mongodb://h/db unreachable"), True),
        (ConnectionResetError("reset"), True),
        (TimeoutError("slow"), True),
        (ChecksumError("a.csv: expected sha256 aa, got bb"), False),
        (SpecError("spec.yaml: dataset 'a': key 'format': bad"), False),
        (LockHeldError("a: lease held"), False),
        (ValueError("a bug"), False),
    ],
)
def test_is_transient_classifies_errors(exc: BaseException, expected: bool) -> None:
    assert is_transient(exc) is expected


def test_resolve_storage_reads_env_and_refuses_uris(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEAM_STORE", f"mongodb://u:{SENTINEL}@db/team")
    assert resolve_storage("TEAM_STORE") == f"mongodb://u:{SENTINEL}@db/team"
    with pytest.raises(ConfigurationError) as info:
        resolve_storage(f"mongodb://u:{SENTINEL}@db/team")
    assert SENTINEL not in str(info.value)
    monkeypatch.delenv("UNSET_STORE", raising=False)
    monkeypatch.setenv("DATASTACK_STORAGE", "/srv/store")
    assert resolve_storage("UNSET_STORE") == "/srv/store"


def test_summary_markdown_counts_rows_and_redacts() -> None:
    rows = [
        {"name": "a", "status": "published", "version": 2, "splits": {"train": 8, "test": 2},
         "duration_s": 1.25, "reason": "spec changed"},
        {"name": "b", "status": "unchanged", "version": 1, "splits": {}, "duration_s": 0.1,
         "reason": "unchanged since version 1"},
        {"name": "c", "status": "failed", "version": None, "splits": {}, "duration_s": 0.2,
         "reason": f"RetrievalError: http://u:{SENTINEL}@h/c.csv answered HTTP 404 | x"},
    ]
    text = summary_markdown(rows, f"mongodb://u:{SENTINEL}@db/team")
    assert text.splitlines()[0] == "# datastack refresh: 1 published, 1 unchanged, 1 failed"
    assert "| a | published | v2 | train=8, test=2 | 1.25 | spec changed |" in text
    assert "| c | failed | - | - |" in text
    assert "mongodb://u:***@db/team" in text
    assert "404 \\| x" in text  # pipes escaped: the table keeps its columns
    assert SENTINEL not in text


def _spec(tmp_path: Path) -> Path:
    served = [
        Served("alpha", "/alpha.csv", b"x,label\n1,a\n", "http://127.0.0.1:9/alpha.csv"),
        Served("beta", "/beta.csv", b"x,label\n1,b\n", "http://127.0.0.1:9/beta.csv"),
        Served("gamma", "/gamma.csv", b"x,label\n1,c\n", "http://127.0.0.1:9/gamma.csv"),
    ]
    return write_spec(tmp_path / "spec.yaml", served,
                      schedules={"alpha": "0 3 * * *", "gamma": "*/15 * * * 1-5"})


def test_build_deployments_from_spec(tmp_path: Path) -> None:
    from deployments.build import ENTRYPOINT, build_deployments

    spec = _spec(tmp_path)
    deployments = build_deployments(spec, storage_env="TEAM_STORE", work_pool=None)
    assert [d.name for d in deployments] == ["refresh-alpha", "refresh-gamma"]
    first = deployments[0]
    assert first.entrypoint == ENTRYPOINT == "flows/refresh.py:refresh_dataset_flow"
    assert first.parameters == {"name": "alpha", "spec_path": str(spec.resolve()),
                                "storage_env": "TEAM_STORE"}
    crons = [d.schedules[0].schedule.cron for d in deployments]
    assert crons == ["0 3 * * *", "*/15 * * * 1-5"]
    assert all(d.schedules[0].schedule.timezone == "UTC" for d in deployments)


def test_generated_prefect_yaml_matches_builder(tmp_path: Path) -> None:
    from deployments.generate import prefect_yaml, render

    spec = _spec(tmp_path)
    doc = yaml.safe_load(render(prefect_yaml(spec, work_pool="pool-a"), spec))
    names = [d["name"] for d in doc["deployments"]]
    assert names == ["refresh-alpha", "refresh-gamma"]
    gamma = doc["deployments"][1]
    assert gamma["entrypoint"] == "flows/refresh.py:refresh_dataset_flow"
    assert gamma["schedules"] == [{"cron": "*/15 * * * 1-5", "timezone": "UTC", "active": True}]
    assert gamma["work_pool"]["name"] == "pool-a"
    assert gamma["parameters"]["storage_env"] == "DATASTACK_STORAGE"
    assert "storage" not in gamma["parameters"]


def test_generate_writes_an_untracked_file_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """(#27.12) `python -m deployments.generate` never overwrites the tracked example."""
    from deployments.generate import DEFAULT_OUTPUT, EXAMPLE_OUTPUT, main

    spec = _spec(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    before = EXAMPLE_OUTPUT.read_bytes()
    assert main(["--spec", str(spec)]) == 0
    written = yaml.safe_load((work / DEFAULT_OUTPUT).read_text())
    assert [d["name"] for d in written["deployments"]] == ["refresh-alpha", "refresh-gamma"]
    assert f"--prefect-file {DEFAULT_OUTPUT}" in (work / DEFAULT_OUTPUT).read_text()
    capsys.readouterr()
    assert main(["--spec", str(spec), "-o", "-"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["deployments"] == written["deployments"]
    with pytest.raises(SystemExit):
        main(["--spec", str(spec), "-o", str(EXAMPLE_OUTPUT)])
    assert "tracked example" in capsys.readouterr().err
    assert EXAMPLE_OUTPUT.read_bytes() == before


def test_committed_prefect_yaml_is_current() -> None:
    """deployments/prefect.yaml is what the generator writes for the example spec."""
    from deployments.generate import prefect_yaml

    root = Path(__file__).resolve().parents[2]
    committed = yaml.safe_load((root / "deployments" / "prefect.yaml").read_text())
    fresh = prefect_yaml(root / "deployments" / "datasets.example.yaml")
    assert committed["deployments"] == fresh["deployments"]


def test_run_refresh_local_engine_needs_no_prefect_server(tmp_path: Path) -> None:
    """engine="local" is the library path: same results type, no flow run."""
    from flows.refresh import run_refresh

    data = tmp_path / "d.csv"
    data.write_bytes(b"x,label\n1,a\n2,b\n3,a\n4,b\n")
    import hashlib

    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "datasets:\n  local-one:\n    sources:\n"
        f"      - url: {data.as_uri()}\n        sha256: {digest}\n"
        "    format: csv\n    csv: {target: label}\n"
    )
    (first,) = run_refresh(spec, storage=str(tmp_path / "store"), engine="local")
    assert (first.status, first.version) == ("published", 1)
    (second,) = run_refresh(spec, storage=str(tmp_path / "store"), engine="local")
    assert (second.status, second.version) == ("unchanged", 1)
    with pytest.raises(ConfigurationError):
        run_refresh(spec, engine="celery")
