"""The `datastack` command: help, exit codes, ls/show/gc on a refreshed example spec."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from datastack.cli import EXIT_NOT_FOUND, EXIT_UNAVAILABLE, EXIT_USAGE, main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "datasets.yaml"


@pytest.mark.parametrize(
    "argv", [[], ["refresh"], ["ls"], ["show"], ["gc"], ["status"], ["unlock"]]
)
def test_help_everywhere(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, "--help"]) == 0  # main returns the exit code, also for --help
    assert "usage: datastack" in capsys.readouterr().out


def test_ls_empty_storage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", "--storage", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_refresh_show_gc_on_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "datasets.yaml"
    shutil.copy(EXAMPLE, spec)
    shutil.copytree(EXAMPLE.parent / "data", tmp_path / "data")
    store = str(tmp_path / "store")
    assert main(["refresh", "--spec", str(spec), "--storage", store, "--engine", "local"]) == 0
    out = capsys.readouterr().out
    assert out.count("published") >= 3
    assert main(["show", "iris", "--storage", store]) == 0
    shown = capsys.readouterr().out
    assert "iris v1" in shown and "encoding species: 0=setosa" in shown

    # A forced refresh publishes v2; gc --keep 1 --grace 0 deletes v1 and its data file.
    assert main(["refresh", "iris", "--spec", str(spec), "--storage", store, "--engine",
                 "local", "--force"]) == 0
    capsys.readouterr()
    assert main(["gc", "--keep", "1", "--grace", "0", "--storage", store, "--json"]) == 0
    capsys.readouterr()
    assert main(["show", "iris", "--storage", store, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["version"] == 2
    folder = Path(store) / "resources" / "datasets" / "iris"  # one folder per attempt (#27.6)
    assert not list(folder.glob("v1-*")) and not (folder / "v1").exists()
    assert not list(folder.glob("v*/data.h5"))  # a version is a manifest of shards
    shards = {r["identifier"].rsplit("/", 1)[-1] for r in record["resources"]
              if r.get("kind") == "shard"}
    assert shards and {p.name for p in (folder / "shards").iterdir()} == shards
    assert main(["show", "iris", "--version", "1", "--storage", store]) == EXIT_NOT_FOUND


def test_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets:\n  x:\n    sources: []\n    formt: csv\n")
    assert main(["refresh", "--spec", str(bad), "--storage", str(tmp_path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "'x'" in err and "formt" in err
    assert main(["show", "nope", "--storage", str(tmp_path)]) == EXIT_NOT_FOUND
    assert main(["show", "../etc", "--storage", str(tmp_path)]) == EXIT_USAGE
    assert main(["gc", "--keep", "0", "--storage", str(tmp_path)]) == EXIT_USAGE
    assert main(["ls", "--storage", "ftp://host/x"]) == EXIT_USAGE


def test_unreachable_mongo_is_exit_3_without_password(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.mongo_server import free_port

    uri = f"mongodb://alice:SENTINEL_PW@127.0.0.1:{free_port()}/team?serverSelectionTimeoutMS=300"
    assert main(["ls", "--storage", uri]) == EXIT_UNAVAILABLE
    captured = capsys.readouterr()
    assert "SENTINEL_PW" not in captured.out + captured.err
    assert "storage unavailable" in captured.err


def test_import_is_light_and_fast() -> None:
    code = (
        "import sys, time; t = time.perf_counter(); import datastack; "
        "dt = time.perf_counter() - t; "
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'prefect', 'torch', 'pymongo', 'h5py', 'requests', 'numpy', 'yaml', 'pandas', "
        "'pyarrow', 'PIL', 'openpyxl', 'starlette', 'jinja2', 'uvicorn'}); "
        "print(dt, heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split(" ", 1)
    assert out[1].strip() == "[]"
    assert float(out[0]) < 0.5  # generous: measured ~5 ms; guards against heavy imports


def test_refresh_without_spec_uses_builtin_definitions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["refresh", "--storage", str(tmp_path)]) == EXIT_USAGE
    assert "datastack refresh mnist" in capsys.readouterr().err
    assert main(["refresh", "no-such-set", "--storage", str(tmp_path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "mnist" in err and "fashion-mnist" in err and "no-such-set" in err


def test_refresh_output_is_one_line_per_dataset_and_each_failure_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "datasets.yaml"
    shutil.copy(EXAMPLE, spec)
    shutil.copytree(EXAMPLE.parent / "data", tmp_path / "data")
    store = str(tmp_path / "store")
    assert main(["refresh", "--spec", str(spec), "--storage", store, "--engine", "local"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert sorted(line.split()[0] for line in lines) == ["digits", "iris", "wine"]
    assert all(line.split().count("published") == 1 for line in lines), lines
    spec.write_text(re.sub(r"sha256: [0-9a-f]{64}", "sha256: " + "a" * 64, spec.read_text(),
                           count=1))  # the first source no longer matches its pin
    assert main(["refresh", "--spec", str(spec), "--storage", store, "--engine", "local",
                 "--force"]) == 1
    captured = capsys.readouterr()
    both = captured.out + captured.err
    assert both.count("ChecksumError") == 1, both
