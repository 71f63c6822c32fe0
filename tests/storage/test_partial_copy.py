"""The shared partial copy of a read-through fill (storage/_partial.py): only blocks of their
exact length are written or served, and a failed fill leaves no descriptor open."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from datastack.storage._partial import (
    BlockSource,
    PartialCopy,
    SharedCopyFetch,
    copy_blocks,
    share,
    unshare,
)

DATA = bytes(range(256)) * 10  # 2560 bytes: blocks of 1024, 1024, 512


def _open_fds(folder: Path) -> int:
    """Descriptors of this process open on files of ``folder`` (a process-wide count moves
    with other tests' server threads)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        count += target.startswith(str(folder.resolve()) + os.sep)
    return count


def test_a_short_block_is_neither_written_nor_served(tmp_path: Path) -> None:
    path = tmp_path / "copy"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    rfd = os.open(path, os.O_RDONLY)
    os.ftruncate(fd, len(DATA))
    copy = PartialCopy(fd, rfd, len(DATA), 1024)
    good = copy.put({0: DATA[:1024], 1: DATA[1024:2000], 2: DATA[2048:]})
    assert sorted(good) == [0, 2]  # block 1 is 976 bytes: dropped
    assert copy.missing([0, 1, 2]) == [1]
    assert copy.take([0, 1, 2]) == {0: DATA[:1024], 2: DATA[2048:]}  # never zero-padded
    copy.close()
    assert copy.take([0]) == {}


def test_shared_fetch_returns_only_blocks_of_their_length(tmp_path: Path) -> None:
    path = tmp_path / "copy"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    rfd = os.open(path, os.O_RDONLY)
    os.ftruncate(fd, len(DATA))
    copy = PartialCopy(fd, rfd, len(DATA), 1024)
    key = ("test", str(path))
    share(key, copy)
    try:
        fetch = SharedCopyFetch(key, lambda ns: {n: DATA[n * 1024 : n * 1024 + 100] if n == 1
                                                 else DATA[n * 1024 : (n + 1) * 1024]
                                                 for n in ns})
        assert sorted(fetch([0, 1, 2])) == [0, 2]
        assert fetch([0]) == {0: DATA[:1024]}  # from the copy now
    finally:
        unshare(key, copy)
        copy.close()


def test_a_failed_fill_closes_its_descriptors(tmp_path: Path) -> None:
    before = _open_fds(tmp_path)
    for k in range(3):
        path = tmp_path / f"fill{k}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT)

        def broken(numbers: object) -> dict[int, bytes]:
            raise OSError("connection lost")

        source = BlockSource(("fill", k), len(DATA), 1024, broken)
        with pytest.raises(OSError):
            copy_blocks(fd, str(path), source, hashlib.sha256(DATA).hexdigest(), None,
                        lambda: None)
    assert _open_fds(tmp_path) == before == 0
