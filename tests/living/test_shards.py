"""A version as a manifest of shards (#24.1) and GC by reference (#24.6): a dataset cut into
many shards reads back sample for sample like the same data as one shard (batches across
shard borders, iteration, Arrow, pandas, ``as_dict``, a torch DataLoader with workers, the
block-aware sampler over GridFS); a version whose source changed only at the end shares every
shard before the change (``show`` says so); ``pull`` then an offline load; GC keeps the shards
a kept version references and deletes those only a deleted version had; a lost shard is a
clear error; ``shard_bytes:`` is validated. Real local files, filesystem and SecantusDB."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import datastack
from datastack.canonical.layout import SHARD_KIND, shards_of
from datastack.cli import main
from datastack.errors import DatastackError, SpecError
from datastack.specs import load_spec
from datastack.store import Store

ROWS = 600
CITIES = ["Berlin", "Lima", "Oslo", "Paris", "Quito"]


def _rows(first: int, count: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed + first)
    values = rng.normal(size=(count, 3)).round(4)
    return "".join(
        f"{values[k, 0]},{values[k, 1]},{values[k, 2]},{CITIES[(first + k) % 5]},"
        f"row {first + k} {'x' * ((first + k) % 7)},{'abc'[(first + k) % 3]}\n"
        for k in range(count)
    )


def _write(path: Path, data: str) -> None:
    """Rewrite a tracked file; its mtime moves on by a second each time (change detection)."""
    before = path.stat().st_mtime_ns if path.exists() else 1_700_000_000 * 10**9
    path.write_text(data)
    os.utime(path, ns=(before + 10**9, before + 10**9))


HEADER = "a,b,c,city,text,label\n"
CSV = "    format: csv\n    csv: {target: label, categorical: [city], text: [text]}\n"


def _spec(tmp_path: Path, source: Path, shard_bytes: dict[str, str]) -> Path:
    """One spec, a dataset per entry of ``shard_bytes`` (name -> size, "" for the default)."""
    body = "datasets:\n"
    for name, size in shard_bytes.items():
        body += (f"  {name}:\n    sources: [{{url: {source.as_uri()!r}, track: true}}]\n{CSV}"
                 + (f"    shard_bytes: {size}\n" if size else ""))
    spec = tmp_path / "spec.yaml"
    spec.write_text(body)
    return spec


def _refresh(spec: Path, storage: str) -> None:
    for result in datastack.refresh(spec, storage=storage):
        assert result.status == "published", (result.name, result.reason)


def _shards(storage: str, name: str, version: int | None = None) -> list[dict[str, Any]]:
    catalog = Store.open(storage).catalog
    record = catalog.latest(name) if version is None else catalog.get(name, version)
    return [e for entries in shards_of(record).values() for e in entries]


def _plain(value: Any) -> Any:
    """Arrays, tuples, lists and numpy scalars as plain Python values (to compare)."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value] if value.dtype == object else value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def _same(left: Any, right: Any) -> None:
    """Two batches (tuples of columns) or samples hold the same values and types."""
    assert len(left) == len(right)
    for a, b in zip(left, right, strict=True):
        assert type(a) is type(b) and getattr(a, "dtype", None) == getattr(b, "dtype", None)
        assert _plain(a) == _plain(b)


@pytest.fixture
def both(tmp_path: Path, storage: str) -> tuple[Any, Any, str]:
    """``one`` (default shard size: one shard) and ``many`` (4 KiB shards), same source."""
    source = tmp_path / "live.csv"
    _write(source, HEADER + _rows(0, ROWS))
    _refresh(_spec(tmp_path, source, {"one": "", "many": "4K"}), storage)
    return (datastack.load("one", "train", storage=storage),
            datastack.load("many", "train", storage=storage), storage)


def test_many_shards_read_like_one(both: tuple[Any, Any, str]) -> None:
    one, many, storage = both
    shards = _shards(storage, "many")
    assert len(_shards(storage, "one")) == 1 and len(shards) >= 5, shards
    assert all(e["kind"] == SHARD_KIND and e["split"] == "train" for e in shards)
    assert sum(int(e["rows"]) for e in shards) == len(many) == len(one) == ROWS
    # shard_bytes bounds a shard's rows; its HDF5 file adds a few KiB of metadata
    assert all(int(e["size"]) <= 4096 + 8192 for e in shards), shards
    ends = np.cumsum([int(e["rows"]) for e in shards])
    borders = np.concatenate([ends[:-1] - 1, ends[:-1], [0, ROWS - 1]])
    rng = np.random.default_rng(0)
    for indices in (borders, rng.integers(0, ROWS, 300), rng.permutation(ROWS),
                    np.array([ends[0], ends[0], 0, -1]), np.arange(ends[1] - 3, ends[1] + 3)):
        _same(many.get_batch(indices), one.get_batch(indices))
    for i in borders.tolist():
        _same(many[i], one[i])
    for a, b in zip(many, one, strict=True):
        _same(a, b)
    assert many.to_arrow().equals(one.to_arrow())
    assert many.to_pandas().equals(one.to_pandas())
    left, right = many.as_dict(), one.as_dict()
    for i in (0, int(ends[0]), ROWS - 1):
        assert left[i].keys() == right[i].keys()
        for key in left[i]:
            assert np.asarray(left[i][key]).tolist() == np.asarray(right[i][key]).tolist()
    assert many.fields.keys() == one.fields.keys()


def test_block_aware_sampler_over_gridfs_reads_each_sample_once(
    tmp_path: Path, mongo_uri: str
) -> None:
    source = tmp_path / "live.csv"
    _write(source, HEADER + _rows(0, ROWS))
    _refresh(_spec(tmp_path, source, {"one": "", "many": "4K"}), mongo_uri)
    from datastack.iterators.sampler import DatasetSampler

    many = datastack.load("many", "train", storage=mongo_uri)
    one = datastack.load("one", "train", storage=mongo_uri)
    blocks = many.storage_blocks()
    assert blocks is not None and len(blocks.ids) == ROWS
    # blocks of different shards never share an id: each shard's blocks are its own
    ends = np.cumsum([int(e["rows"]) for e in _shards(mongo_uri, "many")])
    per_shard = [set(part.tolist()) for part in np.split(blocks.ids, ends[:-1])]
    assert all(a.isdisjoint(b) for k, a in enumerate(per_shard) for b in per_shard[k + 1:])
    sampler = DatasetSampler(many, seed=3)
    assert sampler.block_aware_active
    plan = sampler.read_plan()
    order = sampler.indices()
    assert sorted(order.tolist()) == list(range(ROWS))
    for lo in range(0, ROWS, 64):
        batch = order[lo : lo + 64]
        if plan is not None:
            plan.before_batch(many, batch, sampler.epoch, lo)
        _same(many.get_batch(batch), one.get_batch(batch))


def test_torch_loader_with_two_workers(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from datastack.iterators.torch import data_loader

    storage = str(tmp_path / "store")
    source = tmp_path / "live.csv"
    _write(source, HEADER + _rows(0, ROWS))
    _refresh(_spec(tmp_path, source, {"one": "", "many": "4K"}), storage)

    def epoch(name: str) -> list[Any]:
        it = datastack.load(name, "train", storage=storage)
        loader = data_loader(it, batch_size=50, shuffle=True, seed=1, num_workers=2)
        return [[np.asarray(column).tolist() for column in batch[::2]] for batch in loader]

    got, want = epoch("many"), epoch("one")
    assert len(got) == ROWS // 50 and got == want


@pytest.mark.parametrize("change", ["last-row", "append"])
def test_a_change_at_the_end_shares_every_shard_before_it(
    tmp_path: Path, storage: str, capsys: pytest.CaptureFixture[str], change: str
) -> None:
    source = tmp_path / "live.csv"
    _write(source, HEADER + _rows(0, ROWS))
    spec = _spec(tmp_path, source, {"live": "4K"})
    _refresh(spec, storage)
    first = _shards(storage, "live", 1)
    if change == "last-row":
        _write(source, HEADER + _rows(0, ROWS - 1) + _rows(ROWS - 1, 1, seed=9))
    else:
        _write(source, HEADER + _rows(0, ROWS) + _rows(ROWS, 150))
    _refresh(spec, storage)
    second = _shards(storage, "live", 2)
    kept = len(first) - 1  # every shard before the one holding the change
    assert [e["identifier"] for e in second[:kept]] == [e["identifier"] for e in first[:kept]]
    same = ("identifier", "size", "sha256", "kind", "split", "rows")  # not who prepared it
    assert [{k: e[k] for k in same} for e in second[:kept]] == [
        {k: e[k] for k in same} for e in first[:kept]]
    assert second[-1]["identifier"] not in {e["identifier"] for e in first}
    shared = {e["identifier"] for e in first} & {e["identifier"] for e in second}
    capsys.readouterr()
    assert main(["show", "live", "--storage", storage, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["storage"]
    assert shown["shared_shards"] == len(shared) >= kept > 0 and shown["previous"] == 1
    assert shown["new_shards"] == len(second) - len(shared) >= 1
    assert shown["shards"] == len(second)
    assert main(["show", "live", "--storage", storage]) == 0
    assert f"{len(shared)} shared with v1" in capsys.readouterr().out
    if change == "last-row":  # the web page's JSON says the same as `show --json`
        from tests.web.conftest import client_for

        with client_for(storage) as client:
            assert client.get("/api/datasets/live").json()["storage"] == shown
    # v2 reads its rows: the shared ones as v1 has them, then what changed
    now = datastack.load("live", "train", storage=storage).to_pandas()
    before = datastack.load("live", "train", version=1, storage=storage).to_pandas()
    assert now["a"].tolist()[: ROWS - 1] == before["a"].tolist()[: ROWS - 1]
    last = ROWS - 1 if change == "last-row" else ROWS + 149
    assert now["text"].tolist()[-1] == f"row {last} {'x' * (last % 7)}"
    assert len(now) == (ROWS if change == "last-row" else ROWS + 150)


def test_pull_then_offline_load_of_a_sharded_version(
    tmp_path: Path, own_mongo: Any, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATASTACK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DATASTACK_CACHE_DIR_BYTES", "1G")
    monkeypatch.delenv("DATASTACK_OFFLINE", raising=False)
    uri = f"{own_mongo.uri}/team"
    source = tmp_path / "live.csv"
    _write(source, HEADER + _rows(0, ROWS))
    _refresh(_spec(tmp_path, source, {"live": "4K"}), uri)
    capsys.readouterr()
    assert main(["pull", "live", "--storage", uri]) == 0
    assert "live v1" in capsys.readouterr().out
    online = datastack.load("live", "train", storage=uri)
    want, batch = online.to_pandas(), online.get_batch([ROWS - 1, 0, 300])
    cached = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in cached) >= sum(
        int(e["size"]) for e in _shards(uri, "live"))  # every shard has its local copy
    own_mongo.stop(kill=True)  # nothing but the local copies from here on
    monkeypatch.setenv("DATASTACK_OFFLINE", "1")
    started = time.monotonic()
    got = datastack.load("live", "train", storage=uri)
    assert got.to_pandas().equals(want)
    _same(got.get_batch([ROWS - 1, 0, 300]), batch)
    assert time.monotonic() - started < 60  # no wait on the stopped server


def test_gc_keeps_shared_shards_and_deletes_the_deleted_versions_own(
    tmp_path: Path, storage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "live.csv"
    _write(source, HEADER + _rows(0, ROWS))
    spec = _spec(tmp_path, source, {"live": "4K"})
    _refresh(spec, storage)
    _write(source, HEADER + _rows(0, ROWS - 1) + _rows(ROWS - 1, 1, seed=9))
    _refresh(spec, storage)
    first, second = _shards(storage, "live", 1), _shards(storage, "live", 2)
    shared = {e["identifier"] for e in first} & {e["identifier"] for e in second}
    only_first = {e["identifier"] for e in first} - shared
    assert shared and only_first
    capsys.readouterr()
    assert main(["gc", "--keep", "1", "--grace", "0", "--storage", storage, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["deleted_versions"] == [["live", 1]]
    assert only_first <= set(report["deleted_resources"])
    assert not shared & set(report["deleted_resources"])
    assert report["bytes_shared"] == sum(int(e["size"]) for e in first
                                         if e["identifier"] in shared)
    if "bytes_freed" in report:  # GC's freed bytes (#24.3's report): the deleted shards' too
        assert report["bytes_freed"] >= sum(int(e["size"]) for e in first
                                            if e["identifier"] in only_first)
    connector = Store.open(storage).storage
    assert all(connector.has_resource(i) for i in shared)
    assert not any(connector.has_resource(i) for i in only_first)
    loaded = datastack.load("live", "train", storage=storage)
    assert len(loaded.to_pandas()) == ROWS  # v2 reads whole after the GC
    again = main(["gc", "--keep", "1", "--grace", "0", "--storage", storage, "--json"])
    assert again == 0 and json.loads(capsys.readouterr().out)["deleted_resources"] == []


def test_a_lost_shard_is_a_clear_error(tmp_path: Path, storage: str) -> None:
    source = tmp_path / "live.csv"
    _write(source, HEADER + _rows(0, ROWS))
    _refresh(_spec(tmp_path, source, {"live": "4K"}), storage)
    shards = _shards(storage, "live")
    lost = str(shards[2]["identifier"])
    Store.open(storage).storage.delete_resource(lost)
    loaded = datastack.load("live", "train", storage=storage)
    _same(loaded.get_batch([0, 1]), loaded.get_batch([0, 1]))  # the other shards still read
    started = time.monotonic()
    inside = int(sum(int(e["rows"]) for e in shards[:2]))  # the lost shard's first row
    with pytest.raises(DatastackError) as info:
        loaded.get_batch([0, inside])
    message = str(info.value)
    assert lost in message and f"shard 3 of {len(shards)}" in message, message
    assert "live v1:/train" in message and "--force" in message, message
    with pytest.raises(DatastackError):
        loaded.to_pandas()
    assert time.monotonic() - started < 60  # an error, not a hang


@pytest.mark.parametrize("value", ["100", "12", "lots", "true", "-4K", "[1]"])
def test_shard_bytes_validation_names_the_key(tmp_path: Path, value: str) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"datasets:\n  live:\n    sources: [{{url: 'file:///x.csv', track: true}}]"
                    f"\n{CSV}    shard_bytes: {value}\n")
    with pytest.raises(SpecError, match="shard_bytes") as info:
        load_spec(spec)
    assert "1024" in str(info.value)  # what is expected


@pytest.mark.parametrize(("value", "size"), [("4K", 4096), ("32M", 32 * 2**20), (2048, 2048)])
def test_shard_bytes_sizes(tmp_path: Path, value: Any, size: int) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"datasets:\n  live:\n    sources: [{{url: 'file:///x.csv', track: true}}]"
                    f"\n{CSV}    shard_bytes: {value}\n")
    assert load_spec(spec)["live"].shard_bytes == size
