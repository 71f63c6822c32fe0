"""GridFS read/write costs per chunk size, against raw pymongo on the same local server.

For each chunk size (255 KiB, 1 MiB) this stores one resource and measures, in the same run:

- upload throughput (``set_resource``) vs raw ``insert_many`` of the same pre-cut chunks;
- an uncached random 4 KiB read through ``get_resource`` vs one raw ``find_one`` chunk round
  trip (the floor), and the same read when the block is cached;
- a batch of 256 random 3 KiB ranges via ``prefetch`` vs one raw ``find`` of exactly the
  chunks holding them;
- a full sequential pass (1 MiB reads) vs a raw ``find()`` over all chunks.

    python benchmarks/gridfs_io.py [--quick] [--uri mongodb://host:port]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
MIB = 1024 * 1024


def _median_ms(fn: Callable[[], Any], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1000


def measure(uri: str, chunk_size: int, size: int, rng: random.Random) -> dict[str, float]:
    from bson import ObjectId
    from storage_memory import PatternStream, _pieces

    from datastack.storage.cache import default_cache
    from datastack.storage.gridfs import GridFSStorageConnector

    store = GridFSStorageConnector(uri, chunk_size=chunk_size)
    ident = f"io/{chunk_size}.bin"
    pieces = _pieces(chunk_size)
    out: dict[str, float] = {"chunk_kib": chunk_size / 1024}

    t0 = time.perf_counter()
    store.set_resource(ident, PatternStream(size, pieces))
    out["store_mb_s"] = size / MIB / (time.perf_counter() - t0)
    scratch = ObjectId()
    docs = [
        {"files_id": scratch, "n": n, "data": pieces[n % 4][: min(chunk_size, size - off)]}
        for n, off in enumerate(range(0, size, chunk_size))
    ]
    t0 = time.perf_counter()
    store.chunks.insert_many(docs, ordered=True)
    out["raw_insert_mb_s"] = size / MIB / (time.perf_counter() - t0)
    store.chunks.delete_many({"files_id": scratch})
    del docs

    file_id = store.resource_file_id(ident)
    nchunks = -(-size // chunk_size)
    res = store.get_resource(ident)
    reader = res.stream
    cache = default_cache()
    sum(len(d["data"]) for d in store.chunks.find({"files_id": file_id}))  # warm the server

    def raw_find_one() -> None:
        store.chunks.find_one({"files_id": file_id, "n": rng.randrange(nchunks)})

    def uncached_read() -> None:
        cache.clear()
        reader._local.clear()  # type: ignore[attr-defined]
        res.seek(rng.randrange(size - 4096))
        res.read(4096)

    out["raw_find_one_ms"] = _median_ms(raw_find_one, 60)
    out["uncached_read_ms"] = _median_ms(uncached_read, 60)
    res.seek(0)
    res.read(4096)
    out["cached_read_us"] = _median_ms(lambda: (res.seek(100), res.read(4096)), 200) * 1000

    def batch_ranges() -> list[tuple[int, int]]:
        starts = [rng.randrange(size - 3072) for _ in range(256)]
        return [(s, s + 3072) for s in starts]

    batch_ms, raw_batch_ms = [], []
    for _ in range(8):
        ranges = batch_ranges()
        numbers = sorted(
            {n for s, e in ranges for n in range(s // chunk_size, (e - 1) // chunk_size + 1)}
        )
        t0 = time.perf_counter()
        list(store.chunks.find({"files_id": file_id, "n": {"$in": numbers}}))
        raw_batch_ms.append((time.perf_counter() - t0) * 1000)
        cache.clear()
        reader._local.clear()  # type: ignore[attr-defined]
        t0 = time.perf_counter()
        res.prefetch(ranges)
        for s, e in ranges:
            res.seek(s)
            res.read(e - s)
        batch_ms.append((time.perf_counter() - t0) * 1000)
    out["batch256_ms"] = statistics.median(batch_ms)
    out["raw_batch256_ms"] = statistics.median(raw_batch_ms)

    seq, raw_seq = [], []
    for _ in range(3):
        cache.clear()
        t0 = time.perf_counter()
        with store.get_resource(ident) as full:
            sum(len(c) for c in full.iter_chunks(MIB))
        seq.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sum(len(d["data"]) for d in store.chunks.find({"files_id": file_id}))
        raw_seq.append(time.perf_counter() - t0)
    out["seq_mb_s"] = size / MIB / min(seq)
    out["raw_seq_mb_s"] = size / MIB / min(raw_seq)
    store.delete_resource(ident)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="32 MiB instead of 128 MiB")
    parser.add_argument(
        "--uri", help="mongodb://host:port of a running server (default: start one)"
    )
    args = parser.parse_args()
    size = (32 if args.quick else 128) * MIB
    from _common import mongo_server, write_results

    rng = random.Random(0)
    with mongo_server(args.uri) as base:
        uri = f"{base}/bench_io"
        rows = [measure(uri, chunk_size, size, rng) for chunk_size in (255 * 1024, MIB)]
    print(f"resource: {size // MIB} MiB on SecantusDB (127.0.0.1); medians")
    print(
        "| chunk | store MB/s (raw insert_many) | random 4 KiB uncached ms (raw find_one) | "
        "cached us | 256-range batch ms (raw $in find) | sequential MB/s (raw find) |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['chunk_kib']:.0f} KiB | {r['store_mb_s']:.0f} ({r['raw_insert_mb_s']:.0f}) "
            f"x{r['store_mb_s'] / r['raw_insert_mb_s']:.2f} | {r['uncached_read_ms']:.2f} "
            f"({r['raw_find_one_ms']:.2f}) x{r['uncached_read_ms'] / r['raw_find_one_ms']:.2f} | "
            f"{r['cached_read_us']:.0f} | {r['batch256_ms']:.1f} ({r['raw_batch256_ms']:.1f}) "
            f"x{r['batch256_ms'] / r['raw_batch256_ms']:.2f} | {r['seq_mb_s']:.0f} "
            f"({r['raw_seq_mb_s']:.0f}) x{r['seq_mb_s'] / r['raw_seq_mb_s']:.2f} |"
        )
    path = write_results("gridfs_io.json", {"size_mib": size // MIB, "rows": rows})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
