"""Scenario 8: several processes load random samples of one GridFS dataset while a refresh
publishes a new version: no errors, every sample equal to the expected one.

The default run uses 3 processes for ~5 s; the soak variant (``pytest -m soak
tests/reliability``) runs 8 processes for 30 s.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datastack.pipeline.sequence import refresh
from tests.reliability.helpers import (
    arrays_spec,
    catalog_state,
    finish_child,
    release_barrier,
    start_child,
    write_arrays,
)


def _load_under_refresh(storage: str, tmp_path: Path, processes: int, duration: float) -> None:
    spec = tmp_path / "spec.yaml"
    x1, y1 = write_arrays(tmp_path / "v1", 3000, 1024, seed=1)  # 12 MB > h5py chunk cache
    arrays_spec(spec, "busy", tmp_path / "v1")
    assert refresh(spec, storage=storage)[0].version == 1
    expected = tmp_path / "v1.npz"
    np.savez(expected, x=x1, y=y1)
    barrier = tmp_path / "go"
    logs = [tmp_path / f"reader{i}.log" for i in range(processes)]
    readers = [
        start_child(
            {"mode": "reader", "storage": storage, "name": "busy", "version": 1,
             "expected": str(expected), "duration": duration, "seed": i, "reopen": True,
             "barrier": str(barrier)},
            log, env={"DATASTACK_CACHE_BYTES": "1M"},  # small cache: most reads hit the server
        )
        for i, log in enumerate(logs)
    ]
    release_barrier(barrier, processes, readers)
    published = 1
    for seed in range(2, 100):  # refresh (new content each time) while the readers run
        write_arrays(tmp_path / f"v{seed}", 3000, 1024, seed=seed)
        arrays_spec(spec, "busy", tmp_path / f"v{seed}")
        result = refresh(spec, storage=storage)[0]
        assert result.status == "published", result
        published += 1
        if all(r.poll() is not None for r in readers) or published >= 4:
            break
    results = [finish_child(r, log, timeout=duration + 60) for r, log in zip(readers, logs,
                                                                            strict=True)]
    for result in results:
        assert result["errors"] == [] and result["mismatches"] == 0, result
        assert result["checked"] > 50, result
    states = catalog_state(storage)
    assert [v for _, v, s in states if s == "published"] == list(range(1, published + 1))


@pytest.mark.mongo
def test_readers_under_refresh(mongo_uri: str, tmp_path: Path) -> None:
    _load_under_refresh(mongo_uri, tmp_path, processes=3, duration=5.0)


@pytest.mark.soak
@pytest.mark.mongo
def test_readers_under_refresh_soak(mongo_uri: str, tmp_path: Path) -> None:
    _load_under_refresh(mongo_uri, tmp_path, processes=8, duration=30.0)
