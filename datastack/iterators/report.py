"""Reports on an iterator stack: length, target distribution and iteration speed, recursively.

>>> from datastack.iterators import SequenceDatasetIterator
>>> r = report(SequenceDatasetIterator([1, 2, 3], ["a", "b", "a"]).shuffle(0), speed_samples=0)
>>> r.length, r.target_distribution, r.children[0].iterator
(3, {'a': 2, 'b': 1}, 'SequenceDatasetIterator')
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from datastack.iterators.base import DatasetIterator


@dataclass
class IteratorReport:
    """What :func:`report` found about one iterator and, in ``children``, those under it."""

    iterator: str
    length: int
    target_distribution: dict[str, int] | None = None
    samples_per_second: float | None = None
    children: list[IteratorReport] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "iterator": self.iterator,
            "length": self.length,
            "target_distribution": self.target_distribution,
            "samples_per_second": self.samples_per_second,
            "error": self.error,
            "children": [c.to_dict() for c in self.children],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


def _distribution(it: DatasetIterator, target_pos: int) -> dict[str, int] | None:
    targets = it.get_targets(target_pos)
    if targets.ndim != 1 or targets.dtype.kind == "f":
        return None  # regression targets or one-hot rows: no class distribution
    labels, counts = np.unique(targets, return_counts=True)
    return {str(k): int(v) for k, v in zip(labels.tolist(), counts.tolist(), strict=True)}


def _speed(it: DatasetIterator, samples: int, seed: int) -> float | None:
    n = len(it)
    if samples <= 0 or n == 0:
        return None
    picks = np.random.default_rng(seed).integers(0, n, size=min(samples, n))
    start = time.perf_counter()
    for i in picks.tolist():
        it[i]
    elapsed = time.perf_counter() - start
    return float(len(picks) / elapsed) if elapsed > 0 else None


def report(
    it: DatasetIterator,
    *,
    target_pos: int = 1,
    speed_samples: int = 100,
    seed: int = 0,
    max_depth: int | None = None,
) -> IteratorReport:
    """Report on ``it`` and (up to ``max_depth`` levels) the iterators under it.

    Speed is measured over ``speed_samples`` random single-sample reads (0 skips it). A part
    that fails (e.g. targets that cannot be read) is recorded in ``error``, not raised.
    """
    rep = IteratorReport(type(it).__name__, len(it))
    try:
        rep.target_distribution = _distribution(it, target_pos)
        rep.samples_per_second = _speed(it, speed_samples, seed)
    except Exception as exc:  # a report records failures rather than raising
        rep.error = f"{type(exc).__name__}: {exc}"
    if max_depth is None or max_depth > 0:
        depth = None if max_depth is None else max_depth - 1
        rep.children = [
            report(
                c, target_pos=target_pos, speed_samples=speed_samples, seed=seed, max_depth=depth
            )
            for c in it.underlying_iterators
        ]
    return rep
