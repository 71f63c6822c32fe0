"""Scenario 1: a refresh SIGKILLed in the middle of uploading its data file, and again just
before the catalog publish. The previous version must load and equal what it was; after the
dead writer's lease expires, ``datastack gc --grace 0`` removes what it left; a new refresh
publishes under a fresh version number.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from datastack.api import refresh
from datastack.cli import main
from tests.reliability.helpers import (
    arrays_spec,
    catalog_state,
    read_all,
    sigkill,
    start_child,
    wait_for_file,
    write_arrays,
)

LEASE_TTL = 2.0


def _leftovers(storage: str) -> dict[str, int]:
    """Temporary files / pending GridFS uploads / chunks without a files document."""
    from datastack.storage import connect
    from datastack.storage.filesystem import FileStorageConnector, is_temporary_name
    from datastack.storage.gridfs import GridFSStorageConnector

    store = connect(storage)
    if isinstance(store, FileStorageConnector):
        root = Path(store.root)
        temps = sum(1 for p in root.rglob("*") if is_temporary_name(p.name))
        return {"temporary": temps}
    assert isinstance(store, GridFSStorageConnector)
    ids = set(store.files.distinct("_id", {}))
    owners = set(store.chunks.distinct("files_id", {"n": {"$gte": 0}}))
    return {
        "temporary": store.files.count_documents({"filename": {"$regex": r"^\.tmp-"}}),
        "orphan_chunk_owners": len(owners - ids),
    }


def _gc(storage: str, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    capsys.readouterr()
    code = main(["gc", "--keep", "1", "--grace", "0", "--storage", storage, "--json", *extra])
    out = capsys.readouterr()
    assert code == 0, out.err
    data: dict[str, Any] = json.loads(out.out)
    return data


def _referenced(storage: str, name: str) -> set[str]:
    """What the published versions of ``name`` refer to (shards, raw copies, data files)."""
    from datastack.canonical.layout import shards_of
    from datastack.store import Store

    out: set[str] = set()
    for record in Store.open(storage).catalog.versions(name):
        if record.status == "published":
            out |= set(record.resource_identifiers)
            out |= {str(e["identifier"]) for es in shards_of(record).values() for e in es}
    return out


def _resources(storage: str) -> list[str]:
    from datastack.storage import connect

    return connect(storage).list_resources("")


@pytest.mark.slow
@pytest.mark.parametrize("where", ["upload", "publish"])
def test_sigkilled_refresh_leaves_previous_version_and_gc_cleans_up(
    storage: str, tmp_path: Path, where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "spec.yaml"
    x1, y1 = write_arrays(tmp_path / "v1", 200, 8, seed=1)
    arrays_spec(spec, "crashy", tmp_path / "v1")
    [first] = refresh(spec, storage=storage)
    assert first.status == "published" and first.version == 1

    # Version 2: ~12 MB of float32, several GridFS insert batches (8 MB each).
    x2, y2 = write_arrays(tmp_path / "v2", 3000, 1024, seed=2)
    arrays_spec(spec, "crashy", tmp_path / "v2")
    marker, log = tmp_path / "cue", tmp_path / "child.log"
    proc = start_child(
        {"mode": "refresh", "spec": str(spec), "storage": storage, "names": ["crashy"],
         "pause": where, "cue_bytes": 10_000_000, "marker": str(marker),
         "lease_ttl": LEASE_TTL},
        log,
    )
    wait_for_file(marker, proc, log, timeout=120)
    sigkill(proc)
    killed_at = time.monotonic()

    # Readers: version 1, equal to what it was; version 2 is not visible.
    xs, ys = read_all("crashy", storage)
    assert np.array_equal(xs, x1) and np.array_equal(ys, y1)
    states = catalog_state(storage)
    assert ("crashy", 1, "published") in states
    assert ("crashy", 2, "pending") in states, states  # the fault hit a reserved version
    orphans: set[str] = set()
    if where == "upload" and storage.startswith("mongodb"):
        assert _leftovers(storage)["temporary"] == 1  # the fault hit mid-upload
    elif where == "upload":  # a filesystem store moves each shard in whole, at once:
        orphans = set(_resources(storage)) - _referenced(storage, "crashy")
        assert orphans  # one is stored that no version refers to

    # The dead writer's lease does not block GC: its owner is a dead process of this host, so
    # GC takes the lease over at once and removes what the dead writer left.
    report = _gc(storage, capsys)
    assert time.monotonic() - killed_at < LEASE_TTL
    assert report["skipped"] == {}, report
    assert _leftovers(storage) in ({"temporary": 0}, {"temporary": 0, "orphan_chunk_owners": 0})
    resources = _resources(storage)
    assert not any("/v2-" in r or "/v2/" in r for r in resources), resources
    assert not orphans & set(resources)  # gc removed what the dead writer stored
    assert ("crashy", 2, "pending") not in catalog_state(storage)
    xs, ys = read_all("crashy", storage)
    assert np.array_equal(xs, x1) and np.array_equal(ys, y1)

    # A new refresh publishes version 2 with the new data: the dead writer's aborted attempt
    # did not consume a number (#27.6).
    [again] = refresh(spec, storage=storage)
    assert again.status == "published", again
    assert again.version == 2
    xs, ys = read_all("crashy", storage)
    assert np.array_equal(xs, x2) and np.array_equal(ys, y2)
    published = [v for n, v, s in catalog_state(storage) if s == "published"]
    assert published == [1, 2]


def test_gc_takes_over_a_dead_writers_lease_and_removes_its_pending_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = str(tmp_path / "store")
    spec = tmp_path / "spec.yaml"
    write_arrays(tmp_path / "v1", 50, 4, seed=1)
    arrays_spec(spec, "held", tmp_path / "v1")
    marker, log = tmp_path / "cue", tmp_path / "child.log"
    proc = start_child(
        {"mode": "refresh", "spec": str(spec), "storage": storage, "names": ["held"],
         "pause": "publish", "marker": str(marker), "lease_ttl": 600},
        log,
    )
    wait_for_file(marker, proc, log, timeout=120)
    assert any("/shards/" in r for r in _resources(storage))  # the paused writer uploaded v1
    sigkill(proc)
    # The writer held a 600 s lease, but it is dead and on this host: GC takes the lease over
    # at once, aborts the pending version and deletes its data and its raw copies.
    report = _gc(storage, capsys)
    assert report["skipped"] == {}, report
    assert ["held", 1] in report["aborted_versions"], report
    assert not [r for r in _resources(storage) if r.startswith("datasets/held/")]
    assert ("held", 1, "deleted") in catalog_state(storage)
    # A live holder is never taken over: GC skips the dataset and says who holds it.
    from datastack.store import Store

    lease = Store.open(storage).catalog.lease("held", ttl=600)
    try:
        report = _gc(storage, capsys)
        assert "held" in report["skipped"] and "token" in report["skipped"]["held"]
    finally:
        lease.release()
