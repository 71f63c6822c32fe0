"""Splits never move (#24.4, #24.8): a tracked table refreshed after rows were appended, edited
or removed keeps every sample it published in the split it published it in; new samples fill
the splits towards their ratios; a version published without row ids is continued too."""

from __future__ import annotations

import io
import math
from collections import Counter
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from datastack.canonical.layout import shards_of
from datastack.canonical.rowids import ROW_IDS
from datastack.store import Store
from tests.fields.realdata import penguins_csv
from tests.living.stable import (
    HEADER,
    moved,
    refresh,
    split_rows,
    stored_ids,
    table,
    unshard,
    write_spec,
)

RATIOS = {"train": 0.7, "val": 0.1, "test": 0.2}
SPLITS = "{train: 0.7, val: 0.1, test: 0.2}"


def _within_one(lengths: dict[str, int], ratios: dict[str, float]) -> None:
    total = sum(lengths.values())
    for split, ratio in ratios.items():
        assert abs(lengths[split] - ratio * total) <= 1, (split, lengths, total)


def _penguins(tmp_path: Path, lines: int) -> tuple[Path, list[str]]:
    text = penguins_csv().read_text().splitlines(keepends=True)
    source = tmp_path / "penguins.csv"
    source.write_text("".join(text[: lines + 1]))
    return source, text


@pytest.mark.parametrize("stratify", [False, True])
def test_rows_appended_to_penguins_stay_in_their_split(tmp_path: Path, stratify: bool) -> None:
    """The real penguins table (strings, NA): 300 rows, then all 344; nothing moves."""
    source, text = _penguins(tmp_path, 300)
    keys = {"csv": "{target: species, categorical: [island, sex]}", "splits": SPLITS}
    if stratify:
        keys["stratify"] = "true"
    spec = write_spec(tmp_path, source, **keys)
    storage = tmp_path / "store"
    assert refresh(spec, storage) == 1
    source.write_text("".join(text))
    assert refresh(spec, storage) == 2
    before, after = split_rows(storage, "live", 1), split_rows(storage, "live", 2)
    assert sum(map(len, after.values())) == 344
    assert moved(before, after) == 0
    for split, rows in before.items():  # old rows in their previous order, then new ones
        assert after[split][: len(rows)] == rows
    lengths = {s: len(r) for s, r in after.items()}
    if not stratify:
        _within_one(lengths, RATIOS)
        return
    species = {s: Counter(row[-1] for row in r) for s, r in after.items()}
    for name in ("Adelie", "Gentoo", "Chinstrap"):
        per_class = {s: species[s][name] for s in RATIOS}
        _within_one(per_class, RATIOS)  # stratified: each class within one sample


def test_one_percent_append_moves_nothing_even_with_a_new_category(tmp_path: Path) -> None:
    """The issue's case (20,000 rows + 1%: 465 of 4,000 test samples moved), with a new city
    that sorts first (identities hash a code as its label, so they would hold even if the
    codes were renumbered: test_split_identity): 0 moved."""
    source = tmp_path / "t.csv"
    source.write_text(HEADER + table(range(20_000)))
    spec = write_spec(tmp_path, source, csv="{target: label, categorical: [city]}", splits=SPLITS)
    storage = tmp_path / "store"
    refresh(spec, storage)
    with source.open("a") as f:
        f.write(table(range(20_000, 20_200), cities=("Aachen", "Oslo")))
    refresh(spec, storage)
    before, after = split_rows(storage, "live", 1), split_rows(storage, "live", 2)
    record = Store.open(storage).catalog.get("live", 2)
    assert "Aachen" in record.encodings["city"]  # a new category arrived with the rows
    assert moved(before, after) == 0
    _within_one({s: len(r) for s, r in after.items()}, RATIOS)
    new = {row[0] for rows in after.values() for row in rows} - {
        row[0] for rows in before.values() for row in rows
    }
    assert len(new) == 200


def test_a_key_column_keeps_edited_rows_in_their_split(tmp_path: Path) -> None:
    """With ``key: id``, a row whose values were edited is the same sample: it stays."""
    source = tmp_path / "t.csv"
    source.write_text(HEADER + table(range(2_000)))
    spec = write_spec(tmp_path, source, csv="{target: label, categorical: [city]}",
                      splits=SPLITS, key="id")
    storage = tmp_path / "store"
    refresh(spec, storage)
    edited = table(range(2_000), seed=99)  # every x changes, ids stay
    source.write_text(HEADER + edited + table(range(2_000, 2_100)))
    refresh(spec, storage)
    ids_before = {s: {row[0] for row in rows} for s, rows in split_rows(storage, "live", 1).items()}
    ids_after = {s: {row[0] for row in rows} for s, rows in split_rows(storage, "live", 2).items()}
    for split, ids in ids_before.items():
        assert ids <= ids_after[split], split
    xs = {row[0]: row[1] for rows in split_rows(storage, "live", 2).values() for row in rows}
    assert xs[5.0] != next(r[1] for rows in split_rows(storage, "live", 1).values()
                           for r in rows if r[0] == 5.0)  # really edited
    ids = stored_ids(storage, "live", 2)
    assert all(v is not None and len(v) == len(ids_after[s]) for s, v in ids.items())


def test_a_text_key_column(tmp_path: Path) -> None:
    source = tmp_path / "t.csv"
    rows = [f"u{i:05d},{i % 7},{'xy'[i % 2]}\n" for i in range(1_000)]
    source.write_text("user,v,label\n" + "".join(rows))
    spec = write_spec(tmp_path, source, csv="{target: label, text: [user]}",
                      splits="{train: 0.5, test: 0.5}", key="user")
    storage = tmp_path / "store"
    refresh(spec, storage)
    edited = [r.replace(f",{i % 7},", f",{(i + 1) % 7},") for i, r in enumerate(rows)]
    source.write_text("user,v,label\n" + "".join(edited[::-1]))  # every row edited, reversed
    refresh(spec, storage)
    users = {v: {s: {r[-2] for r in rows} for s, rows in split_rows(storage, "live", v).items()}
             for v in (1, 2)}
    assert users[1] == users[2]


def test_duplicate_rows_keep_their_splits(tmp_path: Path) -> None:
    """Identical rows are told apart by their occurrence: v1's copies stay where they were."""
    source = tmp_path / "t.csv"
    body = "".join(f"{i % 3},{'ab'[i % 2]}\n" for i in range(600))  # 6 distinct rows x 100
    source.write_text("a,label\n" + body)
    spec = write_spec(tmp_path, source, csv="{target: label}", splits="{train: 0.8, test: 0.2}")
    storage = tmp_path / "store"
    refresh(spec, storage)
    source.write_text("a,label\n" + body + body[: body.index("\n", 600) + 1])
    refresh(spec, storage)
    before, after = split_rows(storage, "live", 1), split_rows(storage, "live", 2)
    assert moved(before, after) == 0
    _within_one({s: len(r) for s, r in after.items()}, {"train": 0.8, "test": 0.2})
    ids = stored_ids(storage, "live", 2)
    every = np.concatenate([v for v in ids.values() if v is not None])
    assert len(np.unique(every)) == len(every)  # duplicates have distinct ids


def test_edited_and_removed_rows_leave_unchanged_rows_in_place(tmp_path: Path) -> None:
    """A change that is no append: 10% removed, 5% edited, rows added in the middle."""
    source = tmp_path / "t.csv"
    lines = table(range(5_000)).splitlines(keepends=True)
    source.write_text(HEADER + "".join(lines))
    spec = write_spec(tmp_path, source, csv="{target: label, categorical: [city]}", splits=SPLITS)
    storage = tmp_path / "store"
    refresh(spec, storage)
    kept = [line for i, line in enumerate(lines) if i % 10 != 3]
    changed = [line.replace(",Oslo,", ",Rome,") if i % 20 == 1 else line
               for i, line in enumerate(kept)]
    extra = table(range(5_000, 5_300)).splitlines(keepends=True)
    source.write_text(HEADER + "".join(changed[:2000] + extra + changed[2000:]))
    refresh(spec, storage)
    before, after = split_rows(storage, "live", 1), split_rows(storage, "live", 2)
    present = Counter(row for rows in after.values() for row in rows)
    unchanged = {s: [r for r in rows if present[r]] for s, rows in before.items()}
    assert sum(map(len, unchanged.values())) > 4_000
    assert moved(unchanged, after) == 0
    _within_one({s: len(r) for s, r in after.items()}, RATIOS)


def _drop_row_ids(storage: Path, name: str, version: int) -> None:
    """Make a version look published before shards and row ids: one data file without them
    (``stable.unshard``); the record's checksum is not read by preparation."""
    unshard(storage, name, version, row_ids=False)


@pytest.mark.parametrize("stratify", [False, True])
def test_the_first_refresh_after_the_upgrade_moves_nothing(tmp_path: Path, stratify: bool) -> None:
    """v1 has no row ids (published by the code before): v2 reads v1's stored rows, computes
    their ids and continues its splits; v3 continues v2 through the ids v2 stores."""
    source, text = _penguins(tmp_path, 300)
    keys = {"csv": "{target: species, categorical: [island, sex]}", "splits": SPLITS}
    if stratify:
        keys["stratify"] = "true"
    spec = write_spec(tmp_path, source, **keys)
    storage = tmp_path / "store"
    refresh(spec, storage)
    _drop_row_ids(storage, "live", 1)
    assert all(v is None for v in stored_ids(storage, "live", 1).values())
    source.write_text("".join(text[:321]))
    refresh(spec, storage)
    source.write_text("".join(text))
    refresh(spec, storage)
    v1, v2, v3 = (split_rows(storage, "live", v) for v in (1, 2, 3))
    assert moved(v1, v2) == 0 and moved(v2, v3) == 0
    assert all(v is not None for v in stored_ids(storage, "live", 2).values())


def test_a_new_key_continues_the_splits_by_content(tmp_path: Path) -> None:
    """Adding ``key:`` to a spec: v2 matches v1's rows by content, stores key ids from then on."""
    source = tmp_path / "t.csv"
    source.write_text(HEADER + table(range(3_000)))
    csv = "{target: label, categorical: [city]}"
    spec = write_spec(tmp_path, source, csv=csv, splits=SPLITS)
    storage = tmp_path / "store"
    refresh(spec, storage)
    with source.open("a") as f:
        f.write(table(range(3_000, 3_030)))
    spec = write_spec(tmp_path, source, csv=csv, splits=SPLITS, key="id")
    refresh(spec, storage)
    assert moved(split_rows(storage, "live", 1), split_rows(storage, "live", 2)) == 0


def test_same_input_gives_the_same_split_order(tmp_path: Path) -> None:
    """Determinism: two stores, the same two refreshes, identical splits, order and ids."""
    runs = []
    for run in ("a", "b"):
        folder = tmp_path / run
        folder.mkdir()
        source, text = _penguins(folder, 300)
        spec = write_spec(folder, source, csv="{target: species, categorical: [island, sex]}",
                          splits=SPLITS, stratify="true", seed=7)
        refresh(spec, folder / "store")
        source.write_text("".join(text))
        refresh(spec, folder / "store")
        runs.append((split_rows(folder / "store", "live", 2),
                     stored_ids(folder / "store", "live", 2)))
    (rows_a, ids_a), (rows_b, ids_b) = runs
    assert rows_a == rows_b
    for split, ids in ids_a.items():
        assert ids is not None and np.array_equal(ids, ids_b[split])


def test_a_first_version_is_cut_as_before(tmp_path: Path) -> None:
    """Without a previous version the cut is today's seeded permutation (split_indices)."""
    from datastack.splits import split_indices

    source = tmp_path / "t.csv"
    source.write_text(HEADER + table(range(500)))
    spec = write_spec(tmp_path, source, csv="{target: label}", splits=SPLITS, seed=3)
    storage = tmp_path / "store"
    refresh(spec, storage)
    rows = split_rows(storage, "live", 1)
    expected = split_indices(500, RATIOS, 3)
    for split, indices in expected.items():
        assert [int(r[0]) for r in rows[split]] == indices.tolist()
    assert not math.isnan(rows["train"][0][1])


class _Recording(io.RawIOBase):
    """A file read through Python (h5py's file-object driver), every read range recorded."""

    def __init__(self, path: Path, reads: list[tuple[int, int]]) -> None:
        self.file = path.open("rb")
        self.reads = reads

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.file.seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell()

    def readinto(self, buffer: Any) -> int:
        start = self.file.tell()
        count = self.file.readinto(buffer)
        self.reads.append((start, start + (count or 0)))
        return count or 0


@pytest.mark.parametrize("text", [False, True], ids=["layout1", "layout2"])
def test_readers_never_read_the_row_ids(tmp_path: Path, text: bool) -> None:
    """Every sample of every split read through the readers of both layouts: the stored row
    ids are not read (they cost storage, not reads)."""
    from datastack.canonical.published import open_version
    from datastack.resources import StreamedResource

    source = tmp_path / "t.csv"
    source.write_text(HEADER + table(range(20_000)))
    csv = "{target: label" + (", text: [city]}" if text else ", categorical: [city]}")
    storage = tmp_path / "store"
    refresh(write_spec(tmp_path, source, csv=csv, splits=SPLITS), storage)
    store = Store.open(storage)
    record = store.catalog.get("live", 1)
    paths = {e["identifier"]: (e["split"], storage / "resources" / e["identifier"])
             for entries in shards_of(record).values() for e in entries}
    spans = {}
    for identifier, (split, path) in paths.items():
        with h5py.File(path, "r") as f:
            dset = f[split][ROW_IDS]
            spans[identifier] = (dset.id.get_offset(), dset.id.get_storage_size())
            assert spans[identifier][0] is not None and spans[identifier][1] == 8 * len(dset)
    reads: dict[str, list[tuple[int, int]]] = {i: [] for i in paths}
    original = store.storage.get_resource
    store.storage.get_resource = lambda identifier: StreamedResource(  # type: ignore
        identifier, lambda: _Recording(paths[identifier][1], reads[identifier]))
    try:
        for split, it in open_version(record, store).items():
            assert len(it.get_batch(range(len(it)))[0]) == record.splits[split]
    finally:
        store.storage.get_resource = original  # type: ignore[method-assign]
    assert all(reads.values())
    for identifier, (offset, size) in spans.items():  # HDF5 may read a metadata block that
        touched = sum(max(0, min(end, offset + size) - max(start, offset))  # touches them
                      for start, end in reads[identifier])
        assert touched <= 4096 < size, (offset, size, touched)


def test_splits_added_to_a_spec_are_cut_afresh(tmp_path: Path) -> None:
    """A version published without splits: (one train split) is not continued: the spec
    that introduces splits: cuts every row like a first version."""
    from datastack.splits import split_indices

    source = tmp_path / "t.csv"
    source.write_text(HEADER + table(range(1_000)))
    storage = tmp_path / "store"
    refresh(write_spec(tmp_path, source, csv="{target: label}"), storage)
    with source.open("a") as f:
        f.write(table(range(1_000, 1_010)))
    refresh(write_spec(tmp_path, source, csv="{target: label}", splits=SPLITS), storage)
    rows = split_rows(storage, "live", 2)
    for split, indices in split_indices(1_010, RATIOS, 0).items():
        assert [int(r[0]) for r in rows[split]] == indices.tolist()


def test_appends_keep_splits_on_every_storage(tmp_path: Path, storage: str) -> None:
    """The preparation reads the previous version's ids from the storage (GridFS too)."""
    source = tmp_path / "t.csv"
    source.write_text(HEADER + table(range(3_000)))
    spec = write_spec(tmp_path, source, csv="{target: label, categorical: [city]}",
                      splits=SPLITS, stratify="true")
    refresh(spec, storage)  # type: ignore[arg-type]
    with source.open("a") as f:
        f.write(table(range(3_000, 3_040)))
    refresh(spec, storage)  # type: ignore[arg-type]
    before = split_rows(storage, "live", 1)  # type: ignore[arg-type]
    after = split_rows(storage, "live", 2)  # type: ignore[arg-type]
    assert moved(before, after) == 0
    assert sum(map(len, after.values())) == 3_040


def test_a_folder_of_real_images_that_gains_files_keeps_its_splits(tmp_path: Path) -> None:
    """Images are identified by their stored bytes (and label): a tracked folder of real
    photographs gains files, every image stays in its split."""
    import datastack
    from tests.fields.realdata import image_files

    folder = tmp_path / "photos"
    files = sorted(image_files(folder).items())
    late = tmp_path / "late"
    late.mkdir()
    arriving = [f for f in files if f[0].startswith("photo/")][:2] + [
        f for f in files if f[0].startswith("scan/")][:1]  # their classes keep other images
    for relative, path in arriving:  # three images arrive later
        target = late / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        path.replace(target)
    spec = tmp_path / "img.yaml"
    spec.write_text(f"datasets:\n  live:\n    sources: [{{url: {folder.as_uri()}, track: true}}]\n"
                    "    format: imagefolder\n    splits: {train: 0.6, test: 0.4}\n")
    storage = tmp_path / "store"
    refresh(spec, storage)
    for relative, _ in arriving:
        (late / relative).replace(folder / relative)
    refresh(spec, storage)

    def images(version: int) -> dict[str, list[tuple[bytes, int]]]:
        out = {}
        for split in ("train", "test"):
            it = datastack.load("live", split, version=version, storage=storage)
            raw = it.with_image_options(decode=False)
            out[split] = [(bytes(image), int(label)) for image, label in raw]
        return out

    before, after = images(1), images(2)
    assert sum(map(len, after.values())) == sum(map(len, before.values())) + 3
    assert moved(before, after) == 0
    ids = stored_ids(storage, "live", 2)
    assert all(v is not None for v in ids.values())


def test_an_unreadable_previous_version_fails_the_refresh_and_says_why(tmp_path: Path) -> None:
    """Splits are never silently re-cut: a previous file that cannot be read fails the refresh
    (the previous version stays published)."""
    import datastack

    source = tmp_path / "t.csv"
    source.write_text(HEADER + table(range(500)))
    spec = write_spec(tmp_path, source, csv="{target: label}", splits=SPLITS)
    storage = tmp_path / "store"
    refresh(spec, storage)
    record = Store.open(storage).catalog.get("live", 1)
    shard = next(iter(shards_of(record).values()))[0]["identifier"]
    (storage / "resources" / shard).write_bytes(b"not an HDF5 file")
    with source.open("a") as f:
        f.write(table(range(500, 510)))
    [result] = datastack.refresh(spec, storage=storage)
    assert result.status == "failed"
    assert "live v1: cannot read its row ids or rows to keep every sample" in result.reason
    assert Store.open(storage).catalog.latest("live").version == 1


def test_a_missing_previous_file_fails_the_refresh_and_says_why(tmp_path: Path) -> None:
    """A previous version whose data file is gone is not re-cut silently either."""
    import datastack

    source = tmp_path / "t.csv"
    source.write_text(HEADER + table(range(500)))
    spec = write_spec(tmp_path, source, csv="{target: label}", splits=SPLITS)
    storage = tmp_path / "store"
    refresh(spec, storage)
    record = Store.open(storage).catalog.get("live", 1)
    shard = next(iter(shards_of(record).values()))[0]["identifier"]
    (storage / "resources" / shard).unlink()
    with source.open("a") as f:
        f.write(table(range(500, 510)))
    [result] = datastack.refresh(spec, storage=storage)
    assert result.status == "failed"
    assert "cannot read version 1's data to keep every sample in its split" in result.reason
    assert "datastack delete live" in result.reason
    assert Store.open(storage).catalog.latest("live").version == 1


def test_a_key_that_repeats_is_refused(tmp_path: Path) -> None:
    """Two rows sharing a key would be told apart by their order only (and swap splits when
    upstream reorders them): the refresh fails naming the key."""
    import datastack

    source = tmp_path / "t.csv"
    rows = table(range(300))
    source.write_text(HEADER + rows + rows.splitlines(keepends=True)[7])
    spec = write_spec(tmp_path, source, csv="{target: label, categorical: [city]}",
                      splits=SPLITS, key="id")
    [result] = datastack.refresh(spec, storage=tmp_path / "store")
    assert result.status == "failed"
    assert "key: id is not unique: 1 rows repeat a key" in result.reason, result.reason
