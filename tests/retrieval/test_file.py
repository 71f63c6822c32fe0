"""FileRetriever: file:// URLs and local paths, verified like downloads."""

from __future__ import annotations

import hashlib
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
