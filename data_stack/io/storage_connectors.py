"""Deprecated: the original ``data_stack.io.storage_connectors``; use datastack.storage."""

from __future__ import annotations

from data_stack._deprecation import warn_deprecated_module
from data_stack._storage import (
    FileStorageConnector,
    StorageConnector,
    StorageConnectorFactory,
)

__all__ = [
    "FileStorageConnector",
    "StorageConnector",
    "StorageConnectorFactory",
]

warn_deprecated_module(
    __name__,
    "datastack.storage (connect, StorageConnector; FileStorageConnector: "
    "datastack.storage.filesystem.FileStorageConnector)",
)
