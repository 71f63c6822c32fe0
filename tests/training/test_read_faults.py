"""Reads that meet a fault: a version deleted by gc under a reader, a lost connection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datastack.errors import StorageError
from tests.training.conftest import publish

pytestmark = pytest.mark.mongo


def test_a_reader_of_a_version_deleted_by_gc_is_told_so_and_every_read_fails(
    mongo_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#27.14: the message says gc deleted the version, which one is current and how long
    pinned versions live; later reads fail alike, also those whose blocks are cached."""
    import datastack
    from datastack.store import Store

    monkeypatch.setenv("DATASTACK_CACHE_DIR_BYTES", "0")  # every read goes to GridFS
    publish(mongo_uri, "soak", tmp_path / "v1", 4000, 256, seed=1)  # ~4 MB: many blocks
    it = datastack.load("soak", version=1, storage=mongo_uri)
    first = np.asarray(it[0][0])  # its block is now in the block cache
    assert first.shape == (256,)
    publish(mongo_uri, "soak", tmp_path / "v2", 4000, 256, seed=2)
    store = Store.open(mongo_uri)
    report = store.catalog.gc(store.storage, keep=1, grace_seconds=0)
    assert "soak" in str(report.to_dict())

    messages = []
    for read in (lambda: it[len(it) - 1], lambda: it[0], lambda: it.get_batch([0, 1, 2])):
        with pytest.raises(StorageError) as info:
            read()
        messages.append(str(info.value))
    message = messages[0]
    assert "deleted by `datastack gc`" in message, message
    assert "current version is 2" in message and "--keep" in message and "--grace" in message
    assert "get_resource()" not in message
    assert messages[1] == messages[2] == message  # cached block 0 does not succeed silently
