"""Scenarios 3 and 4: two refreshes of one dataset at once, a stalled writer fenced off, and a
reader iterating version N while N+1 is published and ``gc --keep 1`` runs.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from datastack.api import refresh
from datastack.cli import main
from datastack.factory import factory_for
from datastack.pipeline.sequence import refresh_dataset
from datastack.specs import load_selected as select_specs
from datastack.store import Store
from tests.reliability.helpers import (
    arrays_spec,
    catalog_state,
    finish_child,
    read_all,
    release_barrier,
    start_child,
    wait_for_file,
    write_arrays,
)


@pytest.mark.parametrize("wait_s", [0.0, 60.0], ids=["no-wait", "wait"])
def test_two_refreshes_at_once_publish_exactly_one_version(
    storage: str, tmp_path: Path, wait_s: float
) -> None:
    x, y = write_arrays(tmp_path / "src", 2000, 64, seed=3)
    spec = arrays_spec(tmp_path / "spec.yaml", "race", tmp_path / "src")
    barrier = tmp_path / "go"
    logs = [tmp_path / f"child{i}.log" for i in range(2)]
    procs = [
        start_child({"mode": "refresh", "spec": str(spec), "storage": storage,
                     "names": ["race"], "barrier": str(barrier), "wait_s": wait_s}, log)
        for log in logs
    ]
    release_barrier(barrier, 2, procs)
    results = [finish_child(p, log)["results"][0] for p, log in zip(procs, logs, strict=True)]
    statuses = sorted(r["status"] for r in results)
    if wait_s:
        assert statuses == ["published", "unchanged"], results
    else:
        assert statuses in (["locked", "published"], ["published", "unchanged"]), results
    for r in results:
        if r["status"] == "locked":
            assert "locked by" in r["reason"] and "race" in r["reason"], r
    assert catalog_state(storage) == [("race", 1, "published")]
    xs, ys = read_all("race", storage)
    assert np.array_equal(xs, x) and np.array_equal(ys, y)


@pytest.mark.slow
def test_stalled_writer_cannot_publish_over_a_newer_one(storage: str, tmp_path: Path) -> None:
    """Writer A stalls past its lease before publishing; B takes over and publishes; A's late
    publish is refused by the fencing token and nothing is duplicated.

    The stall is a frozen process (SIGSTOP): a live process keeps its lease through the
    pipeline's heartbeat, so only a process that stops running loses it."""
    write_arrays(tmp_path / "a", 100, 8, seed=1)
    spec_a = arrays_spec(tmp_path / "a.yaml", "fenced", tmp_path / "a")
    xb, yb = write_arrays(tmp_path / "b", 120, 8, seed=2)
    spec_b = arrays_spec(tmp_path / "b.yaml", "fenced", tmp_path / "b")
    marker, log = tmp_path / "cue", tmp_path / "a.log"
    proc = start_child(
        {"mode": "refresh", "spec": str(spec_a), "storage": storage, "names": ["fenced"],
         "pause": "publish", "pause_seconds": 4.0, "marker": str(marker), "lease_ttl": 1.0},
        log,
    )
    wait_for_file(marker, proc, log, timeout=120)
    _freeze_outside_the_catalog_lock(proc.pid, storage, "fenced")
    try:
        [b_spec] = select_specs(spec_b)
        b = refresh_dataset(factory_for(b_spec), Store.open(storage), wait_s=10)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert b.status == "published", b
    a = finish_child(proc, log)["results"][0]
    assert a["status"] in {"failed", "locked"}, a
    assert "lease" in a["reason"], a
    published = [v for _, v, s in catalog_state(storage) if s == "published"]
    assert published == [b.version]
    xs, ys = read_all("fenced", storage)
    assert np.array_equal(xs, xb) and np.array_equal(ys, yb)


def _freeze_outside_the_catalog_lock(pid: int, storage: str, name: str) -> None:
    """SIGSTOP ``pid`` at a moment it holds no flock of the filesystem catalog's dataset
    folder (its heartbeat takes it for a few milliseconds to renew the lease): the stall this
    test is about is a process frozen between catalog operations. A frozen holder of the lock
    would block every other process on it."""
    lock = Path(storage) / "catalog" / name / ".lock"
    for _ in range(200):
        os.kill(pid, signal.SIGSTOP)
        if "://" in storage:  # MongoDB: no file lock
            return
        assert lock.exists(), lock
        import fcntl

        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return
        except BlockingIOError:
            os.kill(pid, signal.SIGCONT)  # caught inside a renewal: let it finish
            time.sleep(0.01)
        finally:
            os.close(fd)
    raise AssertionError(f"{pid} always held {lock}")


@pytest.mark.slow
@pytest.mark.parametrize("grace", [3600.0, 0.0], ids=["grace", "no-grace"])
def test_reader_of_version_n_never_sees_a_mix(
    storage: str, tmp_path: Path, grace: float, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "spec.yaml"
    x1, y1 = write_arrays(tmp_path / "v1", 4000, 1024, seed=1)  # 16 MB > h5py chunk cache
    arrays_spec(spec, "moving", tmp_path / "v1")
    assert refresh(spec, storage=storage)[0].version == 1
    expected = tmp_path / "v1.npz"
    np.savez(expected, x=x1, y=y1)
    barrier, log = tmp_path / "go", tmp_path / "reader.log"
    reader = start_child(
        {"mode": "reader", "storage": storage, "name": "moving", "version": 1,
         "expected": str(expected), "duration": 5.0, "sequential": True,
         "barrier": str(barrier)},
        log, env={"DATASTACK_CACHE_BYTES": "0"},  # every read goes to the storage
    )
    release_barrier(barrier, 1, [reader])
    time.sleep(0.5)
    write_arrays(tmp_path / "v2", 4000, 1024, seed=2)
    arrays_spec(spec, "moving", tmp_path / "v2")
    assert refresh(spec, storage=storage)[0].version == 2
    capsys.readouterr()
    code = main(["gc", "--keep", "1", "--grace", str(grace), "--storage", storage, "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    # gc keeps its word (#27.5): v1, published seconds ago, stays within --grace (record and
    # files); without a grace period it goes at once
    key = "kept_versions_in_grace" if grace else "deleted_versions"
    assert ["moving", 1] in report[key], report
    result = finish_child(reader, log, timeout=60)

    assert result["mismatches"] == 0, result
    assert result["checked"] > 0, result
    if grace:
        assert result["ok"], result  # within the grace period the reader finishes on v1
        assert result["passes"] >= 2, result
    elif storage.startswith("mongodb://"):
        # GridFS: the chunks are gone at once, so the reader must fail, and clearly.
        assert result["errors"], result
        for error in result["errors"]:
            assert "DatastackError" in error["mro"], error  # never a raw CorruptGridFile
            assert "moving" in error["message"] or "data.h5" in error["message"], error
    else:
        assert result["ok"], result  # POSIX: an unlinked file stays readable to its holder


def test_refresh_longer_than_its_lease_ttl_still_publishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typing import Any

    from datastack.storage.base import StorageConnector

    write_arrays(tmp_path / "src", 50, 4, seed=1)
    [spec] = select_specs(arrays_spec(tmp_path / "spec.yaml", "long", tmp_path / "src"))
    original = StorageConnector.set_resource

    def slow(self: StorageConnector, identifier: str, data: Any, **kw: Any) -> Any:
        if identifier.endswith("/data.h5"):
            time.sleep(2.5)  # a long upload: 2.5 lease lifetimes
        return original(self, identifier, data, **kw)

    monkeypatch.setattr(StorageConnector, "set_resource", slow)
    result = refresh_dataset(factory_for(spec), Store.open(str(tmp_path / "store")), lease_ttl_s=1.0)
    assert result.status == "published", result
