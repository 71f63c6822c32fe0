"""Iterator benchmark: random single-sample reads and the cost of stacking, in one run.

    python benchmarks/iterators.py [--quick] [--reads 2000] [--uri mongodb://host:port]

Writes a 60000 x 28 x 28 float32 + int64 labels dataset (``--quick``: 10000) with the
preprocessing writer (canonical layout: chunked along axis 0, default compression), stores it
in GridFS on a SecantusDB process started here (unless ``--uri``), then measures in the same run:

1. ``--reads`` random single-sample reads ``it[i]`` through datastack over GridFS (a fresh
   process-wide block cache, file open included; then the same count again, warm) vs. ``h5py`` on
   the same local file; also datastack over the local file (iterator overhead alone);
2. the same indices read as ``get_batch`` calls of 64 (sorted, coalesced, one prefetch each);
3. per-sample time of a 5-layer stack (view of shuffled of combined of mapped of view) over
   in-memory arrays vs. direct numpy indexing.

Prints a table and writes ``benchmarks/results/iterators.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from datastack.iterators import (  # noqa: E402
    CombinedDatasetIterator,
    DatasetIteratorView,
    HDF5DatasetIterator,
    MappedDatasetIterator,
    SequenceDatasetIterator,
    ShuffledDatasetIterator,
)
from datastack.resources import StreamedResource  # noqa: E402


def mnist_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-like images: a 20x16 centre of which half the pixels are set, zeros elsewhere."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), dtype=np.float32)
    for lo in range(0, n, 5000):
        hi = min(n, lo + 5000)
        pixels = rng.integers(1, 256, size=(hi - lo, 20, 16), dtype=np.uint8)
        keep = rng.random(size=(hi - lo, 20, 16)) < 0.5
        images[lo:hi, 4:24, 6:22] = np.where(keep, pixels, 0) / np.float32(255)
    return images, rng.integers(0, 10, size=n, dtype=np.int64)


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def identity(sample: tuple[Any, ...]) -> tuple[Any, ...]:
    return sample


def single_reads(it: Any, picks: list[int]) -> None:
    for i in picks:
        it[i]


def h5py_reads(path: Path, picks: list[int]) -> None:
    import h5py

    with h5py.File(path, "r") as f:
        samples, labels = f["train/samples"], f["train/targets"][()]
        for i in picks:
            samples[i], labels[i]


def batch_reads(it: Any, picks: list[int], size: int = 64) -> None:
    for lo in range(0, len(picks), size):
        it.get_batch(picks[lo : lo + size])


def stack_of(x: np.ndarray, y: np.ndarray) -> Any:
    """view of shuffled of combined of mapped of view (over in-memory arrays)."""
    base = SequenceDatasetIterator(x, y)
    n = len(base)
    half = n // 2
    first = MappedDatasetIterator(DatasetIteratorView(base, np.arange(half)), identity)
    second = MappedDatasetIterator(DatasetIteratorView(base, np.arange(half, n)), identity)
    shuffled = ShuffledDatasetIterator(CombinedDatasetIterator([first, second]), seed=0)
    return DatasetIteratorView(shuffled, np.arange(n)[::-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10000 samples instead of 60000")
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--uri", default=None, help="use this MongoDB server (mongodb://h:p)")
    args = parser.parse_args(argv)
    n = 10_000 if args.quick else 60_000

    from datastack.canonical.writer import write_arrays
    from datastack.storage.cache import default_cache
    from datastack.storage.gridfs import GridFSStorageConnector

    results: dict[str, Any] = {"samples": n, "reads": args.reads}
    with tempfile.TemporaryDirectory(prefix="datastack-bench-it-") as tmp:
        path = Path(tmp) / "data.h5"
        x, y = mnist_like(n)
        write_arrays(path, "bench", {"train": (x, y)})
        results["file_mib"] = round(path.stat().st_size / 2**20, 1)
        picks = np.random.default_rng(1).integers(0, n, size=args.reads).tolist()

        server = None
        uri = args.uri
        if uri is None:
            from tests.mongo_server import MongoServer

            server = MongoServer(Path(tmp) / "db").start()
            uri = server.uri
        try:
            store = GridFSStorageConnector(f"{uri.rstrip('/')}/bench_iterators")
            store.set_resource("bench/data.h5", path)

            def gridfs_it() -> HDF5DatasetIterator:
                return HDF5DatasetIterator(store.get_resource("bench/data.h5"), "train")

            t_h5py = min(timed(lambda: h5py_reads(path, picks)) for _ in range(2))
            local = HDF5DatasetIterator(StreamedResource.from_path("d.h5", path), "train")
            t_local = timed(lambda: single_reads(local, picks))
            default_cache().clear()
            grid = gridfs_it()
            t_cold = timed(lambda: single_reads(grid, picks))
            t_warm = timed(lambda: single_reads(grid, picks))
            default_cache().clear()
            grid_b = gridfs_it()
            t_batch = timed(lambda: batch_reads(grid_b, picks))
            t_h5py_batch = timed(lambda: h5py_reads(path, sorted(picks)))
            store.delete_resource("bench/data.h5")
            store.close()
        finally:
            if server is not None:
                server.stop()

    stack = stack_of(x, y)
    m = min(len(stack), 20_000)
    order = np.random.default_rng(2).integers(0, n, size=m).tolist()
    t_stack = min(timed(lambda: single_reads(stack, order)) for _ in range(3))
    t_numpy = min(timed(lambda: [(x[i], y[i]) for i in order]) for _ in range(3))

    per = 1e6 / args.reads
    rows = [
        ("h5py, local file (baseline)", t_h5py * per, 1.0),
        ("datastack HDF5, local file", t_local * per, t_local / t_h5py),
        ("datastack HDF5, GridFS cold (incl. open)", t_cold * per, t_cold / t_h5py),
        ("datastack HDF5, GridFS warm cache", t_warm * per, t_warm / t_h5py),
        ("datastack get_batch(64), GridFS cold", t_batch * per, t_batch / t_h5py),
        ("h5py, local, sorted indices", t_h5py_batch * per, t_h5py_batch / t_h5py),
        ("numpy x[i], y[i] (baseline)", t_numpy * 1e6 / m, 1.0),
        ("5-layer stack it[i] over numpy", t_stack * 1e6 / m, t_stack / t_numpy),
    ]
    print(
        f"\n{args.reads} random reads of {n} x 28 x 28 float32 ({results['file_mib']} MiB "
        "HDF5, canonical layout: uncompressed, chunked along axis 0)"
    )
    print(f"{'measurement':44} {'us/sample':>10} {'ratio':>8}")
    for name, us, ratio in rows:
        print(f"{name:44} {us:10.1f} {ratio:8.2f}")
    overhead = (t_stack - t_numpy) * 1e6 / m
    print(f"5-layer stack overhead per sample: {overhead:.1f} us ({overhead / 5:.1f} us per layer)")
    results["rows"] = [{"name": r[0], "us_per_sample": r[1], "ratio": r[2]} for r in rows]
    results["stack_overhead_us"] = overhead
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "iterators.json").write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
