"""Filesystem-specific behaviour: containment, temporaries, crashes around the rename."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from datastack.errors import InvalidIdentifierError, StorageError
from datastack.storage import connect
from datastack.storage.filesystem import FileStorageConnector, is_temporary_name


def test_connect_path_and_file_uri(tmp_path: Path) -> None:
    by_path = connect(str(tmp_path / "a"))
    by_uri = connect((tmp_path / "a").as_uri())
    assert isinstance(by_path, FileStorageConnector) and by_path == by_uri
    by_path.set_resource("x/y", b"1")
    assert by_uri.get_resource("x/y").read() == b"1"
    assert by_uri.uri == (tmp_path / "a" / "resources").as_uri()


def test_construction_touches_nothing(tmp_path: Path) -> None:
    store = FileStorageConnector(tmp_path / "later")
    assert store.list_resources() == [] and not store.has_resource("a")
    assert not (tmp_path / "later").exists()


def test_symlink_out_of_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    root = tmp_path / "store"
    root.mkdir()
    (root / "link").symlink_to(outside)
    store = FileStorageConnector(root)
    with pytest.raises(InvalidIdentifierError, match="outside the storage root"):
        store.get_resource("link/secret")
    with pytest.raises(InvalidIdentifierError):
        store.set_resource("link/new", b"x")
    assert not (outside / "new").exists()
    assert store.list_resources() == []


def test_parent_is_a_file(tmp_path: Path) -> None:
    store = FileStorageConnector(tmp_path)
    store.set_resource("a", b"file")
    with pytest.raises(StorageError, match="'a/b'"):
        store.set_resource("a/b", b"x")
    store.set_resource("d/e", b"x")
    with pytest.raises(StorageError, match="folder"):
        store.set_resource("d", b"x")
    assert [n for n in os.listdir(tmp_path / "d")] == ["e"]


def test_delete_prunes_empty_folders(tmp_path: Path) -> None:
    store = FileStorageConnector(tmp_path / "s")
    store.set_resource("a/b/c", b"x")
    store.set_resource("a/d", b"x")
    store.delete_resource("a/b/c")
    assert not (tmp_path / "s" / "a" / "b").exists() and (tmp_path / "s" / "a").is_dir()


def test_sweep_temporary(tmp_path: Path) -> None:
    store = FileStorageConnector(tmp_path)
    store.set_resource("a/data", b"keep")
    stale, fresh = tmp_path / "a" / ".tmp-old.", tmp_path / "a" / ".tmp-new."
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    (tmp_path / "a" / ".tmp-lookalike").write_bytes(b"z")  # no trailing dot: a user's file
    assert store.sweep(3600) == {"temporary_files": 1}
    assert not stale.exists() and fresh.exists()
    assert store.list_resources() == ["a/.tmp-lookalike", "a/data"]


def test_written_file_permissions_follow_umask(tmp_path: Path) -> None:
    store = FileStorageConnector(tmp_path, fsync=False)
    store.set_resource("p", b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "p").stat().st_mode & 0o777 == 0o666 & ~umask


_CRASHER = textwrap.dedent(
    """
    import io, os, signal, sys
    from datastack.storage.filesystem import FileStorageConnector

    class Dying(io.RawIOBase):
        sent = 0
        def readable(self):
            return True
        def readinto(self, buf):
            if self.sent > 3_000_000:
                os.kill(os.getpid(), signal.SIGKILL)
            buf[: len(buf)] = b"n" * len(buf)
            self.sent += len(buf)
            return len(buf)

    FileStorageConnector(sys.argv[1]).set_resource("v/data", Dying())
    """
)


def test_sigkill_mid_write_keeps_old_version(tmp_path: Path) -> None:
    store = FileStorageConnector(tmp_path)
    store.set_resource("v/data", b"old")
    proc = subprocess.run([sys.executable, "-c", _CRASHER, str(tmp_path)], timeout=60)
    assert proc.returncode == -9
    assert store.get_resource("v/data").read() == b"old"
    temps = [n for n in os.listdir(tmp_path / "v") if is_temporary_name(n)]
    assert len(temps) == 1 and store.list_resources() == ["v/data"]
    assert store.sweep(0) == {"temporary_files": 1}
    assert os.listdir(tmp_path / "v") == ["data"]


@pytest.mark.parametrize("fsync", [True, False])
def test_a_large_write_hands_its_data_to_the_disk_as_it_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsync: bool,
) -> None:
    """A durable store starts the disk writing each 8 MiB as it is written
    (``sync_file_range``), so the closing fsync waits for the last MiB only; the ranges
    follow each other from the start; a store without fsync asks for nothing."""
    import itertools

    from datastack import _fs

    calls: list[tuple[int, int, int]] = []

    def record(fd: int, offset: int, size: int, flags: int) -> int:
        assert os.fstat(fd).st_size >= offset + size  # flushed before it is asked
        calls.append((offset, size, flags))
        return 0

    monkeypatch.setattr(_fs, "_sync_file_range", lambda: record)
    data = os.urandom(1024 * 1024) * 20  # 20 MiB
    store = FileStorageConnector(tmp_path, fsync=fsync)
    store.set_resource("big/data.bin", data)
    with store.get_resource("big/data.bin") as res:
        assert res.read() == data
    if not fsync:
        assert calls == []
        return
    assert [c[0] for c in calls] == [0, *itertools.accumulate(c[1] for c in calls)][:-1]
    assert all(c[1] >= _fs.WRITEBACK_STEP and c[2] == 2 for c in calls)
    assert len(calls) == 2  # 16 of the 20 MiB handed over early, the rest by the fsync


def test_the_real_sync_file_range_takes_the_calls(tmp_path: Path) -> None:
    """Where the C library has it (Linux), it accepts the calls the store makes."""
    from datastack import _fs

    call = _fs._sync_file_range()
    if call is None:
        pytest.skip("no sync_file_range here")
    with open(tmp_path / "f", "wb") as out:
        out.write(b"x" * 4096)
        out.flush()
        assert call(out.fileno(), 0, 4096, 2) == 0
    assert os.path.getsize(tmp_path / "f") == 4096


def test_a_file_on_the_same_filesystem_is_moved_in_not_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A prepared shard next to the store becomes the stored file itself (same inode: no
    copy, no second hash), flushed to disk before the rename makes it visible; from another
    filesystem (EXDEV) it is copied, verified against its digest, and removed."""
    import errno
    import hashlib

    from datastack.errors import ChecksumError

    data = os.urandom(100_000)
    digest = hashlib.sha256(data).hexdigest()
    store = FileStorageConnector(tmp_path / "store")
    shard = tmp_path / "shard.h5"
    shard.write_bytes(data)
    inode = shard.stat().st_ino
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    store.adopt_file("d/shards/a.h5", shard, sha256=digest)
    assert not shard.exists() and synced  # the file, then its folder
    assert (tmp_path / "store" / "d" / "shards" / "a.h5").stat().st_ino == inode

    real_replace = os.replace

    def other_filesystem(src: str, dst: str) -> None:
        if str(src).endswith("shard.h5"):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", other_filesystem)
    shard.write_bytes(data)
    store.adopt_file("d/shards/b.h5", shard, sha256=digest)
    assert not shard.exists()
    assert (tmp_path / "store" / "d" / "shards" / "b.h5").read_bytes() == data
    shard.write_bytes(data)
    with pytest.raises(ChecksumError):  # copied, so verified
        store.adopt_file("d/shards/c.h5", shard, sha256="0" * 64)
    assert not store.has_resource("d/shards/c.h5")
