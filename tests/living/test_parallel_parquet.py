"""A Parquet table prepared in parts of whole row groups (#25.1) by 2 local worker processes
gives the version one process gives, sample for sample (codes, splits, row ids, schema), plain
and stratified; a part that fails names its row groups."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from datastack.canonical.layout import shards_of
from datastack.store import Store
from tests.living.test_parallel import SPLITS, _refresh, _same_version, refreshed_twice

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

ROW_GROUP = 250


def _columns(rows: int, start: int = 0) -> dict[str, Any]:
    """Numbers, a column with nulls whose first values are text and later ones numbers (one
    process decides 'categorical' at its first value; a later part alone would decide
    'numeric': staged again), a dictionary city with nulls, text with nulls and a
    dictionary-encoded (pandas categorical) label."""
    rng = np.random.default_rng(start)
    index = range(start, start + rows)
    grade = [None if i % 13 == 0 else (("A", "B", "C")[i % 3] if i < 1200 else str(i % 4))
             for i in index]
    city = [None if i % 17 == 0 else ("Oslo", "Lima", "Rome", "Kyiv")[i % 4] for i in index]
    note = [None if i % 7 == 0 else f"note {i % 50}\nsecond line" for i in index]
    label = [("ant", "bee", "cat")[i % 3 if i % 11 else 0] for i in index]
    return {
        "x": pa.array(rng.normal(size=rows)),
        "n": pa.array([str(i % 9) for i in index]),  # numbers written as text
        "grade": pa.array(grade, pa.string()),
        "city": pa.array(city, pa.string()).dictionary_encode(),
        "note": pa.array(note, pa.string()),
        "label": pa.array(label, pa.string()).dictionary_encode(),
    }


def _write(path: Path, columns: dict[str, Any]) -> None:
    pq.write_table(pa.table(columns), path, row_group_size=ROW_GROUP)


def _spec(folder: Path, source: Path, **keys: str) -> Path:
    lines = [f"datasets:\n  big:\n    sources: [{{url: {source.as_uri()!r}, track: true}}]",
             "    format: parquet",
             "    parquet: {target: label, categorical: [city], text: [note]}",
             f"    splits: {SPLITS}"]
    lines += [f"    {k}: {v}" for k, v in keys.items()]
    path = folder / "spec.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, columns: dict[str, Any],
           storage: str | None = None, env: dict[str, str] | None = None,
           **keys: str) -> tuple[str, str]:
    """The same table refreshed by one process and by 2 local workers (or the settings
    ``env``; into ``storage``, else a local store)."""
    def inputs(folder: Path) -> Path:
        source = folder / "big.parquet"
        _write(source, columns)
        return _spec(folder, source, **keys)

    return refreshed_twice(tmp_path, monkeypatch, inputs, "12K", env, storage)


@pytest.mark.parametrize("stratify", [False, True], ids=["plain", "stratified"])
def test_parquet_row_groups_in_parts_give_the_one_process_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stratify: bool,
) -> None:
    keys = {"stratify": "true"} if stratify else {}
    one, many = _twice(tmp_path, monkeypatch, _columns(4000), **keys)
    _same_version(one, many)
    record = Store.open(many).catalog.latest("big")
    entries = [e for es in shards_of(record).values() for e in es]
    parts = sorted({e["part"] for e in entries})
    assert len(parts) >= 4 and all("big.parquet row group" in p for p in parts)
    assert Store.open(one).catalog.latest("big").encodings["grade"][:2] == ["0", "1"]
    assert all(e["worker"]["pid"] for e in entries)


def test_parquet_in_parts_on_gridfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mongo_uri: str,
) -> None:
    """The workers read the row groups from the raw copy in GridFS (no local file)."""
    one, many = _twice(tmp_path, monkeypatch, _columns(3000), storage=mongo_uri)
    _same_version(one, many)
    record = Store.open(many).catalog.latest("big")
    assert len({e["part"] for es in shards_of(record).values() for e in es}) >= 3


@pytest.mark.slow
def test_parquet_on_a_dask_local_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        one, many = _twice(tmp_path, monkeypatch, _columns(3000), env={
            "DATASTACK_DASK_ADDRESS": cluster.scheduler_address})
        workers = {w.worker_address for w in cluster.workers.values()}
    _same_version(one, many)
    record = Store.open(many).catalog.latest("big")
    used = {e["worker"].get("dask_worker") for es in shards_of(record).values() for e in es}
    assert used and used <= workers


def test_a_parquet_part_that_fails_names_its_row_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    source = folder / "big.parquet"
    columns = _columns(4000)
    _write(source, columns)
    spec = _spec(folder, source)
    storage = str(folder / "store")
    assert _refresh(spec, storage).status == "published"
    bad = [str(i % 9) for i in range(4000)]
    bad[3100] = "not-a-number"  # row group 12: n is numeric
    _write(source, {**columns, "n": pa.array(bad)})
    monkeypatch.setenv("DATASTACK_PART_BYTES", "12K")
    monkeypatch.setenv("DATASTACK_WORKERS", "2")
    result = _refresh(spec, storage)
    assert result.status == "failed"
    assert "big.parquet row group" in result.reason and "row 3101" in result.reason
    assert "not a number" in result.reason
    named = result.reason.split("big.parquet row group", 1)[1].split(":", 1)[0]
    groups = [int(g) for g in named.lstrip("s ").split("-")]
    assert groups[0] <= 3100 // ROW_GROUP <= groups[-1]
    assert Store.open(storage).catalog.latest("big").version == 1


def test_empty_row_groups_go_with_their_neighbours(tmp_path: Path) -> None:
    from datastack.formats._parts import cut_parts
    from datastack.resources import StreamedResource

    path = tmp_path / "t.parquet"
    table = pa.table({"x": pa.array(np.arange(600.0)), "y": pa.array(["a", "b"] * 300)})
    empty = table.slice(0, 0)
    with pq.ParquetWriter(path, table.schema) as writer:
        writer.write_table(empty)
        for k in range(3):
            writer.write_table(table.slice(200 * k, 200), row_group_size=200)
            writer.write_table(empty)
    meta = pq.ParquetFile(path).metadata
    rows = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    assert 0 in rows
    parts = cut_parts(StreamedResource.from_bytes("t.parquet", path.read_bytes()), "parquet",
                      None, target_bytes=1)
    assert parts[0].start == 0 and parts[-1].end == len(rows)
    assert all(a.end == b.start for a, b in itertools.pairwise(parts))
    assert all(sum(rows[p.start:p.end]) for p in parts) and len(parts) == 3
