"""Training-grade reads, in one run: shuffled epochs over GridFS with a small block cache,
reads through added network latency, DataLoader epochs against peer loaders, offline start.

    python benchmarks/training.py [--quick] [--repeat N]

Run it with a venv that has the peers (docs/performance.md: ``.venv-bench``). It starts a
SecantusDB server and two latency proxies (``tests/latency_proxy.py``, 1 ms and 5 ms added per
round trip, each its own process), publishes 60000 x 28 x 28 float32 images with int64 labels
(``--quick``: 10000) into GridFS and a filesystem store, pulls the GridFS version into a local
cache folder, writes the same arrays for the peers, then measures every figure in a fresh
process. Bytes fetched are counted with pymongo command monitoring (chunk bytes in every
``find``/``getMore`` reply). Results: ``benchmarks/results/training.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import MIB, ROOT, median, mnist_like, mongo_server, run_child, seconds, write_results
from pymongo import monitoring

NAME = "benchdigits"
BATCH = 256
ME = Path(__file__).resolve()


# -- setup (parent) --------------------------------------------------------------------------
def start_proxy(base_uri: str, delay_ms: float) -> tuple[subprocess.Popen[str], int]:
    host, port = base_uri.removeprefix("mongodb://").rsplit(":", 1)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "latency_proxy.py"), "--upstream",
         f"{host}:{port}", "--delay-ms", str(delay_ms)],
        stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def prepare_all(work: Path, n: int, base: str) -> dict[str, Any]:
    import numpy as np
    from _peers import write_peers
    from run import prepare

    mongo_uri, fs_uri = f"{base}/bench_training", str(work / "fsstore")
    state = prepare(work, n, mongo_uri, fs_uri, "canonical")
    images, labels = mnist_like(n)
    os.environ["BENCH_NPY_DIR"] = str(work / "npy")
    t0 = time.perf_counter()
    state["peers"] = write_peers(images, labels, work)
    state["peers_write_s"] = time.perf_counter() - t0
    state["cache_dir"] = str(work / "localcache")
    env = {**os.environ, "DATASTACK_CACHE_DIR": state["cache_dir"],
           "DATASTACK_CACHE_DIR_BYTES": "2G"}
    subprocess.run(
        [sys.executable, "-m", "datastack.cli", "pull", NAME, "--storage", mongo_uri],
        check=True, env=env, cwd=ROOT,
    )
    state["n_images"] = int(np.asarray(images).shape[0])
    return state


# -- children --------------------------------------------------------------------------------
class ChunkBytes(monitoring.CommandListener):
    """pymongo command listener: GridFS chunk bytes in the replies to find/getMore."""

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


def child_shuffle(state: dict[str, Any], repeat: int) -> dict[str, Any]:
    """Sequential pass vs block-aware shuffled epoch over GridFS, 32 MiB block cache."""
    import numpy as np

    listener = ChunkBytes()
    monitoring.register(listener)  # before datastack creates its client
    import datastack
    from datastack.iterators.torch import DatasetSampler
    from datastack.storage.cache import default_cache

    it = datastack.load(NAME, storage=state["mongo_uri"])
    n, cache = len(it), default_cache()
    it[0]

    def epoch(batches: list[Any]) -> tuple[float, int]:
        cache.clear()
        listener.bytes = 0
        took = seconds(lambda: [read(b, at) for b, at in batches])
        return took, listener.bytes

    def read(batch: Any, at: int | None) -> Any:
        if plan is not None and at is not None:  # the sampler's plan, handed over
            plan.before_batch(it, batch, sampler.epoch, at)
        return it.get_batch(batch)

    sequential = [(np.arange(lo, min(n, lo + BATCH)), None) for lo in range(0, n, BATCH)]
    seq, shuf = [], []
    sampler = DatasetSampler(it, seed=0)
    plan = sampler.read_plan()
    for epoch_number in range(max(3, repeat)):
        sampler.set_epoch(epoch_number)
        order = sampler.indices()
        seq.append(epoch(sequential))
        shuf.append(epoch([(order[lo : lo + BATCH], lo) for lo in range(0, n, BATCH)]))
    # per-sample shuffle for contrast: the first quarter of an epoch, scaled to a whole one
    full = DatasetSampler(it, seed=0, block_aware=False).indices()
    took, fetched = epoch([(full[lo : lo + BATCH], None) for lo in range(0, n // 4, BATCH)])
    per_sample = (took * 4, fetched * 4)
    return {
        "cache_bytes": cache.max_bytes,
        "file_bytes": it.resource.size,
        "sequential_s": median([s for s, _ in seq]),
        "shuffled_s": median([s for s, _ in shuf]),
        "sequential_bytes": median([float(b) for _, b in seq]),
        "shuffled_bytes": max(b for _, b in shuf),
        "per_sample_s": per_sample[0],
        "per_sample_bytes": per_sample[1],
        "all": {"sequential": seq, "shuffled": shuf},
    }


def _single_reads(uri: str, n: int, count: int) -> dict[str, float]:
    """Uncached random single samples vs one raw find_one chunk round trip, interleaved."""
    import datastack
    from datastack.storage.cache import default_cache
    from datastack.storage.gridfs import GridFSStorageConnector

    rng = random.Random(1)
    store = GridFSStorageConnector(uri)
    it = datastack.load(NAME, storage=uri)
    file_id = store.resource_file_id(it.resource.identifier)
    nchunks = -(-it.resource.size // int(store.files.find_one({"_id": file_id})["chunkSize"]))
    for _ in range(10):
        it[rng.randrange(n)]  # h5py's metadata (chunk index) warm, not the blocks
    ours, raw = [], []
    for k in range(count):
        i = n * k // count + rng.randrange(max(1, n // count))
        chunk = rng.randrange(nchunks)
        raw.append(seconds(lambda c=chunk: store.chunks.find_one({"files_id": file_id, "n": c})))
        default_cache().clear()
        ours.append(seconds(lambda i=i: it[i]))
    return {"single_ms": median(ours) * 1000, "find_one_ms": median(raw) * 1000}


def _loader_epoch(uri: str, shuffle: bool, epoch_number: int, dealt: bool = True) -> float:
    """One DataLoader epoch, 2 workers; ``dealt``: the sampler is told the loader's
    batch_size and num_workers (each worker reads its own part of the block-aware order)."""
    from torch.utils.data import DataLoader

    import datastack
    from datastack.iterators.torch import DatasetSampler, as_torch_dataset, worker_init_fn

    it = datastack.load(NAME, storage=uri)
    dataset = as_torch_dataset(it)
    told = {"batch_size": BATCH, "num_workers": 2} if dealt else {}
    sampler = DatasetSampler(dataset, shuffle=shuffle, seed=0, **told)
    dataset = dataset.with_read_plan(sampler.read_plan())
    sampler.set_epoch(epoch_number)
    loader = DataLoader(dataset, batch_size=BATCH, sampler=sampler, num_workers=2,
                        worker_init_fn=worker_init_fn)
    t0 = time.perf_counter()
    count = sum(len(batch[0]) for batch in loader)
    assert count == len(it)
    return time.perf_counter() - t0


def _data_loader_epoch(uri: str, epoch_number: int) -> float:
    """One shuffled epoch through ``data_loader`` (whole batches), 2 workers."""
    import datastack
    from datastack.iterators.torch import data_loader

    it = datastack.load(NAME, storage=uri)
    loader = data_loader(it, batch_size=BATCH, seed=0, num_workers=2)
    loader.sampler.set_epoch(epoch_number)
    t0 = time.perf_counter()
    count = sum(len(batch[0]) for batch in loader)
    assert count == len(it)
    return time.perf_counter() - t0


def child_latency(state: dict[str, Any], repeat: int) -> dict[str, Any]:
    """Through the proxies: single samples (1 and 5 ms), DataLoader epochs (5 ms, 2 workers)."""
    n = state["n"]
    out: dict[str, Any] = {}
    for label, uri in (("1ms", state["proxy1_uri"]), ("5ms", state["proxy5_uri"])):
        out[label] = _single_reads(uri, n, 20 * max(1, repeat))
    seq, shuf, untold, batches = [], [], [], []
    for e in range(max(2, repeat - 1)):
        seq.append(_loader_epoch(state["proxy5_uri"], False, e))
        shuf.append(_loader_epoch(state["proxy5_uri"], True, e))
        untold.append(_loader_epoch(state["proxy5_uri"], True, e, dealt=False))
        batches.append(_data_loader_epoch(state["proxy5_uri"], e))
    out["loader_sequential_s"], out["loader_shuffled_s"] = median(seq), median(shuf)
    out["loader_untold_s"], out["data_loader_s"] = median(untold), median(batches)
    out["loader_all"] = {"sequential": seq, "shuffled": shuf, "untold": untold,
                         "data_loader": batches}
    return out


def child_peers(state: dict[str, Any], repeat: int) -> dict[str, Any]:
    """Shuffled DataLoader epochs: datastack (filesystem, local cache) and the peers."""
    from _peers import _epoch, peer_epochs
    from torch.utils.data import DataLoader

    import datastack
    from datastack.iterators.torch import DatasetSampler, as_torch_dataset, data_loader

    out: dict[str, Any] = {}
    for label, uri in (("filesystem", state["fs_uri"]), ("local_cache", state["mongo_uri"])):
        it = datastack.load(NAME, storage=uri)  # local_cache: DATASTACK_OFFLINE=1 in this child
        loader = data_loader(it, batch_size=BATCH, seed=0)  # the README's loader
        runs = []
        for e in range(repeat + 1):
            loader.sampler.set_epoch(e)
            runs.append(_epoch(loader)[0])
        out[label] = {"s": median(runs[1:]), "all": runs,
                      "block_aware": loader.sampler.block_aware_active}
        # the per-sample way: DatasetSampler over indices, DataLoader's batching and collate
        dataset = as_torch_dataset(it)
        sampler = DatasetSampler(dataset, seed=0, batch_size=BATCH)
        dataset = dataset.with_read_plan(sampler.read_plan())
        runs = []
        for e in range(repeat + 1):
            sampler.set_epoch(e)
            runs.append(_epoch(DataLoader(dataset, batch_size=BATCH, sampler=sampler))[0])
        out[f"{label}_per_sample"] = {"s": median(runs[1:]), "all": runs}
    out.update(peer_epochs(state["peers"], state["hf_dir"], repeat))
    return out


def child_first(state: dict[str, Any], mode: str) -> dict[str, Any]:
    """Time to the first sample in this fresh process: load + open + it[0]."""
    import datastack  # imported before the clock starts (same cost for both)

    uri = state["fs_uri"] if mode == "filesystem" else state["mongo_uri"]
    t0 = time.perf_counter()
    it = datastack.load(NAME, storage=uri)
    it[0]
    return {"first_sample_ms": (time.perf_counter() - t0) * 1000}


# -- table -----------------------------------------------------------------------------------
def _row(
    figure: str, baseline: str, ratio: float, goal: str, ok: bool, detail: str
) -> dict[str, Any]:
    return {"figure": figure, "baseline": baseline, "ratio": round(ratio, 3), "goal": goal,
            "status": "PASS" if ok else "MISS", "detail": detail}


def table(state: dict[str, Any], s: dict[str, Any], lat: dict[str, Any], p: dict[str, Any],
          first: dict[str, float]) -> list[dict[str, Any]]:
    mb = s["file_bytes"] / MIB
    ours = ("filesystem", "local_cache", "filesystem_per_sample", "local_cache_per_sample")
    peers = {k: v["s"] for k, v in p.items() if k not in ours}
    fastest = min(peers, key=peers.get)  # type: ignore[arg-type]
    shown = ", ".join(f"{k} {v:.2f} s" for k, v in sorted(peers.items(), key=lambda kv: kv[1]))
    r_bytes = s["shuffled_bytes"] / s["file_bytes"]
    r_tput = s["sequential_s"] / s["shuffled_s"]
    single = {k: lat[k]["single_ms"] / lat[k]["find_one_ms"] for k in ("1ms", "5ms")}
    r_loader = lat["loader_sequential_s"] / lat["loader_shuffled_s"]
    r_fs = peers[fastest] / p["filesystem"]["s"]
    r_cache = peers[fastest] / p["local_cache"]["s"]
    r_first = first["cache"] / first["filesystem"]
    cache_mib = s["cache_bytes"] / MIB
    return [
        _row(f"block-aware shuffled epoch over GridFS, block cache {cache_mib:.0f} MiB: bytes",
             "the file's size", r_bytes, "<= 1.1x", r_bytes <= 1.1,
             f"{s['shuffled_bytes'] / MIB:.0f} MiB for a {mb:.0f} MiB file (sequential pass "
             f"{s['sequential_bytes'] / MIB:.0f} MiB; per-sample shuffle "
             f"{s['per_sample_bytes'] / MIB:.0f} MiB in {s['per_sample_s']:.0f} s, from a quarter epoch)"),
        _row("block-aware shuffled epoch over GridFS: throughput", "sequential pass, same cache",
             r_tput, ">= 0.8x", r_tput >= 0.8,
             f"{s['shuffled_s']:.2f} s vs {s['sequential_s']:.2f} s (batches of {BATCH})"),
        _row("random single sample, uncached, +5 ms per round trip", "one raw find_one round trip",
             single["5ms"], "<= 1.5x", single["5ms"] <= 1.5,
             f"{lat['5ms']['single_ms']:.2f} ms vs {lat['5ms']['find_one_ms']:.2f} ms; +1 ms: "
             f"{lat['1ms']['single_ms']:.2f} ms vs {lat['1ms']['find_one_ms']:.2f} ms "
             f"({single['1ms']:.2f}x)"),
        _row("shuffled DataLoader epoch, 2 workers, +5 ms per round trip",
             "sequential DataLoader epoch, same latency", r_loader, ">= 0.8x", r_loader >= 0.8,
             f"{lat['loader_shuffled_s']:.2f} s vs {lat['loader_sequential_s']:.2f} s (sampler "
             f"told batch_size and num_workers; not told: {lat['loader_untold_s']:.2f} s, "
             f"{lat['loader_sequential_s'] / lat['loader_untold_s']:.2f}x; data_loader: "
             f"{lat['data_loader_s']:.2f} s, "
             f"{lat['loader_sequential_s'] / lat['data_loader_s']:.2f}x)"),
        _row("shuffled DataLoader epoch from the filesystem", f"fastest peer ({fastest})", r_fs,
             ">= 1.0x", r_fs >= 1.0, f"{p['filesystem']['s']:.2f} s (data_loader; per-sample "
             f"DataLoader {p['filesystem_per_sample']['s']:.2f} s); {shown}"),
        _row("shuffled DataLoader epoch from the local cache (offline)",
             f"fastest peer ({fastest})", r_cache, ">= 1.0x", r_cache >= 1.0,
             f"{p['local_cache']['s']:.2f} s (per-sample DataLoader "
             f"{p['local_cache_per_sample']['s']:.2f} s); {shown}"),
        _row("offline load from the local cache: first sample (fresh process)",
             "filesystem storage, same", r_first, "<= 2x", r_first <= 2.0,
             f"{first['cache']:.1f} ms vs {first['filesystem']:.1f} ms"),
    ]


def _children(state_path: Path, state: dict[str, Any], repeat: int) -> tuple[Any, ...]:
    common = ["--state", str(state_path), "--repeat", str(repeat)]
    small = {"DATASTACK_CACHE_BYTES": "32M", "DATASTACK_CACHE_DIR_BYTES": "0"}
    cached = {"DATASTACK_CACHE_DIR": state["cache_dir"], "DATASTACK_CACHE_DIR_BYTES": "2G",
              "DATASTACK_OFFLINE": "1"}
    print("shuffled epochs over GridFS ...", flush=True)
    s = run_child(ME, ["--child", "shuffle", *common], small)
    print("latency ...", flush=True)
    lat = run_child(ME, ["--child", "latency", *common], small)
    print("DataLoader epochs vs peers ...", flush=True)
    p = run_child(ME, ["--child", "peers", *common], cached)
    print("first sample ...", flush=True)
    firsts: dict[str, list[float]] = {"filesystem": [], "cache": []}
    for _ in range(5):
        for mode, env in (("filesystem", {}), ("cache", cached)):
            out = run_child(ME, ["--child", f"first-{mode}", *common], env)
            firsts[mode].append(out["first_sample_ms"])
    first = {mode: median(v) for mode, v in firsts.items()}
    return s, lat, p, first, firsts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10000 samples")
    parser.add_argument("--repeat", type=int, default=0, help="repetitions (default 3, quick 1)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    args = parser.parse_args()
    repeat = args.repeat or (1 if args.quick else 3)
    if args.child:
        state = json.loads(Path(args.state).read_text())
        if args.child.startswith("first-"):
            print(json.dumps(child_first(state, args.child.removeprefix("first-"))))
            return
        fn = {"shuffle": child_shuffle, "latency": child_latency, "peers": child_peers}
        print(json.dumps(fn[args.child](state, repeat), default=str))
        return
    n = 10000 if args.quick else 60000
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="datastack-bench-training-"))
    proxies: list[subprocess.Popen[str]] = []
    try:
        with mongo_server(None) as base:
            print(f"preparing {n} samples (server {base}) ...", flush=True)
            state = prepare_all(work, n, base)
            for delay in (1, 5):
                proc, port = start_proxy(base, delay)
                proxies.append(proc)
                state[f"proxy{delay}_uri"] = (
                    f"mongodb://127.0.0.1:{port}/bench_training?directConnection=true"
                )
            state_path = work / "state.json"
            state_path.write_text(json.dumps(state))
            s, lat, p, first, firsts = _children(state_path, state, repeat)
    finally:
        for proc in proxies:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    rows = table(state, s, lat, p, first)
    elapsed = time.perf_counter() - started
    print(f"\ndatastack training reads: {n} x 28 x 28 float32 + int64 labels, "
          f"{s['file_bytes'] / MIB:.1f} MiB HDF5, {elapsed:.0f} s")
    print("| figure | baseline | ratio | goal | status | measured |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['figure']} | {r['baseline']} | {r['ratio']:.2f}x | {r['goal']} | "
              f"{r['status']} | {r['detail']} |")
    path = write_results("training.json", {
        "quick": args.quick, "repeat": repeat, "elapsed_s": elapsed, "rows": rows,
        "shuffle": s, "latency": lat, "peers": p, "first_sample_ms": firsts,
        "setup": {k: v for k, v in state.items() if "uri" not in k},
    })
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
