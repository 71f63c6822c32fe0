"""HDF5 format iterator: ``h5py.File`` opened on the stream itself, samples read on demand.

The canonical stored form is one HDF5 file per dataset version with one group per split, each
holding ``samples`` (N, ...) and ``targets`` (N, ...) chunked along axis 0. The file is opened
on the :class:`~datastack.resources.StreamedResource` (no copy to disk, no full read) on first
access in the current process; labels are read eagerly (they are small), samples on demand.

A local file is opened with HDF5's own driver on the stream's file descriptor
(``/proc/self/fd/<n>``: the same inode, no Python call per chunk read); any other stream
(GridFS, bytes) goes through h5py's file-object driver.

Batch reads (:meth:`HDF5DatasetIterator.get_batch`) take the cheapest path that keeps the
requested order and duplicates: a sorted contiguous run ``lo..hi-1`` is one ``dset[lo:hi]``
read; sorted unique indices are read one slice per run of adjacent chunks with no reordering;
anything else is sorted and deduped first, then put back in the requested order. When the
stream takes hints (GridFS), the byte ranges of every chunk needed go to ``resource.prefetch``
*before* reading (the chunk index is read once per dataset with ``chunk_iter``), so all missing
blocks come in one round trip; for a local file no ranges are computed. On such a stream a
contiguous run of *unfiltered* rows (the default canonical layout) is then read as plain bytes,
one ``readinto`` per run of chunks adjacent in the file, instead of one h5py call and one
Python read per chunk; compressed data always goes through h5py.

>>> import tempfile, os, numpy as np, h5py
>>> from datastack.resources import StreamedResource
>>> path = os.path.join(tempfile.mkdtemp(), "d.h5")
>>> with h5py.File(path, "w") as f:
...     _ = f.create_dataset("train/samples", data=np.arange(12.0).reshape(6, 2), chunks=(2, 2))
...     _ = f.create_dataset("train/targets", data=np.arange(6) % 2)
>>> it = split_iterators(StreamedResource.from_path("d.h5", path))["train"]
>>> len(it), int(it[-1][1]), it.get_batch([4, 1])[0].tolist()
(6, 1, [[8.0, 9.0], [2.0, 3.0]])
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from datastack.canonical._gcpause import h5_calls, h5_opens, paused
from datastack.canonical._joined_map import ColumnPart
from datastack.canonical._stored import (
    _distinct,
    _read_raw_rows,
    _read_some_rows,
    _stored_array,
    _StoredArray,
)
from datastack.errors import FormatError, SplitNotFoundError
from datastack.iterators._process import ProcessLocalIterator, private_copy
from datastack.iterators.base import Batch, Indices, Sample
from datastack.resources import StreamedResource

#: h5py's raw chunk cache per dataset (decompressed chunks); a few chunks of ~64 KiB-1 MiB.
RDCC_NBYTES = 4 * 1024 * 1024
def _local_fd_path(resource: StreamedResource) -> str | None:
    """A path naming the very file the resource's stream has open, when it is a local file.

    ``/proc/self/fd/<n>`` reopens the same inode even if the path it came from was replaced
    since (a new version published over it), so reading through it is as safe as reading the
    stream. ``None`` for anything but a regular local file on Linux (GridFS, bytes, pipes).
    """
    stream = resource.stream
    if not isinstance(stream, (io.BufferedReader, io.FileIO)):
        return None
    try:
        fd = stream.fileno()
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except (OSError, ValueError):
        return None
    path = f"/proc/self/fd/{fd}"
    return path if regular and os.path.exists(path) else None


def _h5_file(h5py: Any, resource: StreamedResource) -> Any:
    """``h5py.File`` over ``resource``: HDF5's native driver on a local file (no Python call
    per chunk read, ~1.6x faster passes), h5py's file-object driver otherwise."""
    local = _local_fd_path(resource)
    if local is not None:
        try:
            # Default locking: HDF5 shares one handle per inode in a process and refuses a
            # second open with other locking flags, so a user's plain h5py.File must match.
            return h5py.File(local, "r", rdcc_nbytes=RDCC_NBYTES)
        except OSError:
            pass  # locked by a writer, a procfs quirk...: the file-object driver still reads
    return h5py.File(resource, "r", rdcc_nbytes=RDCC_NBYTES)


@contextlib.contextmanager
def read_h5(resource: StreamedResource) -> Iterator[Any]:
    """An ``h5py.File`` over ``resource`` for a ``with`` block (:func:`_h5_file`: HDF5's own
    driver on a local file), with automatic garbage collection paused while HDF5 reads it
    through a Python stream (:mod:`~datastack.canonical._gcpause`); the stream stays open."""
    import h5py

    with paused():  # opening reads through the stream
        file = _h5_file(h5py, resource)
    try:
        if file.driver == "fileobj":
            with paused():
                yield file
        else:
            yield file
    finally:
        with paused():
            file.close()


@dataclass
class _OpenFile:
    resource: StreamedResource
    file: Any
    samples: _StoredArray
    targets: _StoredArray | None
    target_values: NDArray[Any] | None
    length: int
    attrs: dict[str, Any] = field(default_factory=dict)
    #: Whether the stream can take byte-range hints (GridFS block reader); a local file cannot,
    #: so batches skip computing chunk byte ranges for it.
    can_prefetch: bool = False
    #: Whether HDF5 reads the file with its own driver (no Python stream: nothing to pause).
    native: bool = False


class HDF5DatasetIterator(ProcessLocalIterator[_OpenFile]):
    """Samples ``(sample, target)`` of one group of an HDF5 file read lazily from a stream.

    Parameters
    ----------
    resource:
        The file as a stream. Nothing is read at construction; each process opens its own
        copy on first access, so the iterator can be pickled and sent to DataLoader workers.
    group:
        The group holding the arrays (``"/train"``, ``"train"``, or ``"/"``).
    samples, targets:
        Names of the datasets in the group. Without a ``targets`` dataset, samples are
        1-tuples ``(sample,)``.
    eager_targets:
        Read every target once on open (small) instead of on demand.
    """

    def __init__(
        self,
        resource: StreamedResource,
        group: str = "/",
        samples: str = "samples",
        targets: str = "targets",
        eager_targets: bool = True,
    ) -> None:
        self.resource = resource
        self.group = group
        self.samples_name = samples
        self.targets_name = targets
        self.eager_targets = eager_targets

    # -- opening ----------------------------------------------------------------------------
    def _where(self, name: str = "") -> str:
        path = "/" + "/".join(p for p in (self.group.strip("/"), name) if p)
        return f"{self.resource.identifier}:{path}"

    def _open(self) -> _OpenFile:
        import h5py

        resource = private_copy(self.resource)
        try:
            file = _h5_file(h5py, resource)
        except OSError as exc:
            resource.close()
            raise FormatError(
                f"{self.resource.identifier} is not a readable HDF5 file ({exc})"
            ) from None
        try:
            return self._read_layout(resource, file)
        except BaseException:
            file.close()
            resource.close()
            raise

    def _read_layout(self, resource: StreamedResource, file: Any) -> _OpenFile:
        import h5py

        group = file[self.group] if self.group.strip("/") in file or self.group == "/" else None
        if not isinstance(group, h5py.Group):
            available = sorted(k for k in file if isinstance(file[k], h5py.Group))
            raise SplitNotFoundError(
                f"{self.resource.identifier} has no split group {self.group!r}; available: "
                f"{', '.join(available) or 'none'}"
            )
        if self.samples_name not in group:
            raise FormatError(
                f"{self._where()} has no dataset {self.samples_name!r} (found: "
                f"{', '.join(sorted(group)) or 'nothing'})"
            )
        samples = _stored_array(group[self.samples_name], self._where(self.samples_name))
        length = int(samples.dset.shape[0])
        targets = values = None
        if self.targets_name in group:
            targets = _stored_array(group[self.targets_name], self._where(self.targets_name))
            if targets.dset.shape[0] != length:
                raise FormatError(
                    f"{self._where()}: {length} samples but {targets.dset.shape[0]} targets; "
                    "the file is inconsistent, re-run the preprocessing"
                )
            if self.eager_targets:
                values = targets.dset[()]
        attrs = {k: _plain(v) for k, v in file.attrs.items()}
        can_prefetch = callable(getattr(resource.stream, "prefetch", None))
        return _OpenFile(resource, file, samples, targets, values, length, attrs, can_prefetch,
                         native=file.driver != "fileobj")

    def _close_state(self, state: _OpenFile) -> None:
        try:
            state.file.close()
        finally:
            state.resource.close()

    # -- reads ------------------------------------------------------------------------------
    @h5_opens
    def __len__(self) -> int:
        return self._state().length

    @h5_calls
    def _get(self, index: int) -> Sample:
        state = self._state()
        sample = _gather(state, state.samples, index)
        if sample is None:
            sample = _remote_row(state, state.samples, index)
        if state.targets is None:
            return (sample,)
        if state.target_values is not None:
            return (sample, state.target_values[index])
        target = _gather(state, state.targets, index)
        return (sample, state.targets.dset[index] if target is None else target)

    @h5_calls
    def _get_batch(self, indices: Indices) -> Batch:
        state = self._state()
        samples = _gather(state, state.samples, indices)
        if samples is not None:  # a local raw file: any batch is one gather per column
            if state.targets is None:
                return (samples,)
            if state.target_values is not None:
                return (samples, state.target_values[indices])
            targets = _gather(state, state.targets, indices)
            if targets is not None:
                return (samples, targets)
        n = len(indices)
        steps = np.diff(indices)
        if n == 1 or bool((steps > 0).all()):  # sorted, unique: no inverse permutation
            lo, hi = int(indices[0]), int(indices[-1]) + 1
            if hi - lo == n:  # a contiguous run: one slice per column
                return self._read_run(state, lo, hi)
            return self._read_rows(state, indices, None)
        uniq, inverse = np.unique(indices, return_inverse=True)
        return self._read_rows(state, uniq, inverse, indices)

    def _lazy_columns(self, state: _OpenFile) -> list[_StoredArray]:
        if state.targets is not None and state.target_values is None:
            return [state.samples, state.targets]
        return [state.samples]

    def _prefetch(self, state: _OpenFile, groups_of: Any) -> None:
        """Hand the byte ranges of the row groups each column needs to the stream."""
        ranges: list[tuple[int, int]] = []
        for column in self._lazy_columns(state):
            ranges.extend(column.ranges_for(groups_of(column)))
        if ranges:
            state.resource.prefetch(sorted(ranges))

    def _read_run(self, state: _OpenFile, lo: int, hi: int) -> Batch:
        """Rows ``lo..hi-1``: one slice read per column (the sequential fast path)."""
        if state.can_prefetch:
            self._prefetch(state, lambda column: column.groups_between(lo, hi))
            samples = _read_raw_rows(state.resource, state.samples, lo, hi)
        else:  # a local file: HDF5's own driver is as fast as it gets
            samples = state.samples.dset[lo:hi]
        if state.targets is None:
            return (samples,)
        if state.target_values is not None:
            return (samples, state.target_values[lo:hi].copy())
        return (samples, state.targets.dset[lo:hi])

    def _read_rows(
        self,
        state: _OpenFile,
        uniq: Indices,
        inverse: Indices | None,
        indices: Indices | None = None,
    ) -> Batch:
        """Rows ``uniq`` (sorted, unique), then ``[inverse]`` to restore the requested order.

        Raw columns fetch their missing blocks in the gather itself; the others (through
        h5py, one small read at a time) get them prefetched in one fetch first."""
        if state.can_prefetch and not all(c.all_raw() for c in self._lazy_columns(state)):
            self._prefetch(state, lambda column: _distinct(uniq // column.rows_per_group))
        samples = _read_some_rows(state.resource, state.samples, uniq)
        if inverse is not None:
            samples = samples[inverse]
        if state.targets is None:
            return (samples,)
        if state.target_values is not None:
            return (samples, state.target_values[uniq if indices is None else indices])
        targets = _read_some_rows(state.resource, state.targets, uniq)
        return (samples, targets if inverse is None else targets[inverse])

    @h5_opens
    def prefetch_start(self, rows: int) -> None:
        """Fetch the blocks of the first ``rows`` rows in the background, as the read-ahead
        of a sequential pass coming in from the shard before (:mod:`~datastack.canonical.
        sharded`); nothing for a local file."""
        state = self._state()
        rows = min(rows, state.length)
        if not state.can_prefetch or rows <= 0:
            return
        ranges = [r for column in self._lazy_columns(state)
                  for r in column.ranges_for(column.groups_between(0, rows))]
        state.resource.prefetch(sorted(ranges), wait=False, ahead=True)

    @h5_opens
    def joined_parts(self) -> tuple[int, list[ColumnPart]] | None:
        """The descriptor of the local file and each column (raw rows, or the labels read
        eagerly), to map the shards of a split side by side
        (:mod:`datastack.canonical._joined_map`); None for anything else (a remote stream,
        compressed data)."""
        state = self._state()
        if state.can_prefetch or _local_fd_path(state.resource) is None:
            return None
        columns: list[ColumnPart | None] = [state.samples.raw_rows()]
        if state.targets is not None:
            eager = state.target_values
            columns.append(state.targets.raw_rows() if eager is None else eager)
        found = [c for c in columns if c is not None]
        if len(found) != len(columns):
            return None
        return int(state.resource.stream.fileno()), found

    @h5_calls
    def _get_targets(self, target_pos: int) -> NDArray[Any]:
        state = self._state()
        if target_pos == 1 and state.targets is not None:
            if state.target_values is not None:
                return state.target_values
            return np.asarray(state.targets.dset[()])
        return super()._get_targets(target_pos)

    # -- metadata ---------------------------------------------------------------------------
    @property
    @h5_opens
    def attrs(self) -> dict[str, Any]:
        """The file's root attributes (name, schema...) as plain Python values."""
        return dict(self._state().attrs)

    @property
    @h5_opens
    def dataset_name(self) -> str:
        """The dataset name stored in the file (attribute ``name``), or ``""``."""
        return str(self._state().attrs.get("name", ""))

    @property
    def split(self) -> str:
        """The split group this iterator reads."""
        return self.group.strip("/")

    @property
    @h5_opens
    def fields(self) -> dict[str, Any]:
        """The canonical file's fields (its schema names them), else described from sample 0."""
        from datastack.fields import schema_fields

        state = self._state()
        found = schema_fields(state.attrs.get("schema"), 1 if state.targets is None else 2)
        return found if found is not None else super().fields

    def __repr__(self) -> str:
        return f"<HDF5DatasetIterator {self._where()}>"

    @h5_calls
    def storage_blocks(self) -> Any:
        """The storage block of each sample when the file is read in remote blocks (GridFS),
        so that a sampler reads each block about once per epoch; None for a local file."""
        from datastack.iterators.blocks import hdf5_storage_blocks

        state = self._state()
        return hdf5_storage_blocks(state.resource, state.file[self.group][self.samples_name])


def _gather(state: _OpenFile, column: _StoredArray, rows: Any) -> Any:
    """Rows of ``column`` copied from a memory map of a local raw file, else None."""
    if state.can_prefetch:
        return None
    found = column.gather(state.resource, rows)
    if found is None or isinstance(rows, np.ndarray):
        return found  # fancy indexing copies already
    return np.array(found)[()]  # one row: a copy, not a view of the map


def _remote_row(state: _OpenFile, column: _StoredArray, index: int) -> Any:
    """Row ``index``: its bytes straight from a remote stream when stored raw (one block
    fetch, no HDF5 chunk read through Python), else through h5py."""
    offset = column.row_offset(index) if state.can_prefetch else None
    if offset is None:
        return column.dset[index]
    out = np.empty(column.dset.shape[1:], dtype=column.dset.dtype)
    if state.resource.read_at([(offset, out.data.cast("B"))]) != column.row_bytes:
        return column.dset[index]  # past the end of the stream: h5py says what is wrong
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def split_iterators(
    resource: StreamedResource, samples: str = "samples", targets: str = "targets"
) -> dict[str, HDF5DatasetIterator]:
    """One :class:`HDF5DatasetIterator` per split group of a canonical file.

    Opens the file once to list its groups (those holding a ``samples`` dataset); each
    iterator gets its own copy of the resource and opens it lazily.
    """
    import h5py

    probe = private_copy(resource)
    try:
        with read_h5(probe) as file:
            names = sorted(
                k for k in file if isinstance(file[k], h5py.Group) and samples in file[k]
            )
    except OSError as exc:
        raise FormatError(f"{resource.identifier} is not a readable HDF5 file ({exc})") from None
    finally:
        probe.close()
    return {
        name: HDF5DatasetIterator(resource, group=name, samples=samples, targets=targets)
        for name in names
    }
