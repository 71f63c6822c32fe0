"""One dataset prepared in parallel (#25): a table cut into parts, prepared by 2 local worker
processes or a Dask LocalCluster (started by the test), gives the version one process gives,
sample for sample (codes, splits, row ids, schema); a worker killed mid-shard is replaced and
the version is published once; a part that fails names its bytes; each shard says which
worker prepared it."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import datastack
from datastack.canonical.layout import shards_of
from datastack.store import Store

SPLITS = "{train: 0.7, val: 0.1, test: 0.2}"


def _table(rows: int, start: int = 0) -> str:
    """Rows with quoted multi-line text, a category whose first rows look like text and later
    rows like numbers (one process decides 'categorical' at row 1), and a label."""
    return "".join(_records(rows, start))


def _records(rows: int, start: int = 0) -> list[str]:
    rng = np.random.default_rng(start)
    out = []
    for i in range(start, start + rows):
        note = f'"line {i}\nsecond, line ""quoted"" {i % 5}"' if i % 3 else f"plain {i % 7}"
        grade = ("A", "B", "C")[i % 3] if i < 40 else str(i % 4)
        out.append(f"{rng.normal():.5f},{('Oslo', 'Lima', 'Rome')[i % 3]},{grade},{note},"
                   f"{('ant', 'bee', 'cat')[i % 3 if i % 11 else 0]}\n")
    return out


HEADER = "x,city,grade,note,label\n"


def _spec(folder: Path, source: Path, **keys: str) -> Path:
    lines = [f"datasets:\n  big:\n    sources: [{{url: {source.as_uri()!r}, track: true}}]",
             "    format: csv",
             "    csv: {target: label, categorical: [city], text: [note]}",
             f"    splits: {SPLITS}"]
    lines += [f"    {k}: {v}" for k, v in keys.items()]
    path = folder / "spec.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _samples(storage: str, version: int) -> dict[str, list[Any]]:
    record = Store.open(storage).catalog.get("big", version)
    out = {}
    for split in record.splits:
        it = datastack.load("big", split, version=version, storage=storage)
        out[split] = [tuple(_nan_free(np.asarray(v).tolist()) for v in it[i])
                      for i in range(len(it))]
    return out


def _nan_free(value: Any) -> Any:
    """NaN as the string "nan" (NaN != NaN would make equal samples differ)."""
    if isinstance(value, list):
        return [_nan_free(v) for v in value]
    return "nan" if isinstance(value, float) and value != value else value


def _refresh(spec: Path, storage: str) -> Any:
    [result] = datastack.refresh(spec, storage=storage)
    return result


def refreshed_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    inputs: Callable[[Path], Path], part_bytes: str,
                    parallel: dict[str, str] | None = None,
                    storage: str | None = None) -> tuple[str, str]:
    """The same dataset refreshed by one process (store ``one``) and with the ``parallel``
    settings (2 local workers by default; into ``storage``, else a local store), in parts of
    ``part_bytes``; ``inputs(folder)`` writes the source and the spec there, returns the spec."""
    stores = []
    for name, env in (("one", {}), ("many", parallel or {"DATASTACK_WORKERS": "2"})):
        folder = tmp_path / name
        folder.mkdir()
        spec = inputs(folder)
        where = storage if (storage and name == "many") else str(folder / "store")
        with monkeypatch.context() as patch:
            patch.setenv("DATASTACK_PART_BYTES", part_bytes)
            for key, value in env.items():
                patch.setenv(key, value)
            result = _refresh(spec, where)
        assert result.status == "published", result.reason
        stores.append(where)
    return stores[0], stores[1]


def _twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parallel: dict[str, str],
           text: str, storage: str | None = None, **keys: str) -> tuple[str, str]:
    """The same CSV refreshed by one process and with ``parallel`` settings."""
    def inputs(folder: Path) -> Path:
        source = folder / "big.csv"
        source.write_text(HEADER + text)
        return _spec(folder, source, **keys)

    return refreshed_twice(tmp_path, monkeypatch, inputs, "48K", parallel, storage)


def _same_version(one: str, many: str, version: int = 1,
                  samples: Callable[[str, int], Any] | None = None) -> None:
    """Both stores' version ``version``: splits, codes, schema, samples (read by
    ``samples``), row ids."""
    read = samples or _samples
    a = Store.open(one).catalog.get("big", version)
    b = Store.open(many).catalog.get("big", version)
    assert dict(a.splits) == dict(b.splits)
    assert a.encodings == b.encodings and a.schema == b.schema
    assert read(one, version) == read(many, version)
    ids_a, ids_b = _ids(one, version), _ids(many, version)
    assert ids_a.keys() == ids_b.keys() and all(np.array_equal(ids_a[s], ids_b[s]) for s in ids_a)


def _ids(storage: str, version: int) -> dict[str, np.ndarray]:
    import h5py

    from datastack.canonical.rowids import ROW_IDS

    store = Store.open(storage)
    out = {}
    for split, entries in shards_of(store.catalog.get("big", version)).items():
        parts = []
        for entry in entries:
            with store.storage.get_resource(entry["identifier"]) as r, h5py.File(r, "r") as f:
                parts.append(np.asarray(f[split][ROW_IDS][()]))
        out[split] = np.concatenate(parts)
    return out


@pytest.mark.parametrize("stratify", [False, True], ids=["plain", "stratified"])
def test_two_local_workers_give_the_one_process_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stratify: bool,
) -> None:
    keys = {"stratify": "true"} if stratify else {}
    one, many = _twice(tmp_path, monkeypatch, {"DATASTACK_WORKERS": "2"}, _table(3000),
                       **keys)
    _same_version(one, many)
    record = Store.open(many).catalog.latest("big")
    entries = [e for es in shards_of(record).values() for e in es]
    parts = {e["part"] for e in entries}
    assert len(parts) >= 4  # cut into parts, each part's shards named by its bytes
    workers = {(e["worker"]["host"], e["worker"]["pid"]) for e in entries}
    assert os.getpid() not in {pid for _, pid in workers} and 1 <= len(workers) <= 2
    from datastack.catalog.overview import dataset_details

    details = dataset_details(Store.open(many).catalog, "big")
    assert len(details["storage"]["workers"]) == len(workers)  # show --json carries them


def test_a_continued_version_in_parts_equals_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """v2 of a changed table (not an append): splits of v1's rows kept, codes continued,
    prepared in parts."""
    text = _table(2500)
    one, many = _twice(tmp_path, monkeypatch, {"DATASTACK_WORKERS": "2"}, text)
    changed = HEADER + text.replace("Lima", "Berlin", 5) + _table(200, start=5000)
    for name, storage in (("one", one), ("many", many)):
        folder = tmp_path / name
        (folder / "big.csv").write_text(changed)
        with monkeypatch.context() as patch:
            patch.setenv("DATASTACK_PART_BYTES", "48K")
            if name == "many":
                patch.setenv("DATASTACK_WORKERS", "2")
            result = _refresh(folder / "spec.yaml", storage)
        assert (result.status, result.version) == ("published", 2), result.reason
    _same_version(one, many, 2)


@pytest.mark.parametrize("ending", ["every record ends a line", "blank lines, no last newline"])
def test_a_first_versions_splits_are_drawn_while_parts_are_staged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    ending: str,
) -> None:
    """The cut counts the records (quoted newlines are not records) and the splits are drawn
    from that count while the parts are staged; when the parts hold another number of rows
    (blank lines skipped, a last record without a newline), they are drawn again: the same
    version as one process either way."""
    text = _table(3000)
    if ending != "every record ends a line":
        lines = text.split("\n")
        text = "\n".join(lines[:100] + [""] + lines[100:]).rstrip("\n")
    with caplog.at_level("DEBUG", logger="datastack.pipeline"):
        one, many = _twice(tmp_path, monkeypatch, {"DATASTACK_WORKERS": "2"}, text)
    early = "splits drawn while the parts were staged" in caplog.text
    assert early == (ending == "every record ends a line"), caplog.text[-2000:]
    assert ("splits drawn again" in caplog.text) != early
    _same_version(one, many)


def test_jsonl_in_parts_equals_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(3)
    lines = [json.dumps({"x": float(rng.normal()), "city": ("Oslo", "Lima")[i % 2],
                         "note": f"text {i}\nwith a newline", "label": ("a", "b", "c")[i % 3]})
             for i in range(3000)]
    def inputs(folder: Path) -> Path:
        source = folder / "big.jsonl"
        source.write_text("\n".join(lines) + "\n")
        spec = folder / "spec.yaml"
        spec.write_text(
            f"datasets:\n  big:\n    sources: [{{url: {source.as_uri()!r}, track: true}}]\n"
            "    format: jsonl\n    jsonl: {target: label, categorical: [city], text: [note]}\n"
            f"    splits: {SPLITS}\n")
        return spec

    stores = refreshed_twice(tmp_path, monkeypatch, inputs, "32K")
    _same_version(*stores)
    record = Store.open(stores[1]).catalog.latest("big")
    assert len({e["part"] for es in shards_of(record).values() for e in es}) >= 3


@pytest.mark.slow
def test_a_dask_local_cluster_gives_the_one_process_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        one, many = _twice(tmp_path, monkeypatch,
                           {"DATASTACK_DASK_ADDRESS": cluster.scheduler_address},
                           _table(3000))
        workers = set(cluster.workers and [w.worker_address for w in cluster.workers.values()])
    _same_version(one, many)
    record = Store.open(many).catalog.latest("big")
    used = {e["worker"].get("dask_worker") for es in shards_of(record).values() for e in es}
    assert used and used <= workers


def test_a_worker_killed_mid_shard_is_replaced_and_the_version_published_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    marker = tmp_path / "killed"
    one, many = _twice(tmp_path, monkeypatch, {
        "DATASTACK_WORKERS": "2", "DATASTACK_TEST_KILL_PART": f"1:{marker}"}, _table(3000))
    assert marker.exists()  # the worker writing part 1 was SIGKILLed once
    _published_once_and_nothing_orphaned(one, many, capsys)


def _for_workers(pool: type) -> Callable[[], Any]:
    """``parallel_pool`` giving ``pool`` to the refresh with workers only: the other one of
    :func:`_twice` stays one process."""
    return lambda: pool() if os.environ.get("DATASTACK_WORKERS") else None


class _StagingLost:
    """An in-process pool whose part writes never find their staging files (as on another
    machine): each write stages its part again."""

    restaged: list[int] = []

    def __enter__(self) -> _StagingLost:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def slots(self) -> int:
        return 2

    def warm(self) -> None:
        pass

    def describe(self) -> str:
        return "an in-process pool losing staging files"

    def map(self, fn: Callable[[Any], Any], jobs: list[Any]) -> list[Any]:
        if fn.__name__ == "write_part":
            for task in jobs:
                task.job.stage_path.unlink()
                if task.job.presets:
                    self.restaged.append(task.job.index)
        return [fn(job) for job in jobs]


def test_a_part_staged_again_for_its_write_keeps_the_kinds_decided_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A part whose own rows decide a column otherwise (``grade``: numbers after the first 40
    rows) is staged with the kinds of the parts before it; when its write has to stage it
    again (another machine, a dead worker), it does so with the same kinds."""
    from datastack.pipeline import _parallel

    with monkeypatch.context() as patch:
        patch.setattr(_parallel, "parallel_pool", _for_workers(_StagingLost))
        _StagingLost.restaged = []
        one, many = _twice(tmp_path, monkeypatch, {}, _table(3000))
    assert _StagingLost.restaged  # parts after the first were staged with presets
    _same_version(one, many)


class _Recording(_StagingLost):
    """An in-process pool that keeps what the parts' stages returned and their writes got."""

    staged: list[Any] = []
    writes: list[Any] = []

    def map(self, fn: Callable[[Any], Any], jobs: list[Any]) -> list[Any]:
        out = [fn(job) for job in jobs]
        if fn.__name__ == "stage_part":
            self.staged.extend(out)
        elif fn.__name__ == "write_part":
            self.writes.extend(jobs)
        return out


@pytest.mark.parametrize("stratify", [False, True], ids=["first", "stratified"])
def test_a_first_versions_parts_send_their_distinct_hashes_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stratify: bool,
) -> None:
    """A first version without key: or stratified splits needs no row's hash at the
    coordinator: each part returns its distinct hashes (and their counts), keeps its rows'
    hashes in its staging file and numbers them at its write from the copies in the parts
    before (sent per distinct hash); each write gets its splits as one byte a row. The
    version is the one-process version (row ids too), with copies across parts."""
    from datastack.pipeline import _parallel
    from datastack.pipeline._part_tasks import SplitRows

    keys = {"stratify": "true"} if stratify else {}
    with monkeypatch.context() as patch:
        patch.setattr(_parallel, "parallel_pool", _for_workers(_Recording))
        _Recording.staged, _Recording.writes = [], []
        one, many = _twice(tmp_path, monkeypatch, {}, _table(1500, 100) * 2, **keys)
    _same_version(one, many)
    staged, writes = _Recording.staged, _Recording.writes
    assert len(staged) >= 4 and len(writes) == len(staged)
    assert all(isinstance(w.splits, SplitRows) and w.splits.codes.dtype == np.uint8
               for w in writes)
    if stratify:  # the labels are needed here: every row's hash and target come back
        assert all(p.hashes is not None and p.targets is not None for p in staged)
        assert all(w.ids is not None and w.earlier is None for w in writes)
        return
    assert all(p.hashes is None and p.targets is None and p.ranks.within is None
               for p in staged)
    assert all(w.ids is None for w in writes)
    assert any(w.earlier is not None and w.earlier.any() for w in writes)  # copies before


def _published_once_and_nothing_orphaned(one: str, many: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """After a killed worker: the one-process version, published once, no shard twice, and
    nothing left by the dead worker after gc."""
    _same_version(one, many)
    catalog = Store.open(many).catalog
    assert [r.version for r in catalog.versions("big")] == [1]
    record = catalog.latest("big")
    entries = [e["identifier"] for es in shards_of(record).values() for e in es]
    assert len(entries) == len(set(entries))  # no shard twice
    from datastack.cli import main

    assert main(["gc", "--keep", "1", "--grace", "0", "--storage", many, "--json"]) == 0
    capsys.readouterr()
    left = set(Store.open(many).storage.list_resources("datasets/big/"))
    assert left <= set(record.resource_identifiers)  # nothing orphaned after gc


@pytest.mark.slow
def test_a_dask_worker_killed_mid_shard_is_retried_and_the_version_published_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """RELIABILITY: a Dask worker SIGKILLed mid-part: its nanny starts a new one, the task
    runs again, the version is published once with every row once, nothing orphaned."""
    distributed = pytest.importorskip("distributed")
    marker = tmp_path / "killed"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        one, many = _twice(tmp_path, monkeypatch, {
            "DATASTACK_DASK_ADDRESS": cluster.scheduler_address,
            "DATASTACK_TEST_KILL_PART": f"2:{marker}"}, _table(3000))
    assert marker.exists()  # the worker writing part 2 was SIGKILLed once
    _published_once_and_nothing_orphaned(one, many, capsys)


def test_a_part_that_fails_names_its_bytes_and_the_previous_version_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    source = folder / "big.csv"
    source.write_text(HEADER + _table(3000))
    spec = _spec(folder, source)
    storage = str(folder / "store")
    assert _refresh(spec, storage).status == "published"
    text = _records(3000)
    text[2500] = "not-a-number,Oslo,A,plain,ant\n"  # x is numeric: a part's row fails
    source.write_text(HEADER + "".join(text))
    monkeypatch.setenv("DATASTACK_PART_BYTES", "48K")
    monkeypatch.setenv("DATASTACK_WORKERS", "2")
    result = _refresh(spec, storage)
    assert result.status == "failed"
    assert "big.csv bytes " in result.reason and "not a number" in result.reason
    assert Store.open(storage).catalog.latest("big").version == 1


def test_several_sources_are_cut_in_turn_and_give_the_one_process_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A spec of several CSV sources (no split named): each source's parts in turn, the
    version the one process gives (its rows: the sources one after another)."""
    def inputs(folder: Path) -> Path:
        urls = []
        for k, (rows, start) in enumerate([(1500, 0), (700, 5000), (1200, 9000)]):
            source = folder / f"part{k}.csv"
            source.write_text(HEADER + _table(rows, start))
            urls.append(f"{{url: {source.as_uri()!r}, track: true}}")
        spec = folder / "spec.yaml"
        spec.write_text(f"datasets:\n  big:\n    sources: [{', '.join(urls)}]\n"
                        "    format: csv\n"
                        "    csv: {target: label, categorical: [city], text: [note]}\n"
                        f"    splits: {SPLITS}\n")
        return spec

    stores = refreshed_twice(tmp_path, monkeypatch, inputs, "48K")
    _same_version(*stores)
    entries = [e for es in shards_of(Store.open(stores[1]).catalog.latest("big")).values()
               for e in es]
    named = {str(e["part"]) for e in entries}
    assert all(any(f"part{k}.csv" in p for p in named) for k in range(3)), named
