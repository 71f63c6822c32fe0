"""Benchmark: a scheduled refresh of an unchanged tracked source, with and without validators.

A threaded HTTP server on 127.0.0.1 serves one CSV table (``--mib`` MiB) and counts the body
bytes it sends. In one run:

- baseline: a full download of the file (``requests`` streaming + sha256), what a refresh
  that cannot tell "unchanged" has to do at the least;
- the first refresh (publishes version 1) -- for reference;
- an unchanged refresh when the server sends ETag / Last-Modified (a conditional request,
  answered 304: nothing downloaded);
- an unchanged refresh when the server sends no validators (download, compare the sha256,
  drop the copy; nothing published).

Prints bytes sent and median time (``--repeat``) with ratios against the baseline, and writes
``benchmarks/results/tracking.json``.

    python benchmarks/tracking.py            # 64 MiB table
    python benchmarks/tracking.py --quick    # 8 MiB
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from _common import MIB, median, write_results


def make_table(mib: int) -> bytes:
    row_block = "".join(f"{i},{(i * 7919) % 10007},{'abc'[i % 3]}\n" for i in range(20000))
    rows = ["a,b,label\n"]
    size = 0
    while size < mib * MIB:
        rows.append(row_block)
        size += len(row_block)
    return "".join(rows).encode()


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    data = b""
    validators = True
    sent = 0
    lock = threading.Lock()

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _headers(self) -> dict[str, str]:
        if not type(self).validators:
            return {}
        etag = '"' + hashlib.sha256(type(self).data).hexdigest()[:16] + '"'
        return {"ETag": etag, "Last-Modified": formatdate(1_700_000_000, usegmt=True)}

    def _answer(self, body: bool) -> None:
        headers = self._headers()
        if headers and self.headers.get("If-None-Match") == headers["ETag"]:
            self.send_response(304)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(type(self).data)))
        self.end_headers()
        if body:
            self.wfile.write(type(self).data)
            with type(self).lock:
                type(self).sent += len(type(self).data)

    def do_GET(self) -> None:
        self._answer(True)

    def do_HEAD(self) -> None:
        self._answer(False)


def _download(url: str) -> None:
    import requests

    digest = hashlib.sha256()
    with requests.get(url, stream=True, timeout=60) as response:
        response.raise_for_status()
        for chunk in response.iter_content(1 << 20):
            digest.update(chunk)


def _measure(label: str, fn: Any, repeat: int) -> dict[str, Any]:
    times, sent = [], []
    for _ in range(repeat):
        Upstream.sent = 0
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        sent.append(Upstream.sent)
    return {"case": label, "seconds": median(times), "bytes": int(median([float(s) for s in sent]))}


def run(mib: int, repeat: int) -> list[dict[str, Any]]:
    import datastack

    Upstream.data = make_table(mib)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/table.csv"
    rows: list[dict[str, Any]] = []
    try:
        rows.append(_measure("full download (baseline)", lambda: _download(url), repeat))
        for validators in (True, False):
            Upstream.validators = validators
            with tempfile.TemporaryDirectory(prefix="datastack-bench-track-") as tmp:
                spec = Path(tmp) / "spec.yaml"
                spec.write_text(
                    f"datasets:\n  live:\n    sources: [{{url: {url!r}, track: true}}]\n"
                    "    format: csv\n"
                )
                storage = Path(tmp) / "store"
                kind = "validators" if validators else "no validators"

                def refresh() -> None:
                    [result] = datastack.refresh(spec, storage=storage)
                    assert result.ok, result.reason

                rows.append(_measure(f"first refresh, {kind} (publishes)", refresh, 1))
                rows.append(_measure(f"unchanged refresh, {kind}", refresh, repeat))
    finally:
        server.shutdown()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    mib = 8 if args.quick else args.mib
    rows = run(mib, 3 if args.quick else args.repeat)
    base = rows[0]
    print(f"\nrefresh of an unchanged tracked source ({mib} MiB CSV, loopback)\n")
    print(f"{'case':<44} {'sent MiB':>9} {'x bytes':>8} {'seconds':>8} {'x time':>7}")
    for row in rows:
        row["bytes_ratio"] = row["bytes"] / base["bytes"] if base["bytes"] else 0.0
        row["time_ratio"] = row["seconds"] / base["seconds"]
        print(
            f"{row['case']:<44} {row['bytes'] / MIB:>9.2f} {row['bytes_ratio']:>8.2f} "
            f"{row['seconds']:>8.3f} {row['time_ratio']:>7.2f}"
        )
    path = write_results("tracking.json", {"mib": mib, "rows": rows})
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
