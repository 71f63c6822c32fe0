"""One split of a sharded version read as one dataset (``docs/living.md``).

:class:`ShardedSplit` is a :class:`~datastack.iterators.views.CombinedDatasetIterator` over
the split's shards, in the manifest's order: its length comes from the manifest (no shard is
opened to count), a shard is opened on first access (its stream through
:func:`datastack.offline.open_published`: the verified local copy, else the storage with a
read-through fill of that shard), and each shard is read by the reader of its layout with
its fast paths (memory-map gathers of local files, block reads over GridFS). A batch is
grouped by shard, or, when every shard is a local file of raw columns, gathered at once from
all the shards' files mapped side by side (:mod:`datastack.canonical._joined_map`); a
sequential pass near a shard's end has the next shard read ahead. The block-aware sampler sees
the shards' storage blocks one after another.
Its fields are the version's (the record's schema holds the category names; a shard holds
data only).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from datastack.iterators.views import CombinedDatasetIterator

if TYPE_CHECKING:  # pragma: no cover
    from datastack.canonical._joined_map import JoinedSplit
    from datastack.fields import Field
    from datastack.iterators.base import DatasetIterator
    from datastack.offline import ReadDecision
    from datastack.store import Store


#: Shard readers a split keeps open at once (each holds a file or a storage stream).
MAX_OPEN_SHARDS = 64
#: A sequential pass this many bytes from a shard's end starts reading the next one (what a
#: GridFS stream's read-ahead keeps in flight: 3 windows of 8 MiB), and asks for this many.
AHEAD_BYTES = 24 * 1024 * 1024
START_BYTES = 8 * 1024 * 1024


class ShardedSplit(CombinedDatasetIterator):
    """The samples of split ``split`` of a sharded version (see module docstring).

    Parameters
    ----------
    store, read:
        Where the shards are and how they are read (a :class:`~datastack.offline.ReadDecision`).
    split:
        The split's name.
    entries:
        The split's shard entries of the record, in order (``identifier``, ``rows``...).
    fields:
        The version's fields (from its record), or ``None`` to take the first shard's.
    layout:
        1 (samples/targets) or 2 (named fields).
    """

    keeps_fields = True

    def __init__(
        self,
        store: Store,
        read: ReadDecision,
        split: str,
        entries: Sequence[Mapping[str, Any]],
        fields: dict[str, Field] | None,
        layout: int,
    ) -> None:
        self.store = store
        self.read = read
        self.group = split
        self.entries = [dict(e) for e in entries]
        self._fields = fields
        self.layout = layout
        self._image_options: dict[str, Any] = {}
        self._opened: dict[int, DatasetIterator] = {}
        super().__init__([])
        self._ends = np.cumsum([int(e["rows"]) for e in self.entries]).tolist()
        self._bounds_cache: tuple[Any, Any] | None = None
        #: (process id, every shard mapped side by side or None if they cannot be)
        self._joined_slot: tuple[int, JoinedSplit | None] | None = None
        self._warmed = -1  # the shard a sequential pass asked to read ahead last

    # -- shards, opened on first use ---------------------------------------------------------
    def shard(self, k: int) -> DatasetIterator:
        """The reader of shard ``k`` (opened once; at most :data:`MAX_OPEN_SHARDS` stay open,
        the least recently read is closed first: an epoch over thousands of shards does not
        hold thousands of files)."""
        found = self._opened.pop(k, None)
        if found is None:
            from datastack.errors import ResourceNotFoundError
            from datastack.offline import open_published

            identifier = str(self.entries[k]["identifier"])
            try:
                resource = open_published(self.store, self.read, identifier)
            except ResourceNotFoundError as exc:
                raise self._missing(k, exc) from None
            found = self._reader(resource)
            while len(self._opened) >= MAX_OPEN_SHARDS:
                oldest = next(iter(self._opened))
                close = getattr(self._opened.pop(oldest), "close", None)
                if close is not None:
                    close()
        self._opened[k] = found  # the most recently read last
        return found

    def _missing(self, k: int, exc: Exception) -> Exception:
        from datastack.errors import ResourceNotFoundError

        record, first = self.read.record, (self.ends[k - 1] if k else 0)
        return ResourceNotFoundError(
            f"{record.name} v{record.version}:/{self.group}: shard {k + 1} of "
            f"{len(self.entries)} (rows {first}-{self.ends[k] - 1}, "
            f"{self.entries[k]['identifier']}) is missing ({exc}); this version cannot be read "
            f"whole. `datastack refresh {record.name} --force` stores it again, or load "
            "another version")

    def close(self) -> None:
        """Close every open shard (they reopen on the next read). The shards mapped side by
        side are unmapped once nothing uses them."""
        self._joined_slot = None
        while self._opened:
            close = getattr(self._opened.popitem()[1], "close", None)
            if close is not None:
                close()

    def _reader(self, resource: Any) -> DatasetIterator:
        from datastack.canonical.layout import FIELDS_LAYOUT

        if self.layout == FIELDS_LAYOUT:
            from datastack.canonical.records import RecordsDatasetIterator

            options = self._image_options
            return RecordsDatasetIterator(resource, self.group,
                                          image_mode=options.get("mode"),
                                          decode_images=options.get("decode", True))
        from datastack.canonical.hdf5 import HDF5DatasetIterator

        return HDF5DatasetIterator(resource, group=self.group)

    @property  # type: ignore[override]
    def iterators(self) -> list[DatasetIterator]:  # every shard (opens each)
        return [self.shard(k) for k in range(len(self.entries))]

    @iterators.setter
    def iterators(self, value: list[DatasetIterator]) -> None:
        if value:  # only the base constructor sets it (to []): shards open lazily
            raise AttributeError("the shards of a ShardedSplit are opened on first use")

    def _part(self, k: int) -> DatasetIterator:
        return self.shard(k)  # only the shards a read touches are opened

    def _get_batch(self, indices: Any) -> Any:
        """One gather from the joined map of every shard (local raw files), else one read
        per shard the batch touches (each opened on first use), its rows put in place in the
        batch's columns: no pass over the other shards, one copy per row."""
        joined = self._joined(indices)
        if joined is not None:  # every shard local and raw: one gather per column
            return joined.gather(indices)
        starts, ends = self._bounds()
        which = np.searchsorted(ends, indices, side="right")
        first = int(which[0])
        if len(which) == 1 or not (which != first).any():  # one shard: its batch as it is
            batch = self.shard(first)._get_batch(indices - starts[first])
            if (ends[first] - int(indices[-1])) * self._row_bytes(first) <= AHEAD_BYTES:
                self._ahead(first, indices)
            return batch
        order = np.argsort(which, kind="stable")
        grouped = which[order]
        cuts = np.flatnonzero(grouped[1:] != grouped[:-1]) + 1
        runs = np.split(order, cuts)
        parts = [self.shard(int(which[run[0]]))._get_batch(indices[run] - starts[which[run[0]]])
                 for run in runs]
        return _placed(self, parts, runs, len(indices))

    def _joined(self, indices: Any) -> JoinedSplit | None:
        """Every shard's file mapped side by side (:mod:`datastack.canonical._joined_map`),
        made in this process on the first batch spanning two shards; None when a shard is
        not a local file of raw columns (then each shard reads its part)."""
        slot = self._joined_slot
        if slot is not None and slot[0] == os.getpid():
            return slot[1]
        ends = self._bounds()[1]
        lo, hi = np.searchsorted(ends, [indices.min(), indices.max()], side="right")
        if lo == hi:  # a batch within one shard: not worth opening every shard yet
            return None
        from datastack.canonical._joined_map import join_shards
        from datastack.errors import DatastackError

        def parts(k: int) -> Any:
            return getattr(self.shard(k), "joined_parts", lambda: None)()

        slots = [int(e.get("size") or 0) for e in self.entries]
        try:
            joined = join_shards(slots, parts, self.ends) if all(slots) else None
        except DatastackError:  # a shard missing or unreadable: each batch says so if it
            joined = None  # touches that shard, as without the join
        self._joined_slot = (os.getpid(), joined)
        return joined

    def _row_bytes(self, k: int) -> float:
        """Stored bytes per row of shard ``k`` (from the manifest; 0 when unknown)."""
        entry = self.entries[k]
        return int(entry.get("size") or 0) / max(1, int(entry["rows"]))

    def _ahead(self, k: int, indices: Any) -> None:
        """A sequential pass nearing the end of shard ``k`` (a run of ascending rows within
        the last :data:`AHEAD_BYTES`): open shard ``k + 1`` and let its stream fetch its
        first :data:`START_BYTES` in the background, as read-ahead that its first reads
        continue, so that the pass goes on at the border with no round trip to wait for.
        At most one shard ahead."""
        n = len(indices)
        if (k + 1 >= len(self.entries) or self._warmed == k + 1 or n < 2
                or int(indices[-1]) - int(indices[0]) != n - 1
                or not bool((indices[1:] > indices[:-1]).all())):
            return
        self._warmed = k + 1
        start = getattr(self.shard(k + 1), "prefetch_start", None)
        if start is not None:
            start(max(n, int(START_BYTES // max(1.0, self._row_bytes(k + 1)))))

    def _bounds(self) -> tuple[Any, Any]:
        """(first row, end) of each shard as int64 arrays (computed once)."""
        if self._bounds_cache is None:
            ends = np.asarray(self.ends, dtype=np.int64)
            self._bounds_cache = (np.concatenate([np.zeros(1, np.int64), ends[:-1]]), ends)
        return self._bounds_cache

    # -- metadata ----------------------------------------------------------------------------
    @property
    def fields(self) -> dict[str, Field]:
        if self._fields is not None:
            return dict(self._fields)
        return self.shard(0).fields if self.entries else {}

    @property
    def attrs(self) -> dict[str, Any]:
        """The first shard's root attributes (name, schema without category names)."""
        return dict(getattr(self.shard(0), "attrs", {})) if self.entries else {}

    @property
    def split(self) -> str:
        return self.group

    @property
    def column_arrays(self) -> Any:
        """The whole stored column of a field over every shard (``to_arrow``): layout 2 only
        (``None`` for layout 1, whose reader has none)."""
        from datastack.canonical.layout import FIELDS_LAYOUT

        return self._column_arrays if self.layout == FIELDS_LAYOUT else None

    def _column_arrays(self, name: str) -> tuple[Any, Any, Any]:
        """The whole column ``name`` over every shard (offsets rebased), for ``to_arrow``."""
        parts = [getattr(it, "column_arrays")(name) for it in self.iterators]  # noqa: B009
        values = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0)
        if not parts or parts[0][1] is None:
            return values, None, None
        offsets, base = [np.zeros(1, np.int64)], 0
        for _, off, _ in parts:
            offsets.append(np.asarray(off[1:], np.int64) + base)
            base += int(off[-1])
        shapes = None if parts[0][2] is None else np.concatenate([p[2] for p in parts])
        return values, np.concatenate(offsets), shapes

    def with_image_options(self, *, mode: str | None = None, decode: bool = True) -> Any:
        clone = ShardedSplit(self.store, self.read, self.group, self.entries, self._fields,
                             self.layout)
        clone._image_options = {"mode": mode, "decode": decode}
        return clone

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_opened"] = {}  # each process opens its own shards
        state["_joined_slot"] = None
        return state

    def __repr__(self) -> str:
        return (f"<ShardedSplit {self.read.record.name} v{self.read.record.version}:/"
                f"{self.group} ({len(self.entries)} shards)>")


def _placed(owner: Any, parts: Sequence[Any], runs: Sequence[Any], n: int) -> Any:
    """The batch of ``n`` rows whose rows at positions ``runs[k]`` are ``parts[k]``: each
    column allocated once and filled in place, or (columns of differing types, such as
    Python objects) concatenated and put back in order."""
    from datastack.errors import FormatError

    widths = {len(p) for p in parts}
    if len(widths) != 1:
        raise FormatError(f"{owner!r}: shards yield tuples of different lengths")
    columns = []
    for j in range(widths.pop()):
        pieces = [p[j] for p in parts]
        head = pieces[0]
        if all(isinstance(x, np.ndarray) and x.dtype == head.dtype
               and x.shape[1:] == head.shape[1:] for x in pieces):
            out = np.empty((n, *head.shape[1:]), dtype=head.dtype)
            for run, piece in zip(runs, pieces, strict=True):
                out[run] = piece
        else:
            try:
                out = np.concatenate(pieces)[np.argsort(np.concatenate(runs), kind="stable")]
            except ValueError as exc:
                raise FormatError(
                    f"{owner!r}: samples of the shards differ in shape ({exc})"
                ) from None
        columns.append(out)
    return tuple(columns)


__all__ = ["AHEAD_BYTES", "MAX_OPEN_SHARDS", "START_BYTES", "ShardedSplit"]
