"""The chunk sink under the real retrievers (#24.3): one pass over the bytes, each chunk stored
once per content, pinned checksums checked, the prefix hash taken on the way; and the chunked
copy read back as one seekable, picklable stream."""

from __future__ import annotations

import hashlib
import pickle
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from datastack.errors import ChecksumError, ResourceNotFoundError, StorageError
from datastack.retrieval import FileRetriever, HTTPRetriever, ResourceDefinition
from datastack.storage.chunked import ChunkSink, open_raw, open_raw_tail
from datastack.storage.filesystem import FileStorageConnector
from tests.retrieval.servers import Behaviour, FaultyServer
from tests.retrieval.test_one_pass import (
    SLACK,
    CountingStorage,
    _rchar,
    _warm_up,
    source_reads,
)

__all__ = ["source_reads"]  # the fixture, used by name

CHUNK = 64 * 1024
DOWNLOAD = "d/raw/fetched-0123456789abcdef/big.bin"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sink(storage: Any, prefix: tuple[int, str] | None = None) -> ChunkSink:
    return ChunkSink(storage, lambda digest: f"datasets/d/raw/chunks/{digest}", chunk_bytes=CHUNK,
                     prefix=prefix)


def _record(sink: ChunkSink) -> dict[str, Any]:
    return {"identifier": "datasets/d/raw/fetched-1/big.bin", "chunks": sink.chunks}


def _data(n: int, seed: int = 0) -> bytes:
    """``n`` pseudo-random bytes (a periodic pattern would hold no content boundary)."""
    return random.Random(seed).randbytes(n)


def _split(data: bytes, chunks: list[list[Any]]) -> list[bytes]:
    """``data`` cut as ``chunks`` lists it."""
    out, offset = [], 0
    for _, size in chunks:
        out.append(data[offset : offset + size])
        offset += size
    assert offset == len(data)
    return out


def test_a_file_is_read_once_and_stored_as_chunks(
    tmp_path: Path, source_reads: Counter[str]
) -> None:
    data = _data(5 * CHUNK + 1234)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    storage = CountingStorage(tmp_path / "store")
    _warm_up(tmp_path)
    sink = _sink(storage)
    before = _rchar()
    (info,) = FileRetriever(sink).retrieve_with_info(  # type: ignore[arg-type]
        [ResourceDefinition(DOWNLOAD, str(path), tracked=True)])
    after = _rchar()
    assert info.sha256 == _sha(data) and info.size == len(data)
    assert source_reads[str(path)] == len(data)  # one pass over the source
    if before is not None and after is not None:  # no other full read, by any path
        assert len(data) <= after - before < len(data) + SLACK
    assert sum(storage.written.values()) == len(data) == sink.written  # each byte written once
    assert storage.opened == {}  # nothing read back
    assert len(sink.chunks) > 3  # cut where the content says, about CHUNK bytes each
    assert sorted(storage.written) == sorted(f"datasets/d/raw/chunks/{d}" for d, _ in sink.chunks)
    assert [_sha(piece) for piece in _split(data, sink.chunks)] == [d for d, _ in sink.chunks]


def test_chunks_already_stored_are_not_written_again(tmp_path: Path) -> None:
    storage = CountingStorage(tmp_path / "store")
    old = _data(8 * CHUNK + 500)
    first = _sink(storage)
    first.set_resource(DOWNLOAD, old)
    assert len(first.chunks) >= 3
    storage.written.clear()
    new = old + _data(CHUNK, seed=7)  # appended: the old last chunk and the new bytes are new
    sink = _sink(storage, prefix=(len(old), _sha(old)))
    info = sink.set_resource(DOWNLOAD, new)
    assert info.sha256 == _sha(new)
    assert sink.prefix_sha256 == _sha(old)
    assert sink.chunks[: len(first.chunks) - 1] == first.chunks[:-1]  # the same cuts
    shared = sum(size for _, size in first.chunks[:-1])
    assert sink.written == sum(storage.written.values()) == len(new) - shared
    repeated = _sink(storage)
    repeated.set_resource(DOWNLOAD, new)
    assert repeated.written == 0 and repeated.chunks == sink.chunks


@pytest.mark.parametrize("at", [0, 1, CHUNK - 1, CHUNK, 2 * CHUNK + 17])
def test_the_prefix_hash_is_taken_at_any_byte(tmp_path: Path, at: int) -> None:
    data = _data(3 * CHUNK)
    sink = _sink(CountingStorage(tmp_path / "store"), prefix=(at, "x"))
    sink.set_resource(DOWNLOAD, data)
    assert sink.prefix_sha256 == _sha(data[:at])
    short = _sink(CountingStorage(tmp_path / "store2"), prefix=(len(data) + 1, "x"))
    short.set_resource(DOWNLOAD, data)
    assert short.prefix_sha256 is None  # the content is shorter than the prefix


def test_a_pinned_mismatch_raises_and_nothing_refers_to_the_chunks(
    tmp_path: Path
) -> None:
    data = _data(3 * CHUNK)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    storage = CountingStorage(tmp_path / "store")
    sink = _sink(storage)
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        FileRetriever(sink).retrieve([  # type: ignore[arg-type]
            ResourceDefinition(DOWNLOAD, str(path), sha256="0" * 64)])
    assert sink.chunks == [] and sink.written == 0  # no chunk list to record
    with pytest.raises(ChecksumError, match="md5 mismatch"):
        _sink(storage).set_resource(DOWNLOAD, data, md5="0" * 32)
    ok = _sink(storage)
    info = ok.set_resource(DOWNLOAD, data, sha256=_sha(data),
                           md5=hashlib.md5(data).hexdigest())
    assert info.md5 == hashlib.md5(data).hexdigest() and ok.written == 0  # chunks were there


@pytest.mark.parametrize("range_support", [True, False], ids=["resumed", "restarted"])
def test_an_interrupted_download_stores_each_chunk_once(
    tmp_path: Path, fast: dict[str, Any], range_support: bool
) -> None:
    data = _data(6 * CHUNK + 99)
    storage = CountingStorage(tmp_path / "store")
    sink = _sink(storage)
    behaviour = Behaviour(drop_at=3 * CHUNK + 12345, range_support=range_support)
    with FaultyServer(data, behaviour) as server:
        (info,) = HTTPRetriever(sink, **fast).retrieve_with_info(  # type: ignore[arg-type]
            [ResourceDefinition(DOWNLOAD, server.url(), tracked=True)])
    assert info.sha256 == _sha(data)
    # a restart hashes again from byte 0, and finds the chunks it already stored
    assert sum(storage.written.values()) == len(data)
    with open_raw(storage, _record(sink)) as raw:
        assert raw.read() == data


def test_a_chunked_copy_reads_seeks_and_pickles_as_one_file(tmp_path: Path) -> None:
    data = _data(4 * CHUNK + 10)
    storage = CountingStorage(tmp_path / "store")
    sink = _sink(storage)
    sink.set_resource(DOWNLOAD, data)
    raw = open_raw(storage, _record(sink))
    assert raw.size == len(data) and storage.opened == {}  # lazy: nothing opened yet
    cut = sink.chunks[0][1]
    raw.seek(cut - 5)
    assert raw.read(10) == data[cut - 5:cut + 5]  # across a chunk boundary
    plain = open_raw(FileStorageConnector(tmp_path / "store"), _record(sink))
    plain.seek(CHUNK + 5)
    back = pickle.loads(pickle.dumps(plain))  # reopens in the receiver, at the same place
    assert back.read(3 * CHUNK) == data[CHUNK + 5:4 * CHUNK + 5]
    out = bytearray(20)
    assert raw.read_at([(2 * CHUNK - 10, memoryview(out))]) == 20
    assert bytes(out) == data[2 * CHUNK - 10:2 * CHUNK + 10]
    assert open_raw_tail(storage, _record(sink), 3 * CHUNK + 1).read() == data[3 * CHUNK + 1:]
    empty = ChunkSink(storage, lambda d: f"datasets/d/raw/chunks/{d}")
    empty.set_resource(DOWNLOAD, b"")
    assert empty.chunks == [] and open_raw(storage, _record(empty)).read() == b""


def test_a_missing_or_damaged_chunk_is_named(tmp_path: Path) -> None:
    data = _data(3 * CHUNK)
    storage = CountingStorage(tmp_path / "store")
    sink = _sink(storage)
    sink.set_resource(DOWNLOAD, data)
    middle = f"datasets/d/raw/chunks/{sink.chunks[1][0]}"
    storage.set_resource(middle, b"short")
    with pytest.raises(StorageError, match=f"holds 5 bytes, expected {sink.chunks[1][1]}"):
        open_raw(storage, _record(sink)).read()
    storage.delete_resource(middle)
    with pytest.raises(ResourceNotFoundError, match=r"raw chunk .* is missing"):
        open_raw(storage, _record(sink)).read()


def test_chunks_are_stored_in_order_on_a_thread_with_few_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The chunks are hashed and stored on a thread of their own while the next ones are
    cut: in order, never more than ``IN_FLIGHT`` waiting, and a store's failure raised to
    the caller with nothing recorded (the chunks written are garbage for gc)."""
    import threading

    from datastack.storage import chunked
    from datastack.storage.base import InOrder

    data = random.Random(7).randbytes(3_000_000)
    storage = FileStorageConnector(tmp_path / "store")
    threads: set[str] = set()
    waiting: list[int] = []
    original_submit = InOrder.submit

    def submit(self: Any, fn: Any, *args: Any) -> None:
        original_submit(self, fn, *args)
        if self.name == "datastack-chunks":
            waiting.append(self.pending())

    monkeypatch.setattr(InOrder, "submit", submit)
    original_set = FileStorageConnector.set_resource

    def set_resource(self: Any, identifier: str, payload: Any, **kw: Any) -> Any:
        threads.add(threading.current_thread().name)
        return original_set(self, identifier, payload, **kw)

    monkeypatch.setattr(FileStorageConnector, "set_resource", set_resource)
    sink = ChunkSink(storage, lambda d: f"x/raw/chunks/{d}", chunk_bytes=16_384,
                     block_bytes=65_536)
    assert sink.set_resource("x/raw/a.bin", data).sha256 == hashlib.sha256(data).hexdigest()
    assert len(sink.chunks) > 50 and max(waiting) <= chunked.CHUNKS_WAITING + 1
    assert threads and all(name.startswith("datastack-chunks") for name in threads)
    assert b"".join(storage.get_resource(f"x/raw/chunks/{d}").read()
                    for d, _ in sink.chunks) == data  # in order

    calls = []

    def failing(self: Any, identifier: str, payload: Any, **kw: Any) -> Any:
        calls.append(identifier)
        if len(calls) == 3:
            raise StorageError("disk full")
        return original_set(self, identifier, payload, **kw)

    monkeypatch.setattr(FileStorageConnector, "set_resource", failing)
    before = list(sink.chunks)
    with pytest.raises(StorageError, match="disk full"):
        sink.set_resource("x/raw/b.bin", data[::-1])
    assert sink.chunks == before  # nothing recorded of the failed copy


def test_each_chunk_is_hashed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk's sha256 names it; storing it takes that digest (``hashed=True``) instead of
    hashing its bytes again (~0.9 CPU s per GB of tracked source)."""
    from datastack.storage.base import HashingReader

    hashed: list[int] = []
    original = HashingReader._update

    def update(self: Any, data: bytes) -> None:
        hashed.append(len(data))
        original(self, data)

    monkeypatch.setattr(HashingReader, "_update", update)
    data = random.Random(3).randbytes(300_000)
    storage = FileStorageConnector(tmp_path / "store")
    sink = ChunkSink(storage, lambda d: f"x/raw/chunks/{d}", chunk_bytes=16_384,
                     block_bytes=65_536)
    assert sink.set_resource("x/raw/a.bin", data).sha256 == _sha(data)
    assert len(sink.chunks) > 5 and sum(hashed) == 0
    for digest, _ in sink.chunks:  # each stored under its own digest, bytes intact
        assert _sha(storage.get_resource(f"x/raw/chunks/{digest}").read()) == digest
    storage.set_resource("x/other.bin", data)  # any other store still hashes what it writes
    assert sum(hashed) == len(data)


def test_a_digest_is_taken_only_for_bytes_in_memory(tmp_path: Path) -> None:
    storage = FileStorageConnector(tmp_path / "store")
    (tmp_path / "f.bin").write_bytes(b"abc")
    for bad in ({"data": b"abc"}, {"data": b"abc", "sha256": _sha(b"abc"), "md5": "0" * 32},
                {"data": tmp_path / "f.bin", "sha256": _sha(b"abc")}):
        with pytest.raises(ValueError, match="hashed=True"):
            storage.set_resource("x/a.bin", hashed=True, **bad)  # type: ignore[arg-type]
    assert not storage.has_resource("x/a.bin")
