"""Build a catalog (and a matching storage connector) for a ``backend`` fixture value."""

from __future__ import annotations

from typing import Any

from datastack.catalog import Catalog, FileCatalog, VersionRecord
from datastack.catalog.mongostore import MongoCatalog
from datastack.storage.base import StorageConnector


def make_catalog(kind: str, handle: Any) -> Catalog:
    if kind == "file":
        return FileCatalog(handle)
    if kind == "mongomock":
        return MongoCatalog.from_database(handle)
    return MongoCatalog(handle, timeout_ms=10_000)


def make_storage(kind: str, handle: Any) -> StorageConnector:
    from tests.storage.helpers import make_store

    return make_store(kind, handle)


def record(
    name: str = "iris", *, spec_hash: str = "spec-1", checksum: str = "a" * 64, **kwargs: Any
) -> VersionRecord:
    return VersionRecord(
        name=name,
        spec_hash=spec_hash,
        sources=[{"url": "https://example.org/iris.csv", "sha256": checksum, "size": 10}],
        format="csv",
        **kwargs,
    )


def publish_version(
    catalog: Catalog,
    storage: StorageConnector | None = None,
    name: str = "iris",
    *,
    payload: bytes = b"data",
    checksum: str | None = None,
) -> VersionRecord:
    """Run the whole protocol once: lease, begin, write resources, publish."""
    with catalog.lease(name, ttl=60) as lease:
        rec = catalog.begin(record(name, checksum=checksum or "a" * 64), token=lease)
        resources = []
        if storage is not None:
            identifier = f"datasets/{name}/v{rec.version}/data.h5"
            info = storage.set_resource(identifier, payload)
            resources.append(info.to_dict())
        return catalog.publish(
            name, rec.version, token=lease, resources=resources, splits={"train": 3}
        )
