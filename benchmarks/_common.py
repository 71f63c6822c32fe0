"""Shared helpers of the benchmark scripts: a local SecantusDB server, timing, test arrays.

Benchmarks run as ``python benchmarks/NAME.py``; this module puts the repository root on
``sys.path`` so that ``datastack`` and ``tests.mongo_server`` import from the checkout.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MIB = 1024 * 1024
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@contextlib.contextmanager
def mongo_server(uri: str | None) -> Iterator[str]:
    """Yield ``uri`` (an existing server), or start a SecantusDB process and yield its URI."""
    if uri:
        yield uri.rstrip("/")
        return
    from tests.mongo_server import MongoServer

    with tempfile.TemporaryDirectory(prefix="datastack-bench-db-") as tmp:
        server = MongoServer(Path(tmp) / "db").start()
        try:
            yield server.uri
        finally:
            server.stop()


def seconds(fn: Callable[[], Any]) -> float:
    """Wall time of one call."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def mnist_like(n: int, seed: int = 0) -> tuple[Any, Any]:
    """``n`` 28x28 float32 images in [0, 1] (~80% zeros, like MNIST) and int64 labels."""
    import numpy as np

    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), dtype=np.float32)
    step = 5000
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        pixels = rng.integers(1, 256, size=(hi - lo, 20, 16), dtype=np.uint8)
        keep = rng.random(size=(hi - lo, 20, 16)) < 0.5
        images[lo:hi, 4:24, 6:22] = np.where(keep, pixels, 0) / np.float32(255)
    labels = rng.integers(0, 10, size=n, dtype=np.int64)
    return images, labels


def run_child(script: Path, args: list[str], env: dict[str, str] | None = None) -> Any:
    """Run ``python script args`` in a fresh process; return the JSON on its last stdout line."""
    done = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    if done.returncode != 0:
        raise RuntimeError(f"{script.name} {' '.join(args)} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_results(name: str, payload: Any) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path
