"""Catalogs published before shards keep working (#24.8): a version stored as one data file
loads, previews, pulls and survives GC as before, and the dataset's first refresh after the
upgrade publishes the sharded form, its splits and category codes continuing the one-file
version's (the upgrade itself moves nothing). On the filesystem and on GridFS."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import datastack
from datastack.canonical.layout import is_sharded
from datastack.cli import main
from datastack.store import Store
from tests.living.stable import HEADER, moved, table, unshard, write_spec


def _rows(storage: str, version: int) -> dict[str, list[tuple[object, ...]]]:
    record = Store.open(storage).catalog.get("live", version)
    out = {}
    for split in record.splits:
        it = datastack.load("live", split, version=version, storage=storage)
        out[split] = [tuple(str(v) for v in it[i]) for i in range(len(it))]
    return out


@pytest.mark.parametrize("row_ids", [True, False], ids=["with-row-ids", "before-row-ids"])
def test_a_one_file_version_reads_as_before_and_the_next_refresh_shards_it(
    tmp_path: Path, storage: str, row_ids: bool, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = tmp_path / "t.csv"
    source.write_text(HEADER + table(range(2_000)))
    spec = write_spec(tmp_path, source, csv="{target: label, categorical: [city]}",
                      splits="{train: 0.7, val: 0.1, test: 0.2}")
    [first] = datastack.refresh(spec, storage=storage)
    assert first.status == "published", first.reason
    before = _rows(storage, 1)
    unshard(storage, "live", 1, row_ids=row_ids)  # as the code before shards published it
    catalog = Store.open(storage).catalog
    v1 = catalog.get("live", 1)
    assert not is_sharded(v1) and [r for r in v1.resources if r["identifier"].endswith("data.h5")]
    assert _rows(storage, 1) == before  # loads as before
    picture = tmp_path / "v1.png"
    assert main(["show", "live", "--storage", storage, "--preview", str(picture)]) == 0
    assert picture.stat().st_size > 0
    monkeypatch.setenv("DATASTACK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DATASTACK_CACHE_DIR_BYTES", "1G")
    assert main(["pull", "live", "--storage", storage]) == 0
    capsys.readouterr()

    with source.open("a") as f:  # the first refresh after the upgrade
        f.write(table(range(2_000, 2_040), cities=("Aachen", "Oslo")))
    [second] = datastack.refresh(spec, storage=storage)
    assert (second.status, second.version) == ("published", 2), second.reason
    v2 = catalog.get("live", 2)
    assert is_sharded(v2)
    assert moved(before, _rows(storage, 2)) == 0  # nothing moved
    assert v2.encodings["city"][: len(v1.encodings["city"])] == v1.encodings["city"]
    assert v2.encodings["city"][-1] == "Aachen"  # a new value takes the next code

    assert main(["gc", "--keep", "2", "--grace", "0", "--storage", storage, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert not [i for i in report["deleted_resources"] if "/shards/" in i or "data.h5" in i]
    assert _rows(storage, 1) == before  # the one-file version is kept whole
