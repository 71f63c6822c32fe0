"""Fixtures of the training-read tests: a private local cache folder, published datasets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The local disk cache turned on, in a folder of this test (children inherit it)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("DATASTACK_CACHE_DIR", str(folder))
    monkeypatch.setenv("DATASTACK_CACHE_DIR_BYTES", "1G")
    monkeypatch.delenv("DATASTACK_OFFLINE", raising=False)
    return folder


@pytest.fixture
def small_block_cache() -> Iterator[Any]:
    """The process's block cache at 24 MiB (cleared), restored afterwards."""
    from datastack.storage.cache import default_cache, set_cache_bytes

    before = default_cache().max_bytes
    cache = set_cache_bytes(24 * 1024 * 1024)
    cache.clear()
    yield cache
    cache.clear()
    set_cache_bytes(before)


def publish(storage: str, name: str, folder: Path, n: int, width: int, seed: int) -> np.ndarray:
    """Publish a new version of ``name`` (n x width float32 samples) into ``storage``."""
    from datastack.pipeline.sequence import refresh
    from tests.reliability.helpers import arrays_spec, write_arrays

    x, _ = write_arrays(folder, n, width, seed)
    spec = arrays_spec(folder / "spec.yaml", name, folder)
    (result,) = refresh(spec, storage=storage, force=True)
    assert result.ok, result.reason
    return x
