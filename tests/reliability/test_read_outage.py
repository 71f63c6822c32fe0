"""The MongoDB server goes away while a training job reads: the read that needs the server
fails with StorageUnavailableError (not a format error: the data is fine), within a bounded
time, and the same iterator serves samples again once the server is back."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

import datastack
from datastack.errors import StorageUnavailableError
from datastack.pipeline.sequence import refresh_dataset
from datastack.specs import load_selected as select_specs
from datastack.storage.cache import default_cache
from datastack.store import Store
from tests.mongo_server import MongoServer
from tests.reliability.helpers import arrays_spec, write_arrays

BOUND_S = 20.0


@pytest.mark.slow
@pytest.mark.parametrize("compression", [None, "gzip"], ids=["raw-rows", "through-h5py"])
def test_reads_during_an_outage_fail_clearly_and_resume(
    own_mongo: MongoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    compression: str | None,
) -> None:
    monkeypatch.setenv("DATASTACK_CACHE_DIR_BYTES", "0")  # every read goes to the server
    storage = f"{own_mongo.uri}/outage?serverSelectionTimeoutMS=1500&connectTimeoutMS=1500"
    x, y = write_arrays(tmp_path / "v1", 4000, 256, seed=3)  # ~4 MB: many GridFS blocks
    [spec] = select_specs(arrays_spec(
        tmp_path / "spec.yaml", "outage", tmp_path / "v1",
        **({"compression": compression} if compression else {}),
    ))
    assert refresh_dataset(spec, Store.open(storage)).status == "published"

    it = datastack.load("outage", split="train", storage=storage)
    first = np.asarray(it[0][0])
    own_mongo.stop(kill=True)
    default_cache().clear()  # nothing of the file left in memory: the next read needs the server
    far = len(it) - 1
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError, match=r"unavailable|unreachable") as info:
        it[far]
    assert time.monotonic() - started < BOUND_S
    assert "outage" in str(info.value) or "GridFS" in str(info.value), info.value
    with pytest.raises(StorageUnavailableError):  # still down: still the same clear error
        it[far - 1]

    own_mongo.start()  # same data folder
    got = np.stack([np.asarray(it[i][0]) for i in range(len(it))])
    assert np.array_equal(got[0], first)
    # the split is a subset of the arrays written; every row must be one of them, in order
    rows = {r.tobytes(): i for i, r in enumerate(x)}
    assert all(r.tobytes() in rows for r in got)
    assert len(got) == len(it) and y is not None
