"""Row identities: one 64-bit id per row, computed from the row's stored values, vectorised.

A row's identity is what lets a later version recognise it (``docs/living.md``: splits never
move). By default it is the row's *content*: every field's stored value; with a spec's
``key:`` it is the value of the named key columns only. The same row gives the same id
whether it is hashed from the staged columns while a version is prepared or read back from a
published file, because the hash follows values, not storage:

- numbers are hashed as numbers: an integral value (``3``, ``3.0``, in any int or float dtype)
  as that integer, any other float as its float64 bits, every NaN alike;
- a category code (a ``label`` field, a categorical column of a feature vector) is hashed as
  its *label* (the string), so codes renumbered between versions do not change identities;
- text and bytes are hashed from their bytes (vectorised over the flat buffer: no Python per
  row); images (their stored, encoded bytes) and ragged arrays per row with BLAKE2b (their
  rows are large and few).

Two rows with the same content (duplicates) are told apart by their occurrence number, in row
order (:func:`with_occurrences`): the k-th copy of a row keeps the k-th copy's id.

>>> import numpy as np
>>> from datastack.fields import ARRAY, Field
>>> fields = [Field("x", ARRAY, "float32", (2,))]
>>> a = row_hashes(fields, {"x": np.array([[1, 2], [3, 4]], np.float32)})
>>> b = row_hashes([Field("x", ARRAY, "int64", (2,))], {"x": np.array([[1, 2], [3, 4]])})
>>> bool((a == b).all()), bool(a[0] != a[1])
(True, True)
>>> ids = with_occurrences(np.array([7, 7, 9], np.uint64))
>>> int(ids[0]) == 7, bool(ids[0] != ids[1]), int(ids[2]) == 9
(True, True, True)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from datastack.errors import FormatError
from datastack.fields import BYTES, LABEL, RAGGED, STRING, Field, FlatRows

U64 = NDArray[np.uint64]
#: Version of the hash; stored with the ids (a file of another scheme is recomputed).
SCHEME = 1
#: Elements hashed per numpy step (bounds temporaries to a few tens of MiB).
STEP_ELEMENTS = 1 << 21
_NAN = np.uint64(0x7FF8000000000001)
_MISSING = np.uint64(0x5EED0000DEADBEEF)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix(value: Any) -> U64:
    """SplitMix64's finaliser, elementwise (wrapping uint64 arithmetic)."""
    return _mixed(np.array(value, dtype=np.uint64, copy=True, ndmin=1))


def _mixed(z: U64) -> U64:
    """:func:`mix` in place, on an array of ours (a temporary)."""
    with np.errstate(over="ignore"):
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return z


def number_words(block: Any) -> U64:
    """``(n, k)`` words of a numeric block of ``n`` rows: integral values as int64, other
    floats as float64 bits (NaN canonical), complex as (real, imaginary)."""
    a = np.asarray(block)
    n = a.shape[0]
    if a.dtype.kind == "c":
        a = np.stack([a.real, a.imag], axis=-1)
    flat = a.reshape(n, -1)
    if flat.dtype.kind in "biu":
        return flat.astype(np.int64).view(np.uint64)
    if flat.dtype.kind != "f":
        raise FormatError(f"cannot hash values of dtype {flat.dtype} as numbers")
    f = flat.astype(np.float64)
    words = f.view(np.uint64).copy()
    with np.errstate(invalid="ignore"):
        integral = np.isfinite(f) & (f == np.trunc(f)) & (np.abs(f) < 2.0**63)
    words[integral] = f[integral].astype(np.int64).view(np.uint64)
    words[np.isnan(f)] = _NAN
    return words


def hash_words(words: U64, salt: int = 0) -> U64:
    """One hash per row of an ``(n, k)`` word matrix (position-sensitive)."""
    n, k = words.shape
    positions = mix(np.arange(k, dtype=np.uint64) + np.uint64(salt * int(_GOLDEN) % 2**64))
    out = np.empty(n, np.uint64)
    step = max(1, STEP_ELEMENTS // max(1, k))
    with np.errstate(over="ignore"):
        for lo in range(0, n, step):
            part = words[lo : lo + step]
            out[lo : lo + step] = _mixed(part + positions).sum(axis=1, dtype=np.uint64)
        return mix(out + mix(np.uint64(k) + _GOLDEN))


def hash_flat(values: NDArray[np.uint8], sizes: NDArray[np.int64]) -> U64:
    """One hash per row of flat bytes (``sizes`` bytes each, in order), vectorised."""
    sizes = np.asarray(sizes, np.int64)
    ends = np.cumsum(sizes)
    starts = ends - sizes
    out = np.empty(len(sizes), np.uint64)
    row = 0
    with np.errstate(over="ignore"):
        while row < len(sizes):  # steps of whole rows, about STEP_ELEMENTS bytes each
            stop = int(np.searchsorted(ends, int(starts[row]) + STEP_ELEMENTS, side="right"))
            stop = max(stop, row + 1)
            lo, hi = int(starts[row]), int(ends[stop - 1])
            part = np.asarray(values[lo:hi], np.uint64)
            position = np.arange(lo, hi, dtype=np.uint64) - np.repeat(
                starts[row:stop].astype(np.uint64), sizes[row:stop]
            )
            summed = np.concatenate([[np.uint64(0)], np.cumsum(
                _mixed((position << np.uint64(8)) | part), dtype=np.uint64)])
            local = (ends[row:stop] - lo).astype(np.int64)
            out[row:stop] = summed[local] - summed[local - sizes[row:stop]]
            row = stop
        return mix(out + mix(sizes.astype(np.uint64) + _GOLDEN))


def _hash_objects(values: Sequence[Any], field: Field) -> U64:
    """Per row BLAKE2b of bytes, images (their stored bytes) or ragged arrays."""
    out = np.empty(len(values), np.uint64)
    for i, value in enumerate(values):
        if field.kind == RAGGED:
            array = np.asarray(value)
            data = number_words(array.reshape(1, -1)).tobytes() + repr(array.shape).encode()
        else:
            data = bytes(value) if not isinstance(value, np.ndarray) else value.tobytes()
        out[i] = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")
    return out


def label_words(labels: Sequence[str]) -> U64:
    """The word of each category label (its text hashed), indexed by code."""
    encoded = [str(label).encode("utf-8") for label in labels]
    flat = np.frombuffer(b"".join(encoded), np.uint8)
    return hash_flat(flat, np.array([len(e) for e in encoded], np.int64))


def _coded(codes: Any, table: U64) -> U64:
    """Words of category codes (float with NaN for missing, or int) through their labels."""
    c = np.asarray(codes, np.float64).ravel()
    out = np.full(len(c), _MISSING, np.uint64)
    valid = np.isfinite(c) & (c >= 0) & (c < len(table))
    out[valid] = table[c[valid].astype(np.int64)]
    return out


def field_words(field: Field, block: Any, encodings: Mapping[str, Sequence[str]]) -> U64:
    """``(n, k)`` words of a fixed field's block; category codes as their labels."""
    if field.kind == LABEL:
        names = field.names or tuple(encodings.get(field.name, ()))
        return _coded(block, label_words(names)).reshape(-1, 1)
    words = number_words(block)
    for j, column in enumerate(field.columns or ()):
        if column in encodings and j < words.shape[1]:
            words[:, j] = _coded(np.asarray(block)[:, j], label_words(encodings[column]))
    return words


def field_hashes(
    field: Field, block: Any, encodings: Mapping[str, Sequence[str]], salt: int = 0
) -> U64:
    """One hash per row of one field's block (see the module docstring)."""
    if not field.variable:
        return hash_words(field_words(field, block, encodings), salt)
    flat = FlatRows.of(block)
    if field.kind in (STRING, BYTES):  # vectorised over the flat bytes, whatever the source
        if flat is None:
            encoded = [b"" if v is None else v.encode("utf-8") if isinstance(v, str)
                       else bytes(v) for v in block]
            flat = FlatRows(np.frombuffer(b"".join(encoded), np.uint8), np.concatenate(
                [[0], np.cumsum([len(e) for e in encoded], dtype=np.int64)]).astype(np.int64))
        values, sizes = flat.flat()
        return mix(hash_flat(values, sizes) + np.uint64(salt))
    if flat is not None:  # images given as flat bytes: one value per row
        values, sizes = flat.flat()
        block = np.split(values, np.cumsum(sizes)[:-1]) if len(sizes) else []
    return mix(_hash_objects(block, field) + np.uint64(salt))


def row_hashes(
    fields: Sequence[Field],
    block: Mapping[str, Any],
    encodings: Mapping[str, Sequence[str]] | None = None,
    key: Sequence[tuple[str, int | None]] | None = None,
) -> U64:
    """One content hash per row of ``block`` (``{field name: rows}``).

    ``key``: ``(field name, column index or None)`` pairs to hash instead of every field
    (a column index picks one column of a feature vector).
    """
    encodings = encodings or {}
    by_name = {f.name: f for f in fields}
    parts = [(name, None) for name in by_name] if key is None else list(key)
    total: U64 | None = None
    for position, (name, column) in enumerate(parts):
        field = by_name[name]
        if column is None:
            h = field_hashes(field, block[name], encodings, position)
        else:
            words = field_words(field, block[name], encodings)[:, column : column + 1]
            h = hash_words(np.ascontiguousarray(words), position)
        with np.errstate(over="ignore"):
            total = h if total is None else mix(total * _GOLDEN + h)
    if total is None:
        raise FormatError("row identity needs at least one field")
    return total


def with_occurrences(hashes: U64) -> U64:
    """Ids from content hashes: the first row of each content keeps its hash, the k-th copy
    (in row order) gets the hash mixed with k, so duplicates stay apart, deterministically."""
    h = np.asarray(hashes, np.uint64)
    if len(h) == 0:
        return h.copy()
    return _occurrences(h, numbered=True)


def with_occurrences_after(hashes: U64, before: U64) -> U64:
    """:func:`with_occurrences` of rows that come after rows whose ids are ``before`` (an
    append): the ids those rows would get among all the rows, old and new.

    >>> h = np.array([5, 5, 7], np.uint64)
    >>> after = with_occurrences_after(h[1:], with_occurrences(h[:1]))
    >>> after.tolist() == with_occurrences(h)[1:].tolist()
    True
    """
    h = np.asarray(hashes, np.uint64)
    if len(h) == 0:
        return h.copy()
    old = np.sort(np.asarray(before, np.uint64))
    distinct, inverse = np.unique(h, return_inverse=True)
    prior = np.zeros(len(distinct), np.uint64)  # copies of each content among the old rows
    active = _contains(old, distinct)
    k = 0
    while active.any():
        prior[active] += np.uint64(1)
        k += 1
        nxt = _numbered(distinct, np.full(len(distinct), k, np.uint64))
        active &= _contains(old, nxt)
    return _numbered(h, _occurrences(h) + prior[inverse.reshape(-1)])


class PartRanks(NamedTuple):
    """One part's hashes ranked where the part was read (a parallel preparation's worker):
    the coordinator numbers every row from these (:func:`occurrences_of_parts`) without
    sorting every row itself."""

    distinct: U64  # the part's distinct hashes, sorted
    counts: NDArray[np.int64] | None  # rows of each (None: one each)
    within: NDArray[np.uint32] | None  # copies of each row's hash earlier in the part
    inverse: NDArray[np.uint32] | None  # each row's hash's place in ``distinct``


def rank_part(hashes: U64) -> PartRanks:
    """:class:`PartRanks` of one part's row hashes."""
    h = np.asarray(hashes, np.uint64)
    if _few_distinct(h):
        return _rank_copies(h)  # copies everywhere: by a hash table, no sort of the rows
    ranked = np.sort(h)
    if len(h) < 2 or not (ranked[1:] == ranked[:-1]).any():
        return PartRanks(ranked, None, None, None)
    order = np.argsort(h, kind="stable")  # copies in row order
    ranked = h[order]
    new = np.empty(len(h), bool)
    new[0] = True
    np.not_equal(ranked[1:], ranked[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    group = np.cumsum(new) - 1
    within = np.empty(len(h), np.uint32)
    within[order] = np.arange(len(h)) - starts[group]
    inverse = np.empty(len(h), np.uint32)
    inverse[order] = group
    return PartRanks(ranked[starts], np.diff(np.append(starts, len(h))), within, inverse)


def _few_distinct(h: U64, head: U64 | None = None) -> bool:
    """Whether the first 65,536 rows of many (``head``: them sorted, when known) hold at
    most a quarter as many distinct hashes (a table of few distinct rows: numbering them by
    a hash table beats sorting every row; with half of them distinct, sorting is faster)."""
    if len(h) <= 1 << 16:
        return False
    head = np.sort(h[: 1 << 16]) if head is None else head
    return int(np.count_nonzero(head[1:] != head[:-1])) + 1 <= len(head) // 4


def _rank_copies(h: U64) -> PartRanks:
    """:func:`rank_part` of rows with many copies: Arrow's hash table numbers the distinct
    hashes (in first-appearance order), the rows are ordered by that number (a radix sort
    when there are fewer than 65,536), and only the distinct hashes are sorted (2x faster
    than sorting every row for a table of 10,000 distinct rows in 700,000)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(pa.array(h, pa.uint64()))
    codes = encoded.indices.to_numpy()
    values = np.asarray(encoded.dictionary.to_numpy(), np.uint64)
    order = np.argsort(codes.astype(np.uint16) if len(values) <= 1 << 16 else codes,
                       kind="stable")  # rows by distinct hash, in row order
    counts = np.bincount(codes, minlength=len(values)).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    within = np.empty(len(h), np.uint32)
    within[order] = np.arange(len(h)) - np.repeat(starts, counts)
    by_value = np.argsort(values)
    place = np.empty(len(values), np.uint32)
    place[by_value] = np.arange(len(values), dtype=np.uint32)
    return PartRanks(values[by_value], counts[by_value], within, place[codes])


def occurrences_of_parts(parts: Sequence[U64], ranks: Sequence[PartRanks]) -> list[U64]:
    """The ids :func:`with_occurrences` gives the rows of ``parts`` (hashes, in row order)
    read one after another, part by part, from each part's :func:`rank_part`: a row's copies
    in the parts before it are counted from the parts' distinct hashes only
    (:func:`copies_before`), then each part's rows are numbered (:func:`part_ids`)."""
    return [part_ids(h, r, earlier)
            for h, r, earlier in zip(parts, ranks, copies_before(ranks), strict=True)]


def copies_before(ranks: Sequence[PartRanks]) -> list[NDArray[np.int64] | None]:
    """For each part, the copies of each of its distinct hashes in the parts before it
    (aligned with its ``distinct``), from the distinct hashes only (merged: numpy's stable
    sort finds the sorted runs); all ``None`` when no hash is in two parts (one merge).
    Small enough to send to the worker that numbers the part's rows (:func:`part_ids`)."""
    merged = np.concatenate([r.distinct for r in ranks]) if ranks else np.empty(0, np.uint64)
    ordered = np.sort(merged, kind="stable")
    if not (len(ordered) > 1 and (ordered[1:] == ordered[:-1]).any()):
        return [None] * len(ranks)  # no copies across parts
    order = np.argsort(merged, kind="stable")  # equal hashes stay in part order
    counts = np.concatenate([np.ones(len(r.distinct), np.int64) if r.counts is None
                             else r.counts for r in ranks])[order]
    before = np.cumsum(counts) - counts  # rows before, in hash then part order
    new = np.empty(len(order), bool)
    new[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])  # ordered == merged[order]
    prior = np.empty(len(order), np.int64)
    prior[order] = before - before[np.flatnonzero(new)][np.cumsum(new) - 1]
    out: list[NDArray[np.int64] | None] = []
    at = 0
    for r in ranks:
        out.append(prior[at : at + len(r.distinct)])
        at += len(r.distinct)
    return out


def part_ids(hashes: U64, ranks: PartRanks, earlier: NDArray[np.int64] | None) -> U64:
    """The ids of one part's rows (``hashes``, ranked as ``ranks``), ``earlier`` the copies
    of each of its distinct hashes in the parts before it (:func:`copies_before`)."""
    h = np.asarray(hashes, np.uint64)
    occurrence = (np.zeros(len(h), np.uint64) if ranks.within is None
                  else ranks.within.astype(np.uint64))
    if earlier is not None and ranks.inverse is not None:
        occurrence += earlier[ranks.inverse].astype(np.uint64)
    elif earlier is not None and earlier.any():  # rows unique in their part
        rows = np.flatnonzero(_contains(ranks.distinct[earlier > 0], h))
        occurrence[rows] = earlier[np.searchsorted(ranks.distinct, h[rows])].astype(np.uint64)
    return _numbered(h, occurrence)


def _contains(ordered: U64, values: U64) -> NDArray[np.bool_]:
    if len(ordered) == 0:
        return np.zeros(len(values), bool)
    at = np.minimum(np.searchsorted(ordered, values), len(ordered) - 1)
    return np.asarray(ordered[at] == values)


#: Rows from which :func:`_occurrences` ranks the hashes in buckets on threads.
_BUCKETED_ROWS = 1 << 20


def _occurrences(h: U64, numbered: bool = False) -> U64:
    """How many earlier rows (in row order) have the same hash as each row (``numbered``:
    the ids :func:`_numbered` makes of them).

    Many rows: the rows are dealt into buckets by their hash's top bits (equal hashes share
    a bucket, and each bucket keeps row order), each bucket ranked on a thread of its own
    (numpy's sorts release the GIL): the cores share the sorting."""
    def bucket(part: U64) -> U64:
        found = _bucket_occurrences(part)
        return _numbered(part, found) if numbered else found

    if len(h) < _BUCKETED_ROWS:
        return bucket(h)
    from concurrent.futures import ThreadPoolExecutor

    top = (h >> np.uint64(62)).astype(np.uint8)
    buckets = [np.flatnonzero(top == b) for b in range(4)]
    occurrence = np.empty(len(h), np.uint64)

    def rank(rows: NDArray[np.intp]) -> None:
        occurrence[rows] = bucket(h[rows])

    with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
        list(pool.map(rank, buckets))
    return occurrence


def _bucket_occurrences(h: U64) -> U64:
    """:func:`_occurrences` in one thread. Only the rows whose hash repeats are ranked when
    they are few (one unstable sort finds them; a stable argsort of every row is 2-3 times
    slower, and most tables have no or few copies)."""
    head = np.sort(h[: 1 << 16])
    if _few_distinct(h, head):  # few distinct rows: numbered by a hash table
        return np.asarray(_rank_copies(h).within, np.uint64)
    if int(np.count_nonzero(head[1:] == head[:-1])) > len(head) // 8:
        return _ranked_occurrences(h)  # copies everywhere: rank every row at once
    ranked = np.sort(h)
    same = ranked[1:] == ranked[:-1]
    occurrence = np.zeros(len(h), np.uint64)
    if not same.any():
        return occurrence
    if int(np.count_nonzero(same)) > len(h) // 8:
        return _ranked_occurrences(h)
    repeated = np.unique(ranked[1:][same])
    rows = np.flatnonzero(_contains(repeated, h))
    occurrence[rows] = _ranked_occurrences(h[rows])
    return occurrence


def _ranked_occurrences(h: U64) -> U64:
    """:func:`_occurrences` by one stable argsort of ``h``."""
    order = np.argsort(h, kind="stable")
    ranked = h[order]
    starts = np.flatnonzero(np.concatenate([[True], ranked[1:] != ranked[:-1]]))
    run_start = np.zeros(len(h), np.int64)
    run_start[starts] = starts
    run_start = np.maximum.accumulate(run_start)
    occurrence = np.empty(len(h), np.uint64)
    occurrence[order] = (np.arange(len(h)) - run_start).astype(np.uint64)
    return occurrence


def _numbered(h: U64, occurrence: U64) -> U64:
    out = h.copy()
    repeated = occurrence > 0
    with np.errstate(over="ignore"):
        out[repeated] = mix(h[repeated] ^ mix(occurrence[repeated] * _GOLDEN))
    return out


__all__ = [
    "SCHEME",
    "PartRanks",
    "copies_before",
    "field_hashes",
    "hash_flat",
    "hash_words",
    "label_words",
    "mix",
    "number_words",
    "occurrences_of_parts",
    "part_ids",
    "rank_part",
    "row_hashes",
    "with_occurrences",
    "with_occurrences_after",
]
