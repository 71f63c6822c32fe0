"""Helpers of the stable-splits tests: tracked CSVs refreshed into a local store, and the rows
of each split of a version read back as comparable tuples (category codes as their labels)."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import h5py
import numpy as np

import datastack
from datastack.canonical.layout import data_identifier_of, is_sharded, shards_of
from datastack.canonical.rowids import ROW_IDS
from datastack.store import Store


def write_spec(tmp: Path, source: Path, name: str = "live", **keys: Any) -> Path:
    """A spec tracking ``source`` (csv), with ``keys`` as YAML flow values."""
    lines = [f"datasets:\n  {name}:\n    sources: [{{url: {source.as_uri()!r}, track: true}}]",
             "    format: csv"]
    lines += [f"    {key}: {value}" for key, value in keys.items()]
    path = tmp / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def refresh(spec: Path, storage: Path) -> int:
    [result] = datastack.refresh(spec, storage=storage)
    assert result.status == "published", result.reason
    assert result.version is not None
    return result.version


def _cell(value: Any) -> Any:
    value = value.item() if hasattr(value, "item") else value
    return "NaN" if isinstance(value, float) and math.isnan(value) else value


def split_rows(storage: Path, name: str, version: int) -> dict[str, list[tuple[Any, ...]]]:
    """Every split of a version as a list of rows in split order; codes as their labels."""
    record = Store.open(storage).catalog.get(name, version)
    features = record.schema.get("features") or []
    target = record.schema.get("target")
    encodings = record.encodings
    out: dict[str, list[tuple[Any, ...]]] = {}
    for split, length in record.splits.items():
        it = datastack.load(name, split, version=version, storage=storage)
        rows = []
        for sample in (it[i] for i in range(length)):
            x, *rest = sample
            cells = []
            for column, value in zip(features, np.asarray(x).tolist(), strict=True):
                labels = encodings.get(column)
                coded = labels is not None and not math.isnan(value)
                cells.append(labels[int(value)] if coded else _cell(value))
            cells.extend(_cell(value) for value in rest[:-1])  # text fields
            labels = encodings.get(target) if target else None
            cells.append(labels[int(rest[-1])] if labels else _cell(rest[-1]))
            rows.append(tuple(cells))
        out[split] = rows
    return out


def moved(before: dict[str, list[Any]], after: dict[str, list[Any]]) -> int:
    """How many rows of ``before`` are not in the same split of ``after`` (multisets)."""
    count = 0
    for split, rows in before.items():
        missing = Counter(rows) - Counter(after.get(split, []))
        count += sum(missing.values())
    return count


def stored_ids(storage: Path, name: str, version: int) -> dict[str, np.ndarray | None]:
    """The row ids a version stores per split, over its shards (``None`` where it has none)."""
    store = Store.open(storage)
    record = store.catalog.get(name, version)
    if not is_sharded(record):  # one data file (published before shards)
        with h5py.File(storage / "resources" / data_identifier_of(record), "r") as f:
            return {s: (np.asarray(f[s][ROW_IDS][()]) if ROW_IDS in f[s] else None)
                    for s in record.splits}
    out: dict[str, np.ndarray | None] = {}
    for split, entries in shards_of(record).items():
        parts = []
        for entry in entries:
            with h5py.File(storage / "resources" / entry["identifier"], "r") as f:
                parts.append(np.asarray(f[split][ROW_IDS][()]) if ROW_IDS in f[split] else None)
        out[split] = None if any(p is None for p in parts) else np.concatenate(parts)
    return out


def table(rows: range, seed: int = 0, cities: tuple[str, ...] = ("Oslo", "Paris")) -> str:
    """Generated CSV rows ``id,x,city,label`` (``x`` random, ``label`` from the id)."""
    rng = np.random.default_rng(seed + rows.start)
    return "".join(
        f"{i},{rng.random():.6f},{cities[i % len(cities)]},{'abc'[(i * 7) % 3]}\n" for i in rows
    )


HEADER = "id,x,city,label\n"


def unshard(storage: Path | str, name: str, version: int, *, row_ids: bool = True) -> None:
    """Make version ``version`` look published before shards existed: one data file
    ``<attempt>/data.h5`` with every split (the whole version's schema and labels in its
    attributes, as that code wrote them), its record listing that file, the shards gone (on
    the filesystem and on GridFS). ``row_ids=False`` also leaves the row ids out (a version
    published before them)."""
    import hashlib
    import json
    import tempfile

    from datastack.canonical.shards import merge_shards

    store = Store.open(storage)
    record = store.catalog.get(name, version)
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "data.h5"
        with h5py.File(target, "w") as out:
            out.attrs["datastack_format"] = 2 if (record.schema or {}).get("fields") else 1
            out.attrs["name"] = name
            out.attrs["schema"] = json.dumps(record.schema, sort_keys=True)
            out.attrs["encodings"] = json.dumps(record.encodings or {}, sort_keys=True)
            for split, entries in shards_of(record).items():
                paths = []
                for k, entry in enumerate(entries):
                    paths.append(Path(tmp) / f"{split}-{k}.h5")
                    with store.storage.get_resource(entry["identifier"]) as resource:
                        resource.copy_to(paths[-1])
                merge_shards(paths, split, Path(tmp) / f"{split}.h5")
                with h5py.File(Path(tmp) / f"{split}.h5", "r") as f:
                    f.copy(f[split], out, split)
                    if not row_ids and ROW_IDS in out[split]:
                        del out[split][ROW_IDS]
        store.storage.set_resource(data_identifier_of(record), target)
        entry = {"identifier": data_identifier_of(record), "size": target.stat().st_size,
                 "sha256": hashlib.sha256(target.read_bytes()).hexdigest()}
    for shard in {e["identifier"] for es in shards_of(record).values() for e in es}:
        store.storage.delete_resource(shard)
    resources = [entry] + [r for r in record.resources if r.get("kind") != "shard"]
    if isinstance(storage, Path) or "://" not in str(storage):
        path = Path(storage) / "catalog" / name / f"v{version}.json"
        data = json.loads(path.read_text())
        data["resources"] = resources
        path.write_text(json.dumps(data, indent=1, sort_keys=True))
    else:
        store.catalog._records_coll(write=True).update_one(  # type: ignore[attr-defined]
            {"name": name, "version": version}, {"$set": {"resources": resources}})
