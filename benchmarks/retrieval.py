"""Benchmark: HTTPRetriever into the filesystem connector vs a plain `requests` download.

Serves a generated payload (one 1 MiB pseudo-random block repeated; never held twice) from a
threaded HTTP server on 127.0.0.1 and, for each size, runs every download in its own
subprocess so that peak RSS (ru_maxrss) belongs to that download alone. Prints one table:

- throughput of HTTPRetriever (stream + sha256 + fsync + atomic rename) into
  FileStorageConnector / throughput of `requests.get(stream=True)` + `iter_content` to a file
  (goal >= 0.9), best of --repeat runs each, alternating;
- peak RSS of the retrieving process per size (goal < 100 MiB and flat).

    python benchmarks/retrieval.py            # 64 MiB and 512 MiB
    python benchmarks/retrieval.py --quick    # 8 MiB and 32 MiB
    python benchmarks/retrieval.py --rate 500 # server paced at 500 MB/s, like a fast link
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
BLOCK = hashlib.shake_256(b"datastack-benchmark").digest(MiB)


def payload_sha256(size: int) -> str:
    digest = hashlib.sha256()
    full, rest = divmod(size, len(BLOCK))
    for _ in range(full):
        digest.update(BLOCK)
    digest.update(BLOCK[:rest])
    return digest.hexdigest()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    rate = 0.0  # bytes per second; 0 = as fast as possible

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        size = int(self.path.rsplit("/", 1)[-1])
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.send_header("ETag", f'"bench-{size}"')
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        left = size
        view = memoryview(BLOCK)
        started = time.perf_counter()
        try:
            while left:
                n = min(left, len(BLOCK))
                self.wfile.write(view[:n])
                left -= n
                if self.rate:  # pace like a real link
                    ahead = (size - left) / self.rate - (time.perf_counter() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        except OSError:
            pass


def child(mode: str, url: str, folder: str, sha256: str) -> None:
    """One download in this process; prints {"seconds", "bytes", "peak_rss"} as JSON."""
    import requests

    from datastack.retrieval import HTTPRetriever, ResourceDefinition
    from datastack.storage import connect

    started = time.perf_counter()
    if mode in {"requests", "requests+sha256+fsync"}:
        same_work = mode != "requests"
        digest = hashlib.sha256()
        dest = Path(folder) / "plain.bin"
        with requests.get(url, stream=True, timeout=(10, 60)) as response, open(dest, "wb") as f:
            response.raise_for_status()
            for chunk in response.iter_content(MiB):
                if same_work:
                    digest.update(chunk)
                f.write(chunk)
            if same_work:
                f.flush()
                os.fsync(f.fileno())
        if same_work and digest.hexdigest() != sha256:
            raise SystemExit("baseline: checksum mismatch")
        size = dest.stat().st_size
    else:
        store = connect(folder)
        definition = ResourceDefinition("bench/payload.bin", url, sha256=sha256)
        [info] = HTTPRetriever(store, progress=False).retrieve_with_info([definition])
        size = info.size
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "bytes": size, "peak_rss": peak}))


def run_child(mode: str, url: str, sha256: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="ds-bench-") as folder:
        out = subprocess.run(
            [sys.executable, __file__, "--child", mode, url, folder, sha256],
            check=True,
            capture_output=True,
            text=True,
        )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 and 32 MiB instead of 64/512")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method (best counts)")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="throttle the server to this many MB/s (0: off)"
    )
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    Handler.rate = args.rate * 1e6
    sizes = [8 * MiB, 32 * MiB] if args.quick else [64 * MiB, 512 * MiB]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    rows: list[dict[str, Any]] = []
    try:
        for size in sizes:
            url = f"http://{host}:{port}/payload/{size}"
            sha256 = payload_sha256(size)
            modes = ("requests", "requests+sha256+fsync", "retriever")
            runs: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
            for _ in range(args.repeat):
                for mode in modes:
                    result = run_child(mode, url, sha256)
                    if result["bytes"] != size:
                        raise SystemExit(f"{mode}: got {result['bytes']} bytes, expected {size}")
                    runs[mode].append(result)
            best = {m: min(r, key=lambda x: x["seconds"]) for m, r in runs.items()}
            mbps = {m: size / b["seconds"] / 1e6 for m, b in best.items()}
            rows.append(
                {
                    "size_mib": size // MiB,
                    "retriever_mb_s": mbps["retriever"],
                    "requests_mb_s": mbps["requests"],
                    "same_work_mb_s": mbps["requests+sha256+fsync"],
                    "throughput_ratio": mbps["retriever"] / mbps["requests"],
                    "ratio_vs_same_work": mbps["retriever"] / mbps["requests+sha256+fsync"],
                    "retriever_peak_rss_mib": max(r["peak_rss"] for r in runs["retriever"]) / MiB,
                    "requests_peak_rss_mib": max(r["peak_rss"] for r in runs["requests"]) / MiB,
                }
            )
    finally:
        server.shutdown()

    print(
        f"{'size':>8} | {'retriever':>9} | {'requests':>8} | {'ratio':>5} | "
        f"{'req+sha+fsync':>13} | {'ratio':>5} | {'retriever peak RSS':>18} | "
        f"{'requests peak RSS':>17}"
    )
    print(f"{'':>8} | {'MB/s':>9} | {'MB/s':>8} | {'':>5} | {'MB/s':>13} | {'':>5} |")
    print("-" * 108)
    for r in rows:
        print(
            f"{r['size_mib']:>4} MiB | {r['retriever_mb_s']:>9.0f} | {r['requests_mb_s']:>8.0f} "
            f"| {r['throughput_ratio']:>5.2f} | {r['same_work_mb_s']:>13.0f} "
            f"| {r['ratio_vs_same_work']:>5.2f} | {r['retriever_peak_rss_mib']:>14.1f} MiB "
            f"| {r['requests_peak_rss_mib']:>13.1f} MiB"
        )
    print(
        "first ratio: retriever / plain requests to a file (goal >= 0.9); second: retriever / "
        "requests doing the same work (sha256 + fsync).\ngoal: retriever peak RSS < 100 MiB "
        "and flat across sizes"
    )
    name = "retrieval.json" if not args.rate else f"retrieval-rate{args.rate:g}.json"
    out = Path(__file__).parent / "results" / name
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps({"quick": args.quick, "rate_mb_s": args.rate, "rows": rows}, indent=2)
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
