"""A :class:`Store`: where datasets live -- one storage connector and its catalog, from one URI.

Every entry point (``refresh``, ``load``, the CLI, the Prefect tasks) opens the store once and
hands the object to the steps below it; nothing further down parses a URI again.

>>> import tempfile
>>> store = Store.open(tempfile.mkdtemp())
>>> type(store.storage).__name__, type(store.catalog).__name__
('FileStorageConnector', 'FileCatalog')
>>> Store.open("mongodb://alice:s3cret@db.example/team")   # nothing connects yet
Store('mongodb://alice:***@db.example/team')
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from datastack._uri import StorageLocation, default_storage_uri, parse_storage_uri, redact
from datastack.errors import ConfigurationError

if TYPE_CHECKING:  # pragma: no cover
    from datastack.catalog.base import Catalog
    from datastack.storage.base import StorageConnector

class Store:
    """A storage connector and the catalog beside it (picklable; connects lazily).

    Build one with :meth:`open` (from a storage URI) or from parts (tests, custom backends).
    The URI's password is never shown: ``repr``, ``str`` and :attr:`uri` are redacted; only
    :attr:`connection_uri` returns it, for handing the URI to another process.
    """

    def __init__(self, storage: StorageConnector, catalog: Catalog, uri: str = "") -> None:
        self.storage = storage
        self.catalog = catalog
        self._uri = uri

    @classmethod
    def open(cls, uri: Store | str | os.PathLike[str] | None = None) -> Store:
        """The store of ``uri`` (default ``$DATASTACK_STORAGE``, else ``./.datastack``).

        A path or ``file://`` URI gives filesystem storage and catalog under that folder; a
        ``mongodb://.../DBNAME`` URI gives GridFS and the MongoDB catalog in DBNAME. A
        :class:`Store` is returned as it is.
        """
        if isinstance(uri, Store):
            return uri
        if uri is not None and not isinstance(uri, (str, os.PathLike)):
            raise ConfigurationError(
                f"storage must be a URI string, a path or a Store, got {type(uri).__name__} "
                f"{uri!r:.80}; e.g. './.datastack' or 'mongodb://host/DBNAME'"
            )
        from datastack.catalog import catalog_for
        from datastack.storage import connector_for

        location = parse_storage_uri(default_storage_uri(uri))
        if location.kind == "file" and location.path is not None:
            # absolute, so that workers started in other folders open the same store
            path = location.path.resolve()
            location = StorageLocation("file", str(path), path)
        return cls(connector_for(location), catalog_for(location), location.uri)

    @property
    def uri(self) -> str:
        """The storage URI with any password redacted."""
        return redact(self._uri) if self._uri else self.storage.uri

    @property
    def connection_uri(self) -> str:
        """The URI *with* credentials, to hand to another process. Never log or display it."""
        if not self._uri:
            raise ConfigurationError(
                f"{self!r} was built from parts, not from a URI; there is no URI to hand over"
            )
        return self._uri

    @property
    def kind(self) -> str:
        """``"file"`` or ``"mongodb"`` (``"custom"`` when built from parts)."""
        return parse_storage_uri(self._uri).kind if self._uri else "custom"

    def ping(self, timeout_s: float = 3.0) -> None:
        """Fail fast (StorageUnavailableError, about ``timeout_s``) if the storage is unusable."""
        self.storage.ping(timeout_s)

    def close(self) -> None:
        """Release connections (both halves reconnect lazily if used again)."""
        self.storage.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"storage": self.storage, "catalog": self.catalog, "uri": self._uri}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["storage"], state["catalog"], state["uri"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    __str__ = __repr__


def open_store(uri: Store | str | os.PathLike[str] | None = None) -> Store:
    """Shorthand for :meth:`Store.open`."""
    return Store.open(uri)


__all__ = ["Store", "open_store"]
