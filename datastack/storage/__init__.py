"""Storage connectors and the URI -> connector registry.

>>> import tempfile
>>> from datastack.storage import connect
>>> store = connect(tempfile.mkdtemp())
>>> store.set_resource("demo/hello.bin", b"hi").size
2
>>> store.get_resource("demo/hello.bin").read()
b'hi'
"""

from __future__ import annotations

import os

from datastack._registry import Registry
from datastack._uri import StorageLocation, parse_storage_uri, redact
from datastack.storage.base import HashingReader, ResourceInfo, StorageConnector

#: Storage URI kind -> connector class (each has ``from_location(StorageLocation)``).
BACKENDS: Registry[type[StorageConnector]] = Registry("storage backend")
BACKENDS.register("file", "datastack.storage.filesystem:FileStorageConnector")
BACKENDS.register("mongodb", "datastack.storage.gridfs:GridFSStorageConnector", extra="mongo")


def connector_for(location: StorageLocation) -> StorageConnector:
    """The connector of a parsed storage URI."""
    return BACKENDS.get(location.kind).from_location(location)  # type: ignore[attr-defined,no-any-return]


def connect(uri: str | os.PathLike[str] | None = None) -> StorageConnector:
    """Return the connector for a storage URI (or ``$DATASTACK_STORAGE``, or ``./.datastack``).

    - a path or ``file:///abs/path``: :class:`~datastack.storage.filesystem.FileStorageConnector`
    - ``mongodb://[user:pass@]host[:port]/DBNAME``:
      :class:`~datastack.storage.gridfs.GridFSStorageConnector` (bucket in DBNAME)
    """
    return connector_for(parse_storage_uri(uri))


__all__ = [
    "BACKENDS",
    "HashingReader",
    "ResourceInfo",
    "StorageConnector",
    "StorageLocation",
    "connect",
    "connector_for",
    "parse_storage_uri",
    "redact",
]
