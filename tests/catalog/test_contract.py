"""The catalog contract, on every backend: file, mongomock and SecantusDB."""

from __future__ import annotations

import datetime as dt
import pickle
import threading
import time
from typing import Any

import pytest

from datastack.catalog import PENDING, PUBLISHED, Catalog, VersionRecord
from datastack.errors import (
    CatalogError,
    DatasetNotFoundError,
    InvalidIdentifierError,
    LockHeldError,
    PublishError,
    VersionNotFoundError,
)
from tests.catalog.helpers import make_catalog, publish_version, record


@pytest.fixture
def catalog(backend: tuple[str, Any]) -> Catalog:
    return make_catalog(*backend)


# -- versions and visibility -------------------------------------------------------------------
def test_versions_count_without_gaps_and_published_numbers_are_never_reused(
    catalog: Catalog,
) -> None:
    """(#27.6) An aborted attempt frees its number; a published (even deleted) one never."""
    assert catalog.next_version("iris") == 1
    v1 = publish_version(catalog)
    v2 = publish_version(catalog)
    assert (v1.version, v2.version) == (1, 2)
    aborted = catalog.begin(record())
    assert aborted.attempt and aborted.attempt != v2.attempt  # attempts have ids of their own
    catalog.abort("iris", aborted.version)
    assert catalog.next_version("iris") == 3  # v3 was aborted: its number is free again
    assert [r.version for r in catalog.versions("iris")] == [1, 2]
    assert [r.status for r in catalog.versions("iris", include_all=True)] == [
        "published",
        "published",
        "deleted",
    ]
    v3 = publish_version(catalog, checksum="c" * 64)
    assert v3.version == 3 and v3.attempt != aborted.attempt
    catalog.delete_version("iris", 3)
    assert catalog.next_version("iris") == 4  # a published number stays taken once deleted
    assert [r.version for r in catalog.versions("iris")] == [1, 2]


def test_abort_and_publish_of_an_attempt_leave_a_reused_number_alone(catalog: Catalog) -> None:
    first = catalog.begin(record())
    catalog.abort("iris", first.version, attempt=first.attempt)
    second = catalog.begin(record())
    assert second.version == first.version == 1
    catalog.abort("iris", 1, attempt=first.attempt)  # the stale attempt: nothing happens
    with pytest.raises(PublishError, match=first.attempt):
        catalog.publish("iris", 1, attempt=first.attempt)
    assert catalog.get("iris", 1, include_all=True).attempt == second.attempt
    assert catalog.publish("iris", 1, attempt=second.attempt).status == PUBLISHED


def test_begin_under_a_newer_lease_aborts_fenced_attempts(catalog: Catalog) -> None:
    old = catalog.lease("iris", owner="crashed", ttl=0.2)
    stale = catalog.begin(record(), token=old)
    time.sleep(0.3)
    with catalog.lease("iris", owner="next", ttl=30) as new:
        fresh = catalog.begin(record(), token=new)
        assert fresh.version == stale.version == 1  # the crashed attempt left no gap
        catalog.publish("iris", 1, token=new, attempt=fresh.attempt)
    assert [r.version for r in catalog.versions("iris")] == [1]


def test_latest_resolves_only_published(catalog: Catalog) -> None:
    publish_version(catalog)
    pending = catalog.begin(record(checksum="b" * 64))
    assert pending.status == PENDING and pending.version == 2
    assert catalog.latest("iris").version == 1
    with pytest.raises(VersionNotFoundError, match="pending"):
        catalog.get("iris", 2)
    assert catalog.get("iris", 2, include_all=True).status == PENDING
    assert [r.version for r in catalog.versions("iris")] == [1]
    published = catalog.publish(
        "iris", 2, resources=[{"identifier": "datasets/iris/v2/x", "size": 1, "sha256": "0" * 64}]
    )
    assert published.status == PUBLISHED and published.published_at is not None
    latest = catalog.latest("iris")
    assert latest.version == 2
    assert latest.resources[0]["identifier"] == "datasets/iris/v2/x"
    assert latest == catalog.get("iris", 2)


def test_pending_only_dataset_is_invisible(catalog: Catalog) -> None:
    publish_version(catalog, name="mnist")
    catalog.begin(record("iris"))
    assert catalog.datasets() == ["mnist"]
    assert catalog.datasets(include_unpublished=True) == ["iris", "mnist"]
    with pytest.raises(DatasetNotFoundError) as info:
        catalog.latest("iris")
    message = str(info.value)
    assert "'iris'" in message and "mnist" in message and catalog.location in message


def test_publish_refuses_non_pending(catalog: Catalog) -> None:
    publish_version(catalog)
    with pytest.raises(PublishError, match="published"):
        catalog.publish("iris", 1)
    rec = catalog.begin(record())
    catalog.abort("iris", rec.version)
    with pytest.raises(PublishError, match="deleted"):
        catalog.publish("iris", rec.version)
    with pytest.raises(VersionNotFoundError):
        catalog.publish("iris", 99)
    assert catalog.latest("iris").version == 1


def test_record_round_trip_and_redaction(catalog: Catalog) -> None:
    rec = VersionRecord(
        name="iris",
        sources=[{"url": "https://alice:SENTINEL@example.org/x.csv", "md5": "c" * 32}],
        schema={"samples": {"shape": [150, 4], "dtype": "float64"}},
        encodings={"species": ["setosa", "versicolor"]},
        producer={"flow_run_id": "abc", "host": "h", "datastack_version": "0.1"},
        description="Fisher's iris",
    )
    stored = catalog.begin(rec)
    catalog.publish("iris", stored.version, splits={"train": 120, "test": 30})
    back = catalog.latest("iris")
    assert "SENTINEL" not in repr(back) and "SENTINEL" not in str(back.to_dict())
    assert back.sources[0]["url"] == "https://alice:***@example.org/x.csv"
    assert back.splits == {"train": 120, "test": 30}
    assert back.encodings == rec.encodings and back.schema == rec.schema
    assert VersionRecord.from_dict(back.to_dict()) == back


def test_find_identical(catalog: Catalog) -> None:
    assert catalog.find_identical("iris", "spec-1", ["a" * 64]) is None
    publish_version(catalog)
    found = catalog.find_identical("iris", "spec-1", ["A" * 64])
    assert found is not None and found.version == 1
    assert catalog.find_identical("iris", "spec-2", ["a" * 64]) is None
    assert catalog.find_identical("iris", "spec-1", ["b" * 64]) is None
    publish_version(catalog, checksum="b" * 64)
    # only the latest counts: reverting to v1's content publishes again
    assert catalog.find_identical("iris", "spec-1", ["a" * 64]) is None


def test_same_version_twice_fails(catalog: Catalog) -> None:
    catalog.begin(record(version=1))
    with pytest.raises(CatalogError, match="already exists"):
        catalog.begin(record(version=1))


def test_concurrent_begin_of_one_version_one_wins(catalog: Catalog) -> None:
    barrier = threading.Barrier(6)
    outcomes: list[str] = []

    def writer() -> None:
        barrier.wait()
        try:
            catalog.begin(record(version=1))
            outcomes.append("ok")
        except CatalogError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=writer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict"] * 5 + ["ok"]


def test_concurrent_auto_allocation_gives_distinct_versions(catalog: Catalog) -> None:
    barrier = threading.Barrier(4)
    got: list[int] = []

    def writer() -> None:
        barrier.wait()
        got.append(catalog.begin(record()).version)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == [1, 2, 3, 4]


def test_delete_version(catalog: Catalog) -> None:
    publish_version(catalog)
    publish_version(catalog)
    deleted = catalog.delete_version("iris", 2)
    assert deleted.status == "deleted" and deleted.deleted_at is not None
    assert catalog.latest("iris").version == 1
    with pytest.raises(VersionNotFoundError):
        catalog.delete_version("iris", 7)


# -- hostile input -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad", ["../x", "/etc/passwd", {"$ne": None}, "a\x00b", "x" * 300, "CON", "Iris", ""]
)
def test_hostile_names_rejected(catalog: Catalog, bad: Any) -> None:
    for call in (
        lambda: catalog.latest(bad),
        lambda: catalog.versions(bad),
        lambda: catalog.get(bad, 1),
        lambda: catalog.lease(bad),
        lambda: catalog.next_version(bad),
        lambda: catalog.find_identical(bad, "h", []),
    ):
        with pytest.raises(InvalidIdentifierError):
            call()
    with pytest.raises(InvalidIdentifierError):
        VersionRecord(name=bad)
    assert catalog.datasets(include_unpublished=True) == []


@pytest.mark.parametrize("bad", [{"$gt": 0}, 0, -1, "1", True])
def test_hostile_versions_rejected(catalog: Catalog, bad: Any) -> None:
    with pytest.raises(InvalidIdentifierError):
        catalog.get("iris", bad)


def test_hostile_resource_identifier_rejected(catalog: Catalog) -> None:
    rec = catalog.begin(record())
    with pytest.raises(InvalidIdentifierError):
        catalog.publish("iris", rec.version, resources=[{"identifier": "../../etc/passwd"}])
    assert catalog.get("iris", rec.version, include_all=True).status == PENDING


# -- leases ------------------------------------------------------------------------------------
def test_lease_contention_names_holder(catalog: Catalog) -> None:
    with catalog.lease("iris", owner="host-a:1", ttl=30) as first:
        assert first.token == 1 and first.is_held()
        with pytest.raises(LockHeldError) as info:
            catalog.lease("iris", owner="host-b:2", ttl=30)
        message = str(info.value)
        assert "host-a:1" in message and "until" in message and "s left" in message
    assert not first.is_held()
    second = catalog.lease("iris", owner="host-b:2", ttl=30)
    assert second.token == 2  # tokens survive a release
    second.release()
    second.release()  # idempotent


def test_lease_expiry_takeover_and_fencing(catalog: Catalog) -> None:
    old = catalog.lease("iris", owner="slow", ttl=0.3)
    rec = catalog.begin(record(), token=old)
    assert rec.lease_token == old.token
    time.sleep(0.45)
    new = catalog.lease("iris", owner="fast", ttl=30)
    assert new.token > old.token
    with pytest.raises(LockHeldError, match="lease was lost"):
        catalog.publish("iris", rec.version, token=old)
    with pytest.raises(LockHeldError):
        old.renew()
    with pytest.raises(LockHeldError):
        catalog.begin(record(), token=old.token)
    assert catalog.get("iris", rec.version, include_all=True).status == PENDING
    old.release()  # a stale holder's release must not free the new holder's lease
    assert new.is_held()
    assert catalog.publish("iris", rec.version, token=new).status == PUBLISHED
    new.release()


def test_lease_renew_extends(catalog: Catalog) -> None:
    # a TTL that a loaded machine cannot outrun between taking and renewing the lease
    lease = catalog.lease("iris", ttl=1.5)
    first_expiry = lease.expires_at
    time.sleep(0.1)
    lease.renew(ttl=5)
    assert lease.expires_at is not None and first_expiry is not None
    assert lease.expires_at > first_expiry
    left = (first_expiry - dt.datetime.now(dt.timezone.utc)).total_seconds()
    time.sleep(max(0.0, left) + 0.1)  # past the original expiry
    assert lease.is_held()
    with pytest.raises(LockHeldError):
        catalog.lease("iris", ttl=5)
    lease.release()
    with pytest.raises(LockHeldError, match="released"):
        lease.renew()


def test_lease_wait_acquires_after_release(catalog: Catalog) -> None:
    holder = catalog.lease("iris", ttl=30)
    timer = threading.Timer(0.3, holder.release)
    timer.start()
    started = time.monotonic()
    waiter = catalog.lease("iris", ttl=30, wait=10)
    assert 0.2 < time.monotonic() - started < 5
    assert waiter.token == holder.token + 1
    waiter.release()
    timer.join()


def test_lease_wait_times_out(catalog: Catalog) -> None:
    with catalog.lease("iris", ttl=30):
        started = time.monotonic()
        with pytest.raises(LockHeldError):
            catalog.lease("iris", ttl=30, wait=0.3)
        assert 0.25 < time.monotonic() - started < 3


def test_leases_are_per_dataset(catalog: Catalog) -> None:
    with catalog.lease("iris", ttl=30), catalog.lease("mnist", ttl=30) as other:
        assert other.token == 1


def test_picklable(backend: tuple[str, Any]) -> None:
    kind, handle = backend
    if kind == "mongomock":
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(make_catalog(kind, handle))
        return
    catalog = make_catalog(kind, handle)
    publish_version(catalog)
    clone = pickle.loads(pickle.dumps(catalog))
    assert clone.latest("iris") == catalog.latest("iris")


# -- call forms used by the refresh pipeline ---------------------------------------------------
def test_begin_by_name_and_token_only_release(catalog: Catalog) -> None:
    token = catalog.acquire_lease("iris", ttl=30).token
    rec = catalog.begin(
        "iris",
        spec_hash="s",
        sources=[{"url": "file:///x.csv", "sha256": "d" * 64, "md5": "e" * 32}],
        format="csv",
        lease_token=token,
    )
    assert rec.version == 1 and rec.lease_token == token
    catalog.publish("iris", 1, lease_token=token, splits={"train": 1})
    # the pipeline compares "algo:hex" strings; either checksum of a source matches
    assert catalog.find_identical("iris", "s", ["md5:" + "E" * 32]) is not None
    assert catalog.find_identical("iris", "s", ["sha256:" + "d" * 64]) is not None
    assert catalog.find_identical("iris", "s", ["d" * 64, "e" * 32]) is None  # one source only
    assert catalog.release_lease("iris", token + 1) is False  # not the current token
    assert catalog.release_lease("iris", token) is True
    assert catalog.lease("iris", ttl=30).token == token + 1
