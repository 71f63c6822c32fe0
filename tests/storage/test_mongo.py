"""datastack._mongo: per-process clients, bounded timeouts, error translation and redaction."""

from __future__ import annotations

import os

import pytest

from datastack._mongo import client_settings, get_client, mongo_errors, scrub
from datastack.errors import StorageError, StorageUnavailableError


def test_client_cached_per_uri_and_settings() -> None:
    uri = "mongodb://127.0.0.1:1/db"
    assert get_client(uri) is get_client(uri)
    assert get_client(uri, timeout_ms=100) is not get_client(uri)


def test_uri_options_win_over_defaults() -> None:
    settings = client_settings("mongodb://h/db?serverSelectionTimeoutMS=5&socketTimeoutMS=9")
    assert settings == {"connectTimeoutMS": 10_000}
    with pytest.raises(ValueError):
        client_settings("mongodb://h/db", timeout_ms=0)


def test_forked_child_gets_its_own_client() -> None:
    uri = "mongodb://127.0.0.1:1/forktest"
    parent = get_client(uri)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must not reuse the parent's client
        os.close(read)
        os.write(write, b"1" if get_client(uri) is not parent else b"0")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.waitpid(pid, 0)
    os.close(read)
    assert answer == b"1"
    assert get_client(uri) is parent


def test_errors_are_translated_and_redacted() -> None:
    from pymongo.errors import AutoReconnect, NetworkTimeout, OperationFailure

    uri = "mongodb://bob:p%40ss-SENTINEL@db.example:27017/team"
    for exc in (AutoReconnect("db.example: reset; p@ss-SENTINEL"), NetworkTimeout("timed out")):
        with pytest.raises(StorageUnavailableError) as info, mongo_errors(uri, "reading x"):
            raise exc
        text = str(info.value)
        assert "SENTINEL" not in text and "bob:***@db.example" in text and "reading x" in text
        assert info.value.__cause__ is None and info.value.__suppress_context__
    with pytest.raises(StorageError, match="failed") as failed, mongo_errors(uri):
        raise OperationFailure("not authorized")
    assert not isinstance(failed.value, StorageUnavailableError)
    with pytest.raises(KeyError), mongo_errors(uri):
        raise KeyError("not a driver error: untouched")


def test_scrub_removes_literal_password() -> None:
    uri = "mongodb://u:hunter2@h/db"
    assert scrub("auth failed for hunter2 at mongodb://u:hunter2@h/db", uri) == (
        "auth failed for *** at mongodb://u:***@h/db"
    )
