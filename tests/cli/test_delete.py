"""`datastack delete NAME` (#27.4) on both catalogs, and `gc` keeping recent versions (#27.5)."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from datastack.cli import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "datasets.yaml"


@pytest.fixture(params=["file", "mongodb"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return str(tmp_path / "store")
    return str(request.getfixturevalue("mongo_uri"))


def _spec(tmp_path: Path) -> Path:
    """iris (good), broken (a pin that never matches: fails before any version), and gated
    (its gate always fails: an attempt is aborted)."""
    shutil.copytree(EXAMPLE.parent / "data", tmp_path / "data")
    iris = (
        "    sources:\n      - url: data/iris.csv\n        sha256: "
        "91eb642c3adbc7bad8e99c930c11fa3a5cc8a07262c7a753b4e6ecf405f2e05e\n"
        "    format: csv\n    csv: {header: true, target: species}\n"
    )
    spec = tmp_path / "datasets.yaml"
    spec.write_text(
        "datasets:\n  iris:\n" + iris
        + "  broken:\n" + iris.replace("91eb642c", "00000000")
        + "  gated:\n" + iris + "    expect: {min_samples: 100000}\n"
    )
    return spec


def _status(storage: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[Any]]:
    code = main(["status", "--storage", storage, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_delete_removes_failed_and_published_datasets(
    storage: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = _spec(tmp_path)
    assert main(["refresh", "--spec", str(spec), "--storage", storage, "--engine", "local"]) == 1
    capsys.readouterr()
    code, rows = _status(storage, capsys)
    assert code == EXIT_FAILED
    assert {r["name"]: r["state"] for r in rows} == {
        "broken": "failing", "gated": "failing", "iris": "fresh"}

    # no terminal and no --yes: refused, nothing changed
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["delete", "broken", "--storage", storage]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--yes" in err and "'broken'" in err and "not a terminal" in err
    assert len(_status(storage, capsys)[1]) == 3

    for name in ("broken", "gated"):  # failed, never published: deletable
        assert main(["delete", name, "--yes", "--storage", storage]) == EXIT_OK
        assert f"{name}: deleted" in capsys.readouterr().out
    code, rows = _status(storage, capsys)
    assert code == EXIT_OK and [r["name"] for r in rows] == ["iris"]

    assert main(["delete", "iris", "--yes", "--storage", storage, "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out) == {"name": "iris", "deleted_versions": [1]}
    assert _status(storage, capsys) == (EXIT_OK, [])
    assert main(["ls", "--storage", storage, "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out) == []
    assert main(["show", "iris", "--storage", storage]) == EXIT_NOT_FOUND
    assert main(["delete", "iris", "--yes", "--storage", storage]) == EXIT_OK  # idempotent
    assert main(["delete", "nope", "--yes", "--storage", storage]) == EXIT_NOT_FOUND
    capsys.readouterr()

    from datastack.store import Store

    resources = Store.open(storage).storage
    assert resources.list_resources("datasets/iris/")  # files stay within the grace period
    assert main(["gc", "--storage", storage, "--json"]) == EXIT_OK
    assert resources.list_resources("datasets/iris/")
    assert main(["gc", "--grace", "0", "--storage", storage, "--json"]) == EXIT_OK
    assert resources.list_resources("datasets/") == []
    capsys.readouterr()
    # the name can be used again; numbers continue after the deleted versions
    assert main(["refresh", "iris", "--spec", str(spec), "--storage", storage,
                 "--engine", "local"]) == 0
    capsys.readouterr()
    assert main(["show", "iris", "--storage", storage, "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["version"] == 2


def test_delete_prompts_on_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(tmp_path)
    storage = str(tmp_path / "store")
    assert main(["refresh", "iris", "--spec", str(spec), "--storage", storage,
                 "--engine", "local"]) == 0

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal("n\n"))
    assert main(["delete", "iris", "--storage", storage]) == EXIT_OK
    assert "nothing deleted" in capsys.readouterr().out
    assert main(["show", "iris", "--storage", storage]) == EXIT_OK
    monkeypatch.setattr(sys, "stdin", Terminal("y\n"))
    assert main(["delete", "iris", "--storage", storage]) == EXIT_OK
    assert main(["show", "iris", "--storage", storage]) == EXIT_NOT_FOUND


def test_gc_keeps_versions_within_grace_and_pinned_loads_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import datastack

    spec = _spec(tmp_path)
    storage = str(tmp_path / "store")
    for _ in range(4):
        assert main(["refresh", "iris", "--spec", str(spec), "--storage", storage,
                     "--engine", "local", "--force"]) == 0
    capsys.readouterr()
    assert main(["gc", "--keep", "3", "--storage", storage, "--json"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert report["deleted_versions"] == [] and report["kept_versions_in_grace"] == [["iris", 1]]
    pinned = datastack.load("iris", "train", version=1, storage=storage)
    assert len(pinned) > 0 and len(pinned[0]) == 2


def test_status_and_ls_print_whole_values_when_piped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """(#27.11) Piped, `status` and `ls` print full timestamps and reasons, one line a row."""
    import os
    import subprocess

    spec = _spec(tmp_path)
    storage = str(tmp_path / "store")
    assert main(["refresh", "iris", "broken", "--spec", str(spec), "--storage", storage,
                 "--engine", "local"]) == 1
    capsys.readouterr()
    assert main(["status", "--storage", storage, "--json"]) == 1
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    reason = rows["broken"]["last_failure"]["reason"]
    assert len(reason) > 120
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80"}
    for command, wanted in (("status", [reason, rows["iris"]["last_success"]]),
                            ("ls", ["iris", " UTC"])):
        done = subprocess.run(
            [sys.executable, "-m", "datastack.cli", command, "--storage", storage],
            capture_output=True, text=True, timeout=120, env=env, check=False,
        )
        assert done.returncode in (0, 1), done.stderr
        lines = done.stdout.splitlines()
        for text in wanted:
            assert any(text in line for line in lines), (text, done.stdout)
        published = rows["iris"]["last_success"][:19].replace("T", " ")
        if command == "ls":
            assert any(published in line and "iris" in line for line in lines), done.stdout
