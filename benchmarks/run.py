"""datastack against its baselines, in one run: prints one table of ratios and writes JSON.

    python benchmarks/run.py [--quick] [--uri mongodb://host:port] [--repeat N]

Starts its own SecantusDB server (unless ``--uri``), builds a 60000 x 28 x 28 float32 dataset
with int64 labels (``--quick``: 10000), publishes it with ``datastack.pipeline.refresh`` into a
GridFS storage and a filesystem storage (a spec with a pair of local .npy files), then measures
each figure against its baseline in the same run, interleaving the two and taking medians
(the machine is shared: absolute numbers vary, ratios much less). Read figures run in fresh
processes; store figures too (peak RSS is per process). Results: ``benchmarks/results/run.json``.
See docs/performance.md for what each figure means.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    MIB,
    median,
    mnist_like,
    mongo_server,
    peak_rss_mib,
    run_child,
    seconds,
    write_results,
)

NAME = "benchdigits"
BATCH = 256


# -- setup (parent) --------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


LAYOUTS = {  # name -> (compression, shuffle, sample rows per chunk or None = as written)
    "canonical": None,
    "none": (None, False, None),
    "lzf-noshuffle": ("lzf", False, None),
    "lzf-noshuffle-20": ("lzf", False, 20),
}


def relayout(src: Path, dst: Path, layout: str) -> None:
    """Copy a canonical file with another compression/chunking (same groups, attrs, data)."""
    import h5py

    compression, shuffle, rows = LAYOUTS[layout]  # type: ignore[misc]
    with h5py.File(src, "r") as fin, h5py.File(dst, "w") as fout:
        fout.attrs.update(fin.attrs)
        for gname, group in fin.items():
            out = fout.create_group(gname)
            out.attrs.update(group.attrs)
            for dname, dset in group.items():
                chunks = dset.chunks
                if rows and dname == "samples":
                    chunks = (rows, *dset.shape[1:])
                new = out.create_dataset(
                    dname,
                    shape=dset.shape,
                    dtype=dset.dtype,
                    chunks=chunks,
                    compression=compression,
                    shuffle=shuffle,
                )
                new.attrs.update(dset.attrs)
                step = max(
                    1,
                    (16 * MIB)
                    // max(
                        1, dset.dtype.itemsize * int(max(1, dset.size // max(1, dset.shape[0])))
                    ),
                )
                for lo in range(0, dset.shape[0], step):
                    new[lo : lo + step] = dset[lo : lo + step]


def prepare(
    work: Path, n: int, mongo_uri: str, fs_uri: str, layout: str, hf: bool = True
) -> dict[str, Any]:
    """Arrays -> npy pair + spec -> refresh into both storages; local canonical file; HF.

    With ``layout`` other than "canonical", the published data file of both storages is then
    replaced (same identifier) by a copy in that layout, so every figure reads it instead.
    """
    import numpy as np

    from datastack.api import refresh
    from datastack.catalog.record import data_identifier_of
    from datastack.preprocessing import write_arrays

    images, labels = mnist_like(n)
    src = work / "src"
    src.mkdir()
    np.save(src / "images.npy", images)
    np.save(src / "labels.npy", labels)
    spec = work / "spec.yaml"
    spec.write_text(
        f"datasets:\n  {NAME}:\n    format: npy\n    sources:\n"
        f"      - {{url: '{(src / 'images.npy').as_uri()}', "
        f"sha256: {_sha256(src / 'images.npy')}, role: samples}}\n"
        f"      - {{url: '{(src / 'labels.npy').as_uri()}', "
        f"sha256: {_sha256(src / 'labels.npy')}, role: targets}}\n"
    )
    timings = {}
    for label, uri in (("gridfs", mongo_uri), ("filesystem", fs_uri)):
        t0 = time.perf_counter()
        (result,) = refresh(spec, storage=uri, force=True)
        if not result.ok:
            raise RuntimeError(f"refresh into {label} failed: {result.reason}")
        timings[f"refresh_{label}_s"] = time.perf_counter() - t0
    local = work / "canonical.h5"  # the same layout, written directly (h5py baseline, ranges)
    write_arrays(local, NAME, {"train": (images, labels)})
    if layout != "canonical":
        from datastack.catalog import open_catalog
        from datastack.storage import connect

        variant = work / f"{layout}.h5"
        relayout(local, variant, layout)
        local = variant
        for uri in (mongo_uri, fs_uri):
            ident = data_identifier_of(open_catalog(uri).latest(NAME))
            with open(variant, "rb") as fh:
                connect(uri).set_resource(ident, fh)
    if hf:  # the filesystem rows' baseline (Hugging Face datasets)
        t0 = time.perf_counter()
        _write_hf(images, labels, work / "hf")
        timings["hf_write_s"] = time.perf_counter() - t0
    from datastack.catalog import open_catalog

    record = open_catalog(fs_uri).latest(NAME)
    return {
        "n": n,
        "layout": layout,
        "mongo_uri": mongo_uri,
        "fs_uri": fs_uri,
        "identifier": data_identifier_of(record),
        "gridfs_identifier": data_identifier_of(open_catalog(mongo_uri).latest(NAME)),
        "local_h5": str(local),
        "fs_h5": str(_fs_path(fs_uri, data_identifier_of(record))),
        "hf_dir": str(work / "hf"),
        "file_bytes": local.stat().st_size,
        "raw_bytes": images.nbytes + labels.nbytes,
        **timings,
    }


def _fs_path(fs_uri: str, identifier: str) -> Path:
    from datastack.storage import connect

    path = Path(connect(fs_uri).get_resource(identifier)._opener.path)  # type: ignore[attr-defined]
    if not path.is_file():
        raise RuntimeError(f"{identifier} is not a local file under {fs_uri}")
    return path


def _write_hf(images: Any, labels: Any, out: Path) -> None:
    import datasets

    datasets.disable_progress_bars()
    features = datasets.Features(
        {"image": datasets.Array2D((28, 28), "float32"), "label": datasets.Value("int64")}
    )
    step = 10000

    def gen() -> Any:
        for lo in range(0, len(images), step):
            yield {"image": images[lo : lo + step], "label": labels[lo : lo + step]}

    table = datasets.Dataset.from_dict(
        {"image": images[:0], "label": labels[:0]}, features=features
    )
    parts = [datasets.Dataset.from_dict(batch, features=features) for batch in gen()]
    table = datasets.concatenate_datasets(parts) if parts else table
    table.save_to_disk(str(out))


# -- children --------------------------------------------------------------------------------
def _spread_indices(n: int, count: int, rng: random.Random) -> list[int]:
    """One random index per 1/count of the file, in random order (each in its own blocks)."""
    bounds = [n * k // count for k in range(count + 1)]
    picks = [rng.randrange(bounds[k], max(bounds[k] + 1, bounds[k + 1])) for k in range(count)]
    rng.shuffle(picks)
    return picks


def _chunk_blocks(local_h5: str, chunk_size: int) -> tuple[int, dict[int, list[int]]]:
    """Rows per HDF5 chunk of train/samples and, per row chunk, the GridFS chunks holding it."""
    import h5py

    with h5py.File(local_h5, "r") as f:
        dset = f["train/samples"]
        rows = dset.chunks[0]
        out: dict[int, list[int]] = {}
        for i in range(dset.id.get_num_chunks()):
            info = dset.id.get_chunk_info(i)
            start, end = int(info.byte_offset), int(info.byte_offset) + int(info.size)
            out[int(info.chunk_offset[0]) // rows] = list(
                range(start // chunk_size, (end - 1) // chunk_size + 1)
            )
    return rows, out


def child_gridfs(state: dict[str, Any], repeat: int) -> dict[str, Any]:
    import numpy as np

    import datastack
    from datastack.storage.cache import default_cache
    from datastack.storage.gridfs import GridFSStorageConnector

    uri, n, rng = state["mongo_uri"], state["n"], random.Random(1)
    store = GridFSStorageConnector(uri)
    ident = state["gridfs_identifier"]
    file_id = store.resource_file_id(ident)
    doc = store.files.find_one({"_id": file_id})
    chunk_size, length = int(doc["chunkSize"]), int(doc["length"])
    nchunks = -(-length // chunk_size)
    rows, blocks_of = _chunk_blocks(state["local_h5"], chunk_size)
    out: dict[str, Any] = {"file_bytes": length, "gridfs_chunk": chunk_size, "hdf5_rows": rows}

    t0 = time.perf_counter()
    it = datastack.load(NAME, "train", storage=uri)
    it[0]
    out["first_sample_fresh_process_ms"] = (time.perf_counter() - t0) * 1000
    list(store.chunks.find({"files_id": file_id}))  # server-side warm-up, both sides alike
    cache = default_cache()

    # random single samples: uncached (fresh block cache before each) vs one find_one
    for _ in range(20):  # warm h5py's metadata cache (chunk index), not the block cache
        it[rng.randrange(n)]
    ours, raw, warm = [], [], []
    picks = _spread_indices(n, 40 * repeat, rng)
    for i in picks:
        k = rng.randrange(nchunks)
        raw.append(seconds(lambda k=k: store.chunks.find_one({"files_id": file_id, "n": k})))
        cache.clear()
        ours.append(seconds(lambda i=i: it[i]))
    for i in picks:  # load their blocks, then read them again
        it[i]
    for i in picks:
        warm.append(seconds(lambda i=i: it[i]))
    out["single_uncached_ms"] = median(ours) * 1000
    out["single_warm_ms"] = median(warm) * 1000
    out["find_one_ms"] = median(raw) * 1000

    # batches of 256 random samples: get_batch with a fresh cache vs one $in find of its chunks
    ours, raw = [], []
    for _ in range(3 * repeat):
        idx = np.array(sorted(rng.sample(range(n), BATCH)))
        numbers = sorted({b for r in set((idx // rows).tolist()) for b in blocks_of[r]})
        raw.append(
            seconds(
                lambda numbers=numbers: list(
                    store.chunks.find({"files_id": file_id, "n": {"$in": numbers}})
                )
            )
        )
        np.random.default_rng(0).shuffle(idx)
        cache.clear()
        ours.append(seconds(lambda idx=idx: it.get_batch(idx)))
    out["batch_ms"] = median(ours) * 1000
    out["batch_raw_ms"] = median(raw) * 1000

    # full sequential pass in batches of 256 (fresh cache) vs raw find() over all chunks
    ours, raw = [], []

    def full_pass() -> None:
        for lo in range(0, n, BATCH):
            it.get_batch(np.arange(lo, min(n, lo + BATCH)))

    for _ in range(max(5, repeat)):
        cache.clear()  # both sides start from the same process memory (no 180 MB cache held)
        raw.append(
            seconds(lambda: sum(len(d["data"]) for d in store.chunks.find({"files_id": file_id})))
        )
        cache.clear()
        ours.append(seconds(full_pass))
    out["pass_s"] = median(ours)
    out["pass_raw_s"] = median(raw)
    out["pass_all_s"] = [round(x, 4) for x in ours]
    out["pass_raw_all_s"] = [round(x, 4) for x in raw]
    out["pass_samples_per_s"] = n / out["pass_s"]
    out["pass_warm_s"] = median([seconds(full_pass) for _ in range(3)])  # from the block cache
    out["peak_rss_mib"] = peak_rss_mib()
    out.update(_pass_bounds(store, file_id, cache, full_pass, repeat))
    return out


def _pass_bounds(
    store: Any, file_id: Any, cache: Any, full_pass: Any, repeat: int
) -> dict[str, Any]:
    """Details of the sequential row (measured after it; the row stands as measured): a raw
    scan in batches of 32 chunks (datastack's 8 MiB window; the row's raw find() uses the
    driver's default 16 MB batches), and the same pass with a 96 MiB block cache, too small
    to keep the 180 MB file (its blocks reuse freed memory instead of first-touching new
    pages; read-ahead windows stay 8 MiB)."""
    budget, tuned, small = cache.max_bytes, [], []
    for _ in range(max(3, repeat)):
        cache.clear()
        tuned.append(
            seconds(
                lambda: sum(
                    len(d["data"]) for d in store.chunks.find({"files_id": file_id}, batch_size=32)
                )
            )
        )
        cache.resize(96 * MIB)
        cache.clear()
        small.append(seconds(full_pass))
        cache.resize(budget)
    cache.clear()
    return {"pass_raw_batch32_s": median(tuned), "pass_small_cache_s": median(small)}


def child_filesystem(state: dict[str, Any], repeat: int) -> dict[str, Any]:
    import datasets
    import h5py
    import numpy as np

    import datastack

    n, rng = state["n"], random.Random(2)
    out: dict[str, Any] = {}
    it = datastack.load(NAME, "train", storage=state["fs_uri"])
    it[0]
    plain = h5py.File(state["fs_h5"], "r")["train/samples"]
    plain[0]
    # HDF5 shares one open file and its chunk cache per inode in a process, and datastack
    # opens local files with HDF5's own driver: reading row i with h5py just before datastack
    # reads it would hand datastack a cached chunk. So the two read disjoint random HDF5
    # chunks (one row each, never a chunk the other side or an earlier read touched).
    rows = int(plain.chunks[0]) if plain.chunks else 1
    nchunks = -(-n // rows)
    chunks = rng.sample(range(1, nchunks), min(2 * 200 * repeat, nchunks - 1))
    ours, base = [], []
    for a, b in zip(chunks[0::2], chunks[1::2]):
        i = rng.randrange(a * rows, min(n, (a + 1) * rows))
        j = rng.randrange(b * rows, min(n, (b + 1) * rows))
        base.append(seconds(lambda i=i: plain[i]))
        ours.append(seconds(lambda j=j: it[j]))
    out["single_reads_each"] = len(ours)
    out["single_ms"] = median(ours) * 1000
    out["single_h5py_ms"] = median(base) * 1000

    hf = datasets.load_from_disk(state["hf_dir"]).with_format("numpy")
    ours, base, base_iter = [], [], []

    def hf_slices() -> None:
        for lo in range(0, n, BATCH):
            hf[lo : lo + BATCH]

    def hf_iter() -> None:
        for _ in hf.iter(batch_size=BATCH):
            pass

    def full_pass() -> None:
        for lo in range(0, n, BATCH):
            it.get_batch(np.arange(lo, min(n, lo + BATCH)))

    for _ in range(max(3, repeat)):
        base.append(seconds(hf_slices))
        base_iter.append(seconds(hf_iter))
        ours.append(seconds(full_pass))
    out["pass_s"] = median(ours)
    out["pass_hf_slices_s"] = median(base)
    out["pass_hf_iter_s"] = median(base_iter)
    out["pass_hf_s"] = min(out["pass_hf_slices_s"], out["pass_hf_iter_s"])  # HF at its best
    return out


def _hwm_mib() -> float:
    """Peak RSS of this process image (VmHWM: unlike ru_maxrss it is not inherited over exec)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return peak_rss_mib()


def child_store(uri: str, size_mib: int, mode: str) -> dict[str, Any]:
    """One upload (``set_resource``) or raw ``insert_many`` of the same pre-cut chunks."""
    from bson import ObjectId
    from storage_memory import PatternStream, _pieces

    from datastack.storage.gridfs import DEFAULT_CHUNK_SIZE, GridFSStorageConnector

    size, chunk = size_mib * MIB, DEFAULT_CHUNK_SIZE
    store = GridFSStorageConnector(uri)
    store.has_resource("warm/up")  # connect and import before measuring
    pieces = _pieces(chunk)
    before = _hwm_mib()
    if mode == "store":
        took = seconds(
            lambda: store.set_resource(f"bench/{size_mib}.bin", PatternStream(size, pieces))
        )
    else:
        file_id = ObjectId()
        docs = [
            {"files_id": file_id, "n": n, "data": pieces[n % 4][: min(chunk, size - off)]}
            for n, off in enumerate(range(0, size, chunk))
        ]
        took = seconds(lambda: store.chunks.insert_many(docs, ordered=True))
        # What making those chunks durable costs: datastack publishes with j=true (one
        # journaled update after the chunks), so also time the same flush after the raw insert.
        from datastack._mongo import durable

        flush = seconds(
            lambda: durable(store.chunks).update_one({"files_id": file_id, "n": 0},
                                                      {"$set": {"flushed": True}})
        )
        store.chunks.delete_many({"files_id": file_id})
        return {"mb_per_s": size / MIB / took, "durable_mb_per_s": size / MIB / (took + flush),
                "peak_rss_mib": _hwm_mib(), "rss_before_mib": before}
    return {"mb_per_s": size / MIB / took, "peak_rss_mib": _hwm_mib(), "rss_before_mib": before}


def store_rows(mongo_uri: str, big: int, small: int, repeat: int) -> dict[str, Any]:
    """Upload vs raw insert_many (fresh processes, alternated), and peak RSS small vs big."""
    me = Path(__file__).resolve()
    uri = f"{mongo_uri}/bench_run_store"

    def one(mode: str, size: int) -> dict[str, Any]:
        return dict(run_child(me, ["--child", mode, "--uri", uri, "--size", str(size)]))

    stores, raws = [], []
    for _ in range(max(2, repeat + 2)):  # the server's insert speed is noisy: more pairs
        stores.append(one("store", big))
        raws.append(one("raw_insert", big))
    small_store = one("store", small)
    return {
        "size_mib": big,
        "small_mib": small,
        "store_mb_s": median([r["mb_per_s"] for r in stores]),
        "raw_insert_mb_s": median([r["mb_per_s"] for r in raws]),
        "raw_durable_mb_s": median([r["durable_mb_per_s"] for r in raws]),
        "peak_rss_big_mib": max(r["peak_rss_mib"] for r in stores),
        "peak_rss_small_mib": small_store["peak_rss_mib"],
    }


# -- table -----------------------------------------------------------------------------------
def table(
    state: dict[str, Any], g: dict[str, Any], f: dict[str, Any] | None, s: dict[str, Any] | None
) -> list[dict[str, Any]]:
    def row(
        figure: str, baseline: str, value: float, goal: str, ok: bool, detail: str
    ) -> dict[str, Any]:
        return {
            "figure": figure,
            "baseline": baseline,
            "ratio": round(value, 3),
            "goal": goal,
            "status": "PASS" if ok else "MISS",
            "detail": detail,
        }

    r1 = g["single_uncached_ms"] / g["find_one_ms"]
    r2 = g["batch_ms"] / g["batch_raw_ms"]
    r3 = g["pass_raw_s"] / g["pass_s"]
    mb = state["file_bytes"] / MIB
    rows = [
        row(
            "random single sample via datastack.load over GridFS (uncached: fresh block cache)",
            "one raw find_one chunk round trip",
            r1,
            "<= 1.5x",
            r1 <= 1.5,
            f"{g['single_uncached_ms']:.2f} ms vs {g['find_one_ms']:.2f} ms; warm "
            f"{g['single_warm_ms'] * 1000:.0f} us; first sample in a fresh process "
            f"{g['first_sample_fresh_process_ms']:.0f} ms",
        ),
        row(
            "batch of 256 random samples via get_batch over GridFS (fresh block cache)",
            "one raw find of exactly the chunks holding them",
            r2,
            "<= 1.5x",
            r2 <= 1.5,
            f"{g['batch_ms']:.1f} ms vs {g['batch_raw_ms']:.1f} ms",
        ),
        row(
            "full sequential pass, batches of 256, over GridFS (fresh block cache)",
            "raw find() over all the file's chunks",
            r3,
            ">= 0.8x throughput",
            r3 >= 0.8,
            f"{g['pass_s']:.2f} s vs {g['pass_raw_s']:.2f} s ({mb:.0f} MB file, "
            f"{g['pass_samples_per_s']:.0f} samples/s; next pass from the block cache "
            f"{g['pass_warm_s']:.2f} s; raw find() in batches of 32 chunks "
            f"{g['pass_raw_batch32_s']:.2f} s; the pass with a 96 MiB block cache "
            f"{g['pass_small_cache_s']:.2f} s)",
        ),
    ]
    if f is not None:
        rows += _filesystem_rows(row, f)
    if s is not None:
        rows += _store_rows(row, s)
    return rows


def _filesystem_rows(row: Any, f: dict[str, Any]) -> list[dict[str, Any]]:
    r4 = f["single_ms"] / f["single_h5py_ms"]
    r5 = f["pass_hf_s"] / f["pass_s"]
    return [
        row(
            "random single sample via datastack.load on the filesystem",
            "h5py on the same local file (disjoint random chunks)",
            r4,
            "<= 1.5x",
            r4 <= 1.5,
            f"{f['single_ms'] * 1000:.1f} us vs {f['single_h5py_ms'] * 1000:.1f} us "
            f"(disjoint random HDF5 chunks, {f['single_reads_each']} reads each)",
        ),
        row(
            "full pass in batches of 256 on the filesystem",
            "Hugging Face datasets, with_format('numpy'), local Arrow",
            r5,
            ">= 1.0x throughput",
            r5 >= 1.0,
            f"{f['pass_s']:.2f} s vs {f['pass_hf_s']:.2f} s (HF slices "
            f"{f['pass_hf_slices_s']:.2f} s, .iter {f['pass_hf_iter_s']:.2f} s)",
        ),
    ]


def _store_rows(row: Any, s: dict[str, Any]) -> list[dict[str, Any]]:
    r6 = s["store_mb_s"] / s["raw_insert_mb_s"]
    flat = s["peak_rss_big_mib"] / s["peak_rss_small_mib"]
    return [
        row(
            f"store a {s['size_mib']} MiB resource into GridFS",
            "raw insert_many of the same pre-cut chunks",
            r6,
            ">= 0.8x throughput",
            r6 >= 0.8,
            f"{s['store_mb_s']:.0f} MB/s vs {s['raw_insert_mb_s']:.0f} MB/s (datastack's publish "
            f"is journaled: vs raw insert_many + one journaled write "
            f"{s['raw_durable_mb_s']:.0f} MB/s = "
            f"{s['store_mb_s'] / s['raw_durable_mb_s']:.2f}x)",
        ),
        row(
            f"peak RSS storing {s['small_mib']} MiB vs {s['size_mib']} MiB",
            "-",
            flat,
            "flat, < 150 MiB",
            flat <= 1.2 and s["peak_rss_big_mib"] < 150,
            f"{s['peak_rss_small_mib']:.0f} MiB vs {s['peak_rss_big_mib']:.0f} MiB",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10000 samples, 128 MiB store")
    parser.add_argument(
        "--uri", help="mongodb://host:port of a running server (default: start one)"
    )
    parser.add_argument("--repeat", type=int, default=0, help="repetitions (default 3, quick 1)")
    parser.add_argument(
        "--layout",
        choices=sorted(LAYOUTS),
        default="canonical",
        help="republish the data file in another HDF5 layout (what-if runs)",
    )
    parser.add_argument(
        "--only", choices=("gridfs",), help="measure only these figures (GridFS reads)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    repeat = args.repeat or (1 if args.quick else 3)
    if args.child in ("store", "raw_insert"):
        print(json.dumps(child_store(args.uri, args.size, args.child)))
        return
    if args.child:
        state = json.loads(Path(args.state).read_text())
        fn = {"gridfs": child_gridfs, "filesystem": child_filesystem}[args.child]
        print(json.dumps(fn(state, repeat)))
        return
    n = 10000 if args.quick else 60000
    big, small = (128, 16) if args.quick else (512, 64)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="datastack-bench-run-"))
    try:
        with mongo_server(args.uri) as base:
            mongo_uri = f"{base}/bench_run"
            from datastack._mongo import get_client

            client = get_client(mongo_uri)
            client.drop_database("bench_run")
            client.drop_database("bench_run_store")
            print(f"preparing {n} samples (server {base}) ...", flush=True)
            state = prepare(
                work, n, mongo_uri, str(work / "fsstore"), args.layout, args.only is None
            )
            state_path = work / "state.json"
            state_path.write_text(json.dumps(state))
            me = Path(__file__).resolve()
            common = ["--state", str(state_path), "--repeat", str(repeat)]
            print("GridFS reads ...", flush=True)
            # GridFS rows read GridFS: the local disk cache (read-through) is off for them
            g = run_child(me, ["--child", "gridfs", *common], {"DATASTACK_CACHE_DIR_BYTES": "0"})
            f: dict[str, Any] | None = None
            s: dict[str, Any] | None = None
            if args.only is None:
                print("filesystem reads ...", flush=True)
                f = run_child(me, ["--child", "filesystem", *common])
                print("stores ...", flush=True)
                s = store_rows(base, big, small, repeat)
            client.drop_database("bench_run")
            client.drop_database("bench_run_store")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = table(state, g, f, s)
    elapsed = time.perf_counter() - started
    print()
    print(
        f"datastack benchmarks: {n} x 28 x 28 float32 + int64 labels, "
        f"{state['file_bytes'] / MIB:.1f} MB HDF5 (layout {args.layout}), "
        f"medians of interleaved runs, {elapsed:.0f} s"
    )
    print("| figure | baseline | ratio | goal | status | measured |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['figure']} | {r['baseline']} | {r['ratio']:.2f}x | {r['goal']} | "
            f"{r['status']} | {r['detail']} |"
        )
    name = "run.json" if args.layout == "canonical" else f"run-{args.layout}.json"
    path = write_results(
        name,
        {
            "quick": args.quick,
            "repeat": repeat,
            "elapsed_s": elapsed,
            "setup": state,
            "rows": rows,
            "gridfs": g,
            "filesystem": f,
            "store": s,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
