"""Leases that survive crashes: a SIGKILLed refresh blocks nobody (same host: taken over at
once), overlapping refreshes with --wait both end well, fencing tokens stay unique across a
MongoDB crash, an operator can unlock."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from datastack.cli import main
from datastack.store import Store
from tests.mongo_server import MongoServer
from tests.reliability.helpers import (
    arrays_spec,
    catalog_state,
    read_all,
    sigkill,
    start_child,
    wait_for_file,
    write_arrays,
)

ROOT = Path(__file__).resolve().parents[2]


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "datastack.cli", *argv], capture_output=True, text=True,
        cwd=ROOT, timeout=300,
    )


@pytest.mark.slow
def test_sigkilled_refresh_then_refresh_with_wait_proceeds_at_once(
    storage: str, tmp_path: Path
) -> None:
    spec = tmp_path / "spec.yaml"
    x1, y1 = write_arrays(tmp_path / "v1", 300, 1024, seed=1)
    arrays_spec(spec, "killed", tmp_path / "v1")
    marker, log = tmp_path / "cue", tmp_path / "child.log"
    proc = start_child(
        {"mode": "refresh", "spec": str(spec), "storage": storage, "names": ["killed"],
         "pause": "upload", "cue_bytes": 600_000, "marker": str(marker), "lease_ttl": 600},
        log,
    )
    wait_for_file(marker, proc, log, timeout=120)
    sigkill(proc)  # it held a 600 s lease
    started = time.monotonic()
    done = _cli("refresh", "killed", "--spec", str(spec), "--storage", storage,
                "--engine", "local", "--wait", "60")
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "published" in done.stdout
    assert took < 30, f"{took:.1f} s: the dead holder's lease was waited out"
    xs, ys = read_all("killed", storage)
    assert np.array_equal(xs, x1) and np.array_equal(ys, y1)
    states = catalog_state(storage)
    # the dead writer's attempt was fenced out and aborted, and its number reused (#27.6)
    assert states == [("killed", 1, "published")], states


@pytest.mark.slow
def test_two_overlapping_refreshes_with_wait_both_succeed(storage: str, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    write_arrays(tmp_path / "v1", 2000, 256, seed=3)
    arrays_spec(spec, "twice", tmp_path / "v1")
    argv = [sys.executable, "-m", "datastack.cli", "refresh", "twice", "--spec", str(spec),
            "--storage", storage, "--engine", "local", "--wait", "120"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=ROOT) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    statuses = sorted(out.split()[1] for out, _ in outputs)
    assert statuses == ["published", "unchanged"], outputs  # the second checked afresh
    assert [v for _, v, s in catalog_state(storage) if s == "published"] == [1]


@pytest.mark.mongo
@pytest.mark.slow
def test_fencing_tokens_unique_across_a_server_crash(own_mongo: MongoServer) -> None:
    uri = f"{own_mongo.uri}/tokens?serverSelectionTimeoutMS=3000"
    tokens: list[int] = []
    for _ in range(3):
        catalog = Store.open(uri).catalog
        lease = catalog.lease("fenced", ttl=1.0)
        tokens.append(lease.token)
        own_mongo.stop(kill=True)  # SIGKILL right after the lease was granted
        own_mongo.start()
        time.sleep(1.1)  # the lease expires
    catalog = Store.open(uri).catalog
    tokens.append(catalog.lease("fenced", ttl=5.0).token)
    assert tokens == sorted(set(tokens)), tokens  # never handed out twice


def test_unlock_is_fenced_by_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    storage = str(tmp_path / "store")
    catalog = Store.open(storage).catalog
    lease = catalog.lease("stuck", owner="otherhost:1234:x", ttl=600)
    assert main(["unlock", "stuck", "--storage", storage, "--token", str(lease.token + 1)]) == 2
    assert "not token" in capsys.readouterr().err
    assert catalog.lease_state("stuck").owner == "otherhost:1234:x"
    assert main(["unlock", "stuck", "--storage", storage]) == 0
    assert f"token {lease.token}" in capsys.readouterr().out
    assert catalog.lease_state("stuck").owner is None
    assert catalog.lease("stuck", ttl=5).token == lease.token + 1


def test_short_outage_while_renewing_keeps_the_lease(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    """A renewal that finds the storage unavailable is retried, not given up."""
    from datastack.catalog.leases import Heartbeat
    from datastack.errors import StorageUnavailableError

    catalog = Store.open(str(tmp_path / "store")).catalog
    lease = catalog.lease("flaky", ttl=30)
    calls: list[int] = []
    original = lease.renew

    def renew(ttl: Any = None) -> None:
        calls.append(1)
        if len(calls) <= 2:
            raise StorageUnavailableError("MongoDB at mongodb://h/db is unavailable")
        original(ttl)

    monkeypatch.setattr(lease, "renew", renew)
    beat = Heartbeat(lease, 0.05)
    beat.start()
    deadline = time.monotonic() + 10
    while len(calls) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    beat.stop()
    assert len(calls) >= 4 and beat.lost is None and lease.is_held()
    assert not [t for t in threading.enumerate() if t.name == "datastack-lease-flaky"]
