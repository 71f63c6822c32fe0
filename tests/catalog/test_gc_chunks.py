"""GC by reference for raw chunks (#24.3, #24.6): a chunk goes only when no kept version lists
it, after the grace period; every backend, with its real storage connector."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pytest

from datastack.canonical.layout import raw_chunk_identifier
from datastack.catalog import Catalog, VersionRecord
from datastack.storage.base import StorageConnector
from datastack.storage.chunked import ChunkSink, open_raw
from tests.catalog.helpers import make_catalog, make_storage

CHUNK = 1000


@pytest.fixture
def pair(backend: tuple[str, Any]) -> tuple[Catalog, StorageConnector]:
    return make_catalog(*backend), make_storage(*backend)


def _content(n: int, seed: int) -> bytes:
    return hashlib.shake_256(str(seed).encode()).digest(n)  # no chunk repeats another


def _publish(catalog: Catalog, storage: StorageConnector, data: bytes) -> VersionRecord:
    """A version of ``live`` whose one tracked source is ``data``, stored as chunks."""
    sink = ChunkSink(storage, lambda d: raw_chunk_identifier("live", d), chunk_bytes=CHUNK)
    download = f"datasets/live/raw/fetched-{hashlib.sha256(data).hexdigest()[:16]}/live.csv"
    info = sink.set_resource(download, data)
    source = {"url": "https://example.org/live.csv", "track": True, "identifier": download,
              "size": info.size, "sha256": info.sha256, "chunks": sink.chunks}
    with catalog.lease("live", ttl=60) as lease:
        rec = catalog.begin(VersionRecord(name="live", spec_hash="s", sources=[source]),
                            token=lease)
        data_file = f"datasets/live/v{rec.version}/data.h5"
        resources = [storage.set_resource(data_file, b"h5").to_dict()]
        return catalog.publish("live", rec.version, token=lease, resources=resources,
                               splits={"train": 1})


def _chunks(storage: StorageConnector) -> set[str]:
    return set(storage.list_resources("datasets/live/raw/chunks/"))


def _ids(record: VersionRecord) -> set[str]:
    return {i for i in record.resource_identifiers if "/raw/chunks/" in i}


def test_gc_keeps_the_chunks_a_kept_version_shares_and_frees_the_others(
    pair: tuple[Catalog, StorageConnector],
) -> None:
    catalog, storage = pair
    base = _content(12 * CHUNK + 300, seed=1)
    v1 = _publish(catalog, storage, base)
    v2 = _publish(catalog, storage, base + _content(1500, seed=2))  # an append
    # shifted by a new first half-chunk, the last 500 bytes gone: cut by content, it shares
    # every chunk of v1 but those at its two ends
    v3 = _publish(catalog, storage, _content(CHUNK // 2, seed=3) + base[:-500])
    chunks_v1 = v1.sources[0]["chunks"]
    assert len(chunks_v1) > 4 and len(_ids(v1) & _ids(v2)) == len(chunks_v1) - 1
    assert len(_ids(v3) & _ids(v1)) >= len(chunks_v1) - 4
    assert _chunks(storage) == _ids(v1) | _ids(v2) | _ids(v3)

    report = catalog.gc(storage, keep=2, grace_seconds=0)  # v1 goes, v2 and v3 stay
    assert report.deleted_versions == [("live", 1)]
    only_v1 = _ids(v1) - _ids(v2) - _ids(v3)
    # v1's last chunk: v2 holds its bytes in a longer chunk, v3 ends before them
    assert only_v1 == {raw_chunk_identifier("live", chunks_v1[-1][0])}
    assert set(report.deleted_resources) == only_v1 | {"datasets/live/v1/data.h5"}
    assert report.bytes_freed == chunks_v1[-1][1] + 2  # that chunk and v1's data file
    assert _chunks(storage) == _ids(v2) | _ids(v3)
    with open_raw(storage, catalog.get("live", 2).sources[0]) as raw:
        assert raw.read() == base + _content(1500, seed=2)

    time.sleep(0.05)
    report = catalog.gc(storage, keep=1, grace_seconds=0)
    assert report.deleted_versions == [("live", 2)]
    assert _chunks(storage) == _ids(v3)
    assert report.bytes_freed == sum(s for d, s in v2.sources[0]["chunks"]
                                     if raw_chunk_identifier("live", d) not in _ids(v3)) + 2


def test_chunks_of_a_version_deleted_within_the_grace_period_stay(
    pair: tuple[Catalog, StorageConnector],
) -> None:
    catalog, storage = pair
    v1 = _publish(catalog, storage, _content(2 * CHUNK + 10, seed=4))
    _publish(catalog, storage, _content(2 * CHUNK, seed=5))
    time.sleep(0.6)  # v1 is older than the grace period: GC may delete its record
    first = catalog.gc(storage, keep=1, grace_seconds=0.5)
    assert first.deleted_versions == [("live", 1)]
    assert _ids(v1) <= _chunks(storage)  # a reader of v1 may still be reading its raw copy
    assert _ids(v1) <= set(first.kept_in_grace) and first.bytes_freed == 0
    time.sleep(0.6)
    second = catalog.gc(storage, keep=1, grace_seconds=0.5)
    assert _ids(v1) <= set(second.deleted_resources)
    assert not _ids(v1) & _chunks(storage)


def test_unreferenced_chunks_of_a_failed_download_are_collected(
    pair: tuple[Catalog, StorageConnector],
) -> None:
    """A pinned mismatch (or a refresh that failed after its download) leaves chunks no
    version lists: garbage, collected by the next GC; the kept version's chunks stay."""
    catalog, storage = pair
    kept = _publish(catalog, storage, _content(2 * CHUNK, seed=6))
    sink = ChunkSink(storage, lambda d: raw_chunk_identifier("live", d), chunk_bytes=CHUNK)
    with pytest.raises(Exception, match="sha256 mismatch"):
        sink.set_resource("datasets/live/raw/fetched-0/live.csv",
                          _content(2 * CHUNK, seed=6) + b"more", sha256="0" * 64)
    garbage = _chunks(storage) - _ids(kept)
    assert len(garbage) == 1  # the chunks it shares with the kept version were not rewritten
    report = catalog.gc(storage, keep=1, grace_seconds=0)
    last = kept.sources[0]["chunks"][-1][1]  # the kept last chunk, grown by b"more"
    assert set(report.deleted_resources) == garbage and report.bytes_freed == last + 4
    assert _chunks(storage) == _ids(kept)


def test_version_summaries_leave_the_chunk_lists_out(
    pair: tuple[Catalog, StorageConnector],
) -> None:
    """A list of versions stays small: hundreds of chunks per GB stay in the full record."""
    catalog, storage = pair
    data = _content(5 * CHUNK, seed=7)
    full = _publish(catalog, storage, data).sources[0]
    assert len(full["chunks"]) > 1
    [summary] = catalog.version_summaries("live")
    source = summary.sources[0]
    assert "chunks" not in source
    assert source["sha256"] == hashlib.sha256(data).hexdigest() and source["size"] == len(data)
    assert source["identifier"] == full["identifier"] and source["track"] is True
