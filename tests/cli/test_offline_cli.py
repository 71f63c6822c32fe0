"""`datastack ls` and `show` offline (#27.8): what the local cache holds, not exit 3."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datastack.cli import EXIT_NOT_FOUND, EXIT_OK, EXIT_UNAVAILABLE, main
from tests.mongo_server import MongoServer
from tests.training.conftest import publish

pytestmark = pytest.mark.mongo


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("DATASTACK_CACHE_DIR", str(folder))
    monkeypatch.setenv("DATASTACK_CACHE_DIR_BYTES", "1G")
    monkeypatch.delenv("DATASTACK_OFFLINE", raising=False)
    return folder


def _ls(uri: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict], str]:
    code = main(["ls", "--storage", uri, "--json"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else []), captured.err


def test_ls_and_show_list_the_cache_offline_and_with_the_server_down(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = MongoServer(tmp_path / "mongo-data").start()
    uri = f"{server.uri}/team"
    try:
        publish(uri, "digits", tmp_path / "v1", 30, 8, seed=1)
        publish(uri, "digits", tmp_path / "v2", 20, 8, seed=2)
        publish(uri, "digits", tmp_path / "v3", 10, 8, seed=3)  # never pulled
        publish(uri, "other", tmp_path / "o1", 10, 8, seed=4)  # never pulled
        for version in ("1", "2"):
            assert main(["pull", "digits", "--version", version, "--storage", uri]) == 0
        capsys.readouterr()
        code, online, _ = _ls(uri, capsys)
        assert code == 0 and [(r["name"], r["version"]) for r in online] == [
            ("digits", 3), ("other", 1)]
        monkeypatch.setenv("DATASTACK_OFFLINE", "1")
        code, rows, _ = _ls(uri, capsys)
        assert code == EXIT_OK
        assert [(r["name"], r["version"], r["state"], r["versions_cached"]) for r in rows] == [
            ("digits", 2, "cached", [1, 2])]
        assert main(["ls", "--storage", uri]) == EXIT_OK
        captured = capsys.readouterr()
        assert "cached (offline)" in captured.out and "DATASTACK_OFFLINE=1" in captured.err
        monkeypatch.delenv("DATASTACK_OFFLINE")
    finally:
        server.stop(kill=True)
    code, rows, _ = _ls(uri, capsys)  # the server is down: the cache, not exit 3
    assert code == EXIT_OK and [r["name"] for r in rows] == ["digits"]
    assert main(["show", "digits", "--storage", uri, "--json"]) == EXIT_OK
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == 2 and "unreachable" in shown["offline"]
    assert [v["version"] for v in shown["versions"]] == [1, 2]
    assert main(["show", "digits", "--version", "1", "--storage", uri]) == EXIT_OK
    out = capsys.readouterr().out
    assert "from the local cache" in out and "digits v1" in out
    assert main(["show", "digits", "--version", "3", "--storage", uri]) == EXIT_NOT_FOUND
    assert "datastack pull digits --version 3" in capsys.readouterr().err
    assert main(["show", "other", "--storage", uri]) == EXIT_NOT_FOUND
    monkeypatch.setenv("DATASTACK_CACHE_DIR_BYTES", "0")  # no cache: unavailable, as before
    assert main(["ls", "--storage", uri]) == EXIT_UNAVAILABLE
