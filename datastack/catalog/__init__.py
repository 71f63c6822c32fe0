"""The dataset catalog: versioned records, atomic publish, refresh leases and GC.

Two stores share one interface (:class:`Catalog`): :class:`FileCatalog` (JSON files under
``<storage root>/catalog/``, the embedded default) and :class:`MongoCatalog` (collections
``datastack_catalog`` and ``datastack_leases`` in the storage URI's database).

>>> import tempfile
>>> catalog = open_catalog(tempfile.mkdtemp())
>>> type(catalog).__name__
'FileCatalog'
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from datastack._registry import Registry
from datastack._uri import StorageLocation, parse_storage_uri
from datastack.catalog.base import DEFAULT_GRACE_SECONDS, Catalog
from datastack.catalog.filestore import FileCatalog
from datastack.catalog.gc import GCReport, collect_garbage
from datastack.catalog.leases import DEFAULT_TTL, Lease, LeaseState
from datastack.catalog.record import (
    DELETED,
    PENDING,
    PUBLISHED,
    VersionRecord,
    version_prefix,
)

if TYPE_CHECKING:  # pragma: no cover
    from datastack.catalog.mongostore import MongoCatalog


#: Storage URI kind -> catalog class (each has ``from_location(StorageLocation)``).
STORES: Registry[type[Catalog]] = Registry("catalog store")
STORES.register("file", "datastack.catalog.filestore:FileCatalog")
STORES.register("mongodb", "datastack.catalog.mongostore:MongoCatalog", extra="mongo")


def catalog_for(location: StorageLocation) -> Catalog:
    """The catalog of a parsed storage URI."""
    return STORES.get(location.kind).from_location(location)  # type: ignore[attr-defined,no-any-return]


def open_catalog(uri: str | os.PathLike[str] | None = None) -> Catalog:
    """The catalog of a storage URI (or ``$DATASTACK_STORAGE``, or ``./.datastack``).

    A path or ``file://`` URI gives a :class:`FileCatalog` under ``<path>/catalog/``; a
    ``mongodb://.../DBNAME`` URI gives a :class:`MongoCatalog` in DBNAME. Nothing connects
    until the first call.
    """
    return catalog_for(parse_storage_uri(uri))


def __getattr__(name: str) -> Any:
    if name == "MongoCatalog":  # imported lazily: it needs pymongo only when used
        from datastack.catalog.mongostore import MongoCatalog

        return MongoCatalog
    raise AttributeError(f"module 'datastack.catalog' has no attribute {name!r}")


__all__ = [
    "DEFAULT_GRACE_SECONDS",
    "DEFAULT_TTL",
    "DELETED",
    "PENDING",
    "PUBLISHED",
    "STORES",
    "Catalog",
    "FileCatalog",
    "GCReport",
    "Lease",
    "LeaseState",
    "MongoCatalog",
    "VersionRecord",
    "catalog_for",
    "collect_garbage",
    "open_catalog",
    "version_prefix",
]
