"""Cyclic garbage collection paused while HDF5 reads a file through a Python stream.

h5py holds one process-wide lock (``phil``) around every HDF5 call, and HDF5 calls back into
the Python stream a remote file is read through (a GridFS shard) while that lock is held.
Deallocating any h5py object takes the same lock. The stream's reads wait for its read-ahead
threads (a window in flight, a fetch another reader started), and those threads use pymongo,
whose own background threads share locks with them. If the cyclic garbage collector runs in
one of these threads and meets an unreachable h5py object (any cycle holding one: an
iterator, a traceback), that thread waits for h5py's lock while the lock's holder waits for
the thread: a deadlock, forever (h5py's docs on file-like objects; h5py#2019, dask#7547).
CI saw it once: a GridFS read stuck in ``BlockReader._collect`` under ``file.get``, and
pymongo's kill-cursors thread stuck on the topology lock.

So every HDF5 call on a file read through a Python stream runs inside :func:`paused`:
automatic collection is off (process-wide, counted across threads), and a collection
already running ends before a call takes h5py's lock. Collection resumes when the last such
call returns; garbage made meanwhile is collected then.
Files HDF5 reads with its own driver (local files) call no Python and are not paused.
Explicit ``gc.collect()`` calls are not stopped (only automatic ones are).
"""

from __future__ import annotations

import functools
import gc
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

#: How long a pause waits for a collection already running in another thread to end: a
#: collection takes milliseconds; it cannot end at all if it waits for h5py's lock held by
#: this very thread (a read nested in another h5py call), so the wait is bounded.
RUNNING_WAIT_SECONDS = 2.0

_lock = threading.Lock()  # held only around int and gc flag changes: nothing allocated, so
# no collection (nor finalizer) can run under it
_calls = 0  # paused calls in progress, all threads
_resume = False  # whether the first of them turned an enabled collector off
_idle = threading.Event()  # no collection running (set and cleared by the gc callback)
_idle.set()


def _track(phase: str, info: dict[str, int]) -> None:
    """gc callback: collections run one at a time, so a flag tells whether one is running."""
    if phase == "start":
        _idle.clear()
    else:
        _idle.set()


gc.callbacks.append(_track)


def _after_fork() -> None:
    global _lock, _calls, _resume, _idle
    if _resume:
        gc.enable()  # the parent's pauses are not this process's
    _lock, _calls, _resume = threading.Lock(), 0, False
    _idle = threading.Event()
    _idle.set()


os.register_at_fork(after_in_child=_after_fork)


class _Paused:
    """The context manager :func:`paused` returns (one object: entering costs ~0.5 us)."""

    __slots__ = ()

    def __enter__(self) -> None:
        global _calls, _resume
        with _lock:
            if _calls == 0:
                _resume = gc.isenabled()
                gc.disable()
            _calls += 1
        if not _idle.is_set():  # one started before gc.disable() ends first
            _idle.wait(RUNNING_WAIT_SECONDS)

    def __exit__(self, *exc: object) -> None:
        global _calls, _resume
        with _lock:
            _calls -= 1
            if _calls == 0 and _resume:
                _resume = False
                gc.enable()


_PAUSED = _Paused()


def paused() -> _Paused:
    """Automatic cyclic garbage collection off for a ``with`` block (see the module
    docstring)."""
    return _PAUSED


def _pausing(method: F, opened: Callable[[Any], bool]) -> F:
    """``method`` run inside :func:`paused` unless ``opened(slot)`` says it needs no pause."""

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        slot = self._slot
        if slot is not None and opened(slot):
            return method(self, *args, **kwargs)
        with _PAUSED:
            return method(self, *args, **kwargs)

    return call  # type: ignore[return-value]


def h5_calls(method: F) -> F:
    """Run ``method`` of a format iterator inside :func:`paused` unless its open state says
    HDF5 reads its file natively (``state.native``; a forked child's first call trusts its
    parent's state: the same file); opening counts as a read."""
    return _pausing(method, lambda slot: slot[1].native)


def h5_opens(method: F) -> F:
    """Like :func:`h5_calls` for a method that calls HDF5 only to open the file (its length,
    its attributes): paused only while this process has not opened it yet."""
    return _pausing(method, lambda slot: slot[1].native or slot[0] == os.getpid())


__all__ = ["RUNNING_WAIT_SECONDS", "h5_calls", "h5_opens", "paused"]
