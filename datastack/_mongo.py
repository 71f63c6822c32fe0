"""MongoDB clients: one per process and URI, bounded timeouts, errors with no credentials.

pymongo is not fork-safe, so clients are cached per ``(pid, uri, settings)``: a DataLoader
worker (a forked child) gets its own client the first time it asks. Connection failures are
turned into :class:`~datastack.errors.StorageUnavailableError` with the URI redacted.

>>> with mongo_errors("mongodb://alice:s3cret@db.invalid/team"):
...     pass
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from datastack._uri import redact, secret_values
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


#: URI options naming files the driver reads when it connects (lower case).
_TLS_FILE_OPTIONS = {"tlscafile": "tlsCAFile", "tlscertificatekeyfile": "tlsCertificateKeyFile",
                     "tlscrlfile": "tlsCRLFile"}


def check_tls_files(uri: str) -> None:
    """Each TLS file a URI names must be a readable regular file: a clear
    :class:`~datastack.errors.ConfigurationError` now, not a raw ``OSError`` at first use."""
    from datastack.errors import ConfigurationError

    for key, value in parse_qsl(urlsplit(uri).query):
        option = _TLS_FILE_OPTIONS.get(key.lower())
        if option is None:
            continue
        problem = None
        if not os.path.exists(value):
            problem = "does not exist"
        elif not os.path.isfile(value):
            problem = "is not a regular file"
        elif not os.access(value, os.R_OK):
            problem = "is not readable by this user"
        if problem:
            raise ConfigurationError(
                f"MongoDB URI {redact(uri)}: {option}={value!r} {problem}; expected a "
                "readable PEM file: fix the path in the URI (or mount the file)"
            )


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

            check_tls_files(uri)
            with mongo_errors(uri):
                client = pymongo.MongoClient(uri, connect=False, **settings)  # type: ignore[arg-type]
            _CLIENTS[key] = client
    return client


def _forget_inherited_clients() -> None:
    _CLIENTS.clear()  # never use (or close) the parent's sockets in a forked child


os.register_at_fork(after_in_child=_forget_inherited_clients)


def scrub(text: str, uri: str) -> str:
    """``text`` with ``user:password@`` and secret options redacted, and any literal secret of
    ``uri`` (password, ``tlsCertificateKeyFilePassword``, ``authMechanismProperties``...)
    removed wherever the driver quotes it."""
    text = redact(text)
    for secret in sorted(secret_values(uri), key=len, reverse=True):
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


# -- BSON times ----------------------------------------------------------------------------
def bson_now() -> dt.datetime:
    """Now as the naive UTC datetime with millisecond precision that BSON stores."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def naive_utc(value: dt.datetime) -> dt.datetime:
    """``value`` as a naive UTC datetime (what BSON stores and returns)."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


_DATABASE_RE = re.compile(r"[A-Za-z0-9_-]{1,63}")


class MongoHandle:
    """Where a MongoDB-backed component lives: one database, by URI or by ``Database`` object.

    Shared by the GridFS connector and the MongoDB catalog: it holds the URI (never shown),
    a redacted display string, lazy per-process clients (:func:`get_client`), the mapping of
    driver errors to datastack errors, index creation once per process, and the pickling
    rule (a handle built on a ``Database`` object -- tests, mongomock -- cannot be pickled).

    >>> handle = MongoHandle("mongodb://alice:s3cret@db.example/team")
    >>> handle.display, handle.database_name
    ('mongodb://alice:***@db.example/team', 'team')
    """

    def __init__(
        self, uri: str, *, database: str | None = None, timeout_ms: int | None = None
    ) -> None:
        from datastack._uri import parse_storage_uri
        from datastack.errors import ConfigurationError

        if not isinstance(uri, str) or "://" not in uri:
            raise ConfigurationError(
                f"MongoDB storage needs a mongodb:// URI, got {redact(str(uri))!r}: expected "
                "mongodb://[user:pass@]host[:port]/DBNAME"
            )
        name = database or parse_storage_uri(uri).database
        if not name or not _DATABASE_RE.fullmatch(name):
            raise ConfigurationError(f"invalid database name {name!r} for {redact(uri)}")
        self.uri = uri
        self.database_name = name
        self.timeout_ms = timeout_ms
        self.display = redact(uri)
        self._fixed_db: Any = None
        self._indexed: dict[str, int] = {}
        self._index_lock = threading.Lock()

    @classmethod
    def from_database(cls, db: Any) -> MongoHandle:
        """A handle on an existing ``Database`` (pymongo or mongomock); not picklable."""
        self = cls.__new__(cls)
        self.uri = ""
        self.database_name = str(db.name)
        self.timeout_ms = None
        self.display = f"mongodb://{type(db.client).__module__}/{self.database_name}"
        self._fixed_db = db
        self._indexed = {}
        self._index_lock = threading.Lock()
        return self

    @property
    def fixed(self) -> bool:
        """Whether the handle wraps a ``Database`` object instead of a URI."""
        return self._fixed_db is not None

    def db(self) -> Any:
        """The ``Database`` (connecting lazily, one client per process and URI)."""
        if self._fixed_db is not None:
            return self._fixed_db
        return get_client(self.uri, timeout_ms=self.timeout_ms)[self.database_name]

    def ping(self, timeout_s: float) -> None:
        """Raise :class:`StorageUnavailableError` unless the server answers within
        ``timeout_s`` (server selection included: a fast failure on first contact)."""
        if self._fixed_db is not None:
            return
        import pymongo

        with self.errors("checking that the server is reachable"), pymongo.timeout(timeout_s):
            self.db().command("ping")

    def errors(self, what: str = "") -> contextlib.AbstractContextManager[None]:
        """Driver errors inside the block become datastack errors naming ``what``."""
        return mongo_errors(self.uri or self.display, what)

    def scrub(self, text: str) -> str:
        """``text`` with this handle's credentials removed."""
        return scrub(text, self.uri)

    @property
    def cache_origin(self) -> tuple[Any, ...]:
        """A key that identifies this database across handles (for process-wide caches)."""
        if self._fixed_db is not None:
            return ("db", id(self._fixed_db.client), self.database_name)
        return ("uri", self.display, self.database_name)

    def ensure_indexes(self, key: str, create: Any) -> None:
        """Call ``create(db)`` once per process for ``key`` (idempotent index creation)."""
        if self._indexed.get(key) == os.getpid():
            return
        with self._index_lock:
            if self._indexed.get(key) == os.getpid():
                return
            with self.errors(f"creating indexes ({key})"):
                create(self.db())
            self._indexed[key] = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        if self._fixed_db is not None:
            raise TypeError(
                f"a MongoDB handle on a Database object ({self.display}) cannot be pickled; "
                "build it from a URI (mongodb://host/DBNAME) to send it to other processes"
            )
        return {"uri": self.uri, "database": self.database_name, "timeout_ms": self.timeout_ms}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["uri"], database=state["database"], timeout_ms=state["timeout_ms"]
        )

    def __repr__(self) -> str:
        return f"MongoHandle({self.display!r})"


__all__ = [
    "DEFAULT_TIMEOUTS_MS",
    "MongoHandle",
    "bson_now",
    "client_settings",
    "durable",
    "get_client",
    "mongo_errors",
    "naive_utc",
    "scrub",
]
