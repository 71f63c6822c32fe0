"""Split arithmetic, once: ratios -> sizes -> indices, and split expressions.

Everything that cuts a dataset into parts uses these functions: the ``splits:`` of a spec
(materialised at preprocessing), the splitters of :mod:`datastack.iterators.splitters` and the
split expressions of ``datastack.load(name, split="train[:10%]")``.

Rounding
--------
- **Ratios -> sizes** (:func:`split_sizes`): the largest-remainder rule. Each split gets
  ``floor(ratio * n)``; the samples left over go one each to the splits with the largest
  fractional parts (ties: the split listed first). Sizes always sum to ``n`` and each is within
  one sample of ``ratio * n``.
- **Percent bounds** (:class:`SplitExpression`): ``p%`` of a split of length ``n`` is
  ``round(p * n / 100)`` rounding halves up (the "closest" rounding of TFDS / Hugging Face).

>>> split_sizes(7, {"train": 0.2, "val": 0.4, "test": 0.4})
{'train': 1, 'val': 3, 'test': 3}
>>> expr = SplitExpression.from_spec("train[:10%]+test[-5:]")
>>> expr.to_spec(), expr.to_absolute({"train": 150, "test": 30})
('train[:10%]+test[-5:]', [AbsoluteSlice(split='train', start=0, stop=15), \
AbsoluteSlice(split='test', start=25, stop=30)])
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from datastack.errors import ConfigurationError, FormatError, SplitNotFoundError

#: Tolerance of "ratios sum to 1".
RATIO_SUM_TOLERANCE = 1e-6
#: Most terms a split expression may join with ``+`` (parsing is linear; this bounds it).
MAX_TERMS = 1000
#: Longest split expression accepted (characters).
MAX_EXPRESSION_LENGTH = 64 * 1024


# -- ratios -> sizes -> indices --------------------------------------------------------------
def check_ratios(ratios: Mapping[str, float]) -> dict[str, float]:
    """``ratios`` as ``{name: float}``, or :class:`ConfigurationError` saying what is wrong.

    Names must be non-empty strings; ratios finite numbers >= 0 summing to 1.
    """
    if not isinstance(ratios, Mapping) or not ratios:
        raise ConfigurationError(
            f"split ratios must be a non-empty mapping such as {{'train': 0.8, 'test': 0.2}}, "
            f"got {ratios!r:.80}"
        )
    clean: dict[str, float] = {}
    for name, ratio in ratios.items():
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"split names must be non-empty strings, got {name!r}")
        if (
            isinstance(ratio, bool)
            or not isinstance(ratio, (int, float))
            or not math.isfinite(ratio)
            or ratio < 0
        ):
            raise ConfigurationError(f"split {name!r}: ratio must be a number >= 0, got {ratio!r}")
        clean[name] = float(ratio)
    total = math.fsum(clean.values())
    if abs(total - 1.0) > RATIO_SUM_TOLERANCE:
        raise ConfigurationError(
            f"split ratios must sum to 1, got {total:g} ({clean}); adjust them"
        )
    return clean


def split_sizes(n: int, ratios: Mapping[str, float]) -> dict[str, int]:
    """Sizes of each split of ``n`` samples by the largest-remainder rule (module docstring).

    >>> split_sizes(10, {"a": 0.55, "b": 0.45})
    {'a': 6, 'b': 4}
    >>> split_sizes(0, {"a": 0.5, "b": 0.5})
    {'a': 0, 'b': 0}
    """
    clean = check_ratios(ratios)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigurationError(f"the number of samples must be an int >= 0, got {n!r}")
    exact = {name: ratio * n for name, ratio in clean.items()}
    sizes = {name: math.floor(value + 1e-9) for name, value in exact.items()}
    left = n - sum(sizes.values())
    order = sorted(clean, key=lambda name: -(exact[name] - sizes[name]))  # stable: ties first
    for name in order[: max(0, left)]:
        sizes[name] += 1
    return sizes


def cut(order: NDArray[np.int64], sizes: Mapping[str, int]) -> dict[str, NDArray[np.int64]]:
    """Consecutive pieces of ``order`` with the given sizes (in the mapping's order)."""
    out: dict[str, NDArray[np.int64]] = {}
    start = 0
    for name, size in sizes.items():
        out[name] = order[start : start + size]
        start += size
    return out


def split_indices(
    n: int,
    ratios: Mapping[str, float],
    seed: int = 0,
    stratify_by: NDArray[np.generic] | None = None,
) -> dict[str, NDArray[np.int64]]:
    """Partition ``range(n)`` into named splits; each index array is sorted ascending.

    One permutation from ``numpy.random.default_rng(seed)`` is cut by :func:`split_sizes`.
    With ``stratify_by`` (one label per sample), every class (in sorted order) is permuted and
    cut separately with the same ratios, so each split keeps the class proportions.

    >>> parts = split_indices(10, {"train": 0.8, "test": 0.2}, seed=0)
    >>> sorted(len(v) for v in parts.values()), sorted(int(i) for v in parts.values() for i in v)
    ([2, 8], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    """
    rng = np.random.default_rng(seed)
    if stratify_by is None:
        order = rng.permutation(n).astype(np.int64)
        return _ascending(cut(order, split_sizes(n, ratios)), n)
    pieces: dict[str, list[NDArray[np.int64]]] = {name: [] for name in check_ratios(ratios)}
    for members in class_members(_labels(stratify_by, n)):
        shuffled = members[rng.permutation(len(members))]
        for name, idx in cut(shuffled, split_sizes(len(members), ratios)).items():
            pieces[name].append(idx)
    return _ascending({name: np.concatenate(parts) if parts else np.empty(0, np.int64)
                       for name, parts in pieces.items()}, n)


def _ascending(pieces: Mapping[str, NDArray[np.int64]], n: int) -> dict[str, NDArray[np.int64]]:
    """Each piece of a partition of ``range(n)`` sorted ascending, by marking rows (no sort)."""
    if n < 2**15 or len(pieces) > 127:
        return {k: np.sort(v) for k, v in pieces.items()}
    owner = np.empty(n, np.int8)
    for i, piece in enumerate(pieces.values()):
        owner[piece] = i
    return {k: np.flatnonzero(owner == i).astype(np.int64) for i, k in enumerate(pieces)}


def grow_sizes(total: int, kept: Sequence[int], ratios: Mapping[str, float]) -> list[int]:
    """How many *new* samples each split gets when ``kept[i]`` samples of split ``i`` (in the
    mapping's order) must stay where they are and ``total`` samples are split in all.

    The totals are those of :func:`split_sizes` (each within one sample of its ratio) whenever
    no split already holds more than that; otherwise the splits over their share keep what
    they hold (nothing moves) and the others share the rest by their ratios (water-filling,
    then largest remainders).

    >>> grow_sizes(11, [8, 2], {"train": 0.8, "test": 0.2})
    [1, 0]
    >>> grow_sizes(10, [0, 5], {"train": 0.8, "test": 0.2})
    [5, 0]
    """
    clean = check_ratios(ratios)
    names = list(clean)
    fresh = split_sizes(total, clean)
    if all(k <= fresh[name] for k, name in zip(kept, names, strict=True)):
        return [fresh[name] - k for k, name in zip(kept, names, strict=True)]
    ideal = [clean[name] * total for name in names]
    lo, hi = 0.0, float(total) + 1.0
    for _ in range(100):  # the level: sum(max(kept, ideal - level)) == total
        level = (lo + hi) / 2
        if sum(max(k, x - level) for k, x in zip(kept, ideal, strict=True)) > total:
            lo = level
        else:
            hi = level
    share = [x - hi for x in ideal]
    free = [s > k for s, k in zip(share, kept, strict=True)]
    base = [math.floor(s + 1e-9) if f else k for s, k, f in zip(share, kept, free, strict=True)]
    left = total - sum(base)
    order = sorted((i for i in range(len(names)) if free[i]), key=lambda i: -(share[i] - base[i]))
    order = order or [max(range(len(names)), key=lambda i: ideal[i] - base[i])]
    for step in range(abs(left)):  # a few samples of rounding (floats), never a loop per row
        if left > 0 and order:
            base[order[step % len(order)]] += 1
            continue
        over = [i for i in reversed(order) if base[i] > kept[i]]
        if not over:
            break
        base[over[0]] -= 1
    return [max(0, b - k) for b, k in zip(base, kept, strict=True)]


def kept_split_indices(
    ids: NDArray[np.uint64],
    ratios: Mapping[str, float],
    seed: int = 0,
    stratify_by: NDArray[np.generic] | None = None,
    previous: Mapping[str, NDArray[np.uint64]] | None = None,
) -> dict[str, NDArray[np.int64]]:
    """:func:`split_indices` over rows with identities ``ids`` that keeps every row found in
    ``previous`` (``{split: ids}``, a former version) in its split: splits never move.

    Rows not seen before are shuffled with ``default_rng(seed)`` (per class, in sorted class
    order, with ``stratify_by``) and cut by :func:`grow_sizes`. With no previous rows this is
    exactly :func:`split_indices`. Each index array is sorted ascending (source order).

    >>> ids = np.arange(10, dtype=np.uint64)
    >>> first = kept_split_indices(ids[:8], {"a": 0.5, "b": 0.5}, seed=1)
    >>> old = {k: ids[v] for k, v in first.items()}
    >>> grown = kept_split_indices(ids, {"a": 0.5, "b": 0.5}, seed=1, previous=old)
    >>> all(set(v.tolist()) <= set(grown[k].tolist()) for k, v in first.items())
    True
    """
    names = list(check_ratios(ratios))
    n = len(ids)
    known = {k: np.asarray(v, np.uint64) for k, v in (previous or {}).items() if k in names}
    if not any(len(v) for v in known.values()):
        return split_indices(n, ratios, seed, stratify_by)
    assigned = _previous_splits(np.asarray(ids, np.uint64), known, names)
    rng = np.random.default_rng(seed)
    groups = [np.arange(n, dtype=np.int64)] if stratify_by is None else class_members(
        _labels(stratify_by, n))
    for members in groups:
        held = assigned[members]
        kept = np.bincount(held[held >= 0], minlength=len(names)).tolist()
        _deal(members[held < 0], len(members), kept, ratios, rng, assigned)
    return {name: np.flatnonzero(assigned == i).astype(np.int64) for i, name in enumerate(names)}


def _labels(stratify_by: Any, n: int) -> NDArray[Any]:
    labels = np.asarray(stratify_by)
    if labels.ndim != 1 or len(labels) != n:
        raise FormatError(
            f"stratify needs one label per sample (1-D, length {n}), got shape {labels.shape}"
        )
    return labels


def _deal(new: NDArray[np.int64], total: int, kept: Sequence[int], ratios: Mapping[str, float],
          rng: Any, assigned: NDArray[np.int64]) -> None:
    """Shuffle the ``new`` rows of a group of ``total`` (``kept[i]`` already in split ``i``)
    and give each split its :func:`grow_sizes` share of them."""
    shuffled = new[rng.permutation(len(new))]
    start = 0
    for number, size in enumerate(grow_sizes(total, kept, ratios)):
        assigned[shuffled[start : start + size]] = number
        start += size


def tail_split_indices(
    n: int, ratios: Mapping[str, float], seed: int = 0,
    stratify_by: NDArray[np.generic] | None = None, kept: Mapping[Any, Sequence[int]] | None = None,
) -> dict[str, NDArray[np.int64]]:
    """The splits of ``n`` rows appended after a former version's rows, which all stay where
    they are: ``kept`` gives, per class (the key ``None`` without ``stratify_by``), how many
    rows each split (in the ratios' order) holds already. The result (indices into the new
    rows, ascending) is exactly what :func:`kept_split_indices` gives those rows when it is
    handed every row, old and new (same generator draws, same sizes), without the old ones.

    >>> tail_split_indices(2, {"a": 0.5, "b": 0.5}, kept={None: [2, 0]})
    {'a': array([], dtype=int64), 'b': array([0, 1])}
    """
    names, kept = list(check_ratios(ratios)), dict(kept or {})
    rng, assigned = np.random.default_rng(seed), np.full(n, -1, np.int64)
    if stratify_by is None:
        groups: list[tuple[Any, NDArray[np.int64]]] = [(None, np.arange(n, dtype=np.int64))]
    else:
        labels = _labels(stratify_by, n)
        if labels.dtype.kind in "fc":  # NaN is one class, as in class_members
            labels = np.where(np.isnan(labels), -np.inf, labels)
            kept = {(-np.inf if isinstance(c, float) and np.isnan(c) else c): v
                    for c, v in kept.items()}
        classes = np.unique(np.concatenate([np.asarray(list(kept), labels.dtype), labels]))
        groups = [(c.item(), np.flatnonzero(labels == c).astype(np.int64)) for c in classes]
    for cls, members in groups:
        old = list(kept.get(cls, [0] * len(names)))
        _deal(members, sum(old) + len(members), old, ratios, rng, assigned)
    return {name: np.flatnonzero(assigned == i).astype(np.int64) for i, name in enumerate(names)}


def _previous_splits(
    ids: NDArray[np.uint64], known: Mapping[str, NDArray[np.uint64]], names: Sequence[str]
) -> NDArray[np.int64]:
    """The split number each row had before (-1: a new row), found by a sorted lookup."""
    old_ids = np.concatenate([known.get(name, np.empty(0, np.uint64)) for name in names])
    old_split = np.concatenate(
        [np.full(len(known.get(name, ())), i, np.int64) for i, name in enumerate(names)]
    )
    order = np.argsort(old_ids, kind="stable")
    ranked = old_ids[order]
    out = np.full(len(ids), -1, np.int64)
    if len(ranked) == 0:
        return out
    needles = np.argsort(ids, kind="stable")  # sorted needles: a cache-friendly search
    wanted = ids[needles]
    at = np.minimum(np.searchsorted(ranked, wanted), len(ranked) - 1)
    hit = ranked[at] == wanted
    out[needles[hit]] = old_split[order[at[hit]]]
    return out


def class_members(labels: NDArray[np.generic]) -> list[NDArray[np.int64]]:
    """Indices of each class of ``labels``, classes in sorted order (NaN is one class)."""
    labels = np.asarray(labels)
    if labels.dtype.kind in "fc":
        labels = np.where(np.isnan(labels), -np.inf, labels)
    return [np.flatnonzero(labels == cls).astype(np.int64) for cls in np.unique(labels)]


# -- split expressions -----------------------------------------------------------------------
_BOUND = r"-?\d+(?:\.\d+)?%?"
#: Digits of a slice bound's whole part (a sample count up to 10^18).
MAX_BOUND_DIGITS = 18


def _cut(text: str, size: int) -> str:
    return text if len(text) <= size else f"{text[:size]}...({len(text)} characters)"
_TERM = re.compile(
    rf"\s*(?P<name>[A-Za-z0-9_][A-Za-z0-9_.-]*)\s*"
    rf"(?:\[\s*(?P<start>{_BOUND})?\s*(?P<colon>:)?\s*(?P<stop>{_BOUND})?\s*\])?\s*"
)


@dataclass(frozen=True)
class Bound:
    """One slice bound: a sample count (negative counts from the end) or a percentage."""

    value: float
    percent: bool

    @classmethod
    def parse(cls, text: str, expr: str) -> Bound:
        shown_expr, shown = _cut(expr, 80), _cut(text, 30)
        digits = len(text.split(".")[0].lstrip("-"))
        if digits > MAX_BOUND_DIGITS:
            raise ConfigurationError(
                f"{shown_expr!r}: the bound {shown} has {digits} digits; expected a sample "
                f"count or percentage of at most {MAX_BOUND_DIGITS} digits"
            )
        if text.endswith("%"):
            value = float(text[:-1])
            if not -100 <= value <= 100:
                raise ConfigurationError(
                    f"{shown_expr!r}: percentage {shown} outside -100%..100%"
                )
            return cls(value, True)
        if "." in text:
            raise ConfigurationError(
                f"{shown_expr!r}: {shown} is not a whole number of samples (add % for a "
                "percentage)"
            )
        return cls(int(text), False)

    def resolve(self, n: int) -> int:
        """The sample position this bound names in a split of ``n`` (clamped to 0..n)."""
        if self.percent:
            size = math.floor(abs(self.value) * n / 100 + 0.5)
            position = n - size if self.value < 0 else size
        else:
            position = int(self.value) + n if self.value < 0 else int(self.value)
        return max(0, min(n, position))

    def to_spec(self) -> str:
        if self.percent:
            return f"{self.value:g}%"
        return str(int(self.value))


@dataclass(frozen=True)
class AbsoluteSlice:
    """Samples ``start..stop-1`` of one split (resolved against its length)."""

    split: str
    start: int
    stop: int


@dataclass(frozen=True)
class SplitTerm:
    """One ``+``-joined term: a split name, sliced or whole."""

    split: str
    start: Bound | None = None
    stop: Bound | None = None
    sliced: bool = False

    def to_spec(self) -> str:
        if not self.sliced:
            return self.split
        start = self.start.to_spec() if self.start else ""
        stop = self.stop.to_spec() if self.stop else ""
        return f"{self.split}[{start}:{stop}]"


@dataclass(frozen=True)
class SplitExpression:
    """A split expression parsed once: ``"train"``, ``"train[:10%]"``, ``"train[10%:20%]"``,
    ``"train[-100:]"``, ``"train+test"`` -- terms joined by ``+``.

    Bounds are sample counts (negative counts from the end) or percentages of the split's
    length (rounded to the closest sample, halves up). A slice whose start lies after its
    stop is an error, never an empty split.

    >>> (SplitExpression.from_spec("a[:5]") + SplitExpression.from_spec("b")).to_spec()
    'a[:5]+b'
    """

    terms: tuple[SplitTerm, ...]

    @classmethod
    def from_spec(cls, text: str) -> SplitExpression:
        """Parse ``text`` (linear time; at most :data:`MAX_TERMS` terms)."""
        if not isinstance(text, str) or not text.strip():
            raise ConfigurationError(
                f"empty split expression {text!r}; expected e.g. 'train' or 'train[:10%]'"
            )
        if len(text) > MAX_EXPRESSION_LENGTH:
            raise ConfigurationError(
                f"split expression of {len(text)} characters; at most {MAX_EXPRESSION_LENGTH}"
            )
        parts = text.split("+")
        if len(parts) > MAX_TERMS:
            raise ConfigurationError(
                f"split expression with {len(parts)} terms; at most {MAX_TERMS} are allowed"
            )
        terms = []
        for part in parts:
            match = _TERM.fullmatch(part)
            if match is None or (("[" in part) and match["colon"] is None):
                raise ConfigurationError(
                    f"malformed split expression {text[:200]!r} at {part.strip()[:80]!r}; "
                    "expected terms like 'train', 'train[:10%]', 'train[10%:20%]', "
                    "'train[:100]' joined by '+'"
                )
            start = Bound.parse(match["start"], text) if match["start"] else None
            stop = Bound.parse(match["stop"], text) if match["stop"] else None
            terms.append(SplitTerm(match["name"], start, stop, sliced="[" in part))
        return cls(tuple(terms))

    def to_spec(self) -> str:
        """The expression as text (``from_spec(e.to_spec()) == e``)."""
        return "+".join(term.to_spec() for term in self.terms)

    def __add__(self, other: object) -> SplitExpression:
        if isinstance(other, str):
            other = SplitExpression.from_spec(other)
        if not isinstance(other, SplitExpression):
            return NotImplemented
        return SplitExpression(self.terms + other.terms)

    @property
    def splits(self) -> list[str]:
        """The split names used, in order of first use."""
        return list(dict.fromkeys(term.split for term in self.terms))

    def to_absolute(self, lengths: Mapping[str, int]) -> list[AbsoluteSlice]:
        """Resolve every term against the split lengths.

        Raises :class:`SplitNotFoundError` for an unknown split and
        :class:`ConfigurationError` for a slice that starts after it stops.
        """
        out = []
        for term in self.terms:
            if term.split not in lengths:
                raise SplitNotFoundError(
                    f"no split {term.split!r} (in {self.to_spec()[:200]!r}); available: "
                    f"{', '.join(sorted(lengths)) or 'none'}"
                )
            n = int(lengths[term.split])
            start = 0 if term.start is None else term.start.resolve(n)
            stop = n if term.stop is None else term.stop.resolve(n)
            if start > stop:
                raise ConfigurationError(
                    f"split {term.to_spec()!r} starts at sample {start} but stops at {stop} "
                    f"(of {n}): the start must not lie after the stop"
                )
            out.append(AbsoluteSlice(term.split, start, stop))
        return out

    def __str__(self) -> str:
        return self.to_spec()


def parse_split_expression(text: str) -> SplitExpression:
    """Shorthand for :meth:`SplitExpression.from_spec`."""
    return SplitExpression.from_spec(text)


__all__ = [
    "MAX_TERMS",
    "AbsoluteSlice",
    "Bound",
    "SplitExpression",
    "SplitTerm",
    "check_ratios",
    "class_members",
    "cut",
    "grow_sizes",
    "kept_split_indices",
    "parse_split_expression",
    "split_indices",
    "split_sizes",
    "tail_split_indices",
]
