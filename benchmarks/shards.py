"""Reads over a version of many shards against the same data as one shard (#24.9), in one run.

    python benchmarks/shards.py [--quick] [--rows N] [--shard-mib 32] [--repeat N] [--uri U]

Builds ``--rows`` 28 x 28 float32 images with int64 labels (default 200,000: 627 MB of HDF5;
``--quick``: 40,000), publishes them with ``datastack.refresh`` twice into a GridFS storage
(a SecantusDB process started here unless ``--uri``) and twice into a filesystem storage: as
one shard (``shard_bytes: 64G``) and as shards of at most ``--shard-mib`` MiB (20 shards by
default). Then, each in a fresh process, it measures the read figures of #24's goals for both
versions, interleaved, medians:

* a random uncached sample read over GridFS (a fresh block cache before each read, every shard
  opened beforehand, as in ``run.py``) vs one raw ``find_one`` chunk round trip (<= 1.5x);
* a sequential pass in batches of 256 over GridFS (fresh block cache) vs a raw ``find()``
  over every chunk of the version's files (>= 0.8x throughput);
* a block-aware shuffled epoch (``DatasetSampler`` with its read plan, a 32 MiB block cache,
  as in ``training.py``): GridFS chunk bytes moved (pymongo command monitoring) vs the
  version's stored bytes (<= 1.15x);
* batches of 256 random indices (``get_batch``) on the filesystem, many shards vs one shard
  (within 10%).

Prints one table and writes ``benchmarks/results/shards.json`` (with the load average).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import MIB, median, mnist_like, mongo_server, run_child, seconds, write_results
from pymongo import monitoring

ME = Path(__file__).resolve()
BATCH = 256
VERSIONS = ("one", "many")  # dataset names: one shard, many shards


# -- setup (parent) --------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def prepare(work: Path, rows: int, shard_mib: int, mongo_uri: str, fs_uri: str) -> dict[str, Any]:
    """The arrays as a pair of .npy files, published four times (two storages x two cuts)."""
    import numpy as np

    from datastack.api import refresh
    from datastack.canonical.layout import shards_of
    from datastack.store import Store

    images, labels = mnist_like(rows)
    src = work / "src"
    src.mkdir()
    np.save(src / "images.npy", images)
    np.save(src / "labels.npy", labels)
    del images, labels
    sources = "".join(
        f"      - {{url: '{(src / f'{part}.npy').as_uri()}', "
        f"sha256: {_sha256(src / f'{part}.npy')}, role: {role}}}\n"
        for part, role in (("images", "samples"), ("labels", "targets"))
    )
    cuts = {"one": "64G", "many": f"{shard_mib}M"}
    state: dict[str, Any] = {"rows": rows, "shard_mib": shard_mib, "mongo_uri": mongo_uri,
                             "fs_uri": fs_uri, "versions": {}}
    for name, cut in cuts.items():
        spec = work / f"{name}.yaml"
        spec.write_text(f"datasets:\n  {name}:\n    format: npy\n    shard_bytes: {cut}\n"
                        f"    sources:\n{sources}")
        for label, uri in (("gridfs", mongo_uri), ("filesystem", fs_uri)):
            t0 = time.perf_counter()
            (result,) = refresh(spec, storage=uri, force=True)
            if not result.ok:
                raise RuntimeError(f"refresh of {name} into {label} failed: {result.reason}")
            state[f"refresh_{name}_{label}_s"] = time.perf_counter() - t0
        record = Store.open(mongo_uri).catalog.latest(name)
        entries = shards_of(record)["train"]
        state["versions"][name] = {
            "shards": len(entries),
            "bytes": sum(int(e["size"]) for e in entries),
            "identifiers": [str(e["identifier"]) for e in entries],
        }
    return state


# -- children --------------------------------------------------------------------------------
class ChunkBytes(monitoring.CommandListener):
    """GridFS chunk bytes in the replies to find/getMore (as ``training.py`` counts them)."""

    def __init__(self) -> None:
        self.bytes = 0

    def started(self, event: Any) -> None:
        pass

    def succeeded(self, event: Any) -> None:
        if event.command_name in ("find", "getMore"):
            cursor = event.reply.get("cursor", {})
            for doc in cursor.get("firstBatch", []) + cursor.get("nextBatch", []):
                self.bytes += len(doc.get("data", b""))

    def failed(self, event: Any) -> None:
        pass


def _spread(n: int, count: int, rng: random.Random) -> list[int]:
    """One random index per 1/count of the data, in random order (each in its own blocks)."""
    bounds = [n * k // count for k in range(count + 1)]
    picks = [rng.randrange(bounds[k], max(bounds[k] + 1, bounds[k + 1])) for k in range(count)]
    rng.shuffle(picks)
    return picks


def _files(store: Any, identifiers: list[str]) -> list[tuple[Any, int]]:
    """(GridFS file id, number of chunks) of each of a version's files."""
    out = []
    for ident in identifiers:
        file_id = store.resource_file_id(ident)
        doc = store.files.find_one({"_id": file_id})
        out.append((file_id, -(-int(doc["length"]) // int(doc["chunkSize"]))))
    return out


def _open_all(it: Any) -> None:
    """Open every shard (one read in each): h5py's metadata is then warm, as in a training
    process that has touched each shard once."""
    ends = [0, *getattr(it, "ends", [len(it)])]
    for lo in ends[:-1]:
        it[lo]
    rng = random.Random(0)
    for _ in range(20):
        it[rng.randrange(len(it))]


def child_gridfs(state: dict[str, Any], repeat: int) -> dict[str, Any]:
    """Random uncached single reads vs find_one; sequential pass vs a raw scan; both versions."""
    import numpy as np

    import datastack
    from datastack.storage.cache import default_cache
    from datastack.storage.gridfs import GridFSStorageConnector

    uri, rng = state["mongo_uri"], random.Random(1)
    store = GridFSStorageConnector(uri)
    cache = default_cache()
    its, files = {}, {}
    for name in VERSIONS:
        its[name] = datastack.load(name, "train", storage=uri)
        files[name] = _files(store, state["versions"][name]["identifiers"])
        t0 = time.perf_counter()
        _open_all(its[name])
        state[f"open_all_{name}_s"] = time.perf_counter() - t0
        for file_id, _ in files[name]:  # server-side warm-up, every side alike
            for _ in store.chunks.find({"files_id": file_id}, {"n": 1}):
                pass
    n = len(its["one"])
    out: dict[str, Any] = {"open_all_s": {k: state[f"open_all_{k}_s"] for k in VERSIONS}}
    single: dict[str, list[float]] = {"raw": [], "one": [], "many": []}
    for i in _spread(n, 60 * repeat, rng):
        file_id, chunks = rng.choice(files["many"])
        k = rng.randrange(chunks)
        single["raw"].append(seconds(lambda f=file_id, k=k: store.chunks.find_one(
            {"files_id": f, "n": k})))
        for name in VERSIONS:
            cache.clear()
            single[name].append(seconds(lambda i=i, it=its[name]: it[i]))
    out["single_ms"] = {k: median(v) * 1000 for k, v in single.items()}

    def full_pass(it: Any) -> None:
        for lo in range(0, n, BATCH):
            it.get_batch(np.arange(lo, min(n, lo + BATCH)))

    def raw_scan(name: str) -> int:
        return sum(len(d["data"]) for f, _ in files[name]
                   for d in store.chunks.find({"files_id": f}))

    passes: dict[str, list[float]] = {"raw_one": [], "raw_many": [], "one": [], "many": []}
    for _ in range(max(3, repeat)):
        for name in VERSIONS:
            cache.clear()
            passes[f"raw_{name}"].append(seconds(lambda name=name: raw_scan(name)))
            cache.clear()
            passes[name].append(seconds(lambda name=name: full_pass(its[name])))
    cache.clear()
    out["pass_s"] = {k: median(v) for k, v in passes.items()}
    out["pass_all_s"] = {k: [round(x, 3) for x in v] for k, v in passes.items()}
    return out


def child_epoch(state: dict[str, Any], repeat: int) -> dict[str, Any]:
    """Bytes a block-aware shuffled epoch moves, with a 32 MiB block cache (both versions)."""
    listener = ChunkBytes()
    monitoring.register(listener)  # before datastack creates its client
    import datastack
    from datastack.iterators.torch import DatasetSampler
    from datastack.storage.cache import default_cache

    cache = default_cache()
    out: dict[str, Any] = {"cache_bytes": cache.max_bytes}
    for name in VERSIONS:
        it = datastack.load(name, "train", storage=state["mongo_uri"])
        n = len(it)
        sampler = DatasetSampler(it, seed=0)
        plan = sampler.read_plan()
        moved, took = [], []
        for epoch_number in range(max(1, repeat - 1)):
            sampler.set_epoch(epoch_number)
            order = sampler.indices()
            cache.clear()
            listener.bytes = 0
            t0 = time.perf_counter()
            for lo in range(0, n, BATCH):
                batch = order[lo : lo + BATCH]
                if plan is not None:
                    plan.before_batch(it, batch, sampler.epoch, lo)
                it.get_batch(batch)
            took.append(time.perf_counter() - t0)
            moved.append(listener.bytes)
        out[name] = {"bytes": max(moved), "all_bytes": moved, "s": median(took),
                     "block_aware": sampler.block_aware_active, "plan": plan is not None}
    return out


def child_local(state: dict[str, Any], repeat: int) -> dict[str, Any]:
    """Batches of 256 random indices on the filesystem, many shards vs one, interleaved."""
    import numpy as np

    import datastack

    its = {name: datastack.load(name, "train", storage=state["fs_uri"]) for name in VERSIONS}
    n = len(its["one"])
    rng = np.random.default_rng(3)
    for it in its.values():  # open every shard and map the files once
        _open_all(it)
        for _ in range(20):
            it.get_batch(rng.integers(0, n, BATCH))
    times: dict[str, list[float]] = {"one": [], "many": []}
    rounds = 150 * repeat
    for r in range(rounds):
        idx = rng.integers(0, n, BATCH)
        for name in (VERSIONS if r % 2 else VERSIONS[::-1]):
            times[name].append(seconds(lambda idx=idx, it=its[name]: it.get_batch(idx)))
    sequential: dict[str, list[float]] = {"one": [], "many": []}
    for _ in range(max(3, repeat)):
        for name in VERSIONS:
            it = its[name]
            sequential[name].append(seconds(lambda it=it: [
                it.get_batch(np.arange(lo, min(n, lo + BATCH))) for lo in range(0, n, BATCH)]))
    return {"batches_each": rounds,
            "batch_ms": {k: median(v) * 1000 for k, v in times.items()},
            "pass_s": {k: median(v) for k, v in sequential.items()}}


# -- table -----------------------------------------------------------------------------------
def _row(figure: str, baseline: str, value: float, goal: str, ok: bool,
         detail: str) -> dict[str, Any]:
    return {"figure": figure, "baseline": baseline, "ratio": round(value, 3), "goal": goal,
            "status": "PASS" if ok else "MISS", "detail": detail}


def table(state: dict[str, Any], g: dict[str, Any], e: dict[str, Any],
          f: dict[str, Any]) -> list[dict[str, Any]]:
    many, one = state["versions"]["many"], state["versions"]["one"]
    shards = f"{many['shards']} shards of <= {state['shard_mib']} MiB"
    s, p = g["single_ms"], g["pass_s"]
    r1 = s["many"] / s["raw"]
    r2 = p["raw_many"] / p["many"]
    r3 = e["many"]["bytes"] / many["bytes"]
    r4 = f["batch_ms"]["many"] / f["batch_ms"]["one"]
    mb = many["bytes"] / MIB
    return [
        _row(f"random uncached sample over GridFS, {shards}", "one raw find_one chunk round trip",
             r1, "<= 1.5x", r1 <= 1.5,
             f"{s['many']:.2f} ms vs {s['raw']:.2f} ms (one shard: {s['one']:.2f} ms = "
             f"{s['one'] / s['raw']:.2f}x); opening every shard once "
             f"{g['open_all_s']['many']:.2f} s (one shard {g['open_all_s']['one']:.2f} s)"),
        _row(f"sequential pass, batches of {BATCH}, over GridFS, {shards}",
             "raw find() over every chunk of the shards", r2, ">= 0.8x throughput", r2 >= 0.8,
             f"{p['many']:.2f} s vs {p['raw_many']:.2f} s for {mb:.0f} MiB (one shard: "
             f"{p['one']:.2f} s vs raw {p['raw_one']:.2f} s = {p['raw_one'] / p['one']:.2f}x)"),
        _row(f"block-aware shuffled epoch over GridFS, {shards}, block cache "
             f"{e['cache_bytes'] / MIB:.0f} MiB: bytes moved", "the shards' bytes", r3,
             "<= 1.15x", r3 <= 1.15,
             f"{e['many']['bytes'] / MIB:.0f} MiB for {mb:.0f} MiB in {e['many']['s']:.1f} s "
             f"(one shard: {e['one']['bytes'] / MIB:.0f} MiB for {one['bytes'] / MIB:.0f} MiB = "
             f"{e['one']['bytes'] / one['bytes']:.2f}x, {e['one']['s']:.1f} s)"),
        _row(f"batch of {BATCH} random indices (get_batch) on the filesystem, {shards}",
             "the same data as one shard", r4, "<= 1.10x", r4 <= 1.10,
             f"{f['batch_ms']['many']:.2f} ms vs {f['batch_ms']['one']:.2f} ms "
             f"({f['batches_each']} batches each, interleaved); sequential pass "
             f"{f['pass_s']['many']:.2f} s vs {f['pass_s']['one']:.2f} s"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="40,000 rows, one repetition")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--shard-mib", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=0, help="repetitions (default 3, quick 1)")
    parser.add_argument("--uri", help="mongodb://host:port of a running server (default: one "
                        "started here)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    args = parser.parse_args()
    repeat = args.repeat or (1 if args.quick else 3)
    if args.child:
        state = json.loads(Path(args.state).read_text())
        fn = {"gridfs": child_gridfs, "epoch": child_epoch, "local": child_local}[args.child]
        print(json.dumps(fn(state, repeat), default=str))
        return
    rows = 40_000 if args.quick else args.rows
    started, load_before = time.perf_counter(), os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="datastack-bench-shards-"))
    try:
        with mongo_server(args.uri) as base:
            mongo_uri = f"{base}/bench_shards"
            from datastack._mongo import get_client

            get_client(mongo_uri).drop_database("bench_shards")
            print(f"publishing {rows} samples four times (server {base}) ...", flush=True)
            state = prepare(work, rows, args.shard_mib, mongo_uri, str(work / "fsstore"))
            state_path = work / "state.json"
            state_path.write_text(json.dumps(state))
            common = ["--state", str(state_path), "--repeat", str(repeat)]
            no_disk_cache = {"DATASTACK_CACHE_DIR_BYTES": "0"}
            print("GridFS reads ...", flush=True)
            g = run_child(ME, ["--child", "gridfs", *common], no_disk_cache)
            print("block-aware epochs ...", flush=True)
            e = run_child(ME, ["--child", "epoch", *common],
                          {**no_disk_cache, "DATASTACK_CACHE_BYTES": "32M"})
            print("local gathers ...", flush=True)
            f = run_child(ME, ["--child", "local", *common])
            get_client(mongo_uri).drop_database("bench_shards")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows_out = table(state, g, e, f)
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()
    many = state["versions"]["many"]
    print(f"\ndatastack reads over shards: {rows} x 28 x 28 float32 + int64 labels, "
          f"{many['bytes'] / MIB:.0f} MiB as {many['shards']} shards vs one; {elapsed:.0f} s; "
          f"load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after")
    print("| figure | baseline | ratio | goal | status | measured |")
    print("|---|---|---|---|---|---|")
    for r in rows_out:
        print(f"| {r['figure']} | {r['baseline']} | {r['ratio']:.2f}x | {r['goal']} | "
              f"{r['status']} | {r['detail']} |")
    path = write_results("shards.json", {
        "quick": args.quick, "repeat": repeat, "elapsed_s": elapsed, "rows": rows_out,
        "load_before": load_before, "load_after": load_after,
        "setup": {k: v for k, v in state.items() if "uri" not in k},
        "gridfs": g, "epoch": e, "local": f,
    })
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
