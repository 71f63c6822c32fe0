"""Per-dataset refresh leases with fencing tokens: the :class:`Lease` a holder keeps (and
its :class:`Heartbeat`), and :class:`LeaseBook`, the lease half of a catalog.

A lease is a lock with an expiry, held in the catalog store (a MongoDB document or a file next
to the records), so that a crashed holder never blocks a dataset for longer than its ``ttl``.
Each acquisition gets a *fencing token*, an integer that grows by one with every acquisition of
that dataset's lease; :meth:`Catalog.publish` refuses a token that is no longer the current
one, so a writer that stalled past its expiry cannot publish over a newer writer.

Expiry is judged on ONE clock, the store's (:meth:`LeaseBook.store_now`): the MongoDB
server's time for the MongoDB catalog, so a client whose clock runs minutes ahead cannot take
a live lease; this machine's clock for the filesystem catalog (one machine, one clock). Stores
implement the ``_lease_*`` primitives, one conditional update each, given that time.

>>> import tempfile
>>> from datastack.catalog import FileCatalog
>>> catalog = FileCatalog(tempfile.mkdtemp())
>>> with catalog.lease("iris", ttl=60) as lease:
...     lease.token
1
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import datetime as dt
import logging
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

from datastack._procs import is_gone, process_tag
from datastack._retry import Backoff, poll
from datastack._uri import redact
from datastack.catalog.record import utcnow
from datastack.errors import ConfigurationError, DatastackError, LockHeldError
from datastack.identifiers import validate_dataset_name

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


Token = int | Lease | None


def token_value(token: Token) -> int | None:
    """The fencing token a :data:`Token` stands for (None for None)."""
    if token is None:
        return None
    if isinstance(token, Lease):
        return token.token
    if isinstance(token, bool) or not isinstance(token, int):
        raise ConfigurationError(f"lease token must be an int or a Lease, got {token!r}")
    return token


class LeaseBook(abc.ABC):
    """Refresh leases of a catalog (see the module docstring).

    Every decision about expiry reads :meth:`store_now` once and hands that time to the
    store's primitive, so the store's clock is the only one that counts.
    """

    #: Pause between two tries while waiting for a held lease (doubling up to 1 s).
    WAIT_BACKOFF = Backoff(initial=0.02, maximum=1.0, jitter=0.5)

    @property
    @abc.abstractmethod
    def location(self) -> str:
        """Where the catalog lives, for messages (credentials redacted)."""

    def store_now(self) -> dt.datetime:
        """The time leases are judged by (UTC, milliseconds): this machine's clock here; the
        MongoDB catalog answers with the server's clock."""
        return utcnow()

    @abc.abstractmethod
    def _lease_acquire(
        self, name: str, owner: str, ttl: float, now: dt.datetime
    ) -> tuple[bool, LeaseState]:
        """Take the lease if free, expired at ``now`` or already ours; (acquired, state)."""

    @abc.abstractmethod
    def _lease_renew(
        self, name: str, owner: str, token: int, ttl: float, now: dt.datetime
    ) -> LeaseState | None:
        """Extend our lease unexpired at ``now`` to ``now + ttl``; None if no longer ours."""

    @abc.abstractmethod
    def _lease_release(self, name: str, owner: str, token: int) -> None:
        """Free our lease (keep the token counter)."""

    @abc.abstractmethod
    def _lease_state(self, name: str) -> LeaseState | None:
        """The stored lease of ``name``, if any."""

    @abc.abstractmethod
    def _lease_takeover(
        self, name: str, held: LeaseState, owner: str, ttl: float, now: dt.datetime
    ) -> LeaseState | None:
        """Take the lease from ``held`` (its owner is dead) if it is still exactly ``held``."""

    # -- leases -------------------------------------------------------------------------------
    def lease(
        self,
        name: str,
        owner: str | None = None,
        ttl: float = DEFAULT_TTL,
        wait: float = 0.0,
    ) -> Lease:
        """Acquire the refresh lease of ``name`` for ``ttl`` seconds.

        If another owner holds an unexpired lease, poll for up to ``wait`` seconds, then raise
        :class:`LockHeldError` naming the holder and when its lease expires. A lease held by a
        dead process of this host (killed, OOM) is taken over at once. Each acquisition
        gets a larger fencing token than the previous one of that dataset.
        """
        name = validate_dataset_name(name)
        if not ttl > 0:
            raise ConfigurationError(f"lease ttl must be > 0 seconds, got {ttl!r}")
        who = owner or default_owner()
        held: list[tuple[LeaseState, dt.datetime]] = []

        def attempt() -> Lease | None:
            now = self.store_now()
            lease, state = self._try_lease(name, who, float(ttl), now)
            held[:] = [(state, now)]
            return lease

        lease = poll(attempt, wait=float(wait), backoff=self.WAIT_BACKOFF)
        if lease is not None:
            return lease
        state, now = held[0]
        raise LockHeldError(
            f"{state.describe(now)} in {self.location}; another refresh is "
            f"running: wait for it (wait=SECONDS) or retry after the lease expires"
        )

    def _try_lease(
        self, name: str, owner: str, ttl: float, now: dt.datetime
    ) -> tuple[Lease | None, LeaseState]:
        """One try: take the lease if free (or held by a dead process of this host)."""
        acquired, state = self._lease_acquire(name, owner, ttl, now)
        if acquired:
            return Lease(self, state, ttl), state
        if owner_is_dead(state.owner) and not state.expired(now):
            taken = self._lease_takeover(name, state, owner, ttl, now)
            if taken is not None:
                _log.warning(
                    "%s: took over the lease of dead process %s (token %d -> %d)",
                    name, state.owner, state.token, taken.token,
                )
                return Lease(self, taken, ttl), taken
        return None, state

    #: Same as :meth:`lease` (a name that reads well outside a ``with`` block).
    acquire_lease = lease

    def release_lease(self, name: str, token: Token) -> bool:
        """Release the lease of ``name`` if ``token`` is still its current token.

        For callers that kept only the token (e.g. a later task of the same flow run).
        Returns False (and changes nothing) if the lease was taken over meanwhile.
        """
        name = validate_dataset_name(name)
        value = token_value(token)
        if value is None:
            raise ConfigurationError("release_lease needs the lease token")
        state = self._lease_state(name)
        if state is None or state.owner is None or state.token != value:
            return False
        self._lease_release(name, state.owner, value)
        return True

    def lease_state(self, name: str) -> LeaseState | None:
        """The stored lease of ``name`` (holder, token, expiry), or None if never taken."""
        return self._lease_state(validate_dataset_name(name))

    def _lease_is_current(self, name: str, token: int) -> bool:
        state = self._lease_state(name)
        return state is not None and state.token == token and not state.expired(self.store_now())

    def _check_token(self, name: str, token: int, action: str) -> None:
        if not self._lease_is_current(name, token):
            state = self._lease_state(name)
            detail = state.describe(self.store_now()) if state else f"no lease of {name!r} exists"
            raise LockHeldError(
                f"cannot {action} of {name!r} with lease token {token}: the lease was lost "
                f"({detail}); nothing was changed. Retry the refresh with a new lease"
            )

    def _renew_lease(self, lease: Lease, ttl: float) -> dt.datetime | None:
        if not ttl > 0:
            raise ConfigurationError(f"lease ttl must be > 0 seconds, got {ttl!r}")
        if lease.released:
            raise LockHeldError(
                f"cannot renew the lease of {lease.name!r} (token {lease.token}): it was "
                "released; acquire a new one with Catalog.lease()"
            )
        state = self._lease_renew(lease.name, lease.owner, lease.token, ttl, self.store_now())
        if state is None:
            self._check_token(lease.name, lease.token, "renew the lease")
            raise LockHeldError(f"cannot renew the lease of {lease.name!r}: it was lost")
        return state.expires_at

    def _release_lease(self, lease: Lease) -> None:
        self._lease_release(lease.name, lease.owner, lease.token)


__all__ = [
    "DEFAULT_TTL",
    "Heartbeat",
    "Lease",
    "LeaseBook",
    "LeaseState",
    "Token",
    "default_owner",
    "owner_is_dead",
    "token_value",
]
