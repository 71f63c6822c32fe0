"""The filesystem catalog: one JSON file per version under ``<root>/catalog/<name>/``.

Layout::

    <root>/catalog/<name>/v1.json      one record per version (status inside)
    <root>/catalog/<name>/v2.json
    <root>/catalog/<name>/LEASE.json   the refresh lease (owner, token, expiry)
    <root>/catalog/<name>/STATUS.json  freshness: last check, success, failure, schedule
    <root>/catalog/<name>/.lock        guards read-modify-write of the files above

Every file is replaced atomically (temporary file, fsync, ``os.replace``, fsync of the folder),
so a reader sees a whole record, old or new. "Latest published" is found by scanning the
version files: the record itself is the single source of truth, there is no pointer file that
could disagree with it after a crash. Mutations take a short ``fcntl.flock`` on ``.lock``
(released by the kernel if the process dies; a process stopped while holding it makes the
others wait ``DATASTACK_CATALOG_LOCK_WAIT`` seconds, then fail saying so), so this store is
for one host: do not share it over NFS; use MongoDB for a team. Being on one host, its leases
expire by that host's clock (the only clock there is); the MongoDB catalog judges by the
server's clock instead.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from datastack._fs import atomic_write
from datastack._retry import Backoff, poll
from datastack._uri import StorageLocation
from datastack.catalog.base import Catalog
from datastack.catalog.leases import LeaseState
from datastack.catalog.record import PUBLISHED, VersionRecord, as_utc, summarised
from datastack.errors import CatalogError, ConfigurationError
from datastack.identifiers import validate_dataset_name

_VERSION_FILE = re.compile(r"v([1-9][0-9]*)\.json\Z")
LEASE_FILE = "LEASE.json"
STATUS_FILE = "STATUS.json"



#: Seconds a catalog operation waits for a dataset folder's lock (held for milliseconds by a
#: running process; longer only by a process that stopped while holding it).
LOCK_WAIT_ENV = "DATASTACK_CATALOG_LOCK_WAIT"


def _lock(fcntl: Any, fd: int, folder: Path) -> None:
    """Take the folder's flock, waiting at most ``DATASTACK_CATALOG_LOCK_WAIT`` seconds (60):
    a holder that was stopped (SIGSTOP, a paused machine) blocks the others for that long,
    then they fail saying so, instead of hanging."""
    from datastack._env import env_float

    def attempt() -> bool | None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        return True

    wait = env_float(LOCK_WAIT_ENV, 60.0, maximum=86400.0)
    if poll(attempt, wait=wait, backoff=_LOCK_BACKOFF) is None:
        raise CatalogError(
            f"the catalog folder {folder} has been locked by another process for more than "
            f"{wait:g} s (its lock is held for milliseconds by a running refresh): a process "
            f"stopped while holding it? `fuser {folder}/.lock` names it; resume or end it, "
            f"then retry ({LOCK_WAIT_ENV} sets the wait)")


#: Between tries of a held folder lock: from 1 ms, at most 50 ms.
_LOCK_BACKOFF = Backoff(initial=0.001, maximum=0.05, jitter=0.5)


class FileCatalog(Catalog):
    """A catalog stored as JSON files under ``<root>/catalog/`` (single host).

    Parameters
    ----------
    root:
        The storage root (the same folder as the filesystem storage connector's).
    fsync:
        Flush records to disk before returning (default True).

    Example
    -------
    >>> import tempfile
    >>> catalog = FileCatalog(tempfile.mkdtemp())
    >>> catalog.datasets()
    []
    """

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        text = os.fspath(root)
        if not text or "\x00" in text:
            raise ConfigurationError(f"catalog root {text!r} must be a non-empty path")
        self.root = Path(os.path.abspath(text))
        self.fsync = fsync

    @classmethod
    def from_location(cls, location: StorageLocation) -> FileCatalog:
        if location.kind != "file" or location.path is None:
            raise ConfigurationError(f"expected a path or file:// URI, got {location.redacted!r}")
        return cls(location.path)

    @property
    def location(self) -> str:
        return (self.root / "catalog").as_uri()

    # -- files ---------------------------------------------------------------------------------
    def _dir(self, name: str) -> Path:
        return self.root / "catalog" / validate_dataset_name(name)

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[Path]:
        try:
            import fcntl
        except ImportError as exc:  # pragma: no cover - Windows
            raise CatalogError(
                "the filesystem catalog needs POSIX file locks (fcntl); on this platform use a "
                "MongoDB storage URI (mongodb://host/DBNAME)"
            ) from exc

        folder = self._dir(name)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise CatalogError(f"cannot open the catalog folder {folder}: {exc}") from exc
        try:
            _lock(fcntl, fd, folder)
            yield folder
        finally:
            os.close(fd)  # closing releases the flock

    def _write_json(self, path: Path, data: Mapping[str, Any]) -> None:
        def failed(exc: OSError) -> CatalogError:
            return CatalogError(f"cannot write catalog file {path}: {exc}; nothing changed")

        text = json.dumps(data, indent=1, sort_keys=True).encode("utf-8")
        with atomic_write(path, fsync=self.fsync, on_error=failed) as out:
            try:
                out.write(text)
            except OSError as exc:
                raise failed(exc) from exc

    @staticmethod
    def _read_json(path: Path) -> dict[str, Any] | None:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise CatalogError(
                f"catalog file {path} is unreadable ({exc}); restore it or delete it"
            ) from exc
        if not isinstance(data, dict):
            raise CatalogError(f"catalog file {path} does not hold a JSON object")
        return data

    def _read_record(self, path: Path) -> VersionRecord | None:
        data = self._read_json(path)
        return None if data is None else VersionRecord.from_dict(data)

    # -- records -------------------------------------------------------------------------------
    def _insert(self, record: VersionRecord) -> bool:
        with self._locked(record.name) as folder:
            path = folder / f"v{record.version}.json"
            existing = self._read_record(path) if path.exists() else None
            if existing is not None and existing.holds_number:
                return False
            self._write_json(path, record.to_dict())
            return True

    def _records(self, name: str) -> list[VersionRecord]:
        folder = self._dir(name)
        try:
            entries = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return []
        found = []
        for entry in entries:
            match = _VERSION_FILE.match(entry)
            if match:
                record = self._read_record(folder / entry)
                if record is not None:
                    found.append(record)
        return sorted(found, key=lambda r: r.version)

    def _published_summaries(self, name: str) -> list[VersionRecord]:
        # one file at a time, reduced before the next is read: one full record in memory
        found = []
        for version in self._version_numbers(name):
            record = self._get(name, version)
            if record is not None and record.status == PUBLISHED:
                found.append(summarised(record))
        return found

    def _version_numbers(self, name: str) -> list[int]:
        try:
            entries = os.listdir(self._dir(name))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(int(m.group(1)) for e in entries if (m := _VERSION_FILE.match(e)))

    def _latest_published(self, name: str) -> VersionRecord | None:
        # Newest first, stop at the first published record: usually one file read.
        for version in reversed(self._version_numbers(name)):
            record = self._get(name, version)
            if record is not None and record.status == PUBLISHED:
                return record
        return None

    def _max_version(self, name: str) -> int:
        for version in reversed(self._version_numbers(name)):  # usually one file read
            record = self._get(name, version)
            if record is not None and record.holds_number:
                return version
        return 0

    def _get(self, name: str, version: int) -> VersionRecord | None:
        return self._read_record(self._dir(name) / f"v{version}.json")

    def _names(self) -> list[str]:
        folder = self.root / "catalog"
        try:
            entries = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return []
        names = []
        for entry in entries:
            with contextlib.suppress(ValueError, OSError):
                validate_dataset_name(entry)
                if any(_VERSION_FILE.match(f) for f in os.listdir(folder / entry)):
                    names.append(entry)
        return names

    def _transition(
        self,
        name: str,
        version: int,
        from_status: Sequence[str],
        changes: Mapping[str, Any],
        attempt: str | None = None,
    ) -> VersionRecord | None:
        with self._locked(name) as folder:
            path = folder / f"v{version}.json"
            record = self._read_record(path)
            if record is None or record.status not in from_status:
                return None
            if attempt is not None and record.attempt != attempt:
                return None
            updated = record.replace(**changes)
            self._write_json(path, updated.to_dict())
            return updated

    # -- leases --------------------------------------------------------------------------------
    def _read_lease(self, folder: Path, name: str) -> LeaseState | None:
        data = self._read_json(folder / LEASE_FILE)
        if data is None:
            return None
        return LeaseState(name, data.get("owner"), int(data["token"]), as_utc(data["expires_at"]))

    def _write_lease(self, folder: Path, state: LeaseState) -> None:
        self._write_json(
            folder / LEASE_FILE,
            {
                "owner": state.owner,
                "token": state.token,
                "expires_at": None if state.expires_at is None else state.expires_at.isoformat(),
                "pid": os.getpid(),
            },
        )

    def _lease_acquire(
        self, name: str, owner: str, ttl: float, now: dt.datetime
    ) -> tuple[bool, LeaseState]:
        with self._locked(name) as folder:
            state = self._read_lease(folder, name)
            if state is not None and not state.expired(now) and state.owner != owner:
                return False, state
            new = LeaseState(
                name, owner, (state.token if state else 0) + 1, now + dt.timedelta(seconds=ttl)
            )
            self._write_lease(folder, new)
            return True, new

    def _lease_renew(
        self, name: str, owner: str, token: int, ttl: float, now: dt.datetime
    ) -> LeaseState | None:
        with self._locked(name) as folder:
            state = self._read_lease(folder, name)
            if state is None or state.owner != owner or state.token != token or state.expired(now):
                return None
            new = LeaseState(name, owner, token, now + dt.timedelta(seconds=ttl))
            self._write_lease(folder, new)
            return new

    def _lease_release(self, name: str, owner: str, token: int) -> None:
        with self._locked(name) as folder:
            state = self._read_lease(folder, name)
            if state is not None and state.owner == owner and state.token == token:
                self._write_lease(folder, LeaseState(name, None, token, None))

    def _lease_state(self, name: str) -> LeaseState | None:
        return self._read_lease(self._dir(name), name)

    def _lease_takeover(
        self, name: str, held: LeaseState, owner: str, ttl: float, now: dt.datetime
    ) -> LeaseState | None:
        with self._locked(name) as folder:
            state = self._read_lease(folder, name)
            if state is None or state.owner != held.owner or state.token != held.token:
                return None
            new = LeaseState(name, owner, state.token + 1, now + dt.timedelta(seconds=ttl))
            self._write_lease(folder, new)
            return new

    # -- status ----------------------------------------------------------------------------
    def _status_get(self, name: str) -> dict[str, Any] | None:
        return self._read_json(self._dir(name) / STATUS_FILE)

    def _status_put(self, name: str, doc: Mapping[str, Any]) -> None:
        with self._locked(name) as folder:
            self._write_json(folder / STATUS_FILE, doc)

    def _status_delete(self, name: str) -> bool:
        with self._locked(name) as folder:
            try:
                (folder / STATUS_FILE).unlink()
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise CatalogError(f"cannot remove {folder / STATUS_FILE}: {exc}") from exc
            return True

    def _status_names(self) -> list[str]:
        folder = self.root / "catalog"
        try:
            entries = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(e for e in entries if (folder / e / STATUS_FILE).is_file())

    # -- pickling ------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {"root": str(self.root), "fsync": self.fsync}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"], fsync=state["fsync"])  # type: ignore[misc]


__all__ = ["FileCatalog"]
