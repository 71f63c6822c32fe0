"""A 1% append to a tracked table (#24.9): what the next version costs, and what moved.

    python benchmarks/incremental.py [--rows 1000000] [--quick]

A tracked CSV of ``--rows`` rows (8 float columns, a city, a short text, a 5-class label) is
refreshed into a filesystem store (v1, with ``splits: {train: 0.8, val: 0.1, test: 0.1}``);
then 1% rows are appended upstream, two of them with a city that sorts before every other
("Aachen"), and the dataset is refreshed again (v2). Printed, with the goals of #24:

* time of the append refresh against the first (full) ingest, and bytes it added to the
  store against the store's size (raw copies included);
* samples of v1 that changed split in v2 (by the row ids each version stores), category codes
  of v1 that changed meaning (v1's labels must start v2's), rows of v2 not seen exactly once;
* Lance's append of the same rows (``lance.write_dataset(mode="append")``) as the peer: its
  time against its full write, and the bytes it added.

Runs on the filesystem and on GridFS (a SecantusDB started for the run, or ``--uri``). A
version is a manifest of shared shards and an append is prepared from its new rows only
(#24.1-3). Writes ``benchmarks/results/incremental.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS

CITIES = ["Berlin", "Lima", "Oslo", "Paris", "Quito", "Rome", "Tokyo"]
LABELS = ["ant", "bee", "cat", "dog", "eel"]
HEADER = ",".join([f"f{i}" for i in range(8)] + ["city", "text", "label"]) + "\n"


def _rows(start: int, count: int, seed: int, new_city: str | None = None) -> str:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(count, 8)).round(5)
    cities = np.array(CITIES)[rng.integers(0, len(CITIES), count)]
    if new_city is not None:
        cities[:2] = new_city
    labels = np.array(LABELS)[rng.integers(0, len(LABELS), count)]
    lines = [
        ",".join(map(repr, values[k].tolist())) + f",{cities[k]},row {start + k},{labels[k]}"
        for k in range(count)
    ]
    return "\n".join(lines) + "\n"


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _stored(storage: Path | str) -> int:
    """Bytes a store holds: its folder's files, or every GridFS file under ``datasets/``."""
    if isinstance(storage, Path):
        return _size(storage)
    from datastack.store import Store

    connector = Store.open(storage).storage
    return sum(connector.get_resource(i).size for i in connector.list_resources("datasets/"))


def _refresh(spec: Path, store: Path) -> tuple[float, Any]:
    import datastack

    started = time.perf_counter()
    [result] = datastack.refresh(spec, storage=str(store))
    elapsed = time.perf_counter() - started
    if result.status != "published":
        raise SystemExit(f"refresh failed: {result.reason}")
    return elapsed, result


def _split_ids(store: Path, version: int) -> dict[str, np.ndarray]:
    """The row ids each split of a version stores, over its shards."""
    import h5py

    from datastack.canonical.layout import shards_of
    from datastack.canonical.rowids import ROW_IDS
    from datastack.store import Store

    opened = Store.open(str(store))
    out = {}
    for split, entries in shards_of(opened.catalog.get("live", version)).items():
        parts = []
        for entry in entries:
            with opened.storage.get_resource(entry["identifier"]) as resource, \
                    h5py.File(resource, "r") as f:
                parts.append(np.asarray(f[split][ROW_IDS][()]))
        out[split] = np.concatenate(parts)
    return out


def _encodings(store: Path, version: int) -> dict[str, list[str]]:
    from datastack.store import Store

    record = Store.open(str(store)).catalog.get("live", version)
    return {k: list(v) for k, v in (record.encodings or {}).items()}


def _datastack(work: Path, rows: int, storage: str | None = None) -> dict[str, Any]:
    import h5py  # noqa: F401  (imports are not timed: both refreshes start warm)
    import pandas  # noqa: F401
    import pyarrow  # noqa: F401

    import datastack.pipeline.prepare
    import datastack.pipeline.sequence  # noqa: F401

    source = work / "live.csv"
    store: Any = work / "store" if storage is None else storage
    source.write_text(HEADER + _rows(0, rows, seed=1))
    spec = work / "live.yaml"
    spec.write_text(
        f"datasets:\n  live:\n    sources: [{{url: {source.as_uri()!r}, track: true}}]\n"
        "    format: csv\n    csv: {target: label, categorical: [city], text: [text]}\n"
        "    splits: {train: 0.8, val: 0.1, test: 0.1}\n"
    )
    first_s, _ = _refresh(spec, store)
    size_v1 = _stored(store)
    added_rows = max(2, rows // 100)
    with source.open("a") as handle:
        handle.write(_rows(rows, added_rows, seed=2, new_city="Aachen"))
    append_s, _ = _refresh(spec, store)
    size_v2 = _stored(store)
    before, after = _split_ids(store, 1), _split_ids(store, 2)
    where = {int(i): s for s, ids in after.items() for i in ids.tolist()}
    moved = sum(1 for s, ids in before.items() for i in ids.tolist() if where.get(int(i)) != s)
    every = np.concatenate(list(after.values()))
    codes_v1, codes_v2 = _encodings(store, 1), _encodings(store, 2)
    codes_moved = sum(
        sum(1 for k, label in enumerate(labels) if k >= len(codes_v2.get(col, []))
            or codes_v2[col][k] != label)
        for col, labels in codes_v1.items()
    )
    return {
        "storage": "filesystem" if storage is None else "gridfs",
        "rows": rows, "appended": added_rows, "first_s": first_s, "append_s": append_s,
        "store_v1": size_v1, "added_bytes": size_v2 - size_v1, "moved": moved,
        "codes_moved": codes_moved, "rows_v2": len(every),
        "distinct_v2": len(np.unique(every)), "expected_v2": rows + added_rows,
    }


def _lance(work: Path, rows: int) -> dict[str, Any] | None:
    try:
        import lance
        import pyarrow.csv as pcsv
    except ImportError:
        return None
    full, tail = work / "full.csv", work / "tail.csv"
    full.write_text(HEADER + _rows(0, rows, seed=1))
    tail.write_text(HEADER + _rows(rows, max(2, rows // 100), seed=2, new_city="Aachen"))
    target = work / "lance"
    started = time.perf_counter()
    lance.write_dataset(pcsv.read_csv(full), str(target))
    first_s = time.perf_counter() - started
    size_v1 = _size(target)
    started = time.perf_counter()
    lance.write_dataset(pcsv.read_csv(tail), str(target), mode="append")
    append_s = time.perf_counter() - started
    return {"first_s": first_s, "append_s": append_s, "store_v1": size_v1,
            "added_bytes": _size(target) - size_v1}


def _report(runs: list[dict[str, Any]], lance: dict[str, Any] | None) -> list[str]:
    mib = 1024 * 1024
    lines = []
    goals = []
    for ours in runs:
        where = ours["storage"]
        time_ratio = ours["append_s"] / ours["first_s"]
        byte_ratio = ours["added_bytes"] / ours["store_v1"]
        once = ours["rows_v2"] == ours["distinct_v2"] == ours["expected_v2"]
        goals += [
            (f"{where}: append time / full ingest", f"{time_ratio:.2f}x", time_ratio <= 0.35,
             "<= 0.35x"),
            (f"{where}: bytes added / store", f"{byte_ratio:.1%}", byte_ratio <= 0.05, "<= 5%"),
            (f"{where}: v1 samples moved split", str(ours["moved"]), ours["moved"] == 0, "0"),
            (f"{where}: v1 codes changed", str(ours["codes_moved"]), ours["codes_moved"] == 0,
             "0"),
            (f"{where}: v2 holds every row once", f"{ours['rows_v2']} of {ours['expected_v2']}",
             once, "yes"),
        ]
        lines.append(f"{ours['rows']:,} rows + {ours['appended']:,} appended, {where}: first "
                     f"{ours['first_s']:.2f} s, append {ours['append_s']:.2f} s, store "
                     f"{ours['store_v1'] / mib:.1f} MiB, added {ours['added_bytes'] / mib:.2f} MiB")
    if lance is not None:
        lines.append(f"lance (peer): first {lance['first_s']:.2f} s, append "
                     f"{lance['append_s']:.2f} s ({lance['append_s'] / lance['first_s']:.2f}x), "
                     f"added {lance['added_bytes'] / mib:.2f} MiB of "
                     f"{lance['store_v1'] / mib:.1f} MiB")
    lines.append(f"{'figure':44} {'measured':>14}  {'goal':>8}  status")
    lines += [f"{name:44} {value:>14}  {goal:>8}  {'PASS' if ok else 'FAIL'}"
              for name, value, ok, goal in goals]
    return lines


def main() -> None:
    from _common import mongo_server

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="50,000 rows")
    parser.add_argument("--uri", help="mongodb://host:port of a running server for the "
                                      "GridFS run (default: start a SecantusDB)")
    parser.add_argument("--no-gridfs", action="store_true", help="the filesystem run only")
    args = parser.parse_args()
    rows = 50_000 if args.quick else args.rows
    work = Path(tempfile.mkdtemp(prefix="datastack-incremental-"))
    try:
        for folder in ("ds", "gridfs", "lance-in"):
            (work / folder).mkdir()
        runs = [_datastack(work / "ds", rows)]
        if not args.no_gridfs:
            with mongo_server(args.uri) as base:
                runs.append(_datastack(work / "gridfs", rows, f"{base}/incremental"))
        lance = _lance(work / "lance-in", rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = _report(runs, lance)
    print("\n".join(lines))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "incremental.json"
    out.write_text(json.dumps({"datastack": runs, "lance": lance, "table": lines,
                               "load": os.getloadavg()}, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
