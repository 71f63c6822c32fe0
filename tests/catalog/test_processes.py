"""Leases across real processes (file and SecantusDB stores; mongomock is in-process only)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from typing import Any

import pytest

from datastack.catalog import Catalog
from datastack.errors import LockHeldError
from tests.catalog.helpers import make_catalog, record

CTX = multiprocessing.get_context("fork")


@pytest.fixture
def shared_catalog(backend: tuple[str, Any]) -> Catalog:
    kind, handle = backend
    if kind == "mongomock":
        pytest.skip("mongomock lives inside one process: cross-process leases need a server")
    return make_catalog(kind, handle)


def _refresh(catalog: Catalog, barrier: Any, results: Any, wait: float) -> None:
    """What a refresh does: lease, skip identical content, else begin -> write -> publish."""
    barrier.wait()
    try:
        with catalog.lease("iris", ttl=30, wait=wait) as lease:
            if catalog.find_identical("iris", "spec-1", ["a" * 64]) is not None:
                results.put(("identical", lease.token))
                return
            rec = catalog.begin(record(), token=lease)
            time.sleep(0.8)  # writing resources (long enough for the contenders to collide)
            catalog.publish("iris", rec.version, token=lease)
            results.put(("published", lease.token))
    except LockHeldError as exc:
        results.put(("held", str(exc)))
    except BaseException as exc:
        results.put(("error", repr(exc)))


def _race(catalog: Catalog, n: int, wait: float) -> list[tuple[str, Any]]:
    barrier = CTX.Barrier(n)
    results = CTX.Queue()
    procs = [CTX.Process(target=_refresh, args=(catalog, barrier, results, wait)) for _ in range(n)]
    for p in procs:
        p.start()
    out = [results.get(timeout=60) for _ in range(n)]
    for p in procs:
        p.join(timeout=30)
    return sorted(out)


def test_racing_refreshes_exactly_one_publishes(shared_catalog: Catalog) -> None:
    outcomes = _race(shared_catalog, 3, wait=0)
    kinds = [kind for kind, _ in outcomes]
    assert kinds.count("published") == 1, outcomes
    assert kinds.count("held") == 2, outcomes
    assert all("locked by" in str(detail) for kind, detail in outcomes if kind == "held")
    assert [r.version for r in shared_catalog.versions("iris", include_all=True)] == [1]


def test_waiting_refreshes_serialise_and_publish_once(shared_catalog: Catalog) -> None:
    outcomes = _race(shared_catalog, 3, wait=20)
    kinds = [kind for kind, _ in outcomes]
    assert kinds.count("published") == 1 and kinds.count("identical") == 2, outcomes
    assert len({token for _, token in outcomes}) == 3  # three successive leases
    assert [r.version for r in shared_catalog.versions("iris", include_all=True)] == [1]


def _hold_and_die(catalog: Catalog, ready: Any) -> None:
    lease = catalog.lease("iris", owner="doomed", ttl=2.0)
    ready.send(lease.token)  # a Pipe sends synchronously, unlike a Queue's feeder thread
    os.kill(os.getpid(), signal.SIGKILL)


def test_crashed_holder_lease_expires(shared_catalog: Catalog) -> None:
    receiver, sender = CTX.Pipe(duplex=False)
    proc = CTX.Process(target=_hold_and_die, args=(shared_catalog, sender))
    proc.start()
    assert receiver.poll(30), "the child never acquired the lease"
    dead_token = receiver.recv()
    proc.join(timeout=30)
    assert proc.exitcode == -signal.SIGKILL
    with pytest.raises(LockHeldError, match="doomed"):
        shared_catalog.lease("iris", ttl=30)
    lease = shared_catalog.lease("iris", ttl=30, wait=15)
    assert lease.token == dead_token + 1
    lease.release()
