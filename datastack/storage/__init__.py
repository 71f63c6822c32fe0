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

import importlib
import os
from collections.abc import Callable

from datastack._uri import StorageLocation, parse_storage_uri, redact
from datastack.errors import MissingDependencyError
from datastack.storage.base import HashingReader, ResourceInfo, StorageConnector

# kind -> (module, factory attribute, extra that provides its dependencies)
_REGISTRY: dict[str, tuple[str, str, str]] = {
    "file": ("datastack.storage.filesystem", "FileStorageConnector", ""),
    "mongodb": ("datastack.storage.gridfs", "GridFSStorageConnector", "mongo"),
}


def _factory(kind: str) -> Callable[[StorageLocation], StorageConnector]:
    module_name, attr, extra = _REGISTRY[kind]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            f"the {kind!r} storage backend needs {exc.name!r}: pip install 'datastack[{extra}]'"
        ) from exc
    return getattr(module, attr).from_location  # type: ignore[no-any-return]


def connect(uri: str | os.PathLike[str] | None = None) -> StorageConnector:
    """Return the connector for a storage URI (or ``$DATASTACK_STORAGE``, or ``./.datastack``).

    - a path or ``file:///abs/path``: :class:`~datastack.storage.filesystem.FileStorageConnector`
    - ``mongodb://[user:pass@]host[:port]/DBNAME``:
      :class:`~datastack.storage.gridfs.GridFSStorageConnector` (bucket in DBNAME)
    """
    location = parse_storage_uri(uri)
    return _factory(location.kind)(location)


__all__ = [
    "HashingReader",
    "ResourceInfo",
    "StorageConnector",
    "StorageLocation",
    "connect",
    "parse_storage_uri",
    "redact",
]
