"""FileRetriever: file:// URLs and local paths, verified like downloads."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from datastack.errors import ChecksumError, RetrievalError, UnsupportedSchemeError
from datastack.retrieval import FileRetriever, ResourceDefinition, check_changed, retriever_for
from datastack.storage.base import StorageConnector


@pytest.fixture
def source(tmp_path: Path, payload: bytes) -> Path:
    path = tmp_path / "src dir" / "data.bin"
    path.parent.mkdir()
    path.write_bytes(payload)
    return path


@pytest.mark.parametrize("as_uri", [True, False])
def test_file_copy_is_verified(
    store: StorageConnector, source: Path, payload: bytes, as_uri: bool
) -> None:
    url = source.as_uri() if as_uri else str(source)
    definition = ResourceDefinition("x/data.bin", url, md5=hashlib.md5(payload).hexdigest())
    retriever = retriever_for([definition], store)
    assert isinstance(retriever, FileRetriever)
    [info] = retriever.retrieve_with_info([definition])
    assert store.get_resource("x/data.bin").read() == payload
    assert info.size == len(payload) and info.md5 == definition.md5 and info.last_modified


def test_file_checksum_mismatch_stores_nothing(store: StorageConnector, source: Path) -> None:
    definition = ResourceDefinition("x/data.bin", source.as_uri(), sha256="0" * 64)
    with pytest.raises(ChecksumError, match="Nothing was stored") as info:
        FileRetriever(store).retrieve([definition])
    assert source.as_uri() in str(info.value)
    assert not store.has_resource("x/data.bin")


def test_file_errors(store: StorageConnector, tmp_path: Path) -> None:
    missing = ResourceDefinition("x/a", str(tmp_path / "nope.bin"), sha256="0" * 64)
    with pytest.raises(RetrievalError, match=r"nope\.bin"):
        FileRetriever(store).retrieve([missing])
    remote = ResourceDefinition("x/a", "file://fileserver/share/a.bin", sha256="0" * 64)
    with pytest.raises(UnsupportedSchemeError, match="fileserver"):
        FileRetriever(store).retrieve([remote])
    web = ResourceDefinition("x/a", "https://example.org/a", sha256="0" * 64)
    with pytest.raises(UnsupportedSchemeError):
        FileRetriever(store).retrieve([web])


def test_check_changed_for_files(source: Path) -> None:
    first = check_changed(source.as_uri())
    assert first.changed is None and first.last_modified
    assert check_changed(str(source), last_modified=first.last_modified).changed is False
    assert check_changed(str(source), last_modified="Wed, 21 Oct 2015 07:28:00 GMT").changed


def _rewrite(path: Path, data: bytes, mtime_ns: int) -> None:
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))


@pytest.mark.parametrize("delta_ns", [1, 999, 250_000_000], ids=["1ns", "999ns", "250ms"])
def test_a_file_rewritten_within_the_same_second_is_changed(
    store: StorageConnector, tmp_path: Path, delta_ns: int
) -> None:
    """#26.6: the size and the nanosecond mtime are compared, not whole seconds."""
    path = tmp_path / "live.csv"
    second = 1_700_000_000 * 10**9
    _rewrite(path, b"a,b\n1,2\n", second + 100)
    [info] = FileRetriever(store).retrieve_with_info(
        [ResourceDefinition("x/live.csv", str(path), tracked=True)])
    assert info.etag and info.last_modified
    _rewrite(path, b"a,b\n3,4\n", second + 100 + delta_ns)  # same size, same second
    answer = check_changed(str(path), etag=info.etag, last_modified=info.last_modified)
    assert answer.changed is True
    _rewrite(path, b"a,b\n1,2,3\n", second + 100)  # same mtime, other size
    assert check_changed(str(path), etag=info.etag).changed is True


@pytest.mark.parametrize("size", [0, 7, 3 * 1024 * 1024 + 5])
def test_same_size_and_mtime_falls_back_to_the_hash(tmp_path: Path, size: int) -> None:
    """Rewritten with the same size and the very same mtime (os.utime): the recorded sha256
    decides; the same bytes stay unchanged."""
    path = tmp_path / "live.bin"
    old = bytes(range(256)) * (size // 256) + bytes(size % 256)
    stamp = 1_600_000_000 * 10**9 + 123_456_789
    _rewrite(path, old, stamp)
    first = check_changed(path.as_uri())
    digest = hashlib.sha256(old).hexdigest()
    assert check_changed(str(path), etag=first.etag, sha256=digest).changed is False
    if size:
        new = bytes([old[0] ^ 1]) + old[1:]
        _rewrite(path, new, stamp)
        assert check_changed(str(path), etag=first.etag, sha256=digest).changed is True
        # an older record (whole-second Last-Modified, no nanosecond validator) too
        assert check_changed(str(path), last_modified=first.last_modified,
                             sha256=digest).changed is True
