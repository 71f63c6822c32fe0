"""The local disk cache: verified, atomic, bounded, safe with many processes."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from datastack.errors import ChecksumError, NotCachedError
from datastack.storage.diskcache import CachedOpener, DiskCache

ROOT = Path(__file__).resolve().parents[2]


def _blob(size: int, seed: int = 0) -> tuple[bytes, str]:
    data = hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1)
    data = data[:size]
    return data, hashlib.sha256(data).hexdigest()


def test_fill_then_verified_path(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", max_bytes=1 << 20)
    data, sha = _blob(5000)
    assert cache.path(sha) is None
    path = cache.fill(sha, len(data), lambda: io.BytesIO(data))
    assert path.read_bytes() == data and cache.path(sha) == path
    assert cache.usage() == 5000
    assert os.listdir(tmp_path / "c" / "tmp") == []  # no temporary left


def test_wrong_bytes_are_never_cached(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", max_bytes=1 << 20)
    data, sha = _blob(5000)
    with pytest.raises(ChecksumError, match="expected 5000 bytes with sha256"):
        cache.fill(sha, len(data), lambda: io.BytesIO(data[:-1] + b"x"))
    with pytest.raises(ChecksumError):
        cache.fill(sha, len(data), lambda: io.BytesIO(data[:100]))  # short
    assert cache.path(sha) is None and cache.usage() == 0
    assert os.listdir(tmp_path / "c" / "tmp") == []


def test_flipped_byte_is_detected_deleted_and_refetched(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", max_bytes=1 << 20)
    data, sha = _blob(5000)
    path = cache.fill(sha, len(data), lambda: io.BytesIO(data))
    os.chmod(path, 0o644)
    with open(path, "r+b") as fh:
        fh.seek(1234)
        fh.write(bytes([data[1234] ^ 0xFF]))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the mtime put back
    assert cache.path(sha) is None and not path.exists()  # ctime changed: hashed, refused
    opener = CachedOpener(cache, sha, "x", remote=lambda: io.BytesIO(data))
    assert opener().read() == data  # online: falls back to the storage
    cache.fill(sha, len(data), lambda: io.BytesIO(data))  # and is fetched again
    assert cache.path(sha) is not None
    with pytest.raises(NotCachedError, match="datastack pull"):
        CachedOpener(cache, _blob(10, 1)[1], "other")()  # offline and absent


def test_least_recently_used_copies_are_evicted(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", max_bytes=10_000)
    blobs = [_blob(4000, seed) for seed in range(3)]
    for i, (data, sha) in enumerate(blobs[:2]):
        cache.fill(sha, len(data), lambda data=data: io.BytesIO(data))
        os.utime(cache._stamp(sha), (1000 + i, 1000 + i))  # blob 0 used first
    cache.path(blobs[0][1])  # ... then used again: blob 1 is now the least recent
    data, sha = blobs[2]
    cache.fill(sha, len(data), lambda: io.BytesIO(data))
    assert cache.path(blobs[1][1]) is None
    assert cache.path(blobs[0][1]) is not None and cache.path(sha) is not None
    assert cache.usage() <= 10_000


def test_one_background_fill_per_resource(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", max_bytes=1 << 20)
    data, sha = _blob(5000)
    claim = cache._claim(sha)
    claim.parent.mkdir(parents=True)
    claim.write_text("12345")  # another process is filling it
    assert cache.fill_in_background(sha, len(data), lambda: io.BytesIO(data)) is None
    old = time.time() - 3600
    os.utime(claim, (old, old))  # ... and died long ago: taken over
    thread = cache.fill_in_background(sha, len(data), lambda: io.BytesIO(data))
    assert thread is not None
    thread.join(10)
    assert cache.path(sha) is not None and not claim.exists()


_FILLER = textwrap.dedent(
    """
    import hashlib, os, signal, sys, time
    from pathlib import Path
    from datastack.storage.diskcache import DiskCache

    root, barrier, size, kill_after = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    data = (b"0123456789abcdef" * (size // 16 + 1))[:size]
    sha = hashlib.sha256(data).hexdigest()

    class Source:
        done = 0
        def read(self, n):
            if kill_after and self.done >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            chunk = data[self.done:self.done + min(n, 1 << 20)]
            self.done += len(chunk)
            return chunk
        def close(self):
            pass

    while not barrier.exists():
        time.sleep(0.005)
    path = DiskCache(root, 1 << 30).fill(sha, size, Source)
    print(path)
    """
)


def _fillers(tmp_path: Path, count: int, size: int, kill_after: int) -> list[subprocess.Popen[str]]:
    script = tmp_path / "filler.py"
    script.write_text(_FILLER)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "c"), str(tmp_path / "go"), str(size),
             str(kill_after)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for _ in range(count)
    ]


def test_concurrent_fills_from_several_processes(tmp_path: Path) -> None:
    size = 24 * 1024 * 1024
    procs = _fillers(tmp_path, 4, size, kill_after=0)
    time.sleep(1.0)
    (tmp_path / "go").write_text("")
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    data = (b"0123456789abcdef" * (size // 16 + 1))[:size]
    sha = hashlib.sha256(data).hexdigest()
    cache = DiskCache(tmp_path / "c", 1 << 30)
    assert {Path(o[0].strip()) for o in outs} == {cache._object(sha)}
    assert cache.path(sha) is not None and cache._object(sha).read_bytes() == data
    assert [n for n in os.listdir(tmp_path / "c" / "tmp") if not n.startswith(".claim")] == []


def test_a_fill_killed_midway_leaves_nothing_usable(tmp_path: Path) -> None:
    size = 24 * 1024 * 1024
    (tmp_path / "go").write_text("")
    (proc,) = _fillers(tmp_path, 1, size, kill_after=10 * 1024 * 1024)
    proc.communicate(timeout=120)
    assert proc.returncode == -9
    data = (b"0123456789abcdef" * (size // 16 + 1))[:size]
    sha = hashlib.sha256(data).hexdigest()
    cache = DiskCache(tmp_path / "c", 1 << 30)
    assert cache.path(sha) is None and not cache._object(sha).exists()
    leftovers = os.listdir(tmp_path / "c" / "tmp")
    assert len(leftovers) == 1 and leftovers[0].startswith(".tmp-")  # a temporary, never served
    assert cache.sweep(grace_seconds=0) == 1
    assert cache.fill(sha, size, lambda: io.BytesIO(data)).read_bytes() == data
