"""Retry policy pieces: capped exponential backoff with jitter, ``Retry-After`` parsing,
and the per-download budget (consecutive failures without progress, overall deadline).

>>> b = Backoff(initial=1.0, maximum=8.0, jitter=0.0)
>>> [b.delay(n) for n in range(1, 6)]
[1.0, 2.0, 4.0, 8.0, 8.0]
>>> parse_retry_after("3")
3.0
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from datastack.errors import ConfigurationError, RetrievalError

logger = logging.getLogger("datastack.retrieval")


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


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date); None if unusable.

    >>> parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT",
    ...                   now=datetime(2015, 10, 21, 7, 27, 0, tzinfo=UTC))
    60.0
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


class DownloadBudget:
    """Bounds one download: ``max_retries`` consecutive failures without progress, a deadline.

    A failure after the download went further than ever before resets the count, so a long
    download over a flaky link keeps going while it advances; a restart that only repeats bytes
    does not. The deadline bounds the total time either way.
    """

    def __init__(
        self,
        url: str,
        *,
        max_retries: int,
        backoff: Backoff,
        deadline: float | None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url  # redacted
        self.max_retries = max_retries
        self.backoff = backoff
        self.started = time.monotonic()
        self.deadline = None if deadline is None else self.started + deadline
        self.deadline_seconds = deadline
        self.failures = 0
        self.total_failures = 0
        self.high_water = 0
        self._sleep = sleep

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None without a deadline)."""
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic()

    def check_deadline(self, received: int) -> None:
        """Raise :class:`RetrievalError` if the overall deadline has passed."""
        left = self.remaining()
        if left is not None and left <= 0:
            raise RetrievalError(
                f"download of {self.url} exceeded its deadline of {self.deadline_seconds:g} s "
                f"after {received} bytes ({self.total_failures} failed attempts); nothing was "
                "stored. The server is too slow: try again later (or, from Python, give the "
                "retriever a longer `deadline=`)"
            )

    def advanced(self, received: int) -> None:
        """Bytes up to ``received`` arrived; beyond the previous high-water mark (a restart
        repeats bytes), the next failure starts a fresh count."""
        if received > self.high_water:
            self.high_water = received
            self.failures = 0

    def failed(self, reason: str, *, received: int, retry_after: float | None = None) -> None:
        """Record a transient failure; sleep before the retry or raise when out of budget."""
        self.failures += 1
        self.total_failures += 1
        if self.failures > self.max_retries:
            raise RetrievalError(
                f"download of {self.url} failed after {self.failures} consecutive attempts "
                f"without progress ({received} bytes received); last error: {reason}. "
                "Nothing was stored; the server looks down or overloaded: try again later"
            )
        wait = self.backoff.delay(self.failures, retry_after)
        left = self.remaining()
        if left is not None and wait >= left:
            self.check_deadline(received)
            raise RetrievalError(
                f"download of {self.url} would exceed its deadline of {self.deadline_seconds:g} "
                f"s waiting {wait:.1f} s to retry; last error: {reason}. Nothing was stored"
            )
        logger.warning(
            "retrying %s in %.2f s (failure %d of at most %d in a row): %s",
            self.url,
            wait,
            self.failures,
            self.max_retries,
            reason,
        )
        self._sleep(wait)
