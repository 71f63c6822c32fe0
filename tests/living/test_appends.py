"""Appends cost the delta (#24.2, #24.6): a tracked table that grows at its end is prepared
from its new rows only, and the version it gives equals, sample for sample, the version a
preparation of every row gives; small shards are merged; a change elsewhere still shares the
shards it did not touch. On the filesystem and on GridFS (SecantusDB)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import datastack
from datastack.canonical.layout import shards_of
from datastack.pipeline import build
from datastack.store import Store

SPLITS = "{train: 0.7, val: 0.1, test: 0.2}"
CITIES = ("Oslo", "Paris", "Quito")


def _rows(start: int, count: int, cities: tuple[str, ...] = CITIES,
          labels: tuple[str, ...] = ("ant", "bee")) -> list[str]:
    rng = np.random.default_rng(start)
    return [f"{rng.normal():.5f},{cities[i % len(cities)]},note {i % 7},{labels[i % len(labels)]}"
            for i in range(start, start + count)]


def _csv(rows: list[str]) -> str:
    return "x,city,note,label\n" + "".join(r + "\n" for r in rows)


def _jsonl(rows: list[str]) -> str:
    out = []
    for row in rows:
        x, city, note, label = row.split(",")
        out.append(json.dumps({"x": float(x), "city": city, "note": note, "label": label}))
    return "".join(line + "\n" for line in out)


def _spec(tmp: Path, source: Path, fmt: str, **keys: str) -> Path:
    block = "csv" if fmt == "csv" else "jsonl"
    lines = [f"datasets:\n  live:\n    sources: [{{url: {source.as_uri()!r}, track: true}}]",
             f"    format: {fmt}",
             f"    {block}: {{target: label, categorical: [city], text: [note]}}",
             f"    splits: {SPLITS}"]
    lines += [f"    {key}: {value}" for key, value in keys.items()]
    path = tmp / f"{fmt}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _refresh(spec: Path, storage: str) -> Any:
    [result] = datastack.refresh(spec, storage=storage)
    assert result.status == "published", result.reason
    return result


def _samples(storage: str, version: int) -> dict[str, list[tuple[Any, ...]]]:
    record = Store.open(storage).catalog.get("live", version)
    out = {}
    for split in record.splits:
        it = datastack.load("live", split, version=version, storage=storage)
        out[split] = [tuple(np.asarray(v).tolist() for v in it[i]) for i in range(len(it))]
    return out


def _run(tmp: Path, storage: str, fmt: str, steps: list[list[str]], *, tail: bool,
         monkeypatch: pytest.MonkeyPatch, **keys: str) -> None:
    """Refresh v1 from ``steps[0]``, then one version per further step appended upstream;
    ``tail=False`` takes the preparation of every row (no tail plan)."""
    source = tmp / f"live.{fmt}"
    encode = _csv if fmt == "csv" else _jsonl
    with monkeypatch.context() as patch:
        if not tail:
            patch.setattr(build, "tail_plan", lambda *a, **k: None)
        source.write_text(encode(steps[0]))
        spec = _spec(tmp, source, fmt, **keys)
        _refresh(spec, storage)
        rows = list(steps[0])
        for step in steps[1:]:
            rows += step
            with source.open("a") as f:
                f.write(encode(step)[len(encode([])):] if fmt == "csv" else encode(step))
            _refresh(spec, storage)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("stratify", [False, True], ids=["plain", "stratified"])
def test_an_append_is_prepared_from_its_rows_and_equals_a_full_preparation(
    tmp_path: Path, storage: str, fmt: str, stratify: bool, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The appended rows hold a new city that sorts first, a new class, and exact copies of
    old rows (their ids continue the old copies' numbering)."""
    old = _rows(0, 600)
    new = _rows(600, 40, cities=("Aachen", "Oslo"), labels=("ant", "cat")) + old[:3] + old[:1]
    keys = {"stratify": "true"} if stratify else {}
    caplog.set_level(logging.INFO, logger="datastack.pipeline")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _run(tmp_path / "a", storage, fmt, [old, new], tail=True, monkeypatch=monkeypatch, **keys)
    assert "prepared the" in caplog.text and "appended upstream only" in caplog.text
    other = str(tmp_path / "full-store")
    _run(tmp_path / "b", other, fmt, [old, new], tail=False, monkeypatch=monkeypatch, **keys)

    store, full = Store.open(storage).catalog, Store.open(other).catalog
    v1, v2, want = store.get("live", 1), store.get("live", 2), full.get("live", 2)
    assert dict(v2.splits) == dict(want.splits) and sum(v2.splits.values()) == 644
    assert v2.encodings == want.encodings and v2.schema == want.schema
    assert v2.encodings["city"][:3] == v1.encodings["city"] == ["Oslo", "Paris", "Quito"]
    assert v2.encodings["city"][3] == "Aachen"  # sorts first, takes the next code
    assert _samples(storage, 2) == _samples(other, 2)  # sample for sample
    assert _samples(storage, 1) == {s: rows[: v1.splits[s]]
                                    for s, rows in _samples(storage, 2).items()}
    old_shards, new_shards = shards_of(v1), shards_of(v2)
    for split, entries in old_shards.items():  # every v1 shard is shared
        ids = [e["identifier"] for e in new_shards[split]]
        assert ids[: len(entries)] == [e["identifier"] for e in entries]


def test_a_tail_typed_differently_is_prepared_with_every_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """A column the old rows hold as numbers gets text in the appended rows: the tail alone
    would be typed differently, so the refresh prepares every row (and says why), with the
    outcome of a preparation of every row."""
    odd = ["n/a-ish,Oslo,note 1,ant", "7.5,Oslo,note 2,bee"]
    outcomes = []
    for tail in (True, False):
        folder = tmp_path / ("tail" if tail else "full")
        folder.mkdir()
        storage = str(folder / "store")
        source = folder / "live.csv"
        source.write_text(_csv(_rows(0, 300)))
        spec = _spec(folder, source, "csv")
        _refresh(spec, storage)
        with monkeypatch.context() as patch:
            if not tail:
                patch.setattr(build, "tail_plan", lambda *a, **k: None)
            with source.open("a") as f:
                f.write("".join(r + "\n" for r in odd))
            caplog.clear()
            caplog.set_level(logging.INFO, logger="datastack.pipeline")
            [result] = datastack.refresh(spec, storage=storage)
        assert ("preparing every row" in caplog.text) == tail
        outcomes.append((result.status, result.version,
                         _samples(storage, 2) if result.status == "published" else None))
    assert outcomes[0] == outcomes[1]


def test_small_shards_of_appends_are_merged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    storage = str(tmp_path / "store")
    steps = [_rows(0, 800)] + [_rows(800 + 6 * k, 6) for k in range(14)]
    caplog.set_level(logging.INFO, logger="datastack.pipeline")
    _run(tmp_path, storage, "csv", steps, tail=True, monkeypatch=monkeypatch,
         shard_bytes="64K")
    assert "small shards of" in caplog.text
    catalog = Store.open(storage).catalog
    last = catalog.latest("live")
    quarter = 64 * 1024 // 4
    for entries in shards_of(last).values():
        small = sum(1 for e in entries if int(e["size"]) < quarter)
        assert small < 8 + 1  # runs of small shards never pile up
    full = str(tmp_path / "full")
    (tmp_path / "f").mkdir()
    _run(tmp_path / "f", full, "csv", steps, tail=False, monkeypatch=monkeypatch,
         shard_bytes="64K")
    assert _samples(storage, last.version) == _samples(full, last.version)


def test_a_change_before_the_end_is_prepared_in_full_and_shares_the_shards_before_it(
    tmp_path: Path,
) -> None:
    storage = str(tmp_path / "store")
    rows = _rows(0, 3000)
    source = tmp_path / "live.csv"
    source.write_text(_csv(rows))
    spec = _spec(tmp_path, source, "csv", shard_bytes="16K")
    _refresh(spec, storage)
    rows[-5] = "9.99999,Oslo,note 9,bee"  # an edit near the end: not an append
    source.write_text(_csv(rows))
    _refresh(spec, storage)
    catalog = Store.open(storage).catalog
    v1, v2 = catalog.get("live", 1), catalog.get("live", 2)
    assert "appended_to" not in v2.sources[0]
    before = {e["identifier"] for es in shards_of(v1).values() for e in es}
    after = [e["identifier"] for es in shards_of(v2).values() for e in es]
    shared = [i for i in after if i in before]
    assert len(before) > 5 and len(shared) >= len(before) - 3, (len(shared), len(before))
    from datastack.catalog.overview import dataset_details

    details = dataset_details(catalog, "live")
    assert details["storage"]["shared_shards"] == len(shared)
    assert details["storage"]["previous"] == 1
    from datastack.web.views import version_changes

    assert any(f"{len(shared)} shared with v1" in line for line in version_changes(v1, v2))


def test_a_split_of_many_shards_keeps_few_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An epoch over many shards holds at most MAX_OPEN_SHARDS readers (the least recently
    read closed first), and reads every sample right."""
    from datastack.canonical import sharded

    monkeypatch.setattr(sharded, "MAX_OPEN_SHARDS", 3)
    storage = str(tmp_path / "store")
    source = tmp_path / "live.csv"
    source.write_text(_csv(_rows(0, 3000)))
    _refresh(_spec(tmp_path, source, "csv", shard_bytes="8K"), storage)
    it = datastack.load("live", "train", storage=storage)
    assert len(it.entries) > 6
    order = np.random.default_rng(0).permutation(len(it))
    got = [it[int(i)] for i in order]
    assert len(it._opened) <= 3
    again = datastack.load("live", "train", storage=storage)
    assert [tuple(np.asarray(v).tolist() for v in g) for g in got] == [
        tuple(np.asarray(v).tolist() for v in again[int(i)]) for i in order]
    it.close()
    assert not it._opened
