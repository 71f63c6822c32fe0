"""Benchmark: latency of `datastack refresh` for an unchanged dataset, with and without Prefect.

One small CSV dataset is served from 127.0.0.1 and published once; then every measured run is
a refresh that finds it unchanged (lease, catalog check, no download, no new version):

- library-only: `datastack refresh NAME --engine local` (no Prefect import at all);
- warm: `datastack refresh NAME --engine prefect` against a `prefect server start` that this
  script starts (and stops) with its own PREFECT_HOME;
- cold: `datastack refresh NAME --engine prefect` with no PREFECT_API_URL and a fresh
  PREFECT_HOME: Prefect starts a temporary local server on a new SQLite database (ephemeral);
- in-process: the same refreshes called as Python functions in one warm process (the engine's
  own overhead, with imports and startup paid once).

Each CLI run is its own subprocess (interpreter start and imports included). Goal: warm within
2 s of library-only.

    python benchmarks/refresh_latency.py            # 5 runs each (cold: 2)
    python benchmarks/refresh_latency.py --quick    # 2 runs each (cold: 1)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CSV = ("x1,x2,label\n" + "".join(f"{i},{i * 7 % 11},{'ab'[i % 2]}\n" for i in range(200))).encode()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(CSV)))
        self.send_header("ETag", '"bench"')
        self.end_headers()
        self.wfile.write(CSV)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    })
    return env


def cli(engine: str, spec: Path, storage: Path, env: dict[str, str]) -> float:
    """Wall time of one `datastack refresh` subprocess; fails loudly unless 'unchanged'."""
    cmd = [sys.executable, "-m", "datastack.cli", "refresh", "bench", "--spec", str(spec),
           "--storage", str(storage), "--engine", engine, "--json"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0 or '"unchanged"' not in proc.stdout:
        raise SystemExit(f"{engine} refresh failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
                         f"{proc.stderr[-4000:]}")
    return elapsed


def start_server(home: Path) -> tuple[subprocess.Popen[bytes], str, float]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
         "--port", str(port)],
        env=base_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("prefect server did not start within 180 s")
        time.sleep(0.5)
    return proc, url, time.perf_counter() - start


def in_process(spec: Path, storage: Path, env: dict[str, str], runs: int) -> dict[str, Any]:
    """Library call and flow call timed in one child process that already imported both."""
    code = f"""
import json, time, statistics
from datastack.pipeline.sequence import refresh_dataset
from datastack.specs import load_spec
from flows.refresh import run_refresh
spec = load_spec({str(spec)!r})["bench"]
lib, flow = [], []
run_refresh({str(spec)!r}, ["bench"], {str(storage)!r})   # warm-up: imports, client, flow
for _ in range({runs}):
    t = time.perf_counter(); r = refresh_dataset(spec, {str(storage)!r})
    lib.append(time.perf_counter() - t); assert r.status == "unchanged", r
    t = time.perf_counter(); (r,) = run_refresh({str(spec)!r}, ["bench"], {str(storage)!r})
    flow.append(time.perf_counter() - t); assert r.status == "unchanged", r
print(json.dumps({{"library": lib, "flow": flow}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"in-process run failed:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def summary(times: list[float]) -> dict[str, Any]:
    return {"runs": len(times), "median_s": statistics.median(times), "min_s": min(times),
            "max_s": max(times), "times_s": times}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--runs", type=int, default=None, help="runs per warm/library mode")
    args = parser.parse_args()
    runs = args.runs or (2 if args.quick else 5)
    cold_runs = 1 if args.quick else 2

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/bench.csv"
    results: dict[str, Any] = {"machine": platform.platform(), "python": platform.python_version()}
    with tempfile.TemporaryDirectory(prefix="ds-bench-refresh-") as tmp_name:
        tmp = Path(tmp_name)
        spec = tmp / "spec.yaml"
        spec.write_text(
            "datasets:\n  bench:\n    sources:\n"
            f"      - url: {url}\n        sha256: {hashlib.sha256(CSV).hexdigest()}\n"
            "    format: csv\n    csv: {target: label}\n    splits: {train: 0.8, test: 0.2}\n"
        )
        storage = tmp / "store"
        local_env = base_env(tmp / "home-local")
        first = subprocess.run(
            [sys.executable, "-m", "datastack.cli", "refresh", "bench", "--spec", str(spec),
             "--storage", str(storage), "--engine", "local"],
            env=local_env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        if first.returncode != 0:
            raise SystemExit(f"initial publish failed:\n{first.stdout}\n{first.stderr}")

        print("library-only ...", flush=True)
        library = [cli("local", spec, storage, local_env) for _ in range(runs)]

        print("cold (ephemeral Prefect, fresh PREFECT_HOME) ...", flush=True)
        cold = [cli("prefect", spec, storage, base_env(tmp / f"home-cold-{i}"))
                for i in range(cold_runs)]

        print("warm (prefect server start) ...", flush=True)
        home = tmp / "home-server"
        proc, api_url, startup = start_server(home)
        try:
            warm_env = {**base_env(home), "PREFECT_API_URL": api_url}
            cli("prefect", spec, storage, warm_env)  # first run registers the flow
            warm = [cli("prefect", spec, storage, warm_env) for _ in range(runs)]
            print("in-process (one warm interpreter) ...", flush=True)
            inproc = in_process(spec, storage, warm_env, runs)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    server.shutdown()

    results.update({
        "library_cli": summary(library),
        "cold_cli": summary(cold),
        "warm_cli": summary(warm),
        "library_in_process": summary(inproc["library"]),
        "flow_in_process": summary(inproc["flow"]),
        "server_startup_s": startup,
    })
    base = results["library_cli"]["median_s"]
    rows = [
        ("library-only CLI (--engine local)", "library_cli"),
        ("warm CLI (running prefect server)", "warm_cli"),
        ("cold CLI (ephemeral, fresh PREFECT_HOME)", "cold_cli"),
        ("library call, in-process", "library_in_process"),
        ("flow call, in-process (warm server)", "flow_in_process"),
    ]
    print(f"\n{'mode':<44}{'runs':>5}{'median s':>10}{'min s':>8}{'vs library CLI':>16}")
    for label, key in rows:
        r = results[key]
        print(f"{label:<44}{r['runs']:>5}{r['median_s']:>10.2f}{r['min_s']:>8.2f}"
              f"{r['median_s'] / base:>15.1f}x")
    gap = results["warm_cli"]["median_s"] - base
    results["warm_minus_library_s"] = gap
    results["goal_warm_within_2s"] = gap <= 2.0
    print(f"\nwarm - library-only = {gap:+.2f} s (goal <= 2 s: "
          f"{'met' if gap <= 2.0 else 'NOT met'}); prefect server startup {startup:.1f} s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "refresh_latency.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
