"""Content-defined chunk boundaries for raw copies (``storage.chunked.ChunkSink``).

A chunk ends after byte ``p`` when the *content* says so: the sum of :data:`WINDOW`
pseudo-random 32-bit values, one per byte of the window ending at ``p`` (each byte's value
mixed by multiplications and a squaring, :func:`byte_values`: fixed integer arithmetic, the
same on every machine and in every run), is at most a limit chosen so that a cut comes every
``average - minimum`` bytes on average. No cut before ``minimum`` bytes, a forced one at
``maximum``; with ``average`` the configured chunk size, ``minimum = average // 4`` and
``maximum = 4 * average``. A cut depends only on the window's bytes and on where the chunk
began, so inserting or deleting bytes anywhere changes the chunks around the edit only: the
cuts fall in step again at the first cut after it, and every later chunk is the same
content, stored once (restic, borg and casync cut the same way). The window carries across
the blocks the caller reads, so the cuts do not depend on how the stream is read; the
stream is taken to be preceded by ``WINDOW - 1`` zero bytes. Content with no cut in it
(constant or short-period bytes) is cut at ``maximum``.

The sums are computed with numpy over the positions a cut may fall at (none in a chunk's
first ``minimum - 1`` bytes), :data:`STEP` positions at a time: a few multiplications and
``log2(WINDOW)`` shifted additions per byte into two reused scratch arrays, no Python loop
over bytes.

>>> cuts = Boundaries(1024)
>>> (cuts.minimum, cuts.maximum)
(256, 4096)
>>> ends = cuts.cuts(memoryview(bytes(20_000)))  # constant bytes: no content cut, forced ones
>>> ends[:3], cuts.pending
([4096, 8192, 12288], 3616)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import numpy.typing as npt

#: Bytes of the rolling window a cut looks at (a power of two).
WINDOW = 64
#: A chunk is at least ``average // MIN_DIVISOR`` bytes ...
MIN_DIVISOR = 4
#: ... and at most ``average * MAX_FACTOR`` bytes.
MAX_FACTOR = 4
#: Positions whose window sums one numpy pass computes (its arrays stay in the CPU cache).
STEP = 64 * 1024


class Boundaries:
    """Where the chunks of one stream end (module docstring). Feed the stream's blocks in
    order to :meth:`cuts`; the bytes after the last cut (``pending`` of them) form the last
    chunk when the stream ends."""

    def __init__(self, average: int) -> None:
        if average <= 0:
            raise ValueError(f"the average chunk size must be positive, got {average!r}")
        import numpy as np

        self.minimum = max(1, average // MIN_DIVISOR)
        self.maximum = max(self.minimum, average * MAX_FACTOR)
        spread = max(1, average - self.minimum)
        #: A window sum at most this is a cut: probability ``1 / spread`` per position.
        self.limit = (1 << 32) // spread - 1
        self.pending = 0  # bytes of the current chunk fed so far
        self._history = np.zeros(WINDOW - 1, dtype=np.uint8)  # the last WINDOW-1 bytes
        self._scratch = (np.empty(STEP + WINDOW, dtype=np.uint32),
                         np.empty(STEP + WINDOW, dtype=np.uint32))
        self._hits = np.empty(STEP, dtype=bool)

    def cuts(self, block: Any) -> list[int]:
        """The offsets in ``block`` (bytes-like) after which a chunk ends, in order."""
        import numpy as np

        data = np.frombuffer(block, dtype=np.uint8)
        size = len(data)
        ends: list[int] = []
        start = -self.pending  # where the current chunk began, in block offsets
        while True:
            low = max(start + self.minimum, 1)  # the first end a cut may give
            forced = start + self.maximum
            high = min(forced, size)
            end = self._first_cut(data, low - 1, high) if low <= high else None
            if end is None and forced <= size:
                end = forced
            if end is None:
                break
            ends.append(end)
            start = end
        self.pending = size - start
        self._history = np.concatenate((self._history, data[-(WINDOW - 1):]))[-(WINDOW - 1):]
        return ends

    def _first_cut(self, data: npt.NDArray[np.uint8], first: int, stop: int) -> int | None:
        """The end (position + 1) of the first position in ``first:stop`` whose window sum
        is a cut, else None."""
        import numpy as np

        for a in range(first, stop, STEP):
            b = min(a + STEP, stop)
            if a >= WINDOW - 1:
                window = data[a - WINDOW + 1 : b]
            else:  # the window reaches back into the blocks before
                window = np.concatenate((self._history, data[:b]))[a:]
            sums = self._window_sums(window)
            hits = np.less_equal(sums, np.uint32(self.limit), out=self._hits[: len(sums)])
            if hits.any():
                return a + int(np.argmax(hits)) + 1
        return None

    def _window_sums(self, window: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint32]:
        """For each run of :data:`WINDOW` bytes of ``window``, the sum (mod 2**32) of their
        :func:`byte_values`: ``len(window) - WINDOW + 1`` sums, by doubling (runs of 2, 4,
        ... 64), in two scratch arrays (fresh arrays of this size cost a page fault each)."""
        import numpy as np

        size = len(window)
        sums = byte_values(window, out=self._scratch[0][:size])
        span, turn = 1, 1
        while span < WINDOW:
            size -= span
            sums = np.add(sums[span:], sums[:-span], out=self._scratch[turn][:size])
            span, turn = span * 2, 1 - turn
        return sums


_MULTIPLY = 0x9E3779B1
_XOR = 0x7F4A7C15
_FINAL = 0x85EBCA6B


def byte_values(data: npt.NDArray[np.uint8], out: npt.NDArray[np.uint32] | None = None
                ) -> npt.NDArray[np.uint32]:
    """The 32-bit value of each byte that the window sums: ``((b * M) ^ X)`` squared, then
    xor ``X`` and times an odd constant, mod 2**32 (the squaring makes the values of the 256
    bytes unrelated; multiplications and xors only: numpy's table lookups and right shifts are
    several times slower than its other arithmetic)."""
    import numpy as np

    x = np.multiply(data, np.uint32(_MULTIPLY), dtype=np.uint32, out=out)
    x ^= np.uint32(_XOR)
    x *= x
    x ^= np.uint32(_XOR)
    x *= np.uint32(_FINAL)
    return x


__all__ = ["MAX_FACTOR", "MIN_DIVISOR", "STEP", "WINDOW", "Boundaries", "byte_values"]
