"""One pass over the input (#23.3): a source's bytes are read once, hashed while they are
written to the raw copy, and the raw copy is read once to parse -- counted in bytes.

The counters sit at the edges: the file source opener (``retrieval.file._open_source``), a
counting HTTP server on 127.0.0.1, the storage connector's write and open primitives, and the
opener of the inputs preparation reads (``formats.inputs.open_local`` / ``open_span``).
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import datastack
from datastack.errors import ChecksumError
from datastack.formats import inputs as inputs_module
from datastack.resources import StreamedResource
from datastack.retrieval import FileRetriever, HTTPRetriever, ResourceDefinition
from datastack.retrieval import file as file_module
from datastack.retrieval.folder import folder_sha256
from datastack.storage.base import HashingReader, Verifier
from datastack.storage.filesystem import FileStorageConnector
from datastack.store import Store
from tests.retrieval.servers import Behaviour, FaultyServer

MIB = 1 << 20
#: Reads besides the source's bytes a retrieval may make (a few small files, no full pass).
SLACK = 256 * 1024


def _rchar() -> int | None:
    """Bytes this process has read with read()/pread() so far (Linux), else None. Unlike the
    counters at the edges, this sees any read: of the source, of the stored copy, by path."""
    try:
        text = Path("/proc/self/io").read_text()
    except OSError:
        return None
    return int(next(line.split()[1] for line in text.splitlines() if line.startswith("rchar:")))


def _warm_up(tmp_path: Path) -> None:
    """One small retrieval first, so that lazy imports are not counted as reads."""
    small = tmp_path / "warm.bin"
    small.write_bytes(b"warm")
    FileRetriever(CountingStorage(tmp_path / "warm")).retrieve(
        [ResourceDefinition("w/raw/warm.bin", str(small), sha256=_sha(b"warm"))]
    )


class CountingStorage(FileStorageConnector):
    """Filesystem storage counting the bytes each write takes from its source and the
    resources opened for reading."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, fsync=False)
        self.written: Counter[str] = Counter()
        self.opened: Counter[str] = Counter()

    def _write(self, identifier: str, reader: HashingReader, verify: Verifier) -> None:
        written = self.written

        class Tap:
            def read(self, size: int = -1) -> bytes:
                data = reader.read(size)
                written[identifier] += len(data)
                return data

        super()._write(identifier, Tap(), verify)  # type: ignore[arg-type]

    def _open(self, identifier: str) -> StreamedResource:
        self.opened[identifier] += 1
        return super()._open(identifier)


class CountingStream(io.RawIOBase):
    """A read-only stream adding the bytes read through it to ``counter[key]``."""

    def __init__(self, inner: Any, counter: Counter[str], key: str) -> None:
        super().__init__()
        self._inner, self._counter, self._key = inner, counter, key

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return bool(self._inner.seekable())

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return int(self._inner.seek(offset, whence))

    def tell(self) -> int:
        return int(self._inner.tell())

    def read(self, size: int | None = -1) -> bytes:
        data = self._inner.read(-1 if size is None else size)
        self._counter[self._key] += len(data)
        return bytes(data)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(memoryview(buffer)))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._inner.close()
        super().close()


@pytest.fixture
def source_reads(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Bytes read from each file (or folder) source, by path."""
    counter: Counter[str] = Counter()
    real = file_module._open_source

    def counting(path: str, shown: str) -> Any:
        handle, mtime, etag = real(path, shown)
        return CountingStream(handle, counter, path), mtime, etag

    monkeypatch.setattr(file_module, "_open_source", counting)
    return counter


@pytest.fixture
def parse_reads(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Bytes preparation reads from local files and plain-tar members (in this process)."""
    counter: Counter[str] = Counter()
    real_local, real_span = inputs_module.open_local, inputs_module.open_span
    monkeypatch.setattr(inputs_module, "open_local", lambda path: CountingStream(
        real_local(path), counter, str(path)))
    monkeypatch.setattr(inputs_module, "open_span", lambda archive, span: CountingStream(
        real_span(archive, span), counter, f"{archive}!{span.name}"))
    monkeypatch.setenv("DATASTACK_ISOLATE", "0")  # prepare here, where the counters are
    return counter


def _csv(rows: int, first: int = 0) -> bytes:
    lines = [f"{first + i},{(i * 7) % 10},{'abc'[i % 3]}\n" for i in range(rows)]
    return ("a,b,label\n" + "".join(lines)).encode()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_file_source_is_read_once_and_hashed_while_it_is_copied(
    tmp_path: Path, source_reads: Counter[str]
) -> None:
    data = bytes(range(256)) * (3 * MIB // 256) + b"tail"
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    storage = CountingStorage(tmp_path / "store")
    definition = ResourceDefinition("d/raw/big.bin", str(path), sha256=_sha(data))
    _warm_up(tmp_path)
    before = _rchar()
    (info,) = FileRetriever(storage).retrieve_with_info([definition])
    after = _rchar()
    assert info.sha256 == _sha(data) and info.size == len(data)
    assert source_reads[str(path)] == len(data)  # not 2N: no read just to hash
    if before is not None and after is not None:  # no other full read, by any path
        assert len(data) <= after - before < len(data) + SLACK
    assert storage.written == {"d/raw/big.bin": len(data)}  # not 2N: one copy
    assert storage.opened == {}  # the stored copy is not read back to hash it


def test_a_wrong_checksum_is_found_in_the_same_pass_and_nothing_is_left(
    tmp_path: Path, source_reads: Counter[str]
) -> None:
    data = b"x" * (2 * MIB)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    storage = CountingStorage(tmp_path / "store")
    definition = ResourceDefinition("d/raw/big.bin", str(path), sha256="0" * 64)
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        FileRetriever(storage).retrieve([definition])
    assert source_reads[str(path)] == len(data)
    assert storage.list_resources() == []
    assert [p.name for p in (tmp_path / "store").rglob("*") if p.is_file()] == []


def test_a_folder_source_is_read_once_as_its_tar(
    tmp_path: Path, source_reads: Counter[str]
) -> None:
    folder = tmp_path / "photos"
    sizes = 0
    for i in range(12):
        (folder / f"c{i % 3}").mkdir(parents=True, exist_ok=True)
        blob = bytes([i]) * (100_000 + i)
        (folder / f"c{i % 3}" / f"{i}.bin").write_bytes(blob)
        sizes += len(blob)
    storage = CountingStorage(tmp_path / "store")
    definition = ResourceDefinition("d/raw/photos.tar", str(folder), sha256=folder_sha256(folder))
    (info,) = FileRetriever(storage).retrieve_with_info([definition])
    assert source_reads[str(folder)] == info.size  # the tar stream, once
    assert sizes < info.size < sizes + 64 * 1024  # headers and padding only
    assert storage.written == {"d/raw/photos.tar": info.size}
    assert storage.opened == {}


def test_an_http_source_is_downloaded_once_and_hashed_as_it_streams(
    tmp_path: Path, fast: dict[str, Any]
) -> None:
    data = bytes(range(251)) * (3 * MIB // 251)
    storage = CountingStorage(tmp_path / "store")
    _warm_up(tmp_path)
    with FaultyServer(data) as server:
        definition = ResourceDefinition("d/raw/big.bin", server.url(), sha256=_sha(data))
        HTTPRetriever(storage, **fast).retrieve([  # warm up the HTTP stack too
            ResourceDefinition("w/raw/w.bin", server.url(), sha256=_sha(data))
        ])
        server.requests.clear()
        server.sent = 0
        before = _rchar()
        (info,) = HTTPRetriever(storage, **fast).retrieve_with_info([definition])
        after = _rchar()
        assert [r.method for r in server.requests] == ["GET"]
        if before is not None and after is not None:  # socket receives are not in rchar:
            assert after - before < SLACK  # the stored copy is not read back, by any path
        assert server.sent == len(data)
    assert info.sha256 == _sha(data)
    assert storage.written["d/raw/big.bin"] == len(data)
    assert storage.opened == {}


def test_a_resumed_download_keeps_its_hash_and_fetches_each_byte_once(
    tmp_path: Path, fast: dict[str, Any]
) -> None:
    """The hasher lives across a resume: the kept prefix is neither fetched nor read again."""
    data = bytes(range(253)) * (2 * MIB // 253)
    storage = CountingStorage(tmp_path / "store")
    with FaultyServer(data, Behaviour(drop_at=MIB + 12345)) as server:
        definition = ResourceDefinition("d/raw/big.bin", server.url(), sha256=_sha(data))
        (info,) = HTTPRetriever(storage, **fast).retrieve_with_info([definition])
        assert len(server.range_requests()) == 1
        assert server.sent == len(data)
    assert info.sha256 == _sha(data)
    assert storage.written == {"d/raw/big.bin": len(data)}
    assert storage.opened == {}


def test_a_restarted_download_hashes_the_new_body_from_its_start(
    tmp_path: Path, fast: dict[str, Any]
) -> None:
    """A server that cannot resume sends everything again; the first attempt's bytes are
    dropped with their hasher and nothing of them is kept."""
    data = bytes(range(241)) * (MIB // 241)
    storage = CountingStorage(tmp_path / "store")
    with FaultyServer(data, Behaviour(drop_at=300_000, range_support=False)) as server:
        definition = ResourceDefinition("d/raw/big.bin", server.url(), sha256=_sha(data))
        (info,) = HTTPRetriever(storage, **fast).retrieve_with_info([definition])
        assert server.sent == 300_000 + len(data)
    assert info.sha256 == _sha(data)
    assert storage.written == {"d/raw/big.bin": 300_000 + len(data)}
    with storage.get_resource("d/raw/big.bin") as stored:
        assert stored.read() == data


def test_a_refresh_reads_each_source_once_and_its_raw_copy_once(
    tmp_path: Path, fast: dict[str, Any], source_reads: Counter[str], parse_reads: Counter[str]
) -> None:
    """File, HTTP and folder sources through a whole refresh: each source's bytes are read
    once, written once (hashed on the way), and the stored copy read once to parse; the
    folder's tar is read in place, member by member, not extracted into a copy."""
    local = _csv(60_000)
    remote = _csv(50_000, first=10**6)
    folder = tmp_path / "parts"
    folder.mkdir()
    parts = [_csv(20_000, first=k * 10**5) for k in range(3)]
    for k, part in enumerate(parts):
        (folder / f"part-{k}.csv").write_bytes(part)
    (tmp_path / "local.csv").write_bytes(local)
    base = Store.open(tmp_path / "store")
    storage = CountingStorage(base.storage.root)  # type: ignore[attr-defined]
    store = Store(storage, base.catalog)
    with FaultyServer(remote) as server:
        spec = tmp_path / "spec.yaml"
        spec.write_text(
            "datasets:\n"
            f"  filed: {{format: csv, csv: {{target: label}}, sources: [{{url: "
            f"{(tmp_path / 'local.csv').as_uri()!r}, sha256: {_sha(local)}}}]}}\n"
            f"  served: {{format: csv, csv: {{target: label}}, sources: [{{url: "
            f"{server.url('/remote.csv')!r}, sha256: {_sha(remote)}}}]}}\n"
            f"  folder: {{format: csv, csv: {{target: label}}, sources: [{{url: "
            f"{folder.as_uri()!r}, sha256: {folder_sha256(folder)}}}]}}\n"
        )
        results = datastack.refresh(spec, storage=store, engine="local")
        assert [r.status for r in results] == ["published"] * 3, results
        assert server.sent == len(remote)
    raw = {key: n for key, n in storage.written.items() if "/raw/" in key}
    tar_size = next(n for key, n in raw.items() if key.endswith("parts.tar"))
    assert sorted(raw.values()) == sorted([len(local), len(remote), tar_size])
    assert source_reads == {str(tmp_path / "local.csv"): len(local), str(folder): tar_size}
    by_source = Counter[str]()
    for key, n in parse_reads.items():
        by_source["folder" if "parts.tar!" in key else Path(key).name] += n
    # each raw copy read once to parse: the CSVs whole, the tar's members in place
    assert by_source == {"local.csv": len(local), "remote.csv": len(remote),
                         "folder": sum(map(len, parts))}
    assert len(datastack.load("folder", storage=store)) == 60_000
