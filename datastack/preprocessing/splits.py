"""Materialised splits: seeded, deterministic partitions of ``range(n)``.

Sizes are ``floor(ratio * n)`` per split, and the rounding remainder goes to the *first* split.
A random split draws one permutation from ``numpy.random.default_rng(seed)``; a stratified
split does the same per class (classes in sorted order), so each split keeps the class
proportions and its size is the sum of the per-class sizes. Within a split, indices are sorted:
samples keep their source order (shuffle at load time with the iterators).

>>> split_sizes(10, {"train": 0.75, "test": 0.25})
{'train': 8, 'test': 2}
>>> parts = split_indices(10, {"train": 0.8, "test": 0.2}, seed=0)
>>> sorted(len(v) for v in parts.values()), sorted(int(i) for v in parts.values() for i in v)
([2, 8], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from datastack.errors import FormatError


def split_sizes(n: int, ratios: Mapping[str, float]) -> dict[str, int]:
    """Sizes of each split for ``n`` samples: floors, remainder to the first split."""
    sizes = {name: math.floor(ratio * n + 1e-9) for name, ratio in ratios.items()}
    first = next(iter(sizes))
    sizes[first] += n - sum(sizes.values())
    return sizes


def split_indices(
    n: int,
    ratios: Mapping[str, float],
    seed: int = 0,
    stratify_by: NDArray[np.generic] | None = None,
) -> dict[str, NDArray[np.int64]]:
    """Partition ``range(n)`` into named splits; each index array is sorted ascending.

    With ``stratify_by`` (one label per sample, 1-D), every class is split separately with the
    same ratios.
    """
    rng = np.random.default_rng(seed)
    if stratify_by is None:
        return _cut(rng.permutation(n), ratios)
    labels = np.asarray(stratify_by)
    if labels.ndim != 1 or len(labels) != n:
        raise FormatError(
            f"stratify needs one label per sample (1-D, length {n}), got shape {labels.shape}"
        )
    pieces: dict[str, list[NDArray[np.int64]]] = {name: [] for name in ratios}
    finite = labels if labels.dtype.kind not in "fc" else np.where(np.isnan(labels), -1, labels)
    for cls in np.unique(finite):
        members = np.flatnonzero(finite == cls)
        for name, idx in _cut(members[rng.permutation(len(members))], ratios).items():
            pieces[name].append(idx)
    return {
        name: np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.empty(0, np.int64)
        for name, parts in pieces.items()
    }


def _cut(order: NDArray[np.int64], ratios: Mapping[str, float]) -> dict[str, NDArray[np.int64]]:
    sizes = split_sizes(len(order), ratios)
    out: dict[str, NDArray[np.int64]] = {}
    start = 0
    for name, size in sizes.items():
        out[name] = np.sort(order[start : start + size]).astype(np.int64)
        start += size
    return out


__all__ = ["split_indices", "split_sizes"]
