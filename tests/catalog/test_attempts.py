"""(#27.6) No gaps in version numbers: failed and abandoned attempts free their number."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from datastack.catalog.record import resource_prefix
from datastack.errors import StorageError
from datastack.pipeline import refresh
from datastack.store import Store

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "datasets.yaml"
IRIS = (
    "datasets:\n  iris:\n    sources:\n      - url: data/iris.csv\n        sha256: "
    "91eb642c3adbc7bad8e99c930c11fa3a5cc8a07262c7a753b4e6ecf405f2e05e\n"
    "    format: csv\n    csv: {header: true, target: species}\n"
)


@pytest.fixture(params=["file", "mongodb"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return str(tmp_path / "store")
    return str(request.getfixturevalue("mongo_uri"))


def _refresh(spec: Path, storage: str, *, gate_fails: bool) -> Any:
    spec.write_text(IRIS + ("    expect: {min_samples: 100000}\n" if gate_fails else ""))
    (result,) = refresh(spec, storage=storage, force=True)
    assert result.status == ("failed" if gate_fails else "published"), result
    return result


def test_gate_failures_and_a_crash_between_refreshes_leave_no_gaps(
    storage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(EXAMPLE.parent / "data", tmp_path / "data")
    spec = tmp_path / "spec.yaml"
    assert _refresh(spec, storage, gate_fails=False).version == 1
    _refresh(spec, storage, gate_fails=True)
    _refresh(spec, storage, gate_fails=True)
    assert _refresh(spec, storage, gate_fails=False).version == 2

    # an abandoned attempt: a writer that reserved a number and died without aborting
    store = Store.open(storage)
    lease = store.catalog.lease("iris", owner="crashed", ttl=60)
    stale = store.catalog.begin("iris", spec_hash="x", token=lease)
    store.storage.set_resource(resource_prefix(stale) + "data.h5", b"half written")
    lease.release()
    # an upload that fails: the attempt is dropped with its files
    from datastack.storage.base import StorageConnector

    original = StorageConnector.set_resource

    def broken(self: StorageConnector, identifier: str, data: Any, **kw: Any) -> Any:
        if "/shards/" in identifier:
            raise StorageError("disk on fire")
        return original(self, identifier, data, **kw)

    monkeypatch.setattr(StorageConnector, "set_resource", broken)
    backend = type(store.storage)  # the shards are there: make the refresh upload them again

    def broken_move(self: StorageConnector, identifier: str, path: Any, **kw: Any) -> Any:
        raise StorageError("disk on fire")  # a shard moved in (a filesystem store) fails too

    monkeypatch.setattr(backend, "adopt_file", broken_move)
    monkeypatch.setattr(backend, "has_resource", lambda self, i: "/shards/" not in i)
    (failed,) = refresh(spec, storage=storage, force=True)
    assert failed.status == "failed"
    monkeypatch.setattr(StorageConnector, "set_resource", original)
    monkeypatch.undo()

    assert _refresh(spec, storage, gate_fails=False).version == 3
    records = store.catalog.versions("iris", include_all=True)
    assert [r.version for r in store.catalog.versions("iris")] == [1, 2, 3]
    published = [r for r in records if r.status == "published"]
    assert len({r.attempt for r in published}) == 3 and all(r.attempt for r in published)
    assert stale.attempt not in {r.attempt for r in published}
    for record in published:  # each version a manifest of shards (docs/living.md)
        assert [r for r in record.resources if r.get("kind") == "shard"]
    # the failed upload left nothing; the crashed writer's file goes with gc
    store.catalog.gc(store.storage, keep=3, grace_seconds=0)
    left = sorted(i for i in store.storage.list_resources("datasets/iris/") if "/raw/" not in i)
    assert left == sorted({r["identifier"] for p in published for r in p.resources
                           if r.get("kind") == "shard"})
    import datastack

    assert len(datastack.load("iris", "train", version=2, storage=storage)) > 0
