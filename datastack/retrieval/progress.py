"""Download progress: a tqdm bar on an interactive terminal, plain log lines otherwise.

``progress=None`` (the default) chooses by ``sys.stderr.isatty()``; ``True`` forces the bar;
``False`` silences progress (retry warnings are still logged).

>>> p = make_progress(False, "https://example.org/x", 10)
>>> p.update(10); p.close()
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Protocol

logger = logging.getLogger("datastack.retrieval")

_LOG_EVERY_SECONDS = 5.0


class Progress(Protocol):
    def update(self, n: int) -> None: ...
    def reset(self, received: int) -> None: ...
    def close(self) -> None: ...


class _Silent:
    def update(self, n: int) -> None:
        return None

    def reset(self, received: int) -> None:
        return None

    def close(self) -> None:
        return None


class _LogProgress:
    """One INFO line at start, at most one every few seconds, and one at the end."""

    def __init__(self, url: str, total: int | None) -> None:
        self.url = url
        self.total = total
        self.received = 0
        self.started = self.last = time.monotonic()
        size = f"{total} bytes" if total is not None else "size unknown"
        logger.info("downloading %s (%s)", url, size)

    def update(self, n: int) -> None:
        self.received += n
        now = time.monotonic()
        if now - self.last >= _LOG_EVERY_SECONDS:
            self.last = now
            share = f" ({100 * self.received / self.total:.0f}%)" if self.total else ""
            logger.info("downloading %s: %d bytes%s", self.url, self.received, share)

    def reset(self, received: int) -> None:
        self.received = received

    def close(self) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        logger.info(
            "downloaded %s: %d bytes in %.1f s (%.1f MB/s)",
            self.url,
            self.received,
            elapsed,
            self.received / elapsed / 1e6,
        )


class _BarProgress:
    def __init__(self, url: str, total: int | None) -> None:
        from tqdm.auto import tqdm

        name = url.rsplit("/", 1)[-1] or url
        self._bar: Any = tqdm(
            total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name[:40], leave=False
        )

    def update(self, n: int) -> None:
        self._bar.update(n)

    def reset(self, received: int) -> None:
        self._bar.n = received
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


def make_progress(enabled: bool | None, url: str, total: int | None) -> Progress:
    """The progress reporter for one download (``url`` must already be redacted)."""
    if enabled is False:
        return _Silent()
    if enabled is None:
        try:
            interactive = sys.stderr is not None and sys.stderr.isatty()
        except (AttributeError, ValueError):
            interactive = False
        enabled = interactive
    if enabled:
        return _BarProgress(url, total)
    return _LogProgress(url, total)
