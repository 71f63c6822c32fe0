"""Shards: a version's canonical data cut into immutable files of at most ``shard_bytes``,
each a run of one split's samples (``docs/living.md``).

A shard is a canonical file of its own (same layout as the whole file, one split group,
readable by the same readers) holding data only: the category *names* of the version stay in
its catalog record, so the same rows give the same bytes in every version (the file is named
by the sha256 of its bytes: :func:`~datastack.canonical.layout.shard_identifier`) and versions
share it. HDF5 writes the same bytes for the same calls (no timestamps; tested).

:func:`cut_shards` cuts a prepared file; :func:`merge_shards` writes several consecutive
shards of a split as one (compaction). Rows are copied in blocks of about
:data:`~datastack.canonical.writer.COPY_BLOCK_BYTES`, never a whole column in memory.

>>> import tempfile, pathlib, numpy as np
>>> from datastack.canonical.writer import write_arrays
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> _ = write_arrays(tmp / "d.h5", "demo", {"train": (np.zeros((10, 4)), np.arange(10))})
>>> [(s.split, s.rows) for s in cut_shards(tmp / "d.h5", tmp / "out", 200)]
[('train', 5), ('train', 5)]
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from datastack.canonical.layout import SHARD_KIND
from datastack.errors import FormatError

#: The default most bytes of one shard (spec ``shard_bytes:``, ``DATASTACK_SHARD_BYTES``).
DEFAULT_SHARD_BYTES = 256 * 1024 * 1024
SHARD_BYTES_ENV = "DATASTACK_SHARD_BYTES"
#: Smallest allowed ``shard_bytes`` (tests cut tiny datasets into many shards).
MIN_SHARD_BYTES = 1024
#: The schema keys a shard carries (what its reader needs); the others describe the whole
#: version (its splits' sizes, category names, changes), which the catalog record holds.
_SHARD_SCHEMA = ("fields", "format_version", "features", "target")


@dataclass(frozen=True)
class ShardFile:
    """One written shard: its local path, split, rows, and the sha256 and size of its bytes."""

    split: str
    path: str
    rows: int
    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def shard_bytes_setting(value: int | None = None) -> int:
    """The shard size to use: ``value`` (the spec's), else ``DATASTACK_SHARD_BYTES``, else the
    default."""
    from datastack._env import env_size
    from datastack.errors import ConfigurationError

    chosen = env_size(SHARD_BYTES_ENV, DEFAULT_SHARD_BYTES) if value is None else int(value)
    if chosen < MIN_SHARD_BYTES:
        raise ConfigurationError(
            f"shard_bytes must be at least {MIN_SHARD_BYTES} bytes, got {chosen}; the default "
            f"is {DEFAULT_SHARD_BYTES // 2**20} MiB (spec shard_bytes: or {SHARD_BYTES_ENV})"
        )
    return chosen


def parse_shard_bytes(value: Any) -> int | None:
    """The spec's ``shard_bytes:`` (an int, or a size such as ``256M``) in bytes, ``None``
    when absent; ``ValueError`` saying what is expected otherwise."""
    from datastack._env import parse_size
    from datastack.errors import ConfigurationError

    if value is None:
        return None
    try:
        size = -1 if isinstance(value, bool) else parse_size(str(value), "shard_bytes")
    except ConfigurationError:
        size = -1
    if size < MIN_SHARD_BYTES:
        raise ValueError(f"expected a size of at least {MIN_SHARD_BYTES} bytes such as 256M, "
                         f"got {value!r}")
    return size


def row_bytes(group: Any, length: int) -> NDArray[np.int64]:
    """The stored bytes of each of the ``length`` rows of a split group."""
    import h5py

    out = np.zeros(length, np.int64)
    for item in group.values():
        if isinstance(item, h5py.Dataset) and item.shape and item.shape[0] == length:
            out += item.dtype.itemsize * math.prod(item.shape[1:])
        elif isinstance(item, h5py.Group) and "offsets" in item and "values" in item:
            values = item["values"]
            offsets = np.asarray(item["offsets"][()], np.int64)
            out += np.diff(offsets) * values.dtype.itemsize * math.prod(values.shape[1:]) + 8
            if "shapes" in item:
                shapes = item["shapes"]
                out += shapes.dtype.itemsize * math.prod(shapes.shape[1:])
    return out


def cut_points(sizes: NDArray[np.int64], shard_bytes: int) -> list[tuple[int, int]]:
    """Consecutive row ranges of at most ``shard_bytes`` (at least one row each; one empty
    range for no rows).

    >>> cut_points(np.array([3, 3, 3, 3, 3]), 7)
    [(0, 2), (2, 4), (4, 5)]
    """
    if len(sizes) == 0:
        return [(0, 0)]
    cum = np.cumsum(sizes)
    out, start = [], 0
    while start < len(sizes):
        base = int(cum[start - 1]) if start else 0
        end = max(start + 1, int(np.searchsorted(cum, base + shard_bytes, side="right")))
        out.append((start, min(end, len(sizes))))
        start = end
    return out


def cut_shards(whole: str | Path, out_dir: str | Path, shard_bytes: int) -> list[ShardFile]:
    """Cut the prepared canonical file ``whole`` into shards under ``out_dir``, split by split
    (in the file's order of splits), each a run of at most ``shard_bytes`` of rows."""
    import h5py

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    alone = _one_shard(Path(whole), out, shard_bytes)
    if alone is not None:
        return [alone]
    shards: list[ShardFile] = []
    with h5py.File(whole, "r") as f:
        attrs = shard_attrs(f.attrs)
        for split in _splits(f, h5py):
            group = f[split]
            length = int(group.attrs.get("length", -1))
            if length < 0:
                raise FormatError(f"{whole}:/{split} has no length attribute; re-prepare it")
            for lo, hi in cut_points(row_bytes(group, length), shard_bytes):
                path = out / f"{len(shards):06d}.h5"
                write_shard(path, attrs, split, [(group, lo, hi)])
                shards.append(_described(path, split, hi - lo))
    return shards


def _one_shard(whole: Path, out: Path, shard_bytes: int) -> ShardFile | None:
    """A file of one split that fits in one shard is its own shard: its version-wide
    attributes rewritten in place, then moved (no copy of its rows)."""
    import h5py

    if whole.stat().st_size > shard_bytes:
        return None
    with h5py.File(whole, "r+") as f:
        groups = [k for k in f if isinstance(f[k], h5py.Group)]
        if len(groups) != 1:
            return None
        split = groups[0]
        rows = int(f[split].attrs.get("length", -1))
        if rows < 0:
            return None
        attrs = shard_attrs(f.attrs)
        for key in list(f.attrs):
            if key not in attrs:
                del f.attrs[key]
        for key, value in attrs.items():
            f.attrs[key] = value
    path = out / "000000.h5"
    whole.replace(path)
    return _described(path, split, rows)


def merge_shards(paths: Sequence[str | Path], split: str, out: str | Path) -> ShardFile:
    """One shard holding the rows of the shards at ``paths`` (of ``split``), in order."""
    import h5py

    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(h5py.File(p, "r")) for p in paths]
        sources = [(f[split], 0, int(f[split].attrs["length"])) for f in files]
        write_shard(Path(out), shard_attrs(files[0].attrs), split, sources)
        return _described(Path(out), split, sum(hi - lo for _, lo, hi in sources))


def _splits(f: Any, h5py: Any) -> list[str]:
    schema = json.loads(f.attrs.get("schema", "{}") or "{}")
    order = [s for s in (schema.get("splits") or {}) if s in f]
    return order + sorted(k for k in f if isinstance(f[k], h5py.Group) and k not in order)


def shard_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The root attributes of a shard: the whole file's, without what describes the whole
    version (all but :data:`_SHARD_SCHEMA` of the schema, category names of label fields)."""
    out: dict[str, Any] = {}
    for key in sorted(attrs):
        value = attrs[key]
        if key == "encodings":
            value = "{}"
        elif key == "schema":
            whole = json.loads(value or "{}")
            schema = {k: whole[k] for k in _SHARD_SCHEMA if k in whole}
            schema["fields"] = [{k: v for k, v in entry.items() if k != "names"}
                                for entry in schema.get("fields") or []]
            value = json.dumps(schema, sort_keys=True)
        out[key] = value
    return out


def write_shard(
    path: Path, attrs: Mapping[str, Any], split: str, sources: Sequence[tuple[Any, int, int]]
) -> None:
    """Write rows ``lo:hi`` of each source split group, one after another, as ``split``."""
    import h5py

    from datastack.canonical.writer import LIBVER

    total = sum(hi - lo for _, lo, hi in sources)
    first = sources[0][0]
    with h5py.File(path, "w", libver=LIBVER) as f:
        for key, value in attrs.items():
            f.attrs[key] = value
        group = f.create_group(split)
        for key in sorted(first.attrs):
            group.attrs[key] = first.attrs[key]
        group.attrs["length"] = total
        for name in sorted(first):
            item = first[name]
            if isinstance(item, h5py.Group):
                _copy_variable(group.create_group(name), [(s[name], lo, hi)
                                                          for s, lo, hi in sources])
            else:
                _copy_rows(group, name, [(s[name], lo, hi) for s, lo, hi in sources])


def _copy_variable(out: Any, sources: Sequence[tuple[Any, int, int]]) -> None:
    for key in sorted(sources[0][0].attrs):
        out.attrs[key] = sources[0][0].attrs[key]
    offsets, value_runs, base = [np.zeros(1, np.int64)], [], 0
    for node, lo, hi in sources:
        off = np.asarray(node["offsets"][lo : hi + 1], np.int64)
        offsets.append(off[1:] - off[0] + base)
        base += int(off[-1] - off[0])
        value_runs.append((node["values"], int(off[0]), int(off[-1])))
    data = np.concatenate(offsets)
    dset = out.create_dataset("offsets", data=data, **_layout_of(
        [node["offsets"] for node, _, _ in sources], len(data)))
    for key in sorted(sources[0][0]["offsets"].attrs):
        dset.attrs[key] = sources[0][0]["offsets"].attrs[key]
    _copy_rows(out, "values", value_runs)
    if "shapes" in sources[0][0]:
        _copy_rows(out, "shapes", [(node["shapes"], lo, hi) for node, lo, hi in sources])


def _layout_of(sources: Sequence[Any], rows: int) -> dict[str, Any]:
    """Chunks and filter of the datasets ``sources`` for one of ``rows`` rows: the largest of
    their chunk lengths (merged small shards get their whole rows' chunks back), capped at
    the rows."""
    like = sources[0]
    if like.chunks is None or rows == 0:
        return {}
    longest = max(int(s.chunks[0]) if s.chunks is not None else 1 for s in sources)
    chunks = (min(longest, rows), *like.chunks[1:])
    out: dict[str, Any] = {"chunks": chunks}
    if like.compression is not None:
        out.update(compression=like.compression, compression_opts=like.compression_opts)
    return out


def _copy_rows(group: Any, name: str, runs: Sequence[tuple[Any, int, int]]) -> None:
    """Rows ``lo:hi`` of each dataset of ``runs``, one after another, as ``group[name]``."""
    from datastack.canonical.writer import COPY_BLOCK_BYTES

    like = runs[0][0]
    total = sum(hi - lo for _, lo, hi in runs)
    dset = group.create_dataset(name, shape=(total, *like.shape[1:]), dtype=like.dtype,
                                **_layout_of([r[0] for r in runs], total))
    for key in sorted(like.attrs):
        dset.attrs[key] = like.attrs[key]
    row = max(1, like.dtype.itemsize * math.prod(like.shape[1:]))
    step = max(1, COPY_BLOCK_BYTES // row)
    at = 0
    for source, lo, hi in runs:
        for start in range(lo, hi, step):
            stop = min(hi, start + step)
            dset[at : at + stop - start] = source[start:stop]
            at += stop - start


def _described(path: Path, split: str, rows: int) -> ShardFile:
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return ShardFile(split, str(path), rows, digest, path.stat().st_size)


#: A split whose run of small shards (each under a quarter of ``shard_bytes``) reaches this
#: many has them merged by the next refresh (compaction: appends leave small shards).
COMPACT_AFTER = 8


def merge_runs(entries: Sequence[Mapping[str, Any]], shard_bytes: int,
               after: int = COMPACT_AFTER) -> list[tuple[int, int]]:
    """Which consecutive shards of one split to merge, as ``(start, stop)`` index ranges:
    runs of small shards (under ``shard_bytes / 4``) once a run has ``after`` or more,
    cut so that each merged shard stays within ``shard_bytes``.

    >>> merge_runs([{"size": 10}] * 9, 1000, after=8)
    [(0, 9)]
    >>> merge_runs([{"size": 10}] * 3, 1000, after=8)
    []
    """
    small = [int(e.get("size") or 0) < shard_bytes // 4 for e in entries]
    out: list[tuple[int, int]] = []
    i = 0
    while i < len(entries):
        if not small[i]:
            i += 1
            continue
        j = i
        while j < len(entries) and small[j]:
            j += 1
        if j - i >= after:
            start, total = i, 0
            for k in range(i, j):
                size = int(entries[k].get("size") or 0)
                if total + size > shard_bytes and k > start:
                    out.append((start, k))
                    start, total = k, 0
                total += size
            out.append((start, j))
        i = j
    return [(a, b) for a, b in out if b - a > 1]


def shard_entry(shard: ShardFile, identifier: str) -> dict[str, Any]:
    """The entry of a shard in a version record's ``resources``."""
    return {"identifier": identifier, "size": shard.size, "sha256": shard.sha256,
            "kind": SHARD_KIND, "split": shard.split, "rows": shard.rows}


__all__ = [
    "COMPACT_AFTER",
    "DEFAULT_SHARD_BYTES",
    "SHARD_BYTES_ENV",
    "ShardFile",
    "cut_points",
    "cut_shards",
    "merge_runs",
    "merge_shards",
    "parse_shard_bytes",
    "row_bytes",
    "shard_attrs",
    "shard_bytes_setting",
    "shard_entry",
    "write_shard",
]
