"""Leases expire by one clock, the MongoDB server's (#26.19): a client whose wall clock runs
minutes ahead cannot take a live lease, one running behind still takes an expired one, and a
holder running behind learns that its lease expired. The skew is simulated by shifting every
reading of the client's clock (``datastack.catalog.record.utcnow`` wherever it was imported);
the server (SecantusDB, or ``$DATASTACK_TEST_MONGO_URI``) keeps its own."""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from datastack.catalog import record as record_module
from datastack.catalog.mongostore import MongoCatalog
from datastack.errors import LockHeldError

Skew = Callable[[float], None]


@pytest.fixture
def skew(monkeypatch: pytest.MonkeyPatch) -> Iterator[Skew]:
    """``skew(seconds)``: this client's clock now reads ``seconds`` ahead (or behind)."""
    real = record_module.utcnow

    def shift(seconds: float) -> None:
        def skewed() -> dt.datetime:
            return real() + dt.timedelta(seconds=seconds)

        for module in list(sys.modules.values()):
            if getattr(module, "__name__", "").startswith("datastack") and (
                getattr(module, "utcnow", None) is real
            ):
                monkeypatch.setattr(module, "utcnow", skewed)

    yield shift


def test_store_now_is_the_servers_clock_not_the_clients(mongo_uri: str, skew: Skew) -> None:
    catalog = MongoCatalog(mongo_uri)
    skew(3600.0)
    assert record_module.utcnow() - dt.datetime.now(dt.UTC) > dt.timedelta(minutes=59)
    server = catalog.store_now()
    assert abs((server - dt.datetime.now(dt.UTC)).total_seconds()) < 60


def test_a_client_minutes_ahead_cannot_take_a_live_lease(mongo_uri: str, skew: Skew) -> None:
    holder = MongoCatalog(mongo_uri).lease("iris", owner="host-a:1:x", ttl=60)
    skew(120.0)  # the other host's clock is 2 minutes ahead: by it, the lease expired
    with pytest.raises(LockHeldError, match="locked by 'host-a:1:x'") as err:
        MongoCatalog(mongo_uri).lease("iris", owner="host-b:2:y", ttl=60)
    assert "s left" in str(err.value)
    assert holder.is_held()
    holder.renew()  # the holder keeps it
    assert MongoCatalog(mongo_uri).lease_state("iris").token == holder.token  # type: ignore[union-attr]


def test_a_client_minutes_behind_takes_an_expired_lease(mongo_uri: str, skew: Skew) -> None:
    old = MongoCatalog(mongo_uri).lease("iris", owner="host-a:1:x", ttl=0.3)
    skew(-120.0)  # by this clock the old lease has two minutes left
    time.sleep(0.6)  # on the server's clock it expired
    assert not old.is_held()
    new = MongoCatalog(mongo_uri).lease("iris", owner="host-b:2:y", ttl=60)
    assert new.token == old.token + 1
    with pytest.raises(LockHeldError, match="lease was lost"):
        old.renew()


def test_renewal_runs_from_the_servers_clock(mongo_uri: str, skew: Skew) -> None:
    catalog = MongoCatalog(mongo_uri)
    lease = catalog.lease("iris", ttl=30)
    skew(600.0)
    lease.renew(30)
    assert lease.expires_at is not None
    left = (lease.expires_at - catalog.store_now()).total_seconds()
    assert 20 < left <= 30  # not 630 s: the client's clock did not move the expiry


def test_a_lost_lease_is_fenced_even_when_the_holders_clock_says_it_is_live(
    mongo_uri: str, skew: Skew
) -> None:
    catalog = MongoCatalog(mongo_uri)
    lease = catalog.lease("iris", ttl=0.3)
    skew(-600.0)
    time.sleep(0.6)
    with pytest.raises(LockHeldError, match="lease was lost"):
        catalog.begin("iris", spec_hash="h", token=lease)
