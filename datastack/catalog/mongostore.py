"""The MongoDB catalog: one document per version in ``datastack_catalog``, leases in
``datastack_leases``, in the storage URI's database (next to the GridFS bucket).

- Records: ``_id`` ``"<name>/v<N>"``, a unique index on ``(name, version)``: two writers of the
  same version cannot both insert. Publishing is ONE ``update_one`` filtered on
  ``status: "pending"``; readers query ``status: "published"`` sorted by version descending.
  Every user-supplied value is matched with ``$eq`` (no operator injection).
- Leases: ``find_one_and_update({_id: name, $or: [{expires_at: {$lt: now}}, {owner: me}]},
  {$set: ..., $inc: {token: 1}}, upsert=True)``; a contender's upsert collides on ``_id`` and
  gets ``DuplicateKeyError``. A release keeps the document (and so the token counter).
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from datastack._mongo import get_client, mongo_errors
from datastack._uri import StorageLocation, parse_storage_uri, redact
from datastack.catalog.base import Catalog
from datastack.catalog.lease import LeaseState
from datastack.catalog.record import PUBLISHED, VersionRecord, as_utc, utcnow
from datastack.errors import ConfigurationError

RECORDS = "datastack_catalog"
LEASES = "datastack_leases"
_DATES = ("created_at", "published_at", "deleted_at")


def _naive(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def _to_doc(record: VersionRecord) -> dict[str, Any]:
    doc = record.to_dict()
    for key in _DATES:
        value = getattr(record, key)
        doc[key] = None if value is None else _naive(value)
    doc["_id"] = f"{record.name}/v{record.version}"
    return doc


def _from_doc(doc: Mapping[str, Any]) -> VersionRecord:
    return VersionRecord.from_dict({k: v for k, v in doc.items() if k != "_id"})


def _bson_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _naive(v) if isinstance(v, dt.datetime) else v for k, v in changes.items()}


class MongoCatalog(Catalog):
    """A catalog in a MongoDB database (the team setup).

    Parameters
    ----------
    uri:
        ``mongodb://[user:pass@]host[:port]/DBNAME[?options]``; the catalog lives in DBNAME.
    timeout_ms:
        Server selection / connect timeout (``None``: the ``datastack._mongo`` defaults).

    The catalog holds only the URI and connects lazily (one client per process), so it can
    be pickled to workers. :meth:`from_database` wraps an existing ``Database`` (pymongo or
    mongomock) for tests; that one is not picklable.

    Example
    -------
    >>> catalog = MongoCatalog("mongodb://127.0.0.1:27017/team")  # doctest: +SKIP
    >>> catalog.latest("iris").version                            # doctest: +SKIP
    3
    """

    def __init__(self, uri: str, *, timeout_ms: int | None = None) -> None:
        location = parse_storage_uri(uri)
        if location.kind != "mongodb" or location.database is None:
            raise ConfigurationError(
                f"MongoCatalog needs mongodb://host/DBNAME, got {redact(str(uri))!r}"
            )
        self._uri = location.uri
        self.database_name = location.database
        self.timeout_ms = timeout_ms
        self._fixed_db: Any = None
        self._indexed_pid = -1
        self._index_lock = threading.Lock()

    @classmethod
    def from_location(cls, location: StorageLocation) -> MongoCatalog:
        return cls(location.uri)

    @classmethod
    def from_database(cls, db: Any) -> MongoCatalog:
        """A catalog on an existing ``Database`` object (pymongo or mongomock); not picklable."""
        self = cls.__new__(cls)
        self._uri = ""
        self.database_name = str(db.name)
        self.timeout_ms = None
        self._fixed_db = db
        self._indexed_pid = -1
        self._index_lock = threading.Lock()
        return self

    @property
    def location(self) -> str:
        if self._fixed_db is not None:
            return f"mongodb://{type(self._fixed_db.client).__module__}/{self.database_name}"
        return redact(self._uri)

    # -- connection ----------------------------------------------------------------------------
    def _db(self) -> Any:
        if self._fixed_db is not None:
            return self._fixed_db
        return get_client(self._uri, timeout_ms=self.timeout_ms)[self.database_name]

    def _errors(self, what: str) -> Any:
        return mongo_errors(self._uri or self.location, what)

    def _records_coll(self) -> Any:
        db = self._db()
        if self._indexed_pid != os.getpid():
            with self._index_lock, self._errors("creating catalog indexes"):
                coll = db[RECORDS]
                coll.create_index([("name", 1), ("version", 1)], unique=True)
                coll.create_index([("name", 1), ("status", 1), ("version", -1)])
                self._indexed_pid = os.getpid()
        return db[RECORDS]

    def _leases(self) -> Any:
        return self._db()[LEASES]

    # -- records -------------------------------------------------------------------------------
    def _insert(self, record: VersionRecord) -> bool:
        from pymongo.errors import DuplicateKeyError

        coll = self._records_coll()
        with self._errors(f"reserving {record.name!r} v{record.version}"):
            try:
                coll.insert_one(_to_doc(record))
            except DuplicateKeyError:
                return False
        return True

    def _records(self, name: str) -> list[VersionRecord]:
        with self._errors(f"listing versions of {name!r}"):
            docs = list(self._records_coll().find({"name": {"$eq": name}}).sort("version", 1))
        return [_from_doc(d) for d in docs]

    def _get(self, name: str, version: int) -> VersionRecord | None:
        with self._errors(f"reading {name!r} v{version}"):
            doc = self._records_coll().find_one(
                {"name": {"$eq": name}, "version": {"$eq": version}}
            )
        return None if doc is None else _from_doc(doc)

    def _latest_published(self, name: str) -> VersionRecord | None:
        with self._errors(f"resolving the latest version of {name!r}"):
            doc = self._records_coll().find_one(
                {"name": {"$eq": name}, "status": {"$eq": PUBLISHED}}, sort=[("version", -1)]
            )
        return None if doc is None else _from_doc(doc)

    def _max_version(self, name: str) -> int:
        with self._errors(f"reading versions of {name!r}"):
            doc = self._records_coll().find_one(
                {"name": {"$eq": name}}, {"version": 1}, sort=[("version", -1)]
            )
        return 0 if doc is None else int(doc["version"])

    def _names(self) -> list[str]:
        with self._errors("listing datasets"):
            return [str(n) for n in self._records_coll().distinct("name", {"version": {"$gte": 1}})]

    def _transition(
        self, name: str, version: int, from_status: Sequence[str], changes: Mapping[str, Any]
    ) -> VersionRecord | None:
        from pymongo import ReturnDocument

        from datastack._mongo import durable

        with self._errors(f"updating {name!r} v{version}"):
            # journaled: a published flip survives a server crash
            doc = durable(self._records_coll()).find_one_and_update(
                {
                    "name": {"$eq": name},
                    "version": {"$eq": version},
                    "status": {"$in": list(from_status)},
                },
                {"$set": _bson_changes(changes)},
                return_document=ReturnDocument.AFTER,
            )
        return None if doc is None else _from_doc(doc)

    # -- leases --------------------------------------------------------------------------------
    @staticmethod
    def _state(name: str, doc: Mapping[str, Any] | None) -> LeaseState | None:
        if doc is None:
            return None
        return LeaseState(
            name, doc.get("owner"), int(doc.get("token", 0)), as_utc(doc.get("expires_at"))
        )

    def _lease_acquire(self, name: str, owner: str, ttl: float) -> tuple[bool, LeaseState]:
        from pymongo import ReturnDocument
        from pymongo.errors import DuplicateKeyError

        now = _naive(utcnow())
        with self._errors(f"acquiring the lease of {name!r}"):
            try:
                doc = self._leases().find_one_and_update(
                    {
                        "_id": {"$eq": name},
                        "$or": [{"expires_at": {"$lt": now}}, {"owner": {"$eq": owner}}],
                    },
                    {
                        "$set": {
                            "owner": owner,
                            "expires_at": now + dt.timedelta(seconds=ttl),
                            "acquired_at": now,
                        },
                        "$inc": {"token": 1},
                    },
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
            except DuplicateKeyError:
                doc = None
        if doc is None:
            held = self._lease_state(name)
            return False, held or LeaseState(name, "unknown", 0, None)
        state = self._state(name, doc)
        if state is None:  # pragma: no cover - upsert always returns a document
            return False, LeaseState(name, "unknown", 0, None)
        return True, state

    def _lease_renew(self, name: str, owner: str, token: int, ttl: float) -> LeaseState | None:
        from pymongo import ReturnDocument

        now = _naive(utcnow())
        with self._errors(f"renewing the lease of {name!r}"):
            doc = self._leases().find_one_and_update(
                {
                    "_id": {"$eq": name},
                    "owner": {"$eq": owner},
                    "token": {"$eq": token},
                    "expires_at": {"$gt": now},
                },
                {"$set": {"expires_at": now + dt.timedelta(seconds=ttl)}},
                return_document=ReturnDocument.AFTER,
            )
        return self._state(name, doc)

    def _lease_release(self, name: str, owner: str, token: int) -> None:
        with self._errors(f"releasing the lease of {name!r}"):
            self._leases().update_one(
                {"_id": {"$eq": name}, "owner": {"$eq": owner}, "token": {"$eq": token}},
                {"$set": {"owner": None, "expires_at": dt.datetime(1970, 1, 1)}},
            )

    def _lease_state(self, name: str) -> LeaseState | None:
        with self._errors(f"reading the lease of {name!r}"):
            doc = self._leases().find_one({"_id": {"$eq": name}})
        state = self._state(name, doc)
        if state is not None and state.expires_at is not None and state.owner is None:
            return LeaseState(name, None, state.token, None)
        return state

    # -- pickling ------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        if self._fixed_db is not None:
            raise TypeError(
                f"{self!r} wraps a Database object and cannot be pickled; build it from a URI "
                "(MongoCatalog('mongodb://host/DBNAME')) to send it to other processes"
            )
        return {"uri": self._uri, "timeout_ms": self.timeout_ms}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["uri"], timeout_ms=state["timeout_ms"])  # type: ignore[misc]


__all__ = ["LEASES", "RECORDS", "MongoCatalog"]
