"""Scenario 7: a MongoDB URI with a user and a sentinel password, used for a full refresh and
every command, and for the failure paths (wrong password, server gone). The sentinel must
appear in no log record (captured at DEBUG, pymongo's included), no output of the process
(capfd), no exception message or repr, no CLI output, and nothing stored in the database.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import datastack
from datastack.cli import main
from datastack.errors import DatastackError
from tests.mongo_server import MongoServer
from tests.reliability.helpers import arrays_spec, child_env, write_arrays

SENTINEL = "Sentinel-Pa55w0rd-QX7"
WRONG = "WrongPa55-Sentinel-ZZ9"


def _uri(server: MongoServer, password: str, database: str = "team") -> str:
    return (f"mongodb://alice:{password}@127.0.0.1:{server.port}/{database}"
            "?authSource=admin&serverSelectionTimeoutMS=2000")


@pytest.fixture
def auth_mongo(own_mongo: MongoServer) -> MongoServer:
    import pymongo

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(own_mongo.uri)
    client.admin.command("createUser", "alice", pwd=SENTINEL, roles=["root"])
    client.close()
    return own_mongo


def _everything_in_db(server: MongoServer) -> str:
    import pymongo

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(server.uri)
    dumped = []
    for name in client.list_database_names():
        if name in {"admin", "local", "config"}:
            continue
        for coll in client[name].list_collection_names():
            if coll.endswith(".chunks"):
                continue
            dumped.extend(repr(doc) for doc in client[name][coll].find({}))
    client.close()
    return "\n".join(dumped)


@pytest.mark.slow
def test_password_never_leaks(
    auth_mongo: MongoServer, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    uri = _uri(auth_mongo, SENTINEL)
    write_arrays(tmp_path / "src", 40, 4, seed=1)
    spec = arrays_spec(tmp_path / "spec.yaml", "secret", tmp_path / "src")
    seen: list[str] = []

    # The happy path: refresh, ls, show, gc, load.
    assert main(["refresh", "--spec", str(spec), "--storage", uri, "--engine", "local"]) == 0
    for argv in (["ls"], ["ls", "--json"], ["show", "secret"], ["show", "secret", "--json"],
                 ["gc", "--keep", "1", "--grace", "0"], ["gc", "--json"]):
        assert main([*argv, "--storage", uri]) == 0, argv
    it = datastack.load("secret", storage=uri)
    assert len(it) == 40
    seen += [repr(it), str(it)]
    from datastack.catalog import open_catalog
    from datastack.storage import connect

    seen += [repr(connect(uri)), connect(uri).uri, repr(open_catalog(uri))]

    # A refresh that prints its results as JSON, in a separate process (all of its output).
    proc = subprocess.run(
        [sys.executable, "-m", "datastack.cli", "refresh", "--spec", str(spec), "--storage",
         uri, "--engine", "local", "--json", "--force"],
        capture_output=True, text=True, env=child_env(), timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    seen += [proc.stdout, proc.stderr]

    # Failure paths: a wrong password, then the server gone.
    wrong = _uri(auth_mongo, WRONG)
    assert main(["refresh", "--spec", str(spec), "--storage", wrong, "--engine", "local",
                 "--force"]) != 0
    assert main(["ls", "--storage", wrong]) != 0
    with pytest.raises(DatastackError) as info:
        datastack.load("secret", storage=wrong)
    seen += [str(info.value), repr(info.value)]
    auth_mongo.stop(kill=True)
    assert main(["show", "secret", "--storage", uri]) == 3
    with pytest.raises(DatastackError) as info:
        datastack.load("secret", storage=uri)
    seen += [str(info.value), repr(info.value), str(info.value.__cause__ or "")]
    from datastack.pipeline.sequence import refresh

    results = refresh(spec, storage=uri, force=True)
    assert results[0].status == "failed"
    seen += [repr(results), results[0].reason]

    out, err = capfd.readouterr()
    seen += [out, err]
    seen += [r.getMessage() for r in caplog.records]
    seen += [str(r.args) for r in caplog.records]
    seen += [r.exc_text or "" for r in caplog.records]
    seen.append(caplog.text)
    assert "alice" in "\n".join(seen)  # the user name may show: it proves we looked there
    for text in seen:
        assert SENTINEL not in text and WRONG not in text, text[:2000]

    auth_mongo.start()
    stored = _everything_in_db(auth_mongo)
    assert "secret" in stored  # the catalog records are there
    assert SENTINEL not in stored
