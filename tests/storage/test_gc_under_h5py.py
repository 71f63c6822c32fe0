"""Cyclic garbage collection is paused while HDF5 reads through a Python stream
(:mod:`datastack.canonical._gcpause`): a collection on a read-ahead thread that meets an
unreachable h5py object would otherwise wait for h5py's lock while its holder waits for that
thread (a hang seen once in CI, reading an image folder's version from GridFS)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from datastack.canonical import _gcpause
from datastack.canonical._gcpause import paused

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.mongo
def test_a_collection_on_a_read_ahead_thread_does_not_hang_a_gridfs_read(mongo_uri: str) -> None:
    """The child holds h5py's lock opening a GridFS shard, waiting for blocks a read-ahead
    thread is fetching; that thread triggers a collection that meets an h5py object. Without
    the pause the child hangs (its faulthandler dumps the threads and exits 1)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DATASTACK_CACHE_DIR_BYTES": "0"}
    child = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("gc_under_h5py_child.py")), mongo_uri],
        capture_output=True, text=True, timeout=240, env=env, cwd=ROOT,
    )
    assert child.returncode == 0, child.stderr[-4000:]
    assert child.stdout.split() == ["saw-lock", "ok"]


def test_paused_turns_automatic_collection_off_across_threads_and_back_on() -> None:
    assert gc.isenabled()
    inside, release = threading.Event(), threading.Event()

    def other() -> None:
        with paused():
            inside.set()
            release.wait(30)

    thread = threading.Thread(target=other)
    thread.start()
    assert inside.wait(30)
    assert not gc.isenabled()
    with paused():
        assert not gc.isenabled()
    assert not gc.isenabled()  # the other thread's pause still holds
    release.set()
    thread.join(30)
    assert gc.isenabled()


def test_a_collector_turned_off_by_the_user_stays_off() -> None:
    gc.disable()
    try:
        with paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_pause_waits_for_a_collection_already_running() -> None:
    """A collection that started before the pause (the gc callback cleared ``_idle``) ends
    before the paused call goes on."""
    gc.collect()  # the callback saw a whole collection: idle again
    assert _gcpause._idle.is_set()
    order: list[str] = []
    _gcpause._track("start", {})  # as a collection starting on another thread would
    timer = threading.Timer(0.3, lambda: (order.append("collection ended"),
                                          _gcpause._track("stop", {})))
    timer.start()
    with paused():
        order.append("paused call")
    timer.join()
    assert order == ["collection ended", "paused call"]


def _records_iterator(tmp_path: Path) -> Any:
    import datastack
    from tests.training.conftest import publish

    publish(str(tmp_path / "store"), "digits", tmp_path / "v1", 50, 8, seed=1)
    return datastack.load("digits", storage=str(tmp_path / "store"))


def test_local_files_read_natively_are_not_paused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HDF5 reads a local shard with its own driver (no Python calls): after the open, reads
    skip the pause and its lock. (The GridFS case, paused, is the child's above.)"""
    it = _records_iterator(tmp_path)
    first = it[0]
    calls: list[int] = []
    real = _gcpause._PAUSED

    class Counting:
        def __enter__(self) -> None:
            calls.append(1)
            real.__enter__()

        def __exit__(self, *exc: object) -> None:
            real.__exit__(*exc)

    monkeypatch.setattr(_gcpause, "_PAUSED", Counting())
    assert np.array_equal(np.asarray(it[1][0]).shape, np.asarray(first[0]).shape)
    it.get_batch(np.arange(10))
    assert calls == []


def test_read_h5_pauses_for_a_stream_and_not_for_a_local_file(tmp_path: Path) -> None:
    """The refresh's own reads of earlier versions (``canonical.hdf5.read_h5``): a file read
    through a Python stream is read with automatic collection off; a local file is opened
    with HDF5's own driver and read with it on; either way the stream stays open."""
    import h5py

    from datastack.canonical.hdf5 import read_h5
    from datastack.resources import StreamedResource

    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(5)
    assert gc.isenabled()
    for resource, native in (
        (StreamedResource.from_bytes("x/f.h5", path.read_bytes()), False),
        (StreamedResource.from_path("x/f.h5", path), True),
    ):
        with read_h5(resource) as f:
            assert list(f["x"][()]) == [0, 1, 2, 3, 4]
            assert (f.driver != "fileobj") is native
            assert gc.isenabled() is native
        resource.seek(0)  # still open
        assert gc.isenabled() and resource.read(8) == b"\x89HDF\r\n\x1a\n"
        resource.close()
