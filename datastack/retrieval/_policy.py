"""Retry policy of downloads: ``Retry-After`` parsing and the per-download budget
(consecutive failures without progress, overall deadline), built on the library's one
retry helper (:mod:`datastack._retry`, which also holds :class:`Backoff`).

>>> b = Backoff(initial=1.0, maximum=8.0, jitter=0.0)
>>> [b.delay(n) for n in range(1, 6)]
[1.0, 2.0, 4.0, 8.0, 8.0]
>>> parse_retry_after("3")
3.0
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from datastack._retry import Attempts, Backoff
from datastack.errors import RetrievalError

logger = logging.getLogger("datastack.retrieval")


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


class DownloadBudget(Attempts):
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
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        super().__init__(backoff, max_failures=max_retries, deadline=deadline, sleep=sleep)
        self.url = url  # redacted
        self.max_retries = max_retries
        self.high_water = 0

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
            self.progressed()

    def failed(self, reason: str, *, received: int, retry_after: float | None = None) -> None:
        """Record a transient failure; sleep before the retry or raise when out of budget."""
        wait = self.count_failure(retry_after)
        if self.exhausted:
            raise RetrievalError(
                f"download of {self.url} failed after {self.failures} consecutive attempts "
                f"without progress ({received} bytes received); last error: {reason}. "
                "Nothing was stored; the server looks down or overloaded: try again later"
            )
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
        self.sleep(wait)
