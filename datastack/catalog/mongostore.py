"""The MongoDB catalog: one document per version in ``datastack_catalog``, leases in
``datastack_leases``, in the storage URI's database (next to the GridFS bucket).

- Records: ``_id`` ``"<name>/v<N>"``, a unique index on ``(name, version)``: two writers of the
  same version cannot both insert. Publishing is ONE ``update_one`` filtered on
  ``status: "pending"``; readers query ``status: "published"`` sorted by version descending.
  Every user-supplied value is matched with ``$eq`` (no operator injection).
- Leases: ``find_one_and_update({_id: name, $or: [{expires_at: {$lt: now}}, {owner: me}]},
  {$set: ..., $inc: {token: 1}}, upsert=True)``; a contender's upsert collides on ``_id`` and
  gets ``DuplicateKeyError``. A release keeps the document (and so the token counter).
  ``now`` is the server's clock (``hello``'s ``localTime``, read just before), never the
  client's: a client whose clock runs ahead cannot take a live lease.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from datastack._mongo import MongoHandle, naive_utc
from datastack._uri import StorageLocation, parse_storage_uri, redact
from datastack.catalog.base import LIGHT_FIELDS, Catalog
from datastack.catalog.leases import LeaseState
from datastack.catalog.record import (
    DELETED,
    PUBLISHED,
    SUMMARY_PROJECTION,
    VersionRecord,
    as_utc,
    utcnow,
)
from datastack.errors import CatalogError, ConfigurationError

RECORDS = "datastack_catalog"
LEASES = "datastack_leases"
STATUS = "datastack_status"
_DATES = ("created_at", "published_at", "deleted_at")


def _to_doc(record: VersionRecord) -> dict[str, Any]:
    doc = record.to_dict()
    for key in _DATES:
        value = getattr(record, key)
        doc[key] = None if value is None else naive_utc(value)
    doc["_id"] = f"{record.name}/v{record.version}"
    return doc


def _from_doc(doc: Mapping[str, Any]) -> VersionRecord:
    return VersionRecord.from_dict({k: v for k, v in doc.items() if k != "_id"})


def _bson_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    return {k: naive_utc(v) if isinstance(v, dt.datetime) else v for k, v in changes.items()}


def _create_indexes(db: Any) -> None:
    db[RECORDS].create_index([("name", 1), ("version", 1)], unique=True)
    db[RECORDS].create_index([("name", 1), ("status", 1), ("version", -1)])


class MongoCatalog(Catalog):
    """A catalog in a MongoDB database (the team setup).

    Parameters
    ----------
    uri:
        ``mongodb://[user:pass@]host[:port]/DBNAME[?options]``; the catalog lives in DBNAME.
    timeout_ms:
        Server selection / connect timeout (``None``: the ``datastack._mongo`` defaults).

    The catalog holds only its :class:`~datastack._mongo.MongoHandle` (the URI) and connects
    lazily (one client per process), so it can be pickled to workers. :meth:`from_database`
    wraps an existing ``Database`` (pymongo or mongomock) for tests; that one is not picklable.

    Example
    -------
    >>> catalog = MongoCatalog("mongodb://127.0.0.1:27017/team")  # doctest: +SKIP
    >>> catalog.latest("iris").version                            # doctest: +SKIP
    3
    """

    def __init__(self, uri: str | MongoHandle, *, timeout_ms: int | None = None) -> None:
        if isinstance(uri, MongoHandle):
            self.mongo = uri
            return
        location = parse_storage_uri(uri)
        if location.kind != "mongodb" or location.database is None:
            raise ConfigurationError(
                f"MongoCatalog needs mongodb://host/DBNAME, got {redact(str(uri))!r}"
            )
        self.mongo = MongoHandle(location.uri, database=location.database, timeout_ms=timeout_ms)

    @classmethod
    def from_location(cls, location: StorageLocation) -> MongoCatalog:
        return cls(location.uri)

    @classmethod
    def from_database(cls, db: Any) -> MongoCatalog:
        """A catalog on an existing ``Database`` object (pymongo or mongomock); not picklable."""
        return cls(MongoHandle.from_database(db))

    @property
    def database_name(self) -> str:
        return self.mongo.database_name

    @property
    def location(self) -> str:
        return self.mongo.display

    # -- connection ----------------------------------------------------------------------------
    def _errors(self, what: str) -> Any:
        return self.mongo.errors(what)

    def _records_coll(self, *, write: bool = False) -> Any:
        """The records collection; indexes are created before the first write only, so that
        the read path (load, ls, show, status) works with the MongoDB ``read`` role."""
        if write:
            self.mongo.ensure_indexes("catalog", _create_indexes)
        return self.mongo.db()[RECORDS]

    def _leases(self) -> Any:
        from datastack._mongo import durable

        # journaled: a fencing token is never handed out twice, even across a server crash
        return durable(self.mongo.db()[LEASES])

    def _status_coll(self) -> Any:
        return self.mongo.db()[STATUS]

    # -- records -------------------------------------------------------------------------------
    def _insert(self, record: VersionRecord) -> bool:
        from pymongo.errors import DuplicateKeyError

        from datastack._mongo import durable

        coll = durable(self._records_coll(write=True))
        doc = _to_doc(record)
        with self._errors(f"reserving {record.name!r} v{record.version}"):
            try:  # inserts, or replaces an aborted attempt's record; a held number collides
                coll.replace_one(
                    {"_id": doc["_id"], "status": DELETED, "published_at": None}, doc,
                    upsert=True,
                )
            except DuplicateKeyError:
                return False
        return True

    def _records(self, name: str) -> list[VersionRecord]:
        with self._errors(f"listing versions of {name!r}"):
            docs = list(self._records_coll().find({"name": {"$eq": name}}).sort("version", 1))
        return [_from_doc(d) for d in docs]

    def _published_summaries(self, name: str) -> list[VersionRecord]:
        fields = dict.fromkeys(SUMMARY_PROJECTION, 1) | {"_id": 0}
        with self._errors(f"listing versions of {name!r}"):
            docs = list(self._records_coll().find(
                {"name": {"$eq": name}, "status": {"$eq": PUBLISHED}}, fields
            ).sort("version", 1))
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
            held = [{"status": {"$ne": DELETED}}, {"published_at": {"$ne": None}}]
            doc = self._records_coll().find_one(
                {"name": {"$eq": name}, "$or": held}, {"version": 1}, sort=[("version", -1)]
            )
        return 0 if doc is None else int(doc["version"])

    def _latest_published_all(self, *, light: bool) -> dict[str, VersionRecord]:
        published = {"status": {"$eq": PUBLISHED}}
        if light:
            # A projection of every published version, reduced here: on the servers measured
            # (docs/performance.md) much cheaper than a $sort/$group; GC keeps few of them.
            fields = {k: 1 for k in LIGHT_FIELDS if k != "resources"} | {"resources.size": 1}
            with self._errors("listing the latest versions"):
                docs = list(self._records_coll().find(published, fields | {"_id": 0}))
            newest: dict[str, dict[str, Any]] = {}
            for doc in docs:
                name = str(doc["name"])
                if name not in newest or doc["version"] > newest[name]["version"]:
                    newest[name] = doc
            return {name: _from_doc(doc) for name, doc in newest.items()}
        pipeline: list[dict[str, Any]] = [
            {"$match": published},
            {"$sort": {"name": 1, "version": -1}},
            {"$group": {"_id": "$name", "doc": {"$first": "$$ROOT"}}},
            {"$replaceRoot": {"newRoot": "$doc"}},
        ]
        with self._errors("listing the latest versions"):
            docs = list(self._records_coll().aggregate(pipeline))
        return {str(d["name"]): _from_doc(d) for d in docs}

    def _published_names(self) -> list[str]:
        with self._errors("listing datasets"):
            return [
                str(n)
                for n in self._records_coll().distinct("name", {"status": {"$eq": PUBLISHED}})
            ]

    def _names(self) -> list[str]:
        with self._errors("listing datasets"):
            return [str(n) for n in self._records_coll().distinct("name", {"version": {"$gte": 1}})]

    def _transition(
        self,
        name: str,
        version: int,
        from_status: Sequence[str],
        changes: Mapping[str, Any],
        attempt: str | None = None,
    ) -> VersionRecord | None:
        from pymongo import ReturnDocument

        from datastack._mongo import durable

        query: dict[str, Any] = {
            "name": {"$eq": name},
            "version": {"$eq": version},
            "status": {"$in": list(from_status)},
        }
        if attempt is not None:
            query["attempt"] = {"$eq": str(attempt)}
        with self._errors(f"updating {name!r} v{version}"):
            # journaled: a published flip survives a server crash
            doc = durable(self._records_coll(write=True)).find_one_and_update(
                query,
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

    def store_now(self) -> dt.datetime:
        """The MongoDB server's clock (``hello``'s ``localTime``), by which every lease
        expires: clients whose clocks disagree still agree on who holds a lease. A database
        object that runs in this process (mongomock) has this process's clock."""
        from pymongo.errors import OperationFailure

        with self._errors("reading the server's clock"):
            admin = self.mongo.db().client.admin
            try:
                reply = admin.command("hello")
            except NotImplementedError:  # mongomock: the "server" is this process
                return utcnow()
            except OperationFailure:  # a server older than 4.4.2 knows only isMaster
                reply = admin.command("isMaster")
        when = reply.get("localTime")
        if not isinstance(when, dt.datetime):
            raise CatalogError(
                f"the MongoDB server at {self.location} did not report its clock "
                f"(hello.localTime is {type(when).__name__}); leases need a server that does: "
                "MongoDB 4.2 or later"
            )
        return as_utc(when) or utcnow()

    def _lease_acquire(
        self, name: str, owner: str, ttl: float, now: dt.datetime
    ) -> tuple[bool, LeaseState]:
        from pymongo import ReturnDocument
        from pymongo.errors import DuplicateKeyError

        now = naive_utc(now)
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

    def _lease_renew(
        self, name: str, owner: str, token: int, ttl: float, now: dt.datetime
    ) -> LeaseState | None:
        from pymongo import ReturnDocument

        now = naive_utc(now)
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

    def _lease_takeover(
        self, name: str, held: LeaseState, owner: str, ttl: float, now: dt.datetime
    ) -> LeaseState | None:
        from pymongo import ReturnDocument

        now = naive_utc(now)
        with self._errors(f"taking over the lease of {name!r}"):
            doc = self._leases().find_one_and_update(
                {"_id": {"$eq": name}, "owner": {"$eq": held.owner}, "token": {"$eq": held.token}},
                {
                    "$set": {
                        "owner": owner,
                        "expires_at": now + dt.timedelta(seconds=ttl),
                        "acquired_at": now,
                    },
                    "$inc": {"token": 1},
                },
                return_document=ReturnDocument.AFTER,
            )
        return self._state(name, doc)

    # -- status ----------------------------------------------------------------------------
    def _status_get(self, name: str) -> dict[str, Any] | None:
        with self._errors(f"reading the status of {name!r}"):
            doc = self._status_coll().find_one({"_id": {"$eq": name}})
        return None if doc is None else {k: v for k, v in doc.items() if k != "_id"}

    def _status_put(self, name: str, doc: Mapping[str, Any]) -> None:
        from datastack._mongo import durable

        with self._errors(f"writing the status of {name!r}"):
            # ``name`` is a validated dataset name (a plain string: no operator injection)
            durable(self._status_coll()).replace_one(
                {"_id": str(name)}, {**doc, "_id": name}, upsert=True
            )

    def _status_delete(self, name: str) -> bool:
        from datastack._mongo import durable

        with self._errors(f"removing the status of {name!r}"):
            result = durable(self._status_coll()).delete_one({"_id": {"$eq": name}})
        return bool(result.deleted_count)

    def _status_all(self) -> dict[str, dict[str, Any]]:
        with self._errors("reading dataset statuses"):
            docs = list(self._status_coll().find({}))
        return {str(d["_id"]): {k: v for k, v in d.items() if k != "_id"} for d in docs}

    def _status_names(self) -> list[str]:
        with self._errors("listing dataset statuses"):
            return sorted(str(n) for n in self._status_coll().distinct("_id"))

    # -- pickling ------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {"mongo": self.mongo}  # raises TypeError for a catalog on a Database object

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.mongo = state["mongo"]


__all__ = ["LEASES", "RECORDS", "MongoCatalog"]
