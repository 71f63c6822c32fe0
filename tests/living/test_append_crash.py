"""Crash safety of appends (#24.7): a refresh SIGKILLed at any point of an append (while its
new shard is uploaded, or just before the catalog flip) leaves the previous version served,
blocks nobody (the dead holder's lease is taken over at once on the same host), and `gc`
removes what it left; the next refresh publishes the grown version."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

import datastack
from datastack.canonical.layout import shards_of
from datastack.cli import main
from datastack.store import Store
from tests.living.test_appends import _csv, _rows, _samples, _spec
from tests.reliability.helpers import sigkill, start_child, wait_for_file

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("pause", ["upload", "publish"])
def test_an_append_killed_at_any_point_leaves_the_previous_version_served(
    storage: str, tmp_path: Path, pause: str, capsys: pytest.CaptureFixture[str],
) -> None:
    source = tmp_path / "live.csv"
    old = _rows(0, 2000)
    source.write_text(_csv(old))
    spec = _spec(tmp_path, source, "csv", shard_bytes="16K")
    [first] = datastack.refresh(spec, storage=storage)
    assert first.status == "published", first.reason
    v1 = _samples(storage, 1)
    with source.open("a") as f:
        f.write(_csv(_rows(2000, 300))[len(_csv([])):])

    marker, log = tmp_path / "cue", tmp_path / "child.log"
    proc = start_child(
        {"mode": "refresh", "spec": str(spec), "storage": storage, "names": ["live"],
         "pause": pause, "cue_bytes": 2_000, "marker": str(marker), "lease_ttl": 600},
        log,
    )
    wait_for_file(marker, proc, log, timeout=120)
    sigkill(proc)  # it held a 600 s lease, mid-append
    catalog = Store.open(storage).catalog
    assert catalog.latest("live").version == 1  # the previous version is served...
    assert _samples(storage, 1) == v1  # ...whole

    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "datastack.cli", "refresh", "live", "--spec", str(spec),
         "--storage", storage, "--engine", "local", "--wait", "60"],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 30  # the dead holder blocked nobody for long
    v2 = catalog.latest("live")
    assert v2.version == 2 and sum(v2.splits.values()) == 2300
    assert {s: rows[: len(v1[s])] for s, rows in _samples(storage, 2).items()} == v1

    assert main(["gc", "--keep", "1", "--grace", "0", "--storage", storage, "--json"]) == 0
    capsys.readouterr()
    kept = {e["identifier"] for es in shards_of(catalog.latest("live")).values() for e in es}
    referenced = set(catalog.latest("live").resource_identifiers) | kept
    left = set(Store.open(storage).storage.list_resources("datasets/live/"))
    assert left <= referenced, sorted(left - referenced)  # nothing of the dead attempt stays
    assert kept <= left
