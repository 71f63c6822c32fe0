"""Garbage collection on every backend, with the real storage connector of that backend."""

from __future__ import annotations

import time
from typing import Any

import pytest

from datastack.catalog import Catalog, VersionRecord
from datastack.errors import ConfigurationError
from datastack.storage.base import StorageConnector
from tests.catalog.helpers import make_catalog, make_storage, publish_version, record


@pytest.fixture
def pair(backend: tuple[str, Any]) -> tuple[Catalog, StorageConnector]:
    return make_catalog(*backend), make_storage(*backend)


def _ids(storage: StorageConnector) -> list[str]:
    return storage.list_resources("datasets/")


def test_keep_n_deletes_old_versions_and_their_resources(
    pair: tuple[Catalog, StorageConnector],
) -> None:
    catalog, storage = pair
    for i in range(4):
        publish_version(catalog, storage, payload=b"v%d" % i, checksum=str(i) * 64)
    report = catalog.gc(storage, keep=2, grace_seconds=0)
    assert report.deleted_versions == [("iris", 1), ("iris", 2)]
    assert _ids(storage) == ["datasets/iris/v3/data.h5", "datasets/iris/v4/data.h5"]
    assert [r.version for r in catalog.versions("iris")] == [3, 4]
    assert catalog.latest("iris").version == 4
    with storage.get_resource("datasets/iris/v4/data.h5") as res:
        assert res.read() == b"v3"
    again = catalog.gc(storage, keep=2, grace_seconds=0)
    assert again.deleted_versions == [] and again.deleted_resources == []


def test_latest_is_never_deleted(pair: tuple[Catalog, StorageConnector]) -> None:
    catalog, storage = pair
    publish_version(catalog, storage)
    with pytest.raises(ConfigurationError):
        catalog.gc(storage, keep=0)
    assert catalog.gc(storage, keep=1, grace_seconds=0).deleted_versions == []
    assert _ids(storage) == ["datasets/iris/v1/data.h5"]


def test_grace_period_keeps_resources_of_recently_deleted_versions(
    pair: tuple[Catalog, StorageConnector],
) -> None:
    catalog, storage = pair
    publish_version(catalog, storage, payload=b"old" * 1000)
    publish_version(catalog, storage, payload=b"new", checksum="b" * 64)
    reader = storage.get_resource("datasets/iris/v1/data.h5")  # a reader pinned v1 before GC
    time.sleep(0.6)  # v1 is older than the grace period: GC may delete its record (#27.5)
    first = catalog.gc(storage, keep=1, grace_seconds=0.5)
    assert first.deleted_versions == [("iris", 1)]
    assert first.kept_in_grace == ["datasets/iris/v1/data.h5"]
    assert first.deleted_resources == []
    with reader:
        assert reader.read() == b"old" * 1000  # the reader finishes
    time.sleep(0.6)
    second = catalog.gc(storage, keep=1, grace_seconds=0.5)
    assert second.deleted_resources == ["datasets/iris/v1/data.h5"]
    assert _ids(storage) == ["datasets/iris/v2/data.h5"]


def test_versions_newer_than_the_grace_period_stay_loadable(
    pair: tuple[Catalog, StorageConnector],
) -> None:
    """(#27.5) `gc --keep 3` deletes no version (record or file) published within --grace."""
    catalog, storage = pair
    for i in range(5):
        publish_version(catalog, storage, payload=b"v%d" % i, checksum=str(i) * 64)
    report = catalog.gc(storage, keep=3, grace_seconds=3600)
    assert report.deleted_versions == [] and report.deleted_resources == []
    assert report.kept_versions_in_grace == [("iris", 1), ("iris", 2)]
    assert report.to_dict()["kept_versions_in_grace"] == [["iris", 1], ["iris", 2]]
    for version in range(1, 6):  # pinned reads of every version still work
        record = catalog.get("iris", version)
        with storage.get_resource(record.resources[0]["identifier"]) as res:
            assert res.read() == b"v%d" % (version - 1)
    time.sleep(0.05)  # older than a zero grace period, at millisecond precision
    later = catalog.gc(storage, keep=3, grace_seconds=0)
    assert later.deleted_versions == [("iris", 1), ("iris", 2)]
    assert [r.version for r in catalog.versions("iris")] == [3, 4, 5]


def test_orphans_removed_referenced_untouched(pair: tuple[Catalog, StorageConnector]) -> None:
    catalog, storage = pair
    shared = "datasets/iris/raw/iris.csv"
    storage.set_resource(shared, b"raw")
    for version, checksum in ((1, "a"), (2, "b")):
        with catalog.lease("iris") as lease:
            rec = catalog.begin(record(checksum=checksum * 64), token=lease)
            info = storage.set_resource(f"datasets/iris/v{version}/data.h5", b"x")
            catalog.publish(
                "iris",
                rec.version,
                token=lease,
                resources=[info.to_dict(), {"identifier": shared, "size": 3}],
            )
    # leftovers of crashed writers: a version folder with no record, a dataset with no record
    storage.set_resource("datasets/iris/v9/partial.h5", b"p")
    storage.set_resource("datasets/ghost/v1/data.h5", b"g")
    storage.set_resource("other/area/keep.bin", b"k")  # outside datasets/: not GC's business
    report = catalog.gc(storage, keep=1, grace_seconds=0)
    assert sorted(report.deleted_resources) == [
        "datasets/ghost/v1/data.h5",
        "datasets/iris/v1/data.h5",
        "datasets/iris/v9/partial.h5",
    ]
    assert _ids(storage) == [shared, "datasets/iris/v2/data.h5"]  # shared raw copy still used
    assert storage.has_resource("other/area/keep.bin")


def test_recent_pending_version_is_left_alone(pair: tuple[Catalog, StorageConnector]) -> None:
    catalog, storage = pair
    publish_version(catalog, storage)
    pending = catalog.begin(record(checksum="b" * 64))
    storage.set_resource(f"datasets/iris/v{pending.version}/part.h5", b"in progress")
    report = catalog.gc(storage, keep=1, grace_seconds=60)
    assert report.aborted_versions == [] and report.deleted_resources == []
    assert storage.has_resource("datasets/iris/v2/part.h5")
    # once older than the grace period, its writer is presumed dead (it holds no lease)
    report = catalog.gc(storage, keep=1, grace_seconds=0)
    assert report.aborted_versions == [("iris", 2)]
    assert report.deleted_resources == ["datasets/iris/v2/part.h5"]
    assert catalog.get("iris", 2, include_all=True).status == "deleted"
    assert catalog.latest("iris").version == 1


def test_dataset_with_held_lease_is_skipped(pair: tuple[Catalog, StorageConnector]) -> None:
    catalog, storage = pair
    publish_version(catalog, storage)
    publish_version(catalog, storage, checksum="b" * 64)
    storage.set_resource("datasets/iris/v7/partial.h5", b"being written")
    with catalog.lease("iris", owner="refresh-1", ttl=30):
        report = catalog.gc(storage, keep=1, grace_seconds=0)
    assert "iris" in report.skipped and "refresh-1" in report.skipped["iris"]
    assert report.deleted_versions == [] and report.deleted_resources == []
    assert len(_ids(storage)) == 3
    assert "skipped" in report.summary()


def test_dry_run_changes_nothing(pair: tuple[Catalog, StorageConnector]) -> None:
    catalog, storage = pair
    publish_version(catalog, storage)
    publish_version(catalog, storage, checksum="b" * 64)
    storage.set_resource("datasets/iris/v9/orphan.h5", b"o")
    report = catalog.gc(storage, keep=1, grace_seconds=0, dry_run=True)
    assert report.deleted_versions == [("iris", 1)]
    assert sorted(report.deleted_resources) == [
        "datasets/iris/v1/data.h5",
        "datasets/iris/v9/orphan.h5",
    ]
    assert len(_ids(storage)) == 3
    assert [r.version for r in catalog.versions("iris")] == [1, 2]
    assert report.to_dict()["dry_run"] is True


def test_storage_sweeps_run(backend: tuple[str, Any]) -> None:
    from tests.storage.helpers import leftovers, plant_temporary

    catalog, storage = make_catalog(*backend), make_storage(*backend)
    plant_temporary(storage)
    assert leftovers(storage)["temporary"] == 1
    time.sleep(0.05)  # strictly older than the (zero) grace period, at millisecond precision
    report = catalog.gc(storage, keep=1, grace_seconds=0)
    assert report.storage_sweep  # the storage sweep (GridFS orphans / temporary files) ran
    assert leftovers(storage)["temporary"] == 0


def test_gc_of_named_datasets_only(pair: tuple[Catalog, StorageConnector]) -> None:
    catalog, storage = pair
    for name in ("iris", "mnist"):
        publish_version(catalog, storage, name=name)
        publish_version(catalog, storage, name=name, checksum="b" * 64)
    report = catalog.gc(storage, keep=1, grace_seconds=0, names=["mnist"])
    assert report.deleted_versions == [("mnist", 1)]
    assert [r.version for r in catalog.versions("iris")] == [1, 2]


def test_version_record_resource_identifiers() -> None:
    rec = VersionRecord(
        name="iris",
        sources=[{"url": "file:///x", "sha256": "a" * 64, "identifier": "datasets/iris/raw/x"}],
        resources=[{"identifier": "datasets/iris/v1/data.h5", "size": 5, "sha256": "b" * 64}],
    )
    assert rec.resource_identifiers == ["datasets/iris/v1/data.h5", "datasets/iris/raw/x"]
    assert rec.size == 5


def test_delete_dataset_at_once_files_after_grace(pair: tuple[Catalog, StorageConnector]) -> None:
    """(#27.4) delete_dataset: versions and status go at once, files after the grace period."""
    from datastack.errors import DatasetNotFoundError

    catalog, storage = pair
    publish_version(catalog, storage)
    publish_version(catalog, storage, checksum="b" * 64)
    publish_version(catalog, storage, name="mnist")
    catalog.record_check("iris", "published", version=2)
    catalog.record_check("never", "failed", reason="HTTP 404")  # failed, never published
    catalog.begin(record("iris", checksum="c" * 64))  # an attempt in progress
    assert catalog.delete_dataset("iris") == [1, 2]
    assert catalog.delete_dataset("never") == []
    assert catalog.datasets() == ["mnist"]
    assert [s.name for s in catalog.statuses()] == ["mnist"]
    assert catalog.status("iris") is None
    assert all(r.status == "deleted" for r in catalog.versions("iris", include_all=True))
    with pytest.raises(DatasetNotFoundError):
        catalog.delete_dataset("other")
    assert catalog.gc(storage, grace_seconds=3600).deleted_resources == []
    time.sleep(0.05)
    report = catalog.gc(storage, grace_seconds=0)
    assert sorted(report.deleted_resources) == [
        "datasets/iris/v1/data.h5", "datasets/iris/v2/data.h5"]
    assert _ids(storage) == ["datasets/mnist/v1/data.h5"]
