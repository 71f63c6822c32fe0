"""``HashingReader`` hashes large chunks on a thread of its own while the caller writes them:
the digests are those of the bytes in the order read, whatever the chunk sizes, and a failed
write lets the thread go."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

import pytest

from datastack.errors import ChecksumError
from datastack.storage.base import HashingReader
from datastack.storage.filesystem import FileStorageConnector


def _threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("datastack-hash")]


@pytest.mark.parametrize("sizes", [[1 << 20] * 7, [300_000, 17, 1 << 20, 5, 262_144, 1]])
def test_digests_are_of_the_bytes_in_order(sizes: list[int]) -> None:
    data = os.urandom(8 * 1024 * 1024 + 123)
    reader = HashingReader(io.BytesIO(data), md5=True)
    got = bytearray()
    k = 0
    while chunk := reader.read(sizes[k % len(sizes)]):
        got += chunk
        k += 1
    assert bytes(got) == data and reader.size == len(data)
    assert reader.sha256 == hashlib.sha256(data).hexdigest()
    assert reader.md5 == hashlib.md5(data).hexdigest()
    assert not _threads()  # the digest let the thread go


def test_large_chunks_are_hashed_beside_the_reader() -> None:
    data = os.urandom(4 * HashingReader.THREAD_BYTES)
    reader = HashingReader(io.BytesIO(data))
    reader.read(HashingReader.THREAD_BYTES)
    assert _threads()  # a thread of its own took the chunk
    reader.read()
    assert reader.sha256 == hashlib.sha256(data).hexdigest()
    assert not _threads()


def test_a_store_that_fails_lets_the_thread_go(tmp_path: Path) -> None:
    store = FileStorageConnector(tmp_path)
    data = os.urandom(3 * 1024 * 1024)
    with pytest.raises(ChecksumError):
        store.set_resource("a/b.bin", data, sha256="0" * 64)
    assert not _threads() and not store.has_resource("a/b.bin")
    info = store.set_resource("a/b.bin", data, sha256=hashlib.sha256(data).hexdigest())
    assert info.sha256 == hashlib.sha256(data).hexdigest() and info.size == len(data)
    assert not _threads()
