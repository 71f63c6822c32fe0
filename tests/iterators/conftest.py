"""Fixtures: a storage connector per backend (filesystem, GridFS on SecantusDB) and a dataset."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.iterators.helpers import mnist_like, npy_bytes, write_h5


@pytest.fixture(params=["file", pytest.param("gridfs", marks=pytest.mark.mongo)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A StorageConnector: filesystem under tmp_path, or GridFS on the session's SecantusDB."""
    from datastack.storage import connect

    if request.param == "file":
        yield connect(tmp_path / "store")
        return
    from datastack.storage.gridfs import GridFSStorageConnector

    # small chunks so a batch spans many GridFS blocks
    connector = GridFSStorageConnector(request.getfixturevalue("mongo_uri"), chunk_size=8192)
    yield connector
    connector.close()


@pytest.fixture
def dataset(tmp_path: Path) -> dict[str, Any]:
    """A canonical HDF5 file (train 600 / test 100) plus the same arrays as .npy payloads."""
    x, y = mnist_like(700)
    path = write_h5(
        tmp_path / "data.h5",
        {"train": (x[:600], y[:600]), "test": (x[600:], y[600:])},
        chunk_rows=32,
    )
    return {"path": path, "x": x, "y": y, "x_npy": npy_bytes(x), "y_npy": npy_bytes(y)}


@pytest.fixture
def fresh_cache() -> Iterator[None]:
    from datastack.storage.cache import default_cache

    default_cache().clear()
    yield
    default_cache().clear()


__all__ = ["np"]
