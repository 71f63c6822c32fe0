"""The row ids a version stores so that the next one keeps its splits (``docs/living.md``).

When a spec's ``splits:`` cut the rows, each split group of the canonical file holds, besides
its fields, a dataset :data:`ROW_IDS` (``/<split>/.row_ids``, uint64, one per sample in the
split's order) with attrs ``identity`` (``"content"`` or ``"key:<columns>"``) and ``scheme``
(:data:`datastack.rowids.SCHEME`). Readers never open it (they open fields by name); it costs
8 bytes per sample. The next preparation reads them from the previous version
(:class:`PreviousVersion`, handed to the preparation by the refresh pipeline); a version
published before row ids existed, or with another identity, has them computed from its stored
fields instead (the first refresh after the upgrade moves nothing).

>>> import numpy as np
>>> from datastack.fields import ARRAY, Field
>>> fields = [Field("x", ARRAY, "float32", (1,))]
>>> ids = hash_columns(fields, {"x": np.array([[1.0], [2.0], [1.0]], np.float32)})
>>> len(set(ids.tolist()))
3
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from datastack.canonical.columns import StagedRows, Transform
from datastack.canonical.hdf5 import read_h5
from datastack.errors import FormatError
from datastack.fields import Field, fields_from_schema
from datastack.rowids import SCHEME, row_hashes, with_occurrences, with_occurrences_after

if TYPE_CHECKING:  # pragma: no cover
    from datastack.resources import StreamedResource

#: The dataset of a split group holding its row ids (a name no field of a table takes).
ROW_IDS = ".row_ids"
#: Rows hashed per block.
HASH_BLOCK_ROWS = 1 << 16
CONTENT = "content"
U64 = NDArray[np.uint64]


def identity_of(key: Sequence[str] | None) -> str:
    """The identity a spec asks for: ``"content"``, or ``"key:<columns>"`` with ``key:``.

    >>> identity_of(None), identity_of(["id"])
    ('content', 'key:["id"]')
    """
    return CONTENT if not key else "key:" + json.dumps(list(key))


def resolve_key(
    fields: Sequence[Field], key: Sequence[str] | None
) -> list[tuple[str, int | None]] | None:
    """``key`` column names as ``(field, column index or None)``: a field of the data, or a
    column of a feature vector (``Field.columns``). ``None`` for content identity."""
    if not key:
        return None
    out: list[tuple[str, int | None]] = []
    for name in key:
        match: tuple[str, int | None] | None = next(
            ((f.name, None) for f in fields if f.name == name), None
        )
        if match is None:
            match = next(((f.name, (f.columns or ()).index(name)) for f in fields
                          if name in (f.columns or ())), None)
        if match is None:
            known = [f.name for f in fields] + [c for f in fields for c in f.columns or ()]
            raise FormatError(
                f"key: column {name!r} is not stored in the prepared data (fields and columns: "
                f"{', '.join(dict.fromkeys(known))}); name a stored column, e.g. keep it as a "
                "text column (csv: {text: [...]}) or a feature"
            )
        out.append(match)
    return out


def hash_columns(
    fields: Sequence[Field],
    columns: Mapping[str, Any],
    transforms: Mapping[str, Transform] | None = None,
    encodings: Mapping[str, Sequence[str]] | None = None,
    key: Sequence[str] | None = None,
    before: U64 | None = None,
    numbered: bool = True,
) -> U64:
    """The row id of every row of ``columns`` (staged or stored columns of one split, read in
    blocks; ``transforms`` map a fixed field's block to its stored values first); ``before``:
    the ids of rows these come after (an append: :func:`with_occurrences_after`);
    ``numbered=False``: the content hashes only, copies not told apart (a part of a table:
    the whole numbers them) and keys not checked."""
    wanted = resolve_key(fields, key)
    names = {name for name, _ in wanted} if wanted is not None else {f.name for f in fields}
    used = [f for f in fields if f.name in names]
    total = len(columns[fields[0].name]) if fields else 0
    out = np.empty(total, np.uint64)
    transforms = transforms or {}
    for lo in range(0, total, HASH_BLOCK_ROWS):
        hi = min(total, lo + HASH_BLOCK_ROWS)
        block: dict[str, Any] = {}
        for fld in used:
            source = columns[fld.name]
            if fld.variable:
                rows = np.arange(lo, hi, dtype=np.int64)
                flat = source.take_flat(rows) if hasattr(source, "take_flat") else None
                block[fld.name] = flat if flat is not None else source.take(rows) if hasattr(
                    source, "take") else source[lo:hi]
                continue
            data = np.asarray(source[lo:hi])
            fn = transforms.get(fld.name)
            block[fld.name] = fn(data) if fn is not None else data
        out[lo:hi] = row_hashes(used, block, encodings, wanted)
    if not numbered:
        return out
    if wanted is not None:
        unique_keys(out, key or ())
        if before is not None and len(before) and bool(np.isin(out, before).any()):
            raise FormatError(
                f"key: {', '.join(key or ())} is not unique: an appended row repeats the key "
                "of a row of the version before; a key must name each row once"
            )
    return with_occurrences(out) if before is None else with_occurrences_after(out, before)


def unique_keys(ids: U64, key: Sequence[str]) -> None:
    """A ``key:`` names each row once: two rows sharing a key would be told apart by their
    order only, and swap splits when upstream reorders them."""
    ordered = np.sort(ids)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    if len(repeated):
        row = int(np.flatnonzero(ids == repeated[0])[1])
        raise FormatError(
            f"key: {', '.join(key)} is not unique: {len(repeated)} rows repeat a key (the "
            f"first at row {row} of its split); a key must name each row once so that the row "
            "keeps its split. Fix the duplicates upstream, or remove key: to identify rows by "
            "their content"
        )


def write_row_ids(group: Any, ids: U64, identity: str) -> None:
    """Store ``ids`` as ``group/.row_ids`` (see the module docstring)."""
    if ROW_IDS in group:
        raise FormatError(f"{group.name}: a field is named {ROW_IDS!r}, a reserved name")
    dset = group.create_dataset(ROW_IDS, data=np.asarray(ids, np.uint64))  # contiguous: 8 B/row
    dset.attrs["identity"] = identity
    dset.attrs["scheme"] = SCHEME


class AppendRefused(FormatError):
    """The new rows of an append cannot be prepared on their own (their fields or category
    columns differ from the version's, or the version holds no row ids of this identity):
    the refresh prepares every row."""


@dataclass
class SplitHistory:
    """Which rows (by id) each split of a former version held; ``identity`` says how the ids
    were computed."""

    identity: str
    splits: dict[str, U64] = field(default_factory=dict)


@dataclass
class PreviousVersion:
    """The last published version, for the next preparation to continue its splits: its data
    file, or its shards by split (opened lazily, only when the preparation cuts splits), and
    what its record says."""

    name: str
    version: int
    resource: StreamedResource | None
    splits: dict[str, int]
    schema: dict[str, Any]
    shards: dict[str, list[StreamedResource]] = field(default_factory=dict)
    #: The record's category labels (a sharded version's files hold none).
    encodings: dict[str, Any] = field(default_factory=dict)
    #: The preparation reads only rows appended after this version's (``pipeline._tail``).
    tail: bool = False

    def kept(self, names: Sequence[str], stratify: bool) -> dict[Any, list[int]]:
        """How many rows each split (in ``names``' order) holds, per class of the label
        field with ``stratify`` (the class key ``None`` without): what an append's rows are
        cut around (:func:`datastack.splits.tail_split_indices`)."""
        if not stratify:
            return {None: [int(self.splits.get(n, 0)) for n in names]}

        fields = _stored_fields(self.schema, self.encodings)
        chosen = next((f for f in fields if f.kind == "label"), fields[-1])
        out: dict[Any, list[int]] = {}
        for number, split in enumerate(names):
            for resource in self.shards.get(split, []):
                with read_h5(resource) as f:
                    values = np.asarray(f[split][chosen.stored_name][()])
                classes, counts = np.unique(values, return_counts=True)
                for cls, count in zip(classes.tolist(), counts.tolist(), strict=True):
                    out.setdefault(cls, [0] * len(names))[number] += int(count)
        return out

    def close(self) -> None:
        """Close every stream of the version."""
        for resource in [self.resource, *(r for rs in self.shards.values() for r in rs)]:
            if resource is not None:
                resource.close()

    def history(self, identity: str, names: Sequence[str]) -> SplitHistory | None:
        """The row ids of each split: stored ones when their identity is ``identity``, else
        the content ids computed from the stored fields (a version published before row ids,
        or with another ``key:``). ``None`` when the version has no row ids and other splits
        than ``names`` (it was not cut by these ``splits:``: they are cut afresh)."""
        try:
            if self.resource is None:
                return self._sharded_history(identity, names)
            return self._history(self.resource, identity, names)
        except (OSError, KeyError, ValueError) as exc:
            raise self._unreadable(exc) from None

    def _history(self, resource: StreamedResource, identity: str, names: Sequence[str]
                 ) -> SplitHistory | None:

        with read_h5(resource) as f:
            stored = {s: f[s][ROW_IDS] for s in self.splits if s in f and ROW_IDS in f[s]}
            if not stored and set(self.splits) != set(names):
                return None
            for wanted in (identity, CONTENT):  # content ids: what recomputing would give
                if len(stored) == len(self.splits) and all(_ids_are(d, wanted)
                                                           for d in stored.values()):
                    return SplitHistory(wanted, {s: np.asarray(d[()], np.uint64)
                                                 for s, d in stored.items()})
            encodings = json.loads(f.attrs.get("encodings", "{}"))
            fields = _stored_fields(json.loads(f.attrs.get("schema", "{}")) or self.schema,
                                    encodings)
            return SplitHistory(CONTENT, {split: _content_ids(f[split], fields, encodings)
                                          for split in self.splits})

    def _sharded_history(self, identity: str, names: Sequence[str]) -> SplitHistory | None:
        """The same over the shards of each split (their ids one shard after another)."""
        for wanted in (identity, CONTENT):
            found = self._shard_ids(lambda group, w=wanted: _stored_ids(group, w))
            if found is not None:
                return SplitHistory(wanted, found)
        if set(self.splits) != set(names) and self._shard_ids(_any_ids) is None:
            return None  # no row ids, other splits: not cut by these splits: (cut afresh)
        fields = _stored_fields(self.schema, self.encodings)
        computed = self._shard_ids(lambda group: _content_ids(group, fields, self.encodings))
        return SplitHistory(CONTENT, computed or {})

    def _unreadable(self, exc: BaseException) -> FormatError:
        return FormatError(
            f"{self.name} v{self.version}: cannot read its row ids or rows to keep every "
            f"sample in its split ({type(exc).__name__}: {exc}); nothing was published. "
            "Check the version's files (datastack pull verifies them) and the storage")

    def stored_ids(self, identity: str) -> dict[str, U64] | None:
        """The row ids of identity ``identity`` the shards store, per split; ``None`` when a
        shard has none (an append then prepares every row: nothing is hashed again)."""
        try:
            return self._shard_ids(lambda group: _stored_ids(group, identity))
        except (OSError, KeyError, ValueError) as exc:
            raise self._unreadable(exc) from None

    def _shard_ids(self, ids_of: Any) -> dict[str, U64] | None:
        """``ids_of(split group)`` over every shard, joined per split; ``None`` if any gives
        ``None``."""

        out: dict[str, U64] = {}
        for split, resources in self.shards.items():
            parts = []
            for resource in resources:
                with read_h5(resource) as f:
                    ids = ids_of(f[split])
                if ids is None:
                    return None
                parts.append(ids)
            out[split] = np.concatenate(parts) if parts else np.empty(0, np.uint64)
        return out


def _any_ids(group: Any) -> U64 | None:
    dset = group.get(ROW_IDS)
    return None if dset is None else np.asarray(dset[()], np.uint64)


def _stored_ids(group: Any, identity: str) -> U64 | None:
    dset = group.get(ROW_IDS)
    return np.asarray(dset[()], np.uint64) if dset is not None and _ids_are(dset, identity) \
        else None


def _ids_are(dset: Any, identity: str) -> bool:
    return bool(dset.attrs.get("identity") == identity
                and int(dset.attrs.get("scheme", 0)) == SCHEME)


def _content_ids(group: Any, fields: Sequence[Field], encodings: Mapping[str, Any]) -> U64:
    columns = {fld.name: StagedRows(group[fld.stored_name], fld) if fld.variable
               else group[fld.stored_name] for fld in fields}
    return hash_columns(fields, columns, None, encodings, None)


def _stored_fields(schema: Mapping[str, Any], encodings: Mapping[str, Any]) -> list[Field]:
    """The fields of a published file: its schema's, else the classic samples/targets."""
    from datastack.canonical.writer import classic_fields

    found = list(fields_from_schema(schema.get("fields") or []).values())
    if found:
        return found
    return classic_fields(schema.get("splits") or {}, schema.get("features"),
                          schema.get("target"), encodings)


_PREVIOUS: ContextVar[PreviousVersion | None] = ContextVar("datastack_previous", default=None)


@contextlib.contextmanager
def continuing(previous: PreviousVersion | None) -> Iterator[None]:
    """Within the block, preparations continue the splits of ``previous`` (the refresh
    pipeline wraps a factory's ``prepare`` in it, as it does for the compression default)."""
    token = _PREVIOUS.set(previous)
    try:
        yield
    finally:
        _PREVIOUS.reset(token)


def current_previous() -> PreviousVersion | None:
    """The version whose splits the current preparation continues (``None``: a first one)."""
    return _PREVIOUS.get()


__all__ = [
    "CONTENT",
    "ROW_IDS",
    "AppendRefused",
    "PreviousVersion",
    "SplitHistory",
    "continuing",
    "current_previous",
    "hash_columns",
    "identity_of",
    "resolve_key",
    "unique_keys",
    "write_row_ids",
]
