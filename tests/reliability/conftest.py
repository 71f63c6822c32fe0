"""Fixtures of the fault-injection suite.

- ``own_mongo``: a SecantusDB process of this test only (own port, own data folder), which the
  test may stop and start again on the same folder.
- ``storage``: a storage URI parametrised over the filesystem and SecantusDB (the session
  server, a fresh database per test).
- ``private_tmp``: points ``TMPDIR`` (and ``tempfile``) at a folder of the test, so that the
  test sees every temporary file datastack creates and can assert they were removed.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mongo_server import MongoServer


@pytest.fixture
def own_mongo(tmp_path: Path) -> Iterator[MongoServer]:
    server = MongoServer(tmp_path / "mongo-data").start()
    try:
        yield server
    finally:
        server.stop(kill=True)


@pytest.fixture(params=["file", "secantus"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return str(tmp_path / "store")
    return str(request.getfixturevalue("mongo_uri"))


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "tmpdir"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture(autouse=True)
def _fresh_block_cache() -> Iterator[None]:
    from datastack.storage.cache import default_cache

    default_cache().clear()
    yield
    default_cache().clear()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``soak`` tests unless selected with ``-m soak`` (or DATASTACK_SOAK=1)."""
    import os

    if "soak" in (config.getoption("-m") or "") or os.environ.get("DATASTACK_SOAK") == "1":
        return
    skip = pytest.mark.skip(reason="soak variant: run with `pytest -m soak tests/reliability`")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)
