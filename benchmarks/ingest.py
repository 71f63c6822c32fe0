"""Ingestion benchmark (issue #23.6): a file to a stored, loadable dataset, datastack vs peers.

One run, the same files for everyone (generated once into ``--cache``, reused):

* a table of ``--rows`` rows (default 1,000,000): 8 float columns, a short text column, a
  categorical label, as CSV, JSON Lines and Parquet;
* two large CSVs of the same columns, ``--big-gb`` (default 1.0) and a tenth of it, so that
  datastack's peak RSS on both can be compared (#23's goal: within 100 MiB);
* an image folder of ``--images`` photos (default 3000, ~50 MiB): JPEGs and PNGs cut from the
  photographs scikit-image and scikit-learn ship, resized and re-encoded with variations
  (size, JPEG quality, some grayscale), one folder per class (10 classes).

Systems, each run in its own fresh process (its imports done before its clock starts):

* **datastack**: ``datastack.refresh`` of a spec with one file source (pinned by sha256),
  filesystem storage, as a new user writes it: tables with ``target: label``,
  ``categorical: [label]``, ``text: [text]``; the folder as ``format: imagefolder``;
* **hf** (Hugging Face datasets): ``Dataset.from_csv`` / ``from_json`` / ``from_parquet``,
  the folder with ``load_dataset("imagefolder")``, then ``save_to_disk`` (which embeds the
  image files' bytes);
* **lance**: ``pyarrow.csv.read_csv`` / ``pyarrow.json.read_json`` / ``pyarrow.parquet
  .read_table`` (images: the files' bytes and labels as one table) + ``lance.write_dataset``
  (validates nothing, decodes nothing);
* **base** (with ``--baseline DIR``): datastack imported from another checkout (e.g. an
  export of main), for before/after figures in the same run.

Each input is read once before its runs (warm page cache for everyone); ``--repeat`` runs of
every system alternate. Printed per input and system: the median seconds (and the range),
the peak RSS (``VmHWM`` of the process, or ``ru_maxrss`` of a child it waited for; the
largest of the runs), the ratio against HF datasets and against the fastest peer (HF or
Lance); then the goals of #23 and the load average. JSON: ``benchmarks/results/ingest.json``.

    python benchmarks/ingest.py [--quick] [--rows 1000000] [--big-gb 1.0] [--images 3000]
        [--repeat 1] [--image-repeat N] [--inputs csv,jsonl,parquet,big,images]
        [--systems datastack,hf,lance] [--baseline DIR [--baseline-on images]] [--cache DIR]
        [--output ingest.json]

Needs the ``bench`` extra (``datasets``, ``pylance``, ``scikit-image``, ``scikit-learn``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import MIB, ROOT, write_results

HERE = Path(__file__).resolve().parent
SYSTEMS = ("datastack", "hf", "lance")
PEERS = ("hf", "lance")
TABLE_OPTIONS = "{target: label, categorical: [label], text: [text]}"
IMAGES_VERSION = 1  # bump when make_photos changes (the cache key)


# -- data (generated once, cached) -------------------------------------------------------------
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


def _cached(path: Path, write: Any) -> Path:
    """``path``, written by ``write(tmp)`` first if missing (renamed into place when done)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)  # a new machine: no cache folder yet
    tmp = path.with_name(f".{path.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
    write(tmp)
    os.replace(tmp, path)
    return path


def table_inputs(cache: Path, rows: int) -> dict[str, Path]:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table: list[Any] = []

    def data() -> Any:
        if not table:
            table.append(make_table(rows))
        return table[0]

    def jsonl(tmp: Path) -> None:
        with tmp.open("w") as out:
            for batch in data().to_batches(max_chunksize=65536):
                out.writelines(json.dumps(row) + "\n" for row in batch.to_pylist())

    return {
        "csv": _cached(cache / f"table-{rows}.csv", lambda tmp: pacsv.write_csv(
            data(), tmp, pacsv.WriteOptions(quoting_style="none"))),
        "jsonl": _cached(cache / f"table-{rows}.jsonl", jsonl),
        "parquet": _cached(cache / f"table-{rows}.parquet",
                           lambda tmp: pq.write_table(data(), tmp)),
    }


def big_csv(cache: Path, target_bytes: int) -> Path:
    """A CSV of about ``target_bytes``: the same columns, one 10k-row chunk (~0.8 MB)
    repeated."""
    import pyarrow.csv as pacsv

    def write(tmp: Path) -> None:
        chunk = make_table(10_000, seed=1)
        with tmp.open("wb") as out:
            pacsv.write_csv(chunk, out, pacsv.WriteOptions(quoting_style="none"))
        body = tmp.read_bytes().split(b"\n", 1)[1]
        with tmp.open("ab") as out:
            while out.tell() + len(body) <= target_bytes:
                out.write(body)

    return _cached(cache / f"big-{target_bytes}.csv", write)


def make_photos(folder: Path, count: int, seed: int = 0) -> None:
    """``count`` photos (~17 KiB each): crops of the real photographs, 64-320 px wide, JPEG
    (quality 70-95) or one in six PNG, one in ten grayscale; 10 class folders."""
    import skimage
    import sklearn
    from PIL import Image

    data = Path(skimage.__file__).parent / "data"
    sources = [data / n for n in ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg",
                                  "retina.jpg", "hubble_deep_field.jpg", "motorcycle_left.png",
                                  "color.png")]
    sources += [Path(sklearn.__file__).parent / "datasets" / "images" / n
                for n in ("china.jpg", "flower.jpg")]
    photos = [Image.open(p).convert("RGB") for p in sources]
    rng = random.Random(seed)
    for i in range(count):
        photo = photos[i % len(photos)]
        w, h = photo.size
        cw, ch = rng.randint(w // 4, w), rng.randint(h // 4, h)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        side = rng.randint(64, 320)
        crop = photo.crop((x, y, x + cw, y + ch)).resize((side, max(32, side * ch // cw)))
        if i % 10 == 7:
            crop = crop.convert("L")
        cls = folder / f"class{i % 10}"
        cls.mkdir(parents=True, exist_ok=True)
        if i % 6 == 0:
            crop.save(cls / f"{i:05d}.png")
        else:
            crop.save(cls / f"{i:05d}.jpg", quality=rng.randint(70, 95))


def image_input(cache: Path, count: int) -> Path:
    return _cached(cache / f"photos-{count}-v{IMAGES_VERSION}",
                   lambda tmp: make_photos(tmp, count))


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def warm(path: Path) -> None:
    """Read every byte once: each system then starts from the same (warm) page cache."""
    for file in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
        with file.open("rb") as handle:
            while handle.read(1 << 22):
                pass


# -- one system, one input (in a child process) -----------------------------------------------
def _format(kind: str) -> str:
    return "imagefolder" if kind == "images" else kind.split("-")[0]


def _datastack(kind: str, path: Path, out: Path) -> None:
    import datastack

    fmt = _format(kind)
    if fmt == "imagefolder":
        from datastack.retrieval.folder import folder_sha256

        digest, body = folder_sha256(path), ""
    else:
        with path.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        body = f"    {fmt}: {TABLE_OPTIONS}\n"
    spec = out.parent / "spec.yaml"
    spec.write_text(f"datasets:\n  bench:\n    sources: [{{url: {path.as_uri()}, "
                    f"sha256: {digest}}}]\n    format: {fmt}\n{body}")
    import h5py  # noqa: F401  (imports are not timed, for any system)
    import pandas  # noqa: F401  (pyarrow imports it at its first pa.array; HF's import does too)
    import PIL.Image  # noqa: F401
    import pyarrow  # noqa: F401

    import datastack.pipeline.prepare
    import datastack.pipeline.sequence

    started = time.perf_counter()
    [result] = datastack.refresh(spec, storage=str(out))
    _report(started, result.status == "published", result.reason)


def _hf(kind: str, path: Path, out: Path) -> None:
    cache = str(out.parent / "hf-cache")
    os.environ["HF_DATASETS_CACHE"] = cache
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    import datasets
    import PIL.Image  # noqa: F401  (imported before the clock, as for datastack)

    started = time.perf_counter()
    fmt = _format(kind)
    if fmt == "imagefolder":
        ds = datasets.load_dataset("imagefolder", data_dir=str(path), split="train",
                                   cache_dir=cache)
    elif fmt == "csv":
        ds = datasets.Dataset.from_csv(str(path), cache_dir=cache)
    elif fmt == "jsonl":
        ds = datasets.Dataset.from_json(str(path), cache_dir=cache)
    else:
        ds = datasets.Dataset.from_parquet(str(path), cache_dir=cache)
    ds.save_to_disk(str(out))
    _report(started, len(ds) > 0, "")


def _lance(kind: str, path: Path, out: Path) -> None:
    import lance
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    started = time.perf_counter()
    fmt = _format(kind)
    if fmt == "imagefolder":
        files = sorted(p for p in path.rglob("*") if p.is_file())
        table = pa.table({"image": [p.read_bytes() for p in files],
                          "label": [p.parent.name for p in files]})
    elif fmt == "csv":
        table = pacsv.read_csv(path)
    elif fmt == "jsonl":
        table = pajson.read_json(path)
    else:
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


def child(system: str, kind: str, path: str, out: str, root: str) -> None:
    sys.path.insert(0, root)  # the datastack checkout this system runs
    run = {"datastack": _datastack, "base": _datastack, "hf": _hf, "lance": _lance}[system]
    run(kind, Path(path), Path(out))


def measure(system: str, kind: str, path: Path, work: Path, root: Path) -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix=f"ingest-{system}-{kind}-", dir=work))
    try:
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", system, kind, str(path),
             str(scratch / "out"), str(root)], capture_output=True, text=True)
        if done.returncode != 0:
            return {"ok": False, "reason": done.stderr.strip().splitlines()[-1:]}
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# -- the table --------------------------------------------------------------------------------
def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    good = [r for r in runs if r.get("ok")]
    if not good or len(good) < len(runs):
        bad = next((r for r in runs if not r.get("ok")), {})
        return {"ok": False, "reason": bad.get("reason"), "runs": runs}
    times = [r["seconds"] for r in good]
    return {"ok": True, "seconds": statistics.median(times), "min": min(times),
            "max": max(times), "peak_rss_mib": max(r["peak_rss_mib"] for r in good),
            "runs": len(good)}


def ratios(row: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per system: median seconds over HF's and over the fastest peer's (HF, Lance)."""
    peers = [row[p]["seconds"] for p in PEERS if row.get(p, {}).get("ok")]
    hf = row.get("hf", {})
    out: dict[str, dict[str, float]] = {}
    for system, r in row.items():
        if r.get("ok"):
            out[system] = {
                **({"vs_hf": r["seconds"] / hf["seconds"]} if hf.get("ok") else {}),
                **({"vs_fastest_peer": r["seconds"] / min(peers)} if peers else {}),
            }
    return out


def print_table(results: dict[str, dict[str, dict[str, Any]]], sizes: dict[str, int]) -> None:
    print(f"\n{'input':<14}{'MiB':>7}  {'system':<10}{'median s':>9}{'range s':>15}"
          f"{'peak RSS':>11}{'x HF':>7}{'x fastest':>10}")
    for kind, row in results.items():
        rel = ratios(row)
        for i, (system, r) in enumerate(row.items()):
            head = f"{kind:<14}{sizes[kind] / MIB:7.1f}" if i == 0 else " " * 21
            if not r.get("ok"):
                print(f"{head}  {system:<10} failed: {r.get('reason')}")
                continue
            x = rel.get(system, {})
            vs_hf = f"{x['vs_hf']:6.2f}x" if "vs_hf" in x else f"{'-':>7}"
            vs_peer = f"{x['vs_fastest_peer']:9.2f}x" if "vs_fastest_peer" in x else f"{'-':>10}"
            spread = f"{r['min']:.2f}-{r['max']:.2f}"
            print(f"{head}  {system:<10}{r['seconds']:9.2f}{spread:>15}"
                  f"{r['peak_rss_mib']:7.0f} MiB{vs_hf}{vs_peer}")


def goals(results: dict[str, dict[str, dict[str, Any]]], big: list[str]) -> dict[str, Any]:
    """The goals of #23 from this run's figures (None: not measured)."""
    def ds(kind: str) -> dict[str, Any]:
        return results.get(kind, {}).get("datastack", {})

    out: dict[str, Any] = {}
    for kind in ("csv", "jsonl", "parquet", "images"):
        x = ratios(results.get(kind, {})).get("datastack", {})
        out[f"{kind}_vs_hf"] = x.get("vs_hf")
        out[f"{kind}_vs_fastest_peer"] = x.get("vs_fastest_peer")
    if len(big) == 2 and ds(big[0]).get("ok") and ds(big[1]).get("ok"):
        out["big_csv_rss_growth_mib"] = ds(big[1])["peak_rss_mib"] - ds(big[0])["peak_rss_mib"]
    return out


def print_goals(found: dict[str, Any]) -> None:
    def show(value: Any, limit: float, unit: str = "x") -> str:
        if value is None:
            return "not measured"
        verdict = "met" if value <= limit else "NOT met"
        return f"{value:.2f}{unit} ({verdict}, goal <= {limit}{unit})"

    print("\ngoals of #23 (datastack, ratios of medians in this run):")
    for kind in ("csv", "jsonl", "parquet"):
        print(f"  {kind:<8} vs HF: {show(found[f'{kind}_vs_hf'], 1.0)}")
    print(f"  images   vs HF: {show(found['images_vs_hf'], 0.67)} (>= 1.5x faster)")
    growth = found.get("big_csv_rss_growth_mib")
    print(f"  peak RSS, big CSV minus a tenth of it: {show(growth, 100, ' MiB')}")


# -- main -------------------------------------------------------------------------------------
def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes: 20k rows, a 20 MB CSV, 300 photos")
    parser.add_argument("--rows", type=int, default=None, help="table rows (1,000,000)")
    parser.add_argument("--big-gb", type=float, default=None,
                        help="size of the big CSV in GB (1.0; 0: none); a tenth is run too")
    parser.add_argument("--images", type=int, default=None, help="photos (3000)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each system per input")
    parser.add_argument("--image-repeat", type=int, default=None,
                        help="runs of each system on the image folder (default: --repeat)")
    parser.add_argument("--inputs", default="", help="only these inputs (comma-separated: "
                        "csv, jsonl, parquet, big, images)")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--baseline", type=Path, default=None,
                        help="also run datastack from this checkout, as system 'base'")
    parser.add_argument("--baseline-on", default="images",
                        help="the inputs 'base' runs on (comma-separated; default: images)")
    parser.add_argument("--output", default="ingest.json", help="file in benchmarks/results")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get(
        "DATASTACK_BENCH_CACHE", Path.home() / ".cache" / "datastack-bench" / "ingest")))
    parser.add_argument("--child", nargs=5, metavar=("SYSTEM", "KIND", "PATH", "OUT", "ROOT"))
    args = parser.parse_args()
    quick = args.quick
    args.rows = args.rows or (20_000 if quick else 1_000_000)
    args.big_gb = args.big_gb if args.big_gb is not None else (0.02 if quick else 1.0)
    args.images = args.images or (300 if quick else 3000)
    return args


def inputs_of(args: argparse.Namespace) -> tuple[dict[str, Path], list[str]]:
    wanted = set(filter(None, args.inputs.split(","))) or {"csv", "jsonl", "parquet", "big",
                                                           "images"}
    args.cache.mkdir(parents=True, exist_ok=True)
    inputs: dict[str, Path] = {}
    if wanted & {"csv", "jsonl", "parquet"}:
        tables = table_inputs(args.cache, args.rows)
        inputs.update({k: v for k, v in tables.items() if k in wanted})
    big: list[str] = []
    if "big" in wanted and args.big_gb > 0:
        for gb in (args.big_gb / 10, args.big_gb):
            kind = f"csv-{gb * 1000:g}mb"
            inputs[kind] = big_csv(args.cache, int(gb * 1e9))
            big.append(kind)
    if "images" in wanted:
        inputs["images"] = image_input(args.cache, args.images)
    return inputs, big


def run_inputs(args: argparse.Namespace, inputs: dict[str, Path], systems: list[str],
               roots: dict[str, Path]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Every system on every input (``--repeat`` alternating runs); the summaries, every run
    and the load average after each input."""
    results: dict[str, dict[str, dict[str, Any]]] = {}
    loads: dict[str, list[float]] = {}
    all_runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(prefix="datastack-ingest-") as tmp:
        for kind, path in inputs.items():
            warm(path)
            chosen = [s for s in systems if s != "base" or kind in args.baseline_on.split(",")]
            runs: dict[str, list[dict[str, Any]]] = {s: [] for s in chosen}
            repeat = args.image_repeat if kind == "images" and args.image_repeat else args.repeat
            for _ in range(repeat):
                for system in chosen:
                    runs[system].append(measure(system, kind, path, Path(tmp), roots[system]))
                    print(f"  {kind:<12} {system:<10} {runs[system][-1]}", flush=True)
            results[kind] = {s: summarise(r) for s, r in runs.items()}
            all_runs[kind] = runs
            loads[kind] = list(os.getloadavg())
    return results, all_runs, loads


def main() -> None:
    args = arguments()
    if args.child:
        child(*args.child)
        return
    systems = [s for s in args.systems.split(",") if s]
    roots = {s: ROOT for s in systems}
    if args.baseline is not None:
        systems.append("base")
        roots["base"] = args.baseline.resolve()
    inputs, big = inputs_of(args)
    sizes = {k: size_of(p) for k, p in inputs.items()}
    print("inputs: " + ", ".join(f"{k} {v / MIB:.1f} MiB" for k, v in sizes.items()))
    print(f"load average before: {os.getloadavg()}", flush=True)
    results, all_runs, loads = run_inputs(args, inputs, systems, roots)
    print_table(results, sizes)
    found = goals(results, big)
    print_goals(found)
    print(f"load average (1, 5, 15 min) after each input: {loads}")
    out = write_results(args.output, {
        "rows": args.rows, "images": args.images, "big_gb": args.big_gb, "repeat": args.repeat,
        "image_repeat": args.image_repeat, "input_bytes": sizes, "results": results,
        "goals": found, "ratios": {k: ratios(r) for k, r in results.items()},
        "load_after": loads, "runs": all_runs})
    print(f"results: {out}")


if __name__ == "__main__":
    main()
