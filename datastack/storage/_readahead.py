"""The read-ahead threads of block readers (one small pool per process)."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

READAHEAD_THREADS = 6
#: Read-ahead windows kept in flight per reader (the server works on the next window while
#: the client decodes the previous one). See docs/performance.md.
READAHEAD_DEPTH = 3

_EXECUTOR_LOCK = threading.Lock()
os.register_at_fork(after_in_child=lambda: globals().update(_EXECUTOR_LOCK=threading.Lock()))
_EXECUTORS: dict[int, ThreadPoolExecutor] = {}


def readahead_executor() -> ThreadPoolExecutor:
    """The process's read-ahead threads (a forked child gets its own on first use)."""
    pid = os.getpid()
    executor = _EXECUTORS.get(pid)
    if executor is None:
        with _EXECUTOR_LOCK:
            executor = _EXECUTORS.get(pid)
            if executor is None:
                _EXECUTORS.clear()  # a parent's executor has no threads in this process
                executor = ThreadPoolExecutor(READAHEAD_THREADS, "datastack-readahead")
                _EXECUTORS[pid] = executor
    return executor
