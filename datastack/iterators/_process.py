"""Per-process state of format iterators: open on first access, never across fork.

A format iterator keeps only its :class:`~datastack.resources.StreamedResource` (a recipe
that reopens itself) and its arguments. Open handles (the stream, an ``h5py.File``, parsed
headers) live in a per-process slot: the first access in a process opens a *private copy* of
the resource, so a forked DataLoader worker never reads through its parent's file offset,
socket or h5py handle. Pickling drops the slot.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import copy
import os
import weakref
from typing import Any, Generic, TypeVar

from datastack.iterators.base import DatasetIterator
from datastack.resources import StreamedResource

State = TypeVar("State")

#: Iterators holding open files in this process: closed at interpreter exit, before modules
#: are torn down. HDF5 closes files still open in its own C exit handler, and for a file on a
#: Python stream that calls back into an interpreter that no longer exists (a segfault seen in
#: spawned DataLoader workers, which exit through a full finalization).
_OPEN: weakref.WeakSet[ProcessLocalIterator[Any]] = weakref.WeakSet()


def _close_all_at_exit() -> None:
    for iterator in list(_OPEN):
        with contextlib.suppress(Exception):  # best effort: nothing is left to report to
            iterator.close()


atexit.register(_close_all_at_exit)


def private_copy(resource: StreamedResource) -> StreamedResource:
    """An unopened copy of ``resource`` that opens its own stream on first use."""
    return copy.copy(resource)


class ProcessLocalIterator(DatasetIterator, Generic[State], abc.ABC):
    """Base of format iterators: ``self._state()`` opens lazily, once per process."""

    _slot: tuple[int, State] | None = None

    @abc.abstractmethod
    def _open(self) -> State:
        """Open the files this iterator reads (called once per process, on first access)."""

    def _close_state(self, state: State) -> None:
        """Release what :meth:`_open` opened in this process (default: nothing)."""

    def _state(self) -> State:
        slot = self._slot
        if slot is not None and slot[0] == os.getpid():
            return slot[1]
        state = self._open()  # an inherited slot (fork) is dropped, never touched
        self._slot = (os.getpid(), state)
        _OPEN.add(self)
        return state

    @property
    def is_open(self) -> bool:
        """Whether this process has opened the iterator's files."""
        return self._slot is not None and self._slot[0] == os.getpid()

    def close(self) -> None:
        slot, self._slot = self._slot, None
        if slot is not None and slot[0] == os.getpid():
            self._close_state(slot[1])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_slot", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
