"""Shared fixtures: MongoDB servers (SecantusDB, external mongod, mongomock) and backends.

- ``mongo_base_uri`` (session): ``mongodb://127.0.0.1:PORT`` of a SecantusDB process started
  for this session, or of ``$DATASTACK_TEST_MONGO_URI`` when set.
- ``mongo_uri``: a fresh database on that server for one test (``.../t_<hex>``), dropped after.
- ``mongomock_db``: a fresh mongomock database (fast unit runs).
- ``storage_uri`` / ``backend``: parametrised over every backend; see ``BACKENDS``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.mongo_server import MongoServer, external_uri

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The local disk cache (docs/cache.md) stays off unless a test turns it on with a folder of
# its own: tests never write to the user's cache folder.
os.environ.setdefault("DATASTACK_CACHE_DIR_BYTES", "0")


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoServer | None]:
    """The SecantusDB process of this session (None when an external server is used)."""
    if external_uri():
        yield None
        return
    try:
        import secantus  # noqa: F401
    except ImportError:
        pytest.fail("SecantusDB is part of the dev extra: pip install -e '.[dev]'")
    server = MongoServer(tmp_path_factory.mktemp("secantus") / "data").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mongo_base_uri(mongo_server: MongoServer | None) -> str:
    if mongo_server is None:
        uri = external_uri()
        assert uri is not None
        return uri
    return mongo_server.uri


def _with_database(base: str, database: str) -> str:
    if "?" in base:
        head, query = base.split("?", 1)
        return f"{head.rstrip('/')}/{database}?{query}"
    return f"{base.rstrip('/')}/{database}"


def _close_cached_clients(database: str) -> None:
    """Close the clients this process cached for URIs of ``database`` (a suite of hundreds of
    fresh databases would otherwise keep hundreds of clients' sockets open)."""
    from datastack import _mongo

    with _mongo._LOCK:
        keys = [key for key in _mongo._CLIENTS if f"/{database}" in key[1]]
        clients = [_mongo._CLIENTS.pop(key) for key in keys]
    for client in clients:
        client.close()


@pytest.fixture
def mongo_uri(mongo_base_uri: str) -> Iterator[str]:
    """A fresh database on the session's MongoDB server, dropped after the test."""
    import pymongo

    database = f"t_{uuid.uuid4().hex[:12]}"
    yield _with_database(mongo_base_uri, database)
    _close_cached_clients(database)  # each test's URI has its own cached client: its sockets
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        mongo_base_uri, serverSelectionTimeoutMS=5000
    )
    try:
        client.drop_database(database)
    except Exception:  # noqa: BLE001 - the server may have been stopped by the test
        pass
    finally:
        client.close()


@pytest.fixture
def mongomock_db() -> Any:
    mongomock = pytest.importorskip("mongomock")
    return mongomock.MongoClient()[f"t_{uuid.uuid4().hex[:12]}"]


BACKENDS = ["file", "mongomock", "secantus"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Any]:
    """(kind, handle): ("file", root path) | ("mongomock", Database) | ("secantus", uri).

    "secantus" runs against DATASTACK_TEST_MONGO_URI instead when that is set.
    """
    kind: str = request.param
    if kind == "file":
        return kind, tmp_path / "store"
    if kind == "mongomock":
        return kind, request.getfixturevalue("mongomock_db")
    return kind, request.getfixturevalue("mongo_uri")


def _thread_stacks(frames_per_thread: int = 6) -> str:
    """Every thread's innermost frames, a line each (a timeout's own dump sits in the middle
    of CI's output, which is cut; this goes in the summary line at its end)."""
    import sys
    import threading
    import traceback

    names = {t.ident: t.name for t in threading.enumerate()}
    lines = []
    for ident, frame in sys._current_frames().items():
        if ident == threading.main_thread().ident:
            continue  # its stack is the failure's own traceback
        stack = traceback.extract_stack(frame)[-frames_per_thread:]
        where = " < ".join(
            f"{Path(f.filename).parent.name}/{Path(f.filename).name}:{f.lineno} {f.name}"
            for f in reversed(stack)
        )
        lines.append(f"  [{names.get(ident, ident)}] {where}")
    return "\n".join(sorted(lines))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A test that timed out carries every thread's stack (taken while they are still where
    they hung) in its summary line."""
    outcome = yield
    report = outcome.get_result()
    crash = getattr(report.longrepr, "reprcrash", None)
    if report.failed and crash is not None and "Timeout (>" in crash.message:
        crash.message += "\nthreads at the timeout:\n" + _thread_stacks()
