"""The lease half of a catalog: per-dataset refresh leases with fencing tokens.

Mixed into :class:`~datastack.catalog.Catalog`; stores implement the ``_lease_*`` primitives
(one conditional update each). See :mod:`datastack.catalog.lease` for the :class:`Lease`
object and its heartbeat.
"""

from __future__ import annotations

import abc
import datetime as dt
import logging
import random
import time

from datastack.catalog.lease import DEFAULT_TTL, Lease, LeaseState, default_owner, owner_is_dead
from datastack.catalog.record import utcnow
from datastack.errors import ConfigurationError, LockHeldError
from datastack.identifiers import validate_dataset_name

log = logging.getLogger("datastack.catalog")

Token = int | Lease | None


def token_value(token: Token) -> int | None:
    if token is None:
        return None
    if isinstance(token, Lease):
        return token.token
    if isinstance(token, bool) or not isinstance(token, int):
        raise ConfigurationError(f"lease token must be an int or a Lease, got {token!r}")
    return token



class LeaseBook(abc.ABC):
    """Refresh leases of a catalog (see the module docstring)."""

    @property
    @abc.abstractmethod
    def location(self) -> str:
        """Where the catalog lives, for messages (credentials redacted)."""

    @abc.abstractmethod
    def _lease_acquire(self, name: str, owner: str, ttl: float) -> tuple[bool, LeaseState]:
        """Take the lease if free, expired or already ours; (acquired, state now)."""

    @abc.abstractmethod
    def _lease_renew(self, name: str, owner: str, token: int, ttl: float) -> LeaseState | None:
        """Extend our unexpired lease; None if it is no longer ours."""

    @abc.abstractmethod
    def _lease_release(self, name: str, owner: str, token: int) -> None:
        """Free our lease (keep the token counter)."""

    @abc.abstractmethod
    def _lease_state(self, name: str) -> LeaseState | None:
        """The stored lease of ``name``, if any."""

    @abc.abstractmethod
    def _lease_takeover(
        self, name: str, held: LeaseState, owner: str, ttl: float
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
        owner = owner or default_owner()
        deadline = time.monotonic() + max(0.0, float(wait))
        delay = 0.02
        while True:
            acquired, state = self._lease_acquire(name, owner, float(ttl))
            if acquired:
                return Lease(self, state, float(ttl))
            if owner_is_dead(state.owner) and not state.expired(utcnow()):
                taken = self._lease_takeover(name, state, owner, float(ttl))
                if taken is not None:
                    log.warning(
                        "%s: took over the lease of dead process %s (token %d -> %d)",
                        name, state.owner, state.token, taken.token,
                    )
                    return Lease(self, taken, float(ttl))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockHeldError(
                    f"{state.describe(utcnow())} in {self.location}; another refresh is "
                    f"running: wait for it (wait=SECONDS) or retry after the lease expires"
                )
            time.sleep(min(remaining, delay * (0.5 + random.random())))
            delay = min(delay * 2, 1.0)

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
        return state is not None and state.token == token and not state.expired(utcnow())

    def _check_token(self, name: str, token: int, action: str) -> None:
        if not self._lease_is_current(name, token):
            state = self._lease_state(name)
            detail = state.describe(utcnow()) if state else f"no lease of {name!r} exists"
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
        state = self._lease_renew(lease.name, lease.owner, lease.token, ttl)
        if state is None:
            self._check_token(lease.name, lease.token, "renew the lease")
            raise LockHeldError(f"cannot renew the lease of {lease.name!r}: it was lost")
        return state.expires_at

    def _release_lease(self, lease: Lease) -> None:
        self._lease_release(lease.name, lease.owner, lease.token)


__all__ = ["LeaseBook", "Token", "token_value"]
