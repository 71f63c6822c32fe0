"""Retry and backoff, written once: every retry loop of the library goes through here.

- :class:`Backoff`: capped exponential delays with jitter (and a cap on a server's
  ``Retry-After``);
- :class:`Attempts`: the count of one operation's failures (consecutive, reset on progress)
  and its deadline, sleeping the backoff between attempts;
- :func:`call_with_retries`: call a function again after the errors named, a bounded number
  of times (the local engine's steps);
- :func:`poll`: try until something succeeds or a wait runs out (waiting for a lease).

The HTTP downloads build their :class:`~datastack.retrieval._policy.DownloadBudget` on
:class:`Attempts` (a failure after progress starts a fresh count).

>>> b = Backoff(initial=1.0, maximum=8.0, jitter=0.0)
>>> [b.delay(n) for n in range(1, 6)]
[1.0, 2.0, 4.0, 8.0, 8.0]
>>> calls = []
>>> def flaky():
...     calls.append(1)
...     if len(calls) < 3:
...         raise TimeoutError("not yet")
...     return "done"
>>> call_with_retries(flaky, retry_on=TimeoutError, max_retries=2, backoff=b, sleep=lambda s: None)
'done'
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from datastack.errors import ConfigurationError

T = TypeVar("T")


def _sleep(seconds: float) -> None:
    """The default wait between attempts (a module attribute, so tests can count waits)."""
    time.sleep(seconds)


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff: ``min(maximum, initial * 2**(n-1))`` minus up to ``jitter``.

    With ``jitter=0.5`` the delay is drawn uniformly from ``[d/2, d]`` so that many clients
    retrying together spread out. ``max_retry_after`` caps a server's ``Retry-After``.
    """

    initial: float = 0.5
    maximum: float = 30.0
    jitter: float = 0.5
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < 0 or self.max_retry_after < 0:
            raise ConfigurationError(f"backoff delays must be >= 0, got {self}")
        if not 0.0 <= self.jitter <= 1.0:
            raise ConfigurationError(f"backoff jitter must be in [0, 1], got {self.jitter}")

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``failures`` (1-based)."""
        base = min(self.maximum, self.initial * 2.0 ** max(0, failures - 1))
        wait = base * (1.0 - self.jitter * random.random())
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_retry_after))
        return wait


class Attempts:
    """Failures of one operation: ``max_failures`` in a row at most (None: unbounded), an
    optional overall ``deadline`` (seconds from now), the backoff between attempts.

    :meth:`progressed` resets the count of failures in a row (the total is kept), so an
    operation that keeps advancing keeps going; the deadline bounds it either way.
    """

    def __init__(
        self,
        backoff: Backoff,
        *,
        max_failures: int | None = None,
        deadline: float | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.backoff = backoff
        self.max_failures = max_failures
        self.started = time.monotonic()
        self.deadline_seconds = deadline
        self.deadline = None if deadline is None else self.started + deadline
        self.failures = 0
        self.total_failures = 0
        self._sleep = sleep

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None without a deadline)."""
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic()

    def progressed(self) -> None:
        """The operation advanced: the next failure starts a fresh count."""
        self.failures = 0

    def count_failure(self, retry_after: float | None = None) -> float:
        """Count one failure; the backoff (seconds) before the next attempt."""
        self.failures += 1
        self.total_failures += 1
        return self.backoff.delay(self.failures, retry_after)

    @property
    def exhausted(self) -> bool:
        """Whether more than ``max_failures`` failures came in a row."""
        return self.max_failures is not None and self.failures > self.max_failures

    def sleep(self, seconds: float) -> None:
        (self._sleep or _sleep)(max(0.0, seconds))


def call_with_retries(
    fn: Callable[[], T],
    *,
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    max_retries: int,
    backoff: Backoff,
    on_retry: Callable[[BaseException, int, float], None] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> T:
    """``fn()``, called again after an error of ``retry_on`` up to ``max_retries`` times
    (``on_retry(error, retry_number, wait_s)`` before each wait); the last error is raised."""
    attempts = Attempts(backoff, max_failures=max_retries, sleep=sleep)
    while True:
        try:
            return fn()
        except retry_on as exc:
            wait = attempts.count_failure()
            if attempts.exhausted:
                raise
            if on_retry is not None:
                on_retry(exc, attempts.failures, wait)
            attempts.sleep(wait)


def poll(
    attempt: Callable[[], T | None],
    *,
    wait: float,
    backoff: Backoff,
    sleep: Callable[[float], None] | None = None,
) -> T | None:
    """Call ``attempt`` until it returns something other than None, for up to ``wait``
    seconds (backoff between calls, the last call at the deadline); None if it never did."""
    attempts = Attempts(backoff, deadline=max(0.0, float(wait)), sleep=sleep)
    while True:
        result = attempt()
        if result is not None:
            return result
        remaining = attempts.remaining() or 0.0
        if remaining <= 0:
            return None
        attempts.sleep(min(remaining, attempts.count_failure()))


__all__ = ["Attempts", "Backoff", "call_with_retries", "poll"]
