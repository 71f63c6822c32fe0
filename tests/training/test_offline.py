"""Offline after `datastack pull`, read-through fills, and fast fail-over."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from datastack.cli import main
from datastack.errors import NotCachedError
from datastack.offline import CachedVersionWarning
from tests.mongo_server import MongoServer
from tests.training.conftest import publish

pytestmark = pytest.mark.mongo
ROOT = Path(__file__).resolve().parents[2]

_READER = textwrap.dedent(
    """
    import json, sys, time, warnings
    import numpy as np
    import datastack
    from datastack.errors import NotCachedError

    storage, version = sys.argv[1], (int(sys.argv[2]) if sys.argv[2] != "-" else None)
    t0 = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            it = datastack.load("digits", storage=storage, version=version)
        except NotCachedError as exc:
            print(json.dumps({"error": str(exc), "s": time.monotonic() - t0}))
            sys.exit(0)
    x = np.stack([np.asarray(it[i][0]) for i in range(len(it))])
    print(json.dumps({"sum": float(x.sum()), "n": len(it), "s": time.monotonic() - t0,
                      "warnings": [str(w.message) for w in caught]}))
    """
)


def _read_in_new_process(tmp_path: Path, storage: str, version: int | None, **env: str) -> dict:
    script = tmp_path / "reader.py"
    script.write_text(_READER)
    done = subprocess.run(
        [sys.executable, str(script), storage, "-" if version is None else str(version)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_offline_after_pull_with_the_server_stopped(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = MongoServer(tmp_path / "mongo-data").start()
    uri = f"{server.uri}/team"
    try:
        x1 = publish(uri, "digits", tmp_path / "v1", 300, 64, seed=1)
        x2 = publish(uri, "digits", tmp_path / "v2", 200, 64, seed=2)
        publish(uri, "digits", tmp_path / "v3", 100, 64, seed=3)  # never pulled
        assert main(["pull", "digits", "--version", "1", "--storage", uri]) == 0
        assert main(["pull", "digits", "--version", "2", "--storage", uri]) == 0
        assert main(["pull", "digits", "--version", "2", "--storage", uri]) == 0
        out = capsys.readouterr().out
        assert "digits v1" in out and "pulled" in out and "already in the local cache" in out
    finally:
        server.stop(kill=True)
    t0 = time.monotonic()
    pinned = _read_in_new_process(tmp_path, uri, 1)
    assert pinned["n"] == 300 and pinned["sum"] == pytest.approx(float(x1.sum()), rel=1e-6)
    latest = _read_in_new_process(tmp_path, uri, None)
    assert latest["n"] == 200 and latest["sum"] == pytest.approx(float(x2.sum()), rel=1e-6)
    assert any("version 2" in w and "newest version in the local cache" in w
               for w in latest["warnings"]), latest
    missing = _read_in_new_process(tmp_path, uri, 3)
    assert "datastack pull digits --version 3" in missing["error"]
    assert "unreachable" in missing["error"] and "cached versions: [1, 2]" in missing["error"]
    assert time.monotonic() - t0 < 60  # fail-over is a short ping, not a 10 s timeout each


def test_offline_env_and_read_through_fill(mongo_uri: str, tmp_path: Path, cache_dir: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import datastack
    from datastack.storage.diskcache import _FILL_THREADS, default_disk_cache

    x = publish(mongo_uri, "digits", tmp_path / "v1", 400, 32, seed=4)
    monkeypatch.setenv("DATASTACK_OFFLINE", "1")
    with pytest.raises(NotCachedError, match="offline .DATASTACK_OFFLINE=1.*datastack pull"):
        datastack.load("digits", storage=mongo_uri)
    monkeypatch.setenv("DATASTACK_CACHE_DIR_BYTES", "0")
    with pytest.raises(NotCachedError, match="local cache is disabled"):
        datastack.load("digits", storage=mongo_uri)
    monkeypatch.setenv("DATASTACK_CACHE_DIR_BYTES", "1G")
    monkeypatch.delenv("DATASTACK_OFFLINE")
    online = datastack.load("digits", storage=mongo_uri)  # starts a background fill
    assert np.allclose(online.get_batch(range(400))[0], x)
    for thread in list(_FILL_THREADS):
        thread.join(30)
    cache = default_disk_cache()
    assert cache is not None and cache.usage() > x.nbytes
    monkeypatch.setenv("DATASTACK_OFFLINE", "1")
    with pytest.warns(CachedVersionWarning, match="'digits' version 1"):
        offline = datastack.load("digits", storage=mongo_uri)
    assert np.array_equal(offline.get_batch(range(400))[0], online.get_batch(range(400))[0])
    assert type(offline).__name__ == type(online).__name__  # same iterator semantics
    assert offline[-1][1] == online[-1][1] and len(offline[10:20]) == 10


def test_flipped_byte_in_the_cache_is_refetched(mongo_uri: str, tmp_path: Path,
                                               cache_dir: Path) -> None:
    import datastack
    from datastack.storage.diskcache import default_disk_cache

    x = publish(mongo_uri, "digits", tmp_path / "v1", 300, 32, seed=5)
    assert main(["pull", "digits", "--storage", mongo_uri]) == 0
    cache = default_disk_cache()
    assert cache is not None
    (_, _, sha), = cache.entries()
    path = cache._object(sha)
    os.chmod(path, 0o644)
    with open(path, "r+b") as fh:  # a byte of the sample data, near the end of the file
        fh.seek(path.stat().st_size - 5000)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0x55]))
    it = datastack.load("digits", storage=mongo_uri)  # detected, deleted, read from GridFS
    assert np.array_equal(it.get_batch(range(300))[0], x)
    assert main(["pull", "digits", "--storage", mongo_uri]) == 0  # fetched again
    assert cache.path(sha) is not None


def test_pull_errors_and_local_storage(tmp_path: Path, cache_dir: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "store")
    publish(store, "digits", tmp_path / "v1", 50, 8, seed=6)
    assert main(["pull", "digits", "--storage", store]) == 0
    assert "is local; nothing to pull" in capsys.readouterr().out
    assert main(["pull", "nope", "--storage", store]) == 4
    assert main(["pull", "Bad/Name", "--storage", store]) == 2
    assert main(["pull", "digits", "--version", "0", "--storage", store]) == 2
