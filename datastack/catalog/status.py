"""Freshness of a dataset: one status document per dataset, written by every refresh.

Beside its versions, the catalog keeps for each dataset: the last check (time, outcome,
reason, flow run, warnings), the last success, the last failure, the schedule it runs on and
the number of consecutive failures. Both engines write it (``pipeline.refresh_dataset``);
readers see it without Prefect (``datastack status``, ``datastack ls``, the web page).

States (:meth:`DatasetStatus.state`):

- ``failing``: the last check failed (the last good version stays served);
- ``never``: no successful refresh yet;
- ``overdue``: a schedule is set and it fired at least twice since the last successful
  check (plus a grace of half an interval, at most 5 minutes, for a run in progress);
- ``fresh``: otherwise.

A check is successful when it published a new version or found the data unchanged. A refresh
that found the lease held (``locked``) is recorded as the last check but is no failure.

>>> import datetime as dt
>>> t0 = dt.datetime(2026, 1, 1, 3, 0, tzinfo=dt.UTC)
>>> s = DatasetStatus("iris", schedule="0 3 * * *").after_check("published", at=t0, version=1)
>>> s.state(now=t0 + dt.timedelta(hours=30)), s.state(now=t0 + dt.timedelta(days=3))
('fresh', 'overdue')
>>> s.after_check("failed", at=t0, reason="HTTP 404").state(now=t0)
'failing'
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from datastack._uri import redact
from datastack.catalog.record import as_utc, utcnow

OUTCOMES = ("published", "unchanged", "failed", "locked")
SUCCESS = ("published", "unchanged")
STATES = ("fresh", "overdue", "failing", "never")
#: Longest grace after the second missed fire time before a dataset counts as overdue.
OVERDUE_GRACE = dt.timedelta(minutes=5)
_MAX_REASON = 2000


def _stamp(value: Any) -> str | None:
    moment = as_utc(value)
    return None if moment is None else moment.isoformat()


@dataclasses.dataclass
class DatasetStatus:
    """The status document of one dataset (plain data, JSON-serialisable)."""

    name: str
    schedule: str | None = None
    last_check: dict[str, Any] | None = None
    last_success: dict[str, Any] | None = None
    last_failure: dict[str, Any] | None = None
    consecutive_failures: int = 0

    def after_check(
        self,
        outcome: str,
        *,
        at: dt.datetime | None = None,
        reason: str = "",
        version: int | None = None,
        flow_run: str | None = None,
        schedule: str | None = None,
        warnings: Sequence[str] = (),
    ) -> DatasetStatus:
        """The document after one more check with ``outcome`` (a new object)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"check outcome must be one of {OUTCOMES}, got {outcome!r}")
        moment = _stamp(at or utcnow())
        check = {
            "at": moment,
            "outcome": outcome,
            "reason": redact(reason)[:_MAX_REASON],
            "version": version,
            "flow_run": flow_run,
            "warnings": [redact(w)[:_MAX_REASON] for w in warnings],
        }
        new = dataclasses.replace(self, last_check=check)
        if schedule is not None:
            new.schedule = schedule
        if outcome in SUCCESS:
            new.last_success = {"at": moment, "version": version, "outcome": outcome}
            new.consecutive_failures = 0
        elif outcome == "failed":
            new.last_failure = {"at": moment, "reason": check["reason"], "flow_run": flow_run}
            new.consecutive_failures = self.consecutive_failures + 1
        return new

    def state(self, now: dt.datetime | None = None) -> str:
        """``fresh``, ``overdue``, ``failing`` or ``never`` (see the module docstring)."""
        if self.last_check is not None and self.last_check.get("outcome") == "failed":
            return "failing"
        if self.last_success is None:
            return "never"
        if self.schedule and self._overdue(now or utcnow()):
            return "overdue"
        return "fresh"

    def _overdue(self, now: dt.datetime) -> bool:
        from datastack._cron import fire_times

        success = as_utc(self.last_success["at"]) if self.last_success else None
        if success is None or not self.schedule:
            return False
        try:
            first, second = fire_times(self.schedule, success, 2)
        except Exception:  # an unparsable stored schedule never makes a dataset overdue
            return False
        grace = min(OVERDUE_GRACE, (second - first) / 2)
        return now > second + grace

    @property
    def version(self) -> int | None:
        """The version the last successful check left as the latest."""
        return None if self.last_success is None else self.last_success.get("version")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self, now: dt.datetime | None = None) -> dict[str, Any]:
        """What ``datastack status --json`` prints for this dataset."""
        failure = None
        if self.last_failure is not None:
            failure = {"at": self.last_failure.get("at"), "reason": self.last_failure.get("reason")}
        return {
            "name": self.name,
            "state": self.state(now),
            "version": self.version,
            "schedule": self.schedule,
            "last_success": None if self.last_success is None else self.last_success.get("at"),
            "last_check": None if self.last_check is None else self.last_check.get("at"),
            "last_failure": failure,
            "consecutive_failures": self.consecutive_failures,
            "warnings": [] if self.last_check is None else self.last_check.get("warnings", []),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetStatus:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


class StatusBook(abc.ABC):
    """The status documents of a catalog (mixed into :class:`~datastack.catalog.Catalog`).

    Stores implement four primitives: ``_status_get``, ``_status_put``, ``_status_names``,
    ``_status_delete``.
    """

    @abc.abstractmethod
    def _status_get(self, name: str) -> dict[str, Any] | None:
        """The stored status document of ``name``."""

    @abc.abstractmethod
    def _status_put(self, name: str, doc: Mapping[str, Any]) -> None:
        """Store (replace) the status document of ``name`` durably."""

    @abc.abstractmethod
    def _status_names(self) -> list[str]:
        """Names with a status document."""

    @abc.abstractmethod
    def _status_delete(self, name: str) -> bool:
        """Remove the status document of ``name``; False when there was none."""

    def _status_all(self) -> dict[str, dict[str, Any]]:
        """Every stored status document by name (stores may read them in one query)."""
        return {n: d for n in self._status_names() if (d := self._status_get(n)) is not None}

    def status(self, name: str) -> DatasetStatus | None:
        """The status document of ``name`` (None when it was never refreshed by this version)."""
        from datastack.identifiers import validate_dataset_name

        doc = self._status_get(validate_dataset_name(name))
        return None if doc is None else DatasetStatus.from_dict({**doc, "name": name})

    def record_check(
        self,
        name: str,
        outcome: str,
        *,
        reason: str = "",
        version: int | None = None,
        flow_run: str | None = None,
        schedule: str | None = None,
        warnings: Sequence[str] = (),
        at: dt.datetime | None = None,
    ) -> DatasetStatus:
        """Record one check of ``name`` (the refresh pipeline calls this at its end)."""
        current = self.status(name) or DatasetStatus(name)
        new = current.after_check(
            outcome,
            at=at,
            reason=reason,
            version=version,
            flow_run=flow_run,
            schedule=schedule,
            warnings=warnings,
        )
        self._status_put(name, new.to_dict())
        return new


__all__ = ["OUTCOMES", "STATES", "SUCCESS", "DatasetStatus", "StatusBook"]
