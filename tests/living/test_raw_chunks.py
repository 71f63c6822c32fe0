"""Raw copies of tracked sources cost their new bytes (#24.3) and say whether they grew by an
append (#24.2's detection): refreshes against a real HTTP server on 127.0.0.1 and a tracked
file, on the filesystem and on GridFS (SecantusDB)."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import datastack
from datastack.canonical.layout import RAW_CHUNK_BYTES
from datastack.factory import factory_for
from datastack.pipeline.build import drop_version, prepare_version
from datastack.specs import load_spec
from datastack.storage import chunked
from datastack.storage.chunked import open_raw, open_raw_tail
from datastack.store import Store
from tests.living.upstream import Upstream, serve, table, tracked_spec
from tests.retrieval.test_one_pass import parse_reads

__all__ = ["parse_reads"]  # the fixture, used by name

#: A small chunk size for these tests, so that a table of a few hundred KiB has many chunks.
SMALL = 16 * 1024


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(chunked, "RAW_CHUNK_BYTES", SMALL)
    return SMALL


def _raw_bytes(storage: str, name: str = "live") -> dict[str, int]:
    connector = Store.open(storage).storage
    return {i: connector.get_resource(i).size
            for i in connector.list_resources(f"datasets/{name}/raw/")}


def _refresh(spec: Path, storage: str) -> Any:
    [result] = datastack.refresh(spec, storage=storage)
    return result


def test_an_append_upstream_stores_only_its_new_chunks(
    httpserver: Any, storage: str, tmp_path: Path, small_chunks: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    old = table(20_000)
    upstream = Upstream("/live.csv", old, validators=False)
    spec = tracked_spec(tmp_path / "spec.yaml", serve(httpserver, upstream))
    assert _refresh(spec, storage).status == "published"
    before = _raw_bytes(storage)
    assert sum(before.values()) == len(old)  # every chunk once, nothing else under raw/
    assert all(i.startswith("datasets/live/raw/chunks/") for i in before)
    first = Store.open(storage).catalog.latest("live").sources[0]
    assert "appended_to" not in first and first["stored_bytes"] == len(old)
    last_old = first["chunks"][-1][1]

    new = old + table(300, offset=20_000).split(b"\n", 1)[1]  # rows appended, no header
    upstream.set(new)
    caplog.set_level(logging.INFO, logger="datastack.pipeline")
    result = _refresh(spec, storage)
    assert (result.status, result.version) == ("published", 2), result.reason
    after = _raw_bytes(storage)
    added = sum(after.values()) - sum(before.values())
    assert len(new) - len(old) <= added <= len(new) - len(old) + last_old  # + the old last chunk
    assert set(before) <= set(after)  # the old chunks are shared, not copied
    source = Store.open(storage).catalog.latest("live").sources[0]
    assert source["stored_bytes"] == added
    assert source["appended_to"] == {"size": len(old), "sha256": hashlib.sha256(old).hexdigest()}
    assert source["size"] == len(new) and source["sha256"] == hashlib.sha256(new).hexdigest()
    assert source["chunks"][: len(first["chunks"]) - 1] == first["chunks"][:-1]  # same cuts
    assert all(small_chunks // 4 <= size <= 4 * small_chunks
               for _, size in source["chunks"][:-1])  # content-defined, within min and max
    store = Store.open(storage)
    with open_raw(store.storage, source) as raw:  # the copy read back is the file
        assert raw.size == len(new) and raw.read() == new
    with open_raw_tail(store.storage, source, source["appended_to"]["size"]) as tail:
        assert tail.read() == new[len(old):]
    assert len(datastack.load("live", storage=storage)) == 20_300
    # the preparation read the tail of the chunked copy only (pipeline._tail)
    assert f"prepared the {len(new) - len(old)} bytes appended upstream only" in caplog.text


@pytest.mark.parametrize(
    ("change", "appended"),
    [
        (lambda old: old + b"7,7,a\n", True),
        (lambda old: old[:100] + b"9" + old[101:] + b"7,7,a\n", False),  # a change in the middle
        (lambda old: old[: old.rindex(b"\n", 0, -1) + 1], False),  # a shrink (last row gone)
        (lambda old: old, False),  # equal content (forced refresh)
    ],
    ids=["append", "middle", "shrink", "equal"],
)
def test_appended_to_says_whether_the_new_content_begins_with_the_old(
    tmp_path: Path, change: Any, appended: bool, small_chunks: int
) -> None:
    source = tmp_path / "live.csv"
    old = table(3000)
    source.write_bytes(old)
    spec = tracked_spec(tmp_path / "spec.yaml", source.as_uri())
    storage = str(tmp_path / "store")
    assert _refresh(spec, storage).status == "published"
    new = change(old)
    source.write_bytes(new)
    [result] = datastack.refresh(spec, storage=storage, force=True)
    assert result.status == "published", result.reason
    recorded = Store.open(storage).catalog.latest("live").sources[0]
    assert recorded["sha256"] == hashlib.sha256(new).hexdigest()
    if appended:
        assert recorded["appended_to"] == {"size": len(old),
                                           "sha256": hashlib.sha256(old).hexdigest()}
    else:
        assert "appended_to" not in recorded
    with open_raw(Store.open(storage).storage, recorded) as raw:
        assert hashlib.sha256(raw.read()).hexdigest() == recorded["sha256"]


def test_a_version_is_prepared_again_from_its_chunks_without_the_source(
    tmp_path: Path, storage: str
) -> None:
    """Chunks of the real size (4 MiB on average): the source file deleted, the version's
    raw copy alone prepares it again."""
    source = tmp_path / "live.csv"
    columns = ",".join(f"x{k}" for k in range(8))
    rows = "".join(f"{i},{(i * 7) % 11}," + ",".join(f"{i * 0.1234567891 * k:.10f}"
                                                    for k in range(6)) + f",{'ab'[i % 2]}\n"
                   for i in range(130_000))
    data = f"{columns},label\n{rows}".encode()
    assert 3 * RAW_CHUNK_BYTES < len(data) < 4 * RAW_CHUNK_BYTES
    source.write_bytes(data)
    spec_path = tracked_spec(tmp_path / "spec.yaml", source.as_uri())
    assert _refresh(spec_path, storage).status == "published"
    store = Store.open(storage)
    record = store.catalog.latest("live")
    sizes = [size for _, size in record.sources[0]["chunks"]]
    assert len(sizes) >= 2 and sum(sizes) == len(data)
    assert all(RAW_CHUNK_BYTES // 4 <= size <= 4 * RAW_CHUNK_BYTES for size in sizes[:-1])
    source.unlink()  # no source any more: only the stored chunks
    factory = factory_for(load_spec(spec_path)["live"])
    prepared = prepare_version(factory, record.sources, store)
    try:
        assert prepared.splits == record.splits
    finally:
        drop_version(store, "live", prepared.version, prepared.attempt)


def test_a_raw_copy_stored_whole_before_chunks_still_opens_and_prepares(tmp_path: Path) -> None:
    """Records written before chunks name one file (``raw/fetched-<id>/<file>``)."""
    source = tmp_path / "live.csv"
    data = table(500)
    source.write_bytes(data)
    spec_path = tracked_spec(tmp_path / "spec.yaml", source.as_uri())
    store = Store.open(tmp_path / "store")
    identifier = "datasets/live/raw/fetched-0123456789abcdef/live.csv"
    store.storage.set_resource(identifier, data)
    old = {"url": source.as_uri(), "identifier": identifier, "size": len(data), "track": True,
           "sha256": hashlib.sha256(data).hexdigest(), "role": None, "split": None}
    with open_raw(store.storage, old) as raw:
        assert raw.read() == data
    factory = factory_for(load_spec(spec_path)["live"])
    prepared = prepare_version(factory, [old], store)
    assert sum(prepared.splits.values()) == 500


def test_a_tracked_folder_stored_as_chunks_is_read_in_place(
    tmp_path: Path, small_chunks: int, parse_reads: Counter[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A folder source is one tar, here cut into many chunk files: its members are read as
    windows across those files (once each), never copied out into the work folder first."""
    from datastack.formats import inputs as inputs_module

    def no_copy(self: Any, workdir: Path) -> Path:
        raise AssertionError(f"{self.name} was copied into the work folder")

    monkeypatch.setattr(inputs_module.RawInput, "local_path", no_copy)
    folder = tmp_path / "parts"
    folder.mkdir()
    parts = [table(3000, offset=k * 10_000) for k in range(4)]
    for k, part in enumerate(parts):
        (folder / f"part-{k}.csv").write_bytes(part)
    spec = tracked_spec(tmp_path / "spec.yaml", folder.as_uri())
    storage = str(tmp_path / "store")
    result = _refresh(spec, storage)
    assert result.status == "published", result.reason
    source = Store.open(storage).catalog.latest("live").sources[0]
    assert len(source["chunks"]) > 4  # members span chunk boundaries
    read = sum(n for key, n in parse_reads.items() if ".tar!" in key)
    assert read == sum(map(len, parts))  # each member once, in place
    assert len(datastack.load("live", storage=storage)) == 12_000


def test_a_refused_download_leaves_its_new_chunks_to_gc_and_the_shared_ones_stay(
    httpserver: Any, storage: str, tmp_path: Path, small_chunks: int
) -> None:
    """Upstream grows by a broken row: the refresh fails (the previous version stays), the
    download's chunks it shares with version 1 stay, its new ones go at the next gc."""
    old = table(3000)
    upstream = Upstream("/live.csv", old, validators=False)
    spec = tracked_spec(tmp_path / "spec.yaml", serve(httpserver, upstream))
    assert _refresh(spec, storage).status == "published"
    kept = set(_raw_bytes(storage))
    last_old = Store.open(storage).catalog.latest("live").sources[0]["chunks"][-1][1]
    upstream.set(old + b"1,2\n")  # a row short of its label: the format refuses it
    failed = _refresh(spec, storage)
    assert failed.status == "failed" and "FormatError" in failed.reason, failed.reason
    leftovers = set(_raw_bytes(storage)) - kept
    assert len(leftovers) == 1  # the old last chunk grown by the broken row
    assert kept <= set(_raw_bytes(storage))  # nothing shared was deleted
    store = Store.open(storage)
    report = store.catalog.gc(store.storage, keep=1, grace_seconds=0)
    assert set(report.deleted_resources) == leftovers
    assert report.bytes_freed == last_old + len(b"1,2\n")
    assert set(_raw_bytes(storage)) == kept
    with open_raw(store.storage, store.catalog.latest("live").sources[0]) as raw:
        assert raw.read() == old
    assert len(datastack.load("live", storage=storage)) == 3000


def test_a_folder_that_gains_a_file_in_the_middle_stores_about_that_file(
    tmp_path: Path, storage: str, small_chunks: int, caplog: pytest.LogCaptureFixture,
) -> None:
    """A tracked image folder (one tar, sorted by path) gains a file that sorts in its
    middle: the raw chunks the refresh adds hold that file and the chunks around it, not the
    half of the folder after it (chunks are cut where the content says)."""
    import numpy as np

    image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)

    def photo(path: Path) -> int:
        path.parent.mkdir(parents=True, exist_ok=True)
        image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(
            path, quality=90)
        return path.stat().st_size

    folder = tmp_path / "photos"
    sizes = {f"c{i % 4}/{i:03d}.jpg": photo(folder / f"c{i % 4}" / f"{i:03d}.jpg")
             for i in range(48)}
    spec = tmp_path / "photos.yaml"
    spec.write_text(f"datasets:\n  photos:\n    sources: [{{url: {folder.as_uri()}, "
                    "track: true}]\n    format: imagefolder\n")
    assert _refresh(spec, storage).status == "published"
    before = sum(_raw_bytes(storage, "photos").values())
    added_file = photo(folder / "c1" / "new.jpg")  # sorts between c1/ and c2/
    after_it = sum(size + 1024 for name, size in sizes.items() if name > "c1/new.jpg")
    caplog.set_level(logging.INFO, logger="datastack.pipeline")
    result = _refresh(spec, storage)
    assert (result.status, result.version) == ("published", 2), result.reason
    added = sum(_raw_bytes(storage, "photos").values()) - before
    source = Store.open(storage).catalog.latest("photos").sources[0]
    assert source["stored_bytes"] == added
    # the file (its data and tar header) and the chunks around it; cut at fixed offsets,
    # every byte after it (about half the folder) would be stored again
    assert added_file < added <= added_file + 4 * small_chunks < after_it // 2
    assert "the 1 file added upstream" in caplog.text  # prepared from the new file only
    assert len(datastack.load("photos", storage=storage)) == 49
