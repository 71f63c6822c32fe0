"""MongoDB clients: one per process and URI, bounded timeouts, errors with no credentials.

pymongo is not fork-safe, so clients are cached per ``(pid, uri, settings)``: a DataLoader
worker (a forked child) gets its own client the first time it asks. Connection failures are
turned into :class:`~datastack.errors.StorageUnavailableError` with the URI redacted.

>>> with mongo_errors("mongodb://alice:s3cret@db.invalid/team"):
...     pass
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from datastack._uri import redact
from datastack.errors import StorageError, StorageUnavailableError

if TYPE_CHECKING:  # pragma: no cover
    from pymongo import MongoClient

#: Default bounds (milliseconds): how long to look for a server, to connect, and to wait for
#: one answer. A URI option of the same name wins over these.
DEFAULT_TIMEOUTS_MS: dict[str, int] = {
    "serverSelectionTimeoutMS": 10_000,
    "connectTimeoutMS": 10_000,
    "socketTimeoutMS": 120_000,
}

_CLIENTS: dict[tuple[int, str, tuple[tuple[str, int], ...]], MongoClient[dict[str, Any]]] = {}
_LOCK = threading.Lock()


def _uri_options(uri: str) -> set[str]:
    return {key.lower() for key, _ in parse_qsl(urlsplit(uri).query)}


def client_settings(uri: str, timeout_ms: int | None = None) -> dict[str, int]:
    """The timeouts passed to ``MongoClient`` for ``uri`` (options in the URI win).

    ``timeout_ms`` sets server selection and connect timeouts (e.g. 500 for fast failure).

    >>> client_settings("mongodb://h/db?connectTimeoutMS=5", timeout_ms=500)
    {'serverSelectionTimeoutMS': 500, 'socketTimeoutMS': 120000}
    """
    settings = dict(DEFAULT_TIMEOUTS_MS)
    if timeout_ms is not None:
        if timeout_ms <= 0:
            raise ValueError(f"timeout_ms must be positive, got {timeout_ms}")
        settings["serverSelectionTimeoutMS"] = timeout_ms
        settings["connectTimeoutMS"] = timeout_ms
    present = _uri_options(uri)
    return {k: v for k, v in settings.items() if k.lower() not in present}


def get_client(uri: str, *, timeout_ms: int | None = None) -> MongoClient[dict[str, Any]]:
    """The ``MongoClient`` of this process for ``uri`` (created on first use).

    Creating a client does no I/O; the first operation connects, bounded by the timeouts of
    :func:`client_settings`.
    """
    settings = client_settings(uri, timeout_ms)
    key = (os.getpid(), uri, tuple(sorted(settings.items())))
    client = _CLIENTS.get(key)
    if client is not None:
        return client
    with _LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            import pymongo

            with mongo_errors(uri):
                client = pymongo.MongoClient(uri, connect=False, **settings)  # type: ignore[arg-type]
            _CLIENTS[key] = client
    return client


def close_clients() -> None:
    """Close the clients this process opened (clients inherited over fork are dropped)."""
    pid = os.getpid()
    with _LOCK:
        for key in list(_CLIENTS):
            client = _CLIENTS.pop(key)
            if key[0] == pid:
                client.close()


def _forget_inherited_clients() -> None:
    _CLIENTS.clear()  # never use (or close) the parent's sockets in a forked child


os.register_at_fork(after_in_child=_forget_inherited_clients)


def scrub(text: str, uri: str) -> str:
    """``text`` with ``user:password@`` redacted and any literal password of ``uri`` removed."""
    text = redact(text)
    with contextlib.suppress(ValueError):
        password = urlsplit(uri).password
        if password:
            for secret in {password, unquote(password)}:
                text = text.replace(secret, "***")
    return text


@contextlib.contextmanager
def mongo_errors(uri: str, what: str = "") -> Iterator[None]:
    """Translate pymongo errors raised inside the block into datastack errors.

    Connection problems (``ConnectionFailure``: server selection timeout, auto-reconnect,
    network timeout) become :class:`StorageUnavailableError`; other driver errors become
    :class:`StorageError`. Messages carry the redacted URI, never the password.
    """
    try:
        yield
    except Exception as exc:
        module = type(exc).__module__
        if not (module.startswith("pymongo") or module.startswith("gridfs")):
            raise
        from pymongo.errors import ConfigurationError as PyMongoConfigurationError
        from pymongo.errors import ConnectionFailure, InvalidURI

        where = redact(uri)
        detail = scrub(f"{type(exc).__name__}: {exc}", uri)
        if len(detail) > 500:
            detail = detail[:497] + "..."
        action = f" while {what}" if what else ""
        if isinstance(exc, ConnectionFailure):
            raise StorageUnavailableError(
                f"MongoDB at {where} is unavailable{action} ({detail}); check that the server "
                "is running and reachable, then retry"
            ) from None
        if isinstance(exc, (InvalidURI, PyMongoConfigurationError)):
            raise StorageError(
                f"invalid MongoDB storage URI {where}{action} ({detail}); expected "
                "mongodb://[user:pass@]host[:port]/DBNAME[?options]"
            ) from None
        raise StorageError(f"MongoDB at {where} failed{action} ({detail})") from None


__all__ = [
    "DEFAULT_TIMEOUTS_MS",
    "client_settings",
    "close_clients",
    "get_client",
    "mongo_errors",
    "scrub",
]


def durable(collection: Any) -> Any:
    """``collection`` with a journaled majority write concern (where the driver supports it)."""
    from pymongo.write_concern import WriteConcern

    with_options = getattr(collection, "with_options", None)
    if with_options is None:  # pragma: no cover - test doubles
        return collection
    try:
        return with_options(write_concern=WriteConcern(w="majority", j=True))
    except (TypeError, NotImplementedError):  # pragma: no cover - mongomock variants
        return collection
