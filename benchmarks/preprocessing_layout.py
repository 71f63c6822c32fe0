"""Which compression and chunk size for the canonical HDF5? File size vs read time.

Writes the same MNIST-like data (28x28 uint8, ~80% zeros) with the canonical writer under
several (compression, chunk bytes) settings and measures file size, write time, random
single-sample reads and one sequential pass. Prints ratios against (lzf, 64 KiB), the default.

    python benchmarks/preprocessing_layout.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from datastack.canonical.writer import CanonicalWriter
from datastack.preprocessing import writer as writer_mod


def mnist_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        r, c = rng.integers(4, 12, 2)
        images[i, r : r + 14, c : c + 12] = rng.integers(0, 256, (14, 12), dtype=np.uint8) // 2 * 2
    return images, rng.integers(0, 10, n).astype(np.uint8)


def measure(
    path: Path,
    images: np.ndarray,
    labels: np.ndarray,
    compression: str | None,
    chunk: int,
    reads: int,
) -> dict[str, float]:
    writer_mod.SAMPLE_CHUNK_BYTES = chunk
    start = time.perf_counter()
    with CanonicalWriter(path, "bench", compression=compression) as w:  # type: ignore[arg-type]
        w.add_split("train", images, labels)
    write = time.perf_counter() - start
    idx = np.random.default_rng(1).integers(0, len(images), reads)
    with h5py.File(path, "r") as f:
        ds = f["train/samples"]
        start = time.perf_counter()
        for i in idx:
            ds[int(i)]
        random = (time.perf_counter() - start) / reads
        start = time.perf_counter()
        step = ds.chunks[0]
        for s in range(0, len(ds), step):
            ds[s : s + step]
        sequential = time.perf_counter() - start
    return {
        "size_mb": path.stat().st_size / 1e6,
        "write_s": write,
        "random_read_ms": random * 1e3,
        "full_pass_s": sequential,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10,000 samples instead of 60,000")
    args = parser.parse_args()
    n = 10_000 if args.quick else 60_000
    images, labels = mnist_like(n)
    settings = [(c, k) for c in ("lzf", "gzip", None) for k in (64 * 1024, 256 * 1024, 1024 * 1024)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for compression, chunk in settings:
            key = f"{compression or 'none'}/{chunk // 1024}KiB"
            results[key] = measure(
                Path(tmp) / "b.h5",
                images,
                labels,
                compression,
                chunk,
                reads=500 if args.quick else 2000,
            )
    base = results["lzf/64KiB"]
    print(f"{n} samples, raw {images.nbytes / 1e6:.1f} MB; ratios vs lzf/64KiB (lower is better)")
    print(f"{'setting':<16}{'size':>8}{'write':>8}{'random':>8}{'pass':>8}   absolute")
    for key, r in results.items():
        print(
            f"{key:<16}{r['size_mb'] / base['size_mb']:>8.2f}{r['write_s'] / base['write_s']:>8.2f}"
            f"{r['random_read_ms'] / base['random_read_ms']:>8.2f}"
            f"{r['full_pass_s'] / base['full_pass_s']:>8.2f}   "
            f"{r['size_mb']:.1f} MB, {r['random_read_ms']:.3f} ms/sample, {r['full_pass_s']:.3f} s"
        )
    out = Path(__file__).parent / "results" / "preprocessing_layout.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"n": n, "results": results}, indent=2))


if __name__ == "__main__":
    main()
