"""The filesystem catalog's folder lock: a holder that stopped while holding it (SIGSTOP, a
paused machine) makes the others wait a bounded time, then fail saying so, instead of
hanging (RELIABILITY: a crashed or stalled process blocks nobody for long)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from datastack.catalog.filestore import FileCatalog
from datastack.errors import CatalogError


@pytest.mark.timeout(60)
def test_a_lock_held_past_the_wait_is_an_error_naming_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    catalog = FileCatalog(tmp_path)
    with catalog.lease("held", owner="a", ttl=30):  # the folder and its lock file exist
        pass
    lock = tmp_path / "catalog" / "held" / ".lock"
    assert lock.exists()
    monkeypatch.setenv("DATASTACK_CATALOG_LOCK_WAIT", "0.3")
    fd = os.open(lock, os.O_RDWR)  # another open file description: a holder elsewhere
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(CatalogError, match="locked by another process") as caught:
            catalog.lease("held", owner="b", ttl=30)
        assert str(lock) in str(caught.value) and "DATASTACK_CATALOG_LOCK_WAIT" in str(
            caught.value)
    finally:
        os.close(fd)
    with catalog.lease("held", owner="b", ttl=30) as lease:  # released: proceeds at once
        assert lease.owner == "b"
