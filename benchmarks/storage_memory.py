"""Peak memory and throughput of GridFS uploads and full reads on a local SecantusDB server.

For each size (64, 256, 512 MiB; ``--quick``: 16, 64 MiB) a fresh subprocess:

- stores a generated stream (never held in memory) with ``set_resource`` and reports its peak
  RSS (``resource.getrusage``) and the RSS growth over the process before the upload;
- inserts the same pre-cut chunk documents with a raw ``insert_many`` (the baseline);
- reads the resource back through ``get_resource`` (block cache, read-ahead) and with a raw
  ``find()`` over its chunks (the baseline).

Prints a table of ratios measured in the same run and writes JSON to ``benchmarks/results/``.

    python benchmarks/storage_memory.py [--quick] [--sizes 64 256] [--uri mongodb://host:port]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class PatternStream(io.RawIOBase):
    """``size`` bytes made of ``pieces`` repeated; nothing is held but the pieces."""

    def __init__(self, size: int, pieces: list[bytes]) -> None:
        self.size = size
        self.pattern = b"".join(pieces)
        self.pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = min(len(view), self.size - self.pos)
        done = 0
        while done < n:
            off = (self.pos + done) % len(self.pattern)
            take = min(n - done, len(self.pattern) - off)
            view[done : done + take] = self.pattern[off : off + take]
            done += take
        self.pos += n
        return n


def _pieces(chunk_size: int) -> list[bytes]:
    return [os.urandom(chunk_size) for _ in range(4)]


def child(uri: str, size_mib: int, mode: str, chunk_size: int) -> dict[str, Any]:
    """One measurement in a fresh process (so peak RSS is this operation's)."""
    sys.path.insert(0, str(ROOT))
    from bson import ObjectId

    from datastack.storage.cache import default_cache
    from datastack.storage.gridfs import GridFSStorageConnector

    size = size_mib * MIB
    store = GridFSStorageConnector(uri, chunk_size=chunk_size)
    store.has_resource("warm/up")  # connect and import everything before measuring
    pieces = _pieces(chunk_size)
    ident = f"bench/{size_mib}.bin"
    out: dict[str, Any] = {"size_mib": size_mib, "mode": mode}
    if mode == "store":
        before = _rss_mib()
        t0 = time.perf_counter()
        store.set_resource(ident, PatternStream(size, pieces))
        out["seconds"] = time.perf_counter() - t0
        out["rss_before_mib"] = before
        out["peak_rss_mib"] = _peak_mib()
        out["peak_growth_mib"] = out["peak_rss_mib"] - before
    elif mode == "raw_insert":
        file_id = ObjectId()
        docs = [
            {"files_id": file_id, "n": n, "data": pieces[n % 4][: min(chunk_size, size - off)]}
            for n, off in enumerate(range(0, size, chunk_size))
        ]
        t0 = time.perf_counter()
        store.chunks.insert_many(docs, ordered=True)
        out["seconds"] = time.perf_counter() - t0
        store.chunks.delete_many({"files_id": file_id})
    elif mode == "read":  # best of 3 passes (the first one warms the server's cache)
        times = []
        for _ in range(3):
            default_cache().clear()
            t0 = time.perf_counter()
            with store.get_resource(ident) as res:
                total = sum(len(c) for c in res.iter_chunks(MIB))
            times.append(time.perf_counter() - t0)
        out["seconds"] = min(times)
        out["bytes"] = total
        out["peak_rss_mib"] = _peak_mib()
    elif mode == "raw_find":
        file_id = store.resource_file_id(ident)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            total = sum(len(d["data"]) for d in store.chunks.find({"files_id": file_id}))
            times.append(time.perf_counter() - t0)
        out["seconds"] = min(times)
        out["bytes"] = total
    out["mb_per_s"] = size / MIB / out["seconds"]
    return out


def run_child(uri: str, size: int, mode: str, chunk_size: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", mode, "--uri", uri, "--sizes", str(size)]
    cmd += ["--chunk-size", str(chunk_size)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="16 and 64 MiB only")
    parser.add_argument("--sizes", type=int, nargs="*", help="sizes in MiB")
    parser.add_argument(
        "--uri", help="mongodb://host:port of a running server (default: start one)"
    )
    parser.add_argument("--chunk-size", type=int, default=255 * 1024)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.uri, args.sizes[0], args.child, args.chunk_size)))
        return
    sizes = args.sizes or ([16, 64] if args.quick else [64, 256, 512])
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import mongo_server, write_results

    rows = []
    with mongo_server(args.uri) as base:
        uri = f"{base}/bench_memory"
        for size in sizes:
            row: dict[str, Any] = {"size_mib": size}
            for mode in ("store", "raw_insert", "raw_find", "read"):
                row[mode] = run_child(uri, size, mode, args.chunk_size)
            row["upload_ratio"] = row["store"]["mb_per_s"] / row["raw_insert"]["mb_per_s"]
            row["read_ratio"] = row["read"]["mb_per_s"] / row["raw_find"]["mb_per_s"]
            rows.append(row)
            print(
                f"{size:>5} MiB  peak RSS {row['store']['peak_rss_mib']:6.1f} MiB "
                f"(+{row['store']['peak_growth_mib']:5.1f})  "
                f"store {row['store']['mb_per_s']:6.1f} MB/s  raw insert_many "
                f"{row['raw_insert']['mb_per_s']:6.1f}  ratio {row['upload_ratio']:.2f}  |  "
                f"read {row['read']['mb_per_s']:6.1f} MB/s  raw find "
                f"{row['raw_find']['mb_per_s']:6.1f}  ratio {row['read_ratio']:.2f}",
                flush=True,
            )
    print()
    print(
        "| size | peak RSS (MiB) | RSS growth (MiB) | store MB/s | raw insert_many MB/s | "
        "ratio (goal >= 0.8) | read MB/s | raw find MB/s | ratio (goal >= 0.8) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['size_mib']} MiB | {r['store']['peak_rss_mib']:.0f} | "
            f"{r['store']['peak_growth_mib']:.0f} | {r['store']['mb_per_s']:.0f} | "
            f"{r['raw_insert']['mb_per_s']:.0f} | {r['upload_ratio']:.2f} | "
            f"{r['read']['mb_per_s']:.0f} | {r['raw_find']['mb_per_s']:.0f} | "
            f"{r['read_ratio']:.2f} |"
        )
    path = write_results("storage_memory.json", {"chunk_size": args.chunk_size, "rows": rows})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
