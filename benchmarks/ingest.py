"""Ingestion benchmark (issue #23): a file to a stored, loadable dataset, datastack vs peers.

One run, the same files for everyone:

* a table of ``--rows`` rows (default 1,000,000): 8 float columns, a short text column, a
  categorical label, written as CSV, JSON Lines and Parquet;
* optionally (``--big-csv``) a ~1 GB CSV of the same columns;
* an image folder of ``--images`` photos (JPEG and PNG cut from the photographs scikit-image
  and scikit-learn ship: ``records.make_images``), one folder per class.

Systems, each in its own process (a fresh interpreter; the imports of each system happen
before its clock starts):

* **datastack**: ``datastack.refresh`` of a spec with one file source (pinned by sha256),
  filesystem storage; tables with ``target: label``, ``categorical: [label]``,
  ``text: [text]``; the folder as ``format: imagefolder``;
* **HF datasets**: ``Dataset.from_csv`` / ``from_json`` / ``from_parquet`` (the image folder:
  ``load_dataset("imagefolder")``) + ``save_to_disk``;
* **Lance**: ``pyarrow.csv.read_csv`` / ``pyarrow.json.read_json`` /
  ``pyarrow.parquet.read_table`` (images: the files' bytes and labels as one table) +
  ``lance.write_dataset`` (validates nothing).

Printed per input: seconds, ratio against the fastest peer of that input, peak RSS of the
process (``VmHWM``) and of the children it waited for (``ru_maxrss``). JSON goes to
``benchmarks/results/ingest.json``.

    python benchmarks/ingest.py [--rows 1000000] [--images 3000] [--big-csv] [--skip-images]
        [--systems datastack,hf,lance]

Needs the ``bench`` extra (``datasets``, ``pylance``, ``polars``, ``scikit-image``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import MIB, write_results

HERE = Path(__file__).resolve().parent
SYSTEMS = ("datastack", "hf", "lance")
TABLE_OPTIONS = "{target: label, categorical: [label], text: [text]}"


# -- data -------------------------------------------------------------------------------------
def make_table(rows: int, seed: int = 0) -> Any:
    """``rows`` rows: f0..f7 float64, ``text`` (short words), ``label`` (5 classes)."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {
        f"f{k}": np.round(rng.normal(size=rows), 6) for k in range(8)
    }
    words = np.array(["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"])
    columns["text"] = pa.array(words[rng.integers(0, len(words), rows)].astype(object))
    classes = np.array(["cat", "dog", "bird", "fish", "frog"])
    columns["label"] = pa.array(classes[rng.integers(0, len(classes), rows)].astype(object))
    return pa.table(columns)


def write_inputs(work: Path, rows: int) -> dict[str, Path]:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = make_table(rows)
    paths = {"csv": work / "table.csv", "jsonl": work / "table.jsonl",
             "parquet": work / "table.parquet"}
    pacsv.write_csv(table, paths["csv"],
                    pacsv.WriteOptions(quoting_style="none"))
    pq.write_table(table, paths["parquet"])
    with paths["jsonl"].open("w") as out:
        for batch in table.to_batches(max_chunksize=65536):
            for row in batch.to_pylist():
                out.write(json.dumps(row) + "\n")
    return paths


def write_big_csv(work: Path, target_bytes: int = 1024 * MIB) -> Path:
    """A CSV of about ``target_bytes``: the same table, appended chunk by chunk."""
    import pyarrow.csv as pacsv

    path = work / "big.csv"
    chunk = make_table(500_000, seed=1)
    with path.open("wb") as out:
        pacsv.write_csv(chunk, out, pacsv.WriteOptions(quoting_style="none"))
        body = path.read_bytes().split(b"\n", 1)[1]
        while out.tell() < target_bytes:
            out.write(body)
    return path


def write_images(work: Path, count: int) -> Path:
    sys.path.insert(0, str(HERE))
    from records import make_images

    folder = work / "images"
    make_images(folder, count)
    return folder


# -- one system, one input (in a child process) -----------------------------------------------
def _datastack(kind: str, path: Path, out: Path) -> None:
    import datastack

    if kind == "images":
        from datastack.retrieval.folder import folder_sha256

        digest, fmt, body = folder_sha256(path), "imagefolder", ""
    else:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        fmt = {"csv": "csv", "big-csv": "csv", "jsonl": "jsonl", "parquet": "parquet"}[kind]
        body = f"    {fmt}: {TABLE_OPTIONS}\n"
    spec = out.parent / "spec.yaml"
    spec.write_text(f"datasets:\n  bench:\n    sources: [{{url: {path.as_uri()}, "
                    f"sha256: {digest}}}]\n    format: {fmt}\n{body}")
    import h5py  # noqa: F401  (imports are not timed, for any system)
    import pyarrow  # noqa: F401

    import datastack.pipeline.prepare
    import datastack.pipeline.sequence

    started = time.perf_counter()
    [result] = datastack.refresh(spec, storage=str(out))
    _report(started, result.status == "published", result.reason)


def _hf(kind: str, path: Path, out: Path) -> None:
    os.environ["HF_DATASETS_CACHE"] = str(out.parent / "hf-cache")
    os.environ["HF_HUB_OFFLINE"] = "1"
    import datasets

    started = time.perf_counter()
    cache = str(out.parent / "hf-cache")
    if kind == "images":
        ds = datasets.load_dataset("imagefolder", data_dir=str(path), split="train",
                                   cache_dir=cache)
    elif kind in ("csv", "big-csv"):
        ds = datasets.Dataset.from_csv(str(path), cache_dir=cache)
    elif kind == "jsonl":
        ds = datasets.Dataset.from_json(str(path), cache_dir=cache)
    else:
        ds = datasets.Dataset.from_parquet(str(path), cache_dir=cache)
    ds.save_to_disk(str(out))
    _report(started, len(ds) > 0, "")


def _lance(kind: str, path: Path, out: Path) -> None:
    import lance
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.json
    import pyarrow.parquet

    started = time.perf_counter()
    if kind == "images":
        files = sorted(p for p in path.rglob("*") if p.is_file())
        table = pa.table({"image": [p.read_bytes() for p in files],
                          "label": [p.parent.name for p in files]})
    elif kind in ("csv", "big-csv"):
        import pyarrow.csv as pacsv

        table = pacsv.read_csv(path)
    elif kind == "jsonl":
        import pyarrow.json as pajson

        table = pajson.read_json(path)
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    lance.write_dataset(table, str(out))
    _report(started, table.num_rows > 0, "")


def _vm_hwm_kib() -> int:
    """This process's peak RSS since its exec (``ru_maxrss`` of RUSAGE_SELF would include the
    parent's peak at fork time: Linux keeps it across execve)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _report(started: float, ok: bool, reason: str) -> None:
    seconds = time.perf_counter() - started
    # the peak of this process, or of a child it waited for (datastack's preparation child)
    peak = max(_vm_hwm_kib(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    print(json.dumps({"seconds": seconds, "ok": ok, "reason": reason, "peak_rss_mib": peak}))


def child(system: str, kind: str, path: str, out: str) -> None:
    run = {"datastack": _datastack, "hf": _hf, "lance": _lance}[system]
    run(kind, Path(path), Path(out))


def measure(system: str, kind: str, path: Path, work: Path) -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix=f"ingest-{system}-{kind}-", dir=work))
    try:
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", system, kind, str(path),
             str(scratch / "out")], capture_output=True, text=True)
        if done.returncode != 0:
            return {"ok": False, "reason": done.stderr.strip().splitlines()[-1:]}
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# -- the table --------------------------------------------------------------------------------
def _print(results: dict[str, dict[str, dict[str, Any]]], systems: list[str]) -> None:
    print(f"\n{'input':<10}" + "".join(f"{s:>28}" for s in systems) + f"{'datastack/HF':>14}")
    for kind, row in results.items():
        peers = [r["seconds"] for s, r in row.items() if s != "datastack" and r.get("ok")]
        fastest = min(peers) if peers else None
        cells = []
        for system in systems:
            r = row.get(system, {})
            if not r.get("ok"):
                cells.append(f"{'failed' if r else '-':>28}")
                continue
            ratio = f" {r['seconds'] / fastest:5.2f}x" if fastest else ""
            cells.append(f"{r['seconds']:8.2f} s{ratio} {r['peak_rss_mib']:6.0f} MiB")
        ds, hf = row.get("datastack", {}), row.get("hf", {})
        versus = f"{ds['seconds'] / hf['seconds']:13.2f}x" if ds.get("ok") and hf.get("ok") \
            else f"{'-':>14}"
        print(f"{kind:<10}" + "".join(f"{c:>28}" for c in cells) + versus)
    print("\nratio: against the fastest peer (HF datasets, Lance) of the same input; "
          "MiB: peak RSS of the process and its children; datastack/HF: the goal of #23 is "
          "<= 1.0x for tables")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--big-csv", action="store_true", help="also a ~1 GB CSV")
    parser.add_argument("--skip-images", action="store_true")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--child", nargs=4, metavar=("SYSTEM", "KIND", "PATH", "OUT"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    systems = [s for s in args.systems.split(",") if s]
    with tempfile.TemporaryDirectory(prefix="datastack-ingest-") as tmp:
        work = Path(tmp)
        inputs: dict[str, Path] = dict(write_inputs(work, args.rows))
        if args.big_csv:
            inputs["big-csv"] = write_big_csv(work)
        if not args.skip_images:
            inputs["images"] = write_images(work, args.images)
        sizes = {k: (p.stat().st_size if p.is_file() else sum(
            f.stat().st_size for f in p.rglob("*") if f.is_file())) for k, p in inputs.items()}
        print("inputs: " + ", ".join(f"{k} {v / MIB:.1f} MiB" for k, v in sizes.items()))
        results: dict[str, dict[str, dict[str, Any]]] = {}
        for kind, path in inputs.items():
            results[kind] = {}
            for system in systems:
                results[kind][system] = measure(system, kind, path, work)
                print(f"  {kind:<8} {system:<10} {results[kind][system]}", flush=True)
    _print(results, systems)
    out = write_results("ingest.json", {"rows": args.rows, "images": args.images,
                                        "input_bytes": sizes, "results": results})
    print(f"results: {out}")


if __name__ == "__main__":
    main()
