"""The pieces of stable splits (#24.4): row identities that follow values (not dtypes, codes
or storage), and the split arithmetic that keeps known rows where they were."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from datastack.canonical.rowids import hash_columns, identity_of, resolve_key
from datastack.errors import FormatError, SpecError
from datastack.fields import ARRAY, BYTES, LABEL, STRING, Field, FlatRows
from datastack.rowids import row_hashes, with_occurrences
from datastack.specs import load_spec
from datastack.splits import grow_sizes, kept_split_indices, split_indices, split_sizes
from tests.living.stable import moved, refresh, stored_ids

RATIOS = {"train": 0.6, "val": 0.15, "test": 0.25}


# -- identities --------------------------------------------------------------------------------
def test_numbers_hash_as_numbers_whatever_their_dtype() -> None:
    values = [[1, 2, 3], [4, 5, -6]]
    hashes = [
        row_hashes([Field("x", ARRAY, dtype, (3,))], {"x": np.array(values, dtype)})
        for dtype in ("int8", "int64", "float32", "float64")
    ]
    assert all(np.array_equal(hashes[0], h) for h in hashes)
    nan = row_hashes([Field("x", ARRAY, "float32", (1,))],
                     {"x": np.array([[np.nan], [-np.nan], [0.5], [-0.0], [0.0]], np.float32)})
    assert nan[0] == nan[1] and nan[3] == nan[4] and nan[2] != nan[0]


def test_codes_hash_as_their_labels() -> None:
    """A category renumbered (a new value sorting first) keeps its rows' identities."""
    field = Field("features", ARRAY, "float32", (2,), columns=("city", "x"))
    before = row_hashes([field], {"features": np.array([[0, 1.5], [1, 2.5]], np.float32)},
                        {"city": ["Oslo", "Paris"]})
    after = row_hashes([field], {"features": np.array([[1, 1.5], [2, 2.5]], np.float32)},
                       {"city": ["Berlin", "Oslo", "Paris"]})
    assert np.array_equal(before, after)
    label_a = Field("y", LABEL, names=("a", "b"))
    label_b = Field("y", LABEL, names=("0", "a", "b"))
    assert np.array_equal(row_hashes([label_a], {"y": np.array([0, 1])}),
                          row_hashes([label_b], {"y": np.array([1, 2])}))


def test_text_hashes_the_same_from_flat_rows_and_from_strings() -> None:
    texts = ["", "héllo", "a", "ab", "ba", "x" * 5000]
    encoded = [t.encode() for t in texts]
    flat = FlatRows(np.frombuffer(b"".join(encoded), np.uint8),
                    np.concatenate([[0], np.cumsum([len(e) for e in encoded])]).astype(np.int64))
    field = Field("t", STRING)
    from_flat = row_hashes([field], {"t": flat})
    assert np.array_equal(from_flat, row_hashes([field], {"t": texts}))
    assert len(set(from_flat.tolist())) == len(texts)  # "ab" != "ba", "" is a value
    raw = Field("b", BYTES)
    assert np.array_equal(row_hashes([raw], {"b": flat}), row_hashes([raw], {"b": encoded}))


def test_duplicates_get_distinct_ids_by_occurrence() -> None:
    h = np.array([5, 9, 5, 5, 9], np.uint64)
    ids = with_occurrences(h)
    assert len(set(ids.tolist())) == 5 and ids[0] == 5 and ids[1] == 9
    assert np.array_equal(with_occurrences(h[:3]), ids[:3])  # an append keeps earlier copies


def test_a_key_names_a_field_or_a_column_of_the_feature_vector() -> None:
    fields = [Field("features", ARRAY, "float32", (2,), columns=("id", "x")), Field("t", STRING)]
    assert resolve_key(fields, ["id", "t"]) == [("features", 0), ("t", None)]
    with pytest.raises(FormatError, match="key: column 'nope' is not stored"):
        resolve_key(fields, ["nope"])
    columns = {"features": np.array([[1, 0.1], [2, 0.2]], np.float32), "t": ["a", "b"]}
    edited = {"features": np.array([[1, 9.9], [2, 8.8]], np.float32), "t": ["a", "b"]}
    assert np.array_equal(hash_columns(fields, columns, key=["id"]),
                          hash_columns(fields, edited, key=["id"]))
    assert not np.array_equal(hash_columns(fields, columns), hash_columns(fields, edited))
    assert identity_of(["id"]) != identity_of(None)


def test_the_key_spec_key(tmp_path: Path) -> None:
    digest = "0" * 64
    text = ("datasets:\n  d:\n    sources: [{url: 'https://x/t.csv', sha256: '" + digest +
            "'}]\n    format: csv\n    {}\n")
    ok = load_spec(text.replace("{}", "splits: {a: 0.5, b: 0.5}\n    key: [id, day]"))["d"]
    assert ok.key == ("id", "day")
    plain = load_spec(text.replace("{}", "splits: {a: 0.5, b: 0.5}"))["d"]
    assert plain.key is None and plain.fingerprint() != ok.fingerprint()
    with pytest.raises(SpecError, match="needs splits"):
        load_spec(text.replace("{}", "key: id"))
    with pytest.raises(SpecError, match="distinct column names"):
        load_spec(text.replace("{}", "splits: {a: 0.5, b: 0.5}\n    key: [id, id]"))


# -- arithmetic --------------------------------------------------------------------------------
def test_grow_sizes_keeps_the_totals_of_a_fresh_split_when_it_can() -> None:
    assert grow_sizes(100, [0, 0, 0], RATIOS) == list(split_sizes(100, RATIOS).values())
    assert grow_sizes(101, [60, 15, 25], RATIOS) == [1, 0, 0]
    # test already holds more than its share (rows were removed from train): it keeps them
    grown = grow_sizes(100, [10, 5, 40], RATIOS)
    assert grown[2] == 0 and sum(grown) == 45
    rng = np.random.default_rng(0)
    for _ in range(500):
        total = int(rng.integers(0, 300))
        kept = rng.multinomial(int(rng.integers(0, total + 1)), [0.6, 0.15, 0.25]).tolist()
        sizes = grow_sizes(total, kept, RATIOS)
        assert min(sizes) >= 0 and sum(sizes) + sum(kept) == total


@pytest.mark.parametrize("stratify", [False, True])
def test_random_appends_never_move_a_row(stratify: bool) -> None:
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 2**63, 20_000).astype(np.uint64)
    labels = rng.integers(0, 4, len(ids))
    size = 1_000
    previous = None
    while size <= len(ids):
        chosen = kept_split_indices(ids[:size], RATIOS, 5, labels[:size] if stratify else None,
                                    previous)
        if previous is not None:
            for split, old in previous.items():
                assert set(old.tolist()) <= set(ids[chosen[split]].tolist())
        if not stratify:
            for split, ratio in RATIOS.items():
                assert abs(len(chosen[split]) - ratio * size) <= 1
        else:
            for cls in range(4):
                members = labels[:size] == cls
                for split, ratio in RATIOS.items():
                    got = int(members[chosen[split]].sum())
                    assert abs(got - ratio * members.sum()) <= 1
        previous = {s: ids[v] for s, v in chosen.items()}
        size += int(rng.integers(1, 3_000))


def test_no_previous_rows_is_todays_cut() -> None:
    ids = np.arange(777, dtype=np.uint64) * np.uint64(2654435761)
    labels = np.arange(777) % 5
    for stratify in (None, labels):
        got = kept_split_indices(ids, RATIOS, 9, stratify, {"train": np.empty(0, np.uint64)})
        want = split_indices(777, RATIOS, 9, stratify)
        assert all(np.array_equal(got[s], want[s]) for s in RATIOS)


def test_removed_rows_and_unknown_splits() -> None:
    ids = np.arange(1_000, dtype=np.uint64)
    first = kept_split_indices(ids, RATIOS, 0)
    previous = {s: ids[v] for s, v in first.items()}
    previous["old"] = np.arange(5_000, 5_010, dtype=np.uint64)  # a split the spec dropped
    survivors = ids[ids % 4 != 0]
    chosen = kept_split_indices(survivors, RATIOS, 0, None, previous)
    for split in RATIOS:
        assert set(survivors[chosen[split]].tolist()) == set(previous[split].tolist()) - set(
            ids[ids % 4 == 0].tolist())
    assert sum(len(v) for v in chosen.values()) == len(survivors)


# -- arrays (the classic samples/targets layout) -------------------------------------------------
def test_appended_npy_rows_stay_in_their_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 255, (1_200, 4, 4)).astype(np.uint8), rng.integers(0, 3, 1_200)
    xs, ys = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(xs, x[:1_000])
    np.save(ys, y[:1_000])
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "datasets:\n  live:\n    format: npy\n    splits: {train: 0.8, test: 0.2}\n"
        "    stratify: true\n    sources:\n"
        f"      - {{url: {xs.as_uri()!r}, track: true, role: samples}}\n"
        f"      - {{url: {ys.as_uri()!r}, track: true, role: targets}}\n"
    )
    storage = tmp_path / "store"
    refresh(spec, storage)
    np.save(xs, x)
    np.save(ys, y)
    refresh(spec, storage)

    def rows(version: int) -> dict[str, list[bytes]]:
        import datastack

        out = {}
        for split in ("train", "test"):
            it = datastack.load("live", split, version=version, storage=storage)
            out[split] = [it[i][0].tobytes() + bytes([int(it[i][1])]) for i in range(len(it))]
        return out

    assert moved(rows(1), rows(2)) == 0
    assert all(v is not None for v in stored_ids(storage, "live", 2).values())


@pytest.mark.parametrize("copies", [0, 1, 500, 40_000])
def test_occurrences_by_the_repeated_rows_only_match_a_stable_ranking(copies: int) -> None:
    """The fast path (rank only rows whose content repeats) numbers copies exactly as a
    stable argsort of every row does."""
    from datastack.rowids import _occurrences, _ranked_occurrences

    rng = np.random.default_rng(copies)
    h = rng.integers(0, 2**63, 100_000).astype(np.uint64)
    h[rng.integers(0, len(h), copies)] = h[rng.integers(0, len(h), copies)]
    h[:3] = h[-1]  # a content three times at the start and once at the end
    assert np.array_equal(_occurrences(h), _ranked_occurrences(h))


@pytest.mark.parametrize("n", [10, 40_000, 100_003])
def test_large_splits_come_out_sorted_as_before(n: int) -> None:
    """Splits of many rows are put in ascending order by marking rows instead of sorting:
    the same indices as sorting each piece of the permutation."""
    from datastack.splits import cut, split_indices, split_sizes

    ratios = {"train": 0.7, "val": 0.1, "test": 0.2}
    order = np.random.default_rng(3).permutation(n).astype(np.int64)
    expected = {k: np.sort(v) for k, v in cut(order, split_sizes(n, ratios)).items()}
    got = split_indices(n, ratios, seed=3)
    assert list(got) == list(expected)
    assert all(np.array_equal(got[k], expected[k]) and got[k].dtype == np.int64 for k in got)


def test_large_stratified_splits_come_out_sorted_as_before() -> None:
    from datastack.splits import class_members, cut, split_indices, split_sizes

    n, ratios = 70_001, {"train": 0.8, "test": 0.2}
    labels = np.random.default_rng(5).integers(0, 7, n)
    rng = np.random.default_rng(9)
    pieces: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    for members in class_members(labels):
        shuffled = members[rng.permutation(len(members))]
        for name, idx in cut(shuffled, split_sizes(len(members), ratios)).items():
            pieces[name].append(idx)
    got = split_indices(n, ratios, seed=9, stratify_by=labels)
    assert all(np.array_equal(got[k], np.sort(np.concatenate(v))) for k, v in pieces.items())


@pytest.mark.parametrize("pattern", ["copies-everywhere", "few-copies"])
def test_many_rows_are_numbered_in_buckets_as_by_one_ranking(pattern: str) -> None:
    """Past a million rows the ranking runs per hash bucket on threads: the same ids."""
    from datastack.rowids import _BUCKETED_ROWS, _numbered, _ranked_occurrences

    rng = np.random.default_rng(11)
    n = _BUCKETED_ROWS + 12_345
    if pattern == "copies-everywhere":
        h = np.tile(rng.integers(0, 2**63, 5_000).astype(np.uint64), n // 5_000 + 1)[:n]
    else:
        h = rng.integers(0, 2**64 - 1, n, dtype=np.uint64)
        h[rng.integers(0, n, 3_000)] = h[rng.integers(0, n, 3_000)]
    assert np.array_equal(with_occurrences(h), _numbered(h, _ranked_occurrences(h)))


@pytest.mark.parametrize("case", ["unique", "copies within parts", "copies across parts",
                                  "copies everywhere", "empty parts", "large parts of copies"])
def test_parts_ranked_on_their_own_number_rows_as_all_rows_together(case: str) -> None:
    """A parallel preparation ranks each part's hashes where it was read
    (``rank_part``) and numbers every row from the parts' distinct hashes
    (``occurrences_of_parts``): the ids are those of ``with_occurrences`` over all rows."""
    from datastack.rowids import _numbered, _ranked_occurrences, occurrences_of_parts, rank_part

    rng = np.random.default_rng(len(case))
    sizes = ([0, 700, 0, 1_300, 1] if case == "empty parts"
             else [70_000, 150_536, 1] if case == "large parts of copies"  # a hash table
             else [500, 1_000, 700, 1_800])
    h = rng.integers(0, 2**64 - 1, sum(sizes), dtype=np.uint64)
    if case == "copies within parts":
        h[510:520] = h[500]  # part 1 only
    elif case == "copies across parts":
        h[600] = h[3]
        h[2_000:2_004] = h[1_700]
    elif case in ("copies everywhere", "empty parts"):
        h = rng.choice(h[:40], len(h))
    elif case == "large parts of copies":  # few distinct rows first, then 85,000 more
        h[:135_536] = rng.choice(h[:40], 135_536)  # part 1 then has > 65,536 distinct
    cuts = np.cumsum([0, *sizes])
    parts = [h[a:b] for a, b in itertools.pairwise(cuts)]
    ids = occurrences_of_parts(parts, [rank_part(p) for p in parts])
    assert [len(i) for i in ids] == sizes
    assert np.array_equal(np.concatenate(ids), with_occurrences(h))
    by_one_ranking = _numbered(h, _ranked_occurrences(h))  # a stable argsort of every row
    assert np.array_equal(np.concatenate(ids), by_one_ranking)
