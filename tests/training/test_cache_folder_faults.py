"""The local cache folder when something else is in it, or it cannot be written (#26.15,
#26.18): only regular files are read (a symlink to /dev/zero or a FIFO must not hang a
load), and an unusable folder costs a warning, not a load; `pull` fails clearly."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from datastack.cli import main
from datastack.errors import NotCachedError, StorageError
from datastack.storage.diskcache import CacheUnusableWarning, DiskCache
from tests.training.conftest import publish

DATA = b"cached bytes " * 1000
SHA = hashlib.sha256(DATA).hexdigest()


def _bounded(fn: Any) -> Any:
    """Run ``fn`` on a thread; fail (instead of hanging the suite) if it does not return."""
    out: list[Any] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # re-raised in the test's thread
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "hung on a file that is not a regular file"
    if failed:
        raise failed[0]
    return out[0]


@pytest.mark.parametrize("kind", ["dev-zero-link", "fifo", "folder", "link-to-copy"])
@pytest.mark.parametrize("where", ["object", "stamp"])
def test_only_regular_files_are_read_from_the_cache(tmp_path: Path, kind: str, where: str) -> None:
    cache = DiskCache(tmp_path / "cache", max_bytes=1 << 20)
    good = cache.fill(SHA, len(DATA), lambda: io.BytesIO(DATA))
    target = good if where == "object" else cache._stamp(SHA)
    keep = tmp_path / "elsewhere"
    os.replace(good, keep) if where == "object" else target.unlink()
    if kind == "dev-zero-link":
        target.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "folder":
        target.mkdir()
    else:
        target.symlink_to(keep)
    if where == "stamp" and kind == "folder":  # a clear error (#26.20), never a hang
        with pytest.raises(StorageError, match="it is a folder"):
            _bounded(lambda: cache.path(SHA))
        return
    found = _bounded(lambda: cache.path(SHA))
    if where == "object":
        assert found is None  # a miss: fetched again from the storage when online
        assert not os.path.lexists(target)  # removed
        assert _bounded(lambda: cache.fill(SHA, len(DATA), lambda: io.BytesIO(DATA))) == good
    else:  # the copy is fine; the stamp is not: the copy is hashed again and re-stamped
        assert found == good
        assert _bounded(lambda: cache.path(SHA)) == good
    with _bounded(lambda: cache.open(SHA)) as fh:
        assert fh.read() == DATA


def test_a_symlink_in_a_pulled_copys_place_does_not_hang_load(
    mongo_uri: str, tmp_path: Path, cache_dir: Path
) -> None:
    import datastack
    from datastack.storage.diskcache import _FILL_THREADS, default_disk_cache

    x = publish(mongo_uri, "digits", tmp_path / "v1", 300, 32, seed=5)
    assert main(["pull", "digits", "--storage", mongo_uri]) == 0
    cache = default_disk_cache()
    assert cache is not None
    (_, _, sha), = cache.entries()
    path = cache._object(sha)
    path.unlink()
    path.symlink_to("/dev/zero")
    it = _bounded(lambda: datastack.load("digits", storage=mongo_uri))  # a miss: GridFS
    assert np.array_equal(_bounded(lambda: it.get_batch(range(300))[0]), x)
    for thread in list(_FILL_THREADS):  # the read-through fill puts a good copy back
        thread.join(30)
    assert cache.path(sha) == path
    os.environ["DATASTACK_OFFLINE"] = "1"
    try:
        path.unlink(missing_ok=True)
        os.mkfifo(path)
        with pytest.raises(NotCachedError, match="not in the local cache"):
            _bounded(lambda: datastack.load("digits", version=1, storage=mongo_uri)[0])
    finally:
        del os.environ["DATASTACK_OFFLINE"]


def test_an_unusable_cache_folder_warns_once_and_loads_from_the_storage(
    mongo_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    import datastack
    from datastack.errors import DatastackError

    x = publish(mongo_uri, "digits", tmp_path / "v1", 300, 32, seed=6)
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"not a folder")  # a cache folder below a file: nothing can be made
    monkeypatch.setenv("DATASTACK_CACHE_DIR", str(blocker / "cache"))  # (works as root too)
    monkeypatch.setenv("DATASTACK_CACHE_DIR_BYTES", "1G")
    monkeypatch.delenv("DATASTACK_OFFLINE", raising=False)
    with pytest.warns(CacheUnusableWarning, match="not usable.*DATASTACK_CACHE_DIR") as seen:
        it = datastack.load("digits", storage=mongo_uri)
        again = datastack.load("digits", storage=mongo_uri)
    assert len([w for w in seen if w.category is CacheUnusableWarning]) == 1  # once
    assert np.array_equal(it.get_batch(range(300))[0], x)
    assert np.array_equal(again.get_batch(range(300))[0], x)

    from datastack.offline import pull
    from datastack.store import Store

    with pytest.raises(DatastackError, match="cannot pull 'digits' version 1 into the local"):
        pull(Store.open(mongo_uri), "digits")
    code = main(["pull", "digits", "--storage", mongo_uri])
    err = capsys.readouterr().err
    assert code != 0 and "cannot pull 'digits'" in err and "Traceback" not in err, err
