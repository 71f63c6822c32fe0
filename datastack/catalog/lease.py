"""Per-dataset refresh leases with fencing tokens.

A lease is a lock with an expiry, held in the catalog store (a MongoDB document or a file next
to the records), so that a crashed holder never blocks a dataset for longer than its ``ttl``.
Each acquisition gets a *fencing token*, an integer that grows by one with every acquisition of
that dataset's lease; :meth:`Catalog.publish` refuses a token that is no longer the current
one, so a writer that stalled past its expiry cannot publish over a newer writer.

>>> import tempfile
>>> from datastack.catalog import FileCatalog
>>> catalog = FileCatalog(tempfile.mkdtemp())
>>> with catalog.lease("iris", ttl=60) as lease:
...     lease.token
1
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from datastack._procs import is_gone, process_tag
from datastack._uri import redact
from datastack.errors import DatastackError, LockHeldError

if TYPE_CHECKING:  # pragma: no cover
    from datastack.catalog.leasing import LeaseBook

_log = logging.getLogger("datastack.catalog")

#: Default lease duration (seconds). A holder renews its lease (``keep_alive``) while it works.
DEFAULT_TTL = 60.0


def default_owner(tag: str | None = None) -> str:
    """A unique owner string ``host:pid.start:tag`` (no secrets; ``tag`` default random).

    The host, pid and process start time let another process on the same host tell that the
    holder is dead (:func:`owner_is_dead`) and take the lease over at once.
    """
    return f"{socket.gethostname()}:{process_tag()}:{tag or uuid.uuid4().hex[:8]}"


def owner_is_dead(owner: str | None) -> bool:
    """Whether ``owner`` names a process of this host that no longer runs.

    False when it cannot tell (another host, an owner string of another form): such a lease
    is waited out until it expires.

    >>> owner_is_dead(default_owner())
    False
    """
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    if host != socket.gethostname():
        return False
    return is_gone(rest.partition(":")[0])


@dataclasses.dataclass(frozen=True)
class LeaseState:
    """What the store holds for one dataset's lease."""

    name: str
    owner: str | None
    token: int
    expires_at: dt.datetime | None

    def expired(self, now: dt.datetime) -> bool:
        return self.owner is None or self.expires_at is None or self.expires_at <= now

    def describe(self, now: dt.datetime) -> str:
        if self.expired(now) or self.expires_at is None:
            return f"the lease of {self.name!r} is free (last token {self.token})"
        left = (self.expires_at - now).total_seconds()
        return (
            f"dataset {self.name!r} is locked by {self.owner!r} (lease token {self.token}) "
            f"until {self.expires_at.isoformat()} ({left:.1f} s left)"
        )


class Lease:
    """A held lease; use as a context manager (released on exit).

    Attributes: ``name``, ``owner``, ``token`` (fencing token), ``expires_at`` (UTC), ``ttl``.
    Obtain one with :meth:`Catalog.lease`; pass ``lease.token`` (or the lease) to
    :meth:`Catalog.begin` and :meth:`Catalog.publish`.
    """

    def __init__(self, catalog: LeaseBook, state: LeaseState, ttl: float) -> None:
        if state.owner is None:
            raise LockHeldError(f"internal: lease of {state.name!r} has no owner")
        self.catalog = catalog
        self.name = state.name
        self.owner: str = state.owner
        self.token = state.token
        self.expires_at = state.expires_at
        self.ttl = ttl
        self.released = False

    def renew(self, ttl: float | None = None) -> None:
        """Extend the lease by ``ttl`` seconds from now (default: the original ttl).

        Raises :class:`LockHeldError` if the lease was lost (expired and taken over, or
        released).
        """
        ttl = self.ttl if ttl is None else float(ttl)
        self.expires_at = self.catalog._renew_lease(self, ttl)

    def release(self) -> None:
        """Give the lease up (idempotent). The next holder gets a larger token."""
        if not self.released:
            self.catalog._release_lease(self)
            self.released = True

    @contextlib.contextmanager
    def keep_alive(self, interval: float | None = None) -> Iterator[Heartbeat]:
        """Renew the lease every ``interval`` seconds (default ``ttl / 3``) while the block runs.

        A refresh may run longer than its lease TTL (a large download): the heartbeat keeps
        the lease while the process is alive; a killed process stops renewing, so the lease
        expires ``ttl`` seconds later and another refresh takes over with a larger token. A
        lost lease is not raised here (publish is fenced by the token); ``heartbeat.lost``
        says why the renewals stopped.
        """
        heartbeat = Heartbeat(self, self.ttl / 3 if interval is None else interval)
        heartbeat.start()
        try:
            yield heartbeat
        finally:
            heartbeat.stop()

    def is_held(self) -> bool:
        """Whether the store still records this lease as current and unexpired."""
        return self.catalog._lease_is_current(self.name, self.token)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __repr__(self) -> str:
        expires = self.expires_at.isoformat() if self.expires_at else None
        return f"Lease({self.name!r}, owner={self.owner!r}, token={self.token}, expires={expires})"


class Heartbeat:
    """Renews a :class:`Lease` every ``interval_s`` on a daemon thread until stopped."""

    def __init__(self, lease: Lease, interval_s: float) -> None:
        self.lease = lease
        self.interval_s = max(0.05, float(interval_s))
        self.lost: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"datastack-lease-{lease.name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        from datastack.errors import StorageUnavailableError

        while not self._stop.wait(self.interval_s):
            try:
                self.lease.renew()
            except StorageUnavailableError as exc:  # a short outage: keep trying until expiry
                self.lost = exc
                _log.warning(
                    "%s: lease renewal failed, retrying: %s", self.lease.name, redact(str(exc))
                )
            except DatastackError as exc:  # lost: publish will be fenced by the token
                self.lost = exc
                _log.warning(
                    "%s: lease heartbeat stopped: %s", self.lease.name, redact(str(exc))
                )
                return
            else:
                self.lost = None


__all__ = ["DEFAULT_TTL", "Heartbeat", "Lease", "LeaseState", "default_owner", "owner_is_dead"]
