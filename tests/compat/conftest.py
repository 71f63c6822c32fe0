"""Fixtures of the ``data_stack`` compatibility tests: a local HTTP server, IDX files.

The deprecated modules are imported here once with their warning silenced, so test modules
can import them at the top; ``test_imports.py`` checks the warnings in a fresh interpreter.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import data_stack.dataset.factory
    import data_stack.dataset.iterator
    import data_stack.dataset.meta
    import data_stack.dataset.reporting
    import data_stack.dataset.splitter
    import data_stack.exception
    import data_stack.io.resource_definition
    import data_stack.io.resources
    import data_stack.io.retriever
    import data_stack.io.storage_connectors
    import data_stack.mnist.factory
    import data_stack.mnist.iterator
    import data_stack.repository.repository  # noqa: F401

from tests.compat._helpers import LocalServer, write_idx_gz


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[LocalServer]:
    """A local HTTP server over ``tmp_path / "www"`` (no internet needed)."""
    root = tmp_path / "www"
    root.mkdir()
    server = LocalServer(root).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mnist_files(tmp_path: Path) -> dict[str, tuple[Path, Path, np.ndarray, np.ndarray]]:
    """Tiny MNIST-shaped IDX files: split -> (images.gz, labels.gz, images, labels)."""
    rng = np.random.default_rng(0)
    out = {}
    folder = tmp_path / "idx"
    folder.mkdir()
    for split, n in (("train", 12), ("test", 5)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        out[split] = (
            write_idx_gz(folder / f"{split}-images-idx3-ubyte.gz", images),
            write_idx_gz(folder / f"{split}-labels-idx1-ubyte.gz", labels),
            images,
            labels,
        )
    return out
