"""Scenario 2: the MongoDB server stops in the middle of a refresh (the test kills the server
process while the version's data file is being uploaded). The refresh must fail with a clear
"storage unavailable" result within a bounded time; after a restart on the same data folder,
the previous version is intact, a new refresh succeeds, and the catalog is consistent.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from datastack.factory import factory_for
from datastack.pipeline.sequence import refresh_dataset
from datastack.specs import load_selected as select_specs
from datastack.storage.base import StorageConnector
from datastack.store import Store
from tests.mongo_server import MongoServer
from tests.reliability.helpers import (
    FailingStream,
    arrays_spec,
    catalog_state,
    read_all,
    write_arrays,
)

LEASE_TTL = 2.0
BOUND_S = 30.0  # with 1.5 s server selection: a handful of failing round trips


def _stop_mid_upload(monkeypatch: pytest.MonkeyPatch, server: MongoServer) -> list[bool]:
    fired: list[bool] = []
    original = StorageConnector.set_resource

    def set_resource(self: StorageConnector, identifier: str, data: Any, **kw: Any) -> Any:
        if "/shards/" in identifier and not fired:  # the first shard's upload
            raw = Path(data).read_bytes() if isinstance(data, Path) else data.read()

            def stop() -> None:
                fired.append(True)
                server.stop(kill=True)

            data = FailingStream(raw, len(raw) // 3, stop)
        return original(self, identifier, data, **kw)

    monkeypatch.setattr(StorageConnector, "set_resource", set_resource)
    return fired


@pytest.mark.slow
def test_server_stopped_mid_refresh_fails_clearly_then_recovers(
    own_mongo: MongoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    storage = f"{own_mongo.uri}/reliab?serverSelectionTimeoutMS=1500&connectTimeoutMS=1500"
    spec_path = tmp_path / "spec.yaml"
    x1, y1 = write_arrays(tmp_path / "v1", 100, 8, seed=1)
    arrays_spec(spec_path, "lost", tmp_path / "v1")
    [spec] = select_specs(spec_path)
    assert refresh_dataset(factory_for(spec), Store.open(storage), lease_ttl_s=LEASE_TTL).status == "published"

    x2, y2 = write_arrays(tmp_path / "v2", 800, 1024, seed=2)  # ~3 MB data file
    arrays_spec(spec_path, "lost", tmp_path / "v2")
    [spec2] = select_specs(spec_path)
    fired = _stop_mid_upload(monkeypatch, own_mongo)
    started = time.monotonic()
    result = refresh_dataset(factory_for(spec2), Store.open(storage), lease_ttl_s=LEASE_TTL)
    elapsed = time.monotonic() - started
    assert fired == [True]
    assert result.status == "failed", result
    assert "StorageUnavailableError" in result.reason and "unavailable" in result.reason
    assert elapsed < BOUND_S, f"{elapsed:.1f}s to report the lost server"
    monkeypatch.undo()

    own_mongo.start()  # the same data folder
    xs, ys = read_all("lost", storage)
    assert np.array_equal(xs, x1) and np.array_equal(ys, y1)
    assert [v for _, v, s in catalog_state(storage) if s == "published"] == [1]

    # Retry the whole version under a fresh number; the dead attempt's lease may still be
    # held until it expires, so wait for it.
    again = refresh_dataset(factory_for(spec2), Store.open(storage), lease_ttl_s=LEASE_TTL, wait_s=LEASE_TTL + 5)
    assert again.status == "published", again
    assert again.version is not None and again.version >= 2
    xs, ys = read_all("lost", storage)
    assert np.array_equal(xs, x2) and np.array_equal(ys, y2)
    states = catalog_state(storage)
    published = [v for _, v, s in states if s == "published"]
    assert published == [1, again.version], states
    assert len({v for _, v, _ in states}) == len(states)  # no duplicate version numbers


def test_unreachable_server_refresh_fails_fast(tmp_path: Path) -> None:
    from tests.mongo_server import free_port

    storage = f"mongodb://127.0.0.1:{free_port()}/x?serverSelectionTimeoutMS=500"
    write_arrays(tmp_path / "v1", 10, 2, seed=1)
    [spec] = select_specs(arrays_spec(tmp_path / "spec.yaml", "nowhere", tmp_path / "v1"))
    started = time.monotonic()
    result = refresh_dataset(factory_for(spec), Store.open(storage))
    assert result.status == "failed" and "unavailable" in result.reason, result
    assert time.monotonic() - started < 10
