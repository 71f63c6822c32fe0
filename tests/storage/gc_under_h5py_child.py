"""Child process of ``test_gc_under_h5py.py``: a collection on a read-ahead thread meets an
unreachable h5py object while the reader holds h5py's lock waiting for that thread.

1. A version is published to GridFS (``argv[1]``); an h5py object is left in a reference
   cycle that only ``HOLDER`` keeps alive.
2. A second reader of the shard asks a read-ahead thread for its first blocks; the patched
   chunk query of that thread waits until h5py's lock is held without a break for 0.3 s
   (the iterator opening the shard, inside ``h5py.File``, waiting for those very blocks).
3. Then it drops the cycle and triggers an automatic collection in its own thread.

Unpaused, the collection waits for h5py's lock to free the h5py object, and the lock's
holder waits for the thread: the child hangs (the test's timeout kills it). Prints
``saw-lock`` and ``ok`` when the scenario happened and the read completed.
"""

from __future__ import annotations

import faulthandler
import gc
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from h5py._objects import phil

import datastack
from datastack.storage.cache import default_cache
from datastack.storage.gridfs import GridFSStorageConnector
from datastack.store import Store
from tests.training.conftest import publish

uri = sys.argv[1]
root = Path(tempfile.mkdtemp())
publish(uri, "digits", root / "v1", 3000, 784, seed=1)
faulthandler.dump_traceback_later(60, exit=True)  # a hang shows every thread, then exits 1
with h5py.File(root / "tiny.h5", "w") as f:
    f["x"] = np.arange(3)
HOLDER: list[Any] = []
claimed = threading.Lock()
saw_lock: list[bool] = []
original = GridFSStorageConnector._find_chunks


def _lock_held_for(seconds: float, patience: float) -> bool:
    """Whether another thread holds h5py's lock for ``seconds`` without a break (waiting at
    most ``patience``)."""
    held_since, deadline = None, time.monotonic() + patience
    while time.monotonic() < deadline:
        if phil.acquire(False):
            phil.release()
            held_since = None
        elif held_since is None:
            held_since = time.monotonic()
        elif time.monotonic() - held_since > seconds:
            return True
        threading.Event().wait(0.002)
    return False


def find_chunks(self: Any, query: dict[str, Any], count: int) -> dict[int, bytes]:
    if threading.current_thread().name.startswith("datastack-readahead") and claimed.acquire(
        blocking=False
    ):
        saw_lock.append(_lock_held_for(0.3, 20.0))
        HOLDER.clear()  # the cycle holding an h5py object is garbage now
        gc.set_threshold(1)
        _ = [[] for _ in range(50)]  # an automatic collection here, if collection is on
    return original(self, query, count)


GridFSStorageConnector._find_chunks = find_chunks  # type: ignore[method-assign]
default_cache().clear()
it = datastack.load("digits", storage=uri)
shard = str(it.entries[0]["identifier"])
other = Store.open(uri).storage.get_resource(shard)
other.prefetch([(0, 4 * 1024 * 1024)], wait=False)  # the read-ahead thread takes these
gc.collect()
gc.set_threshold(10**9)  # no collection until the read-ahead thread's (the cycle stays young)
cycle: list[Any] = [h5py.File(root / "tiny.h5", "r")]
cycle.append(cycle)
HOLDER.append(cycle)
del cycle
first = it[0]  # opens the shard: h5py reads its first blocks, in flight on that thread
assert saw_lock == [True], f"the scenario did not happen: {saw_lock}"
print("saw-lock")
assert np.asarray(first[0]).shape == (784,)
print("ok")
