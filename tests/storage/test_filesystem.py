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
