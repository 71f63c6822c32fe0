"""One dataset prepared in parallel (#25.6): 1 process vs 2 local workers vs a 2-worker Dask
LocalCluster, on the same large CSV and on an image folder, ratios in one run.

    python benchmarks/parallel.py [--case both|csv|images] [--gb 1.0] [--images-mb 300]
                                  [--repeat 5] [--part-mb 64]

The CSV is ``benchmarks/ingest.py``'s big table (8 float columns, a short text, a label;
generated once into its cache). The image folder is ``--images-mb`` of generated photos-like
JPEGs and PNGs (smooth random scenes with grain, 10 class folders; generated once into
``~/.cache/datastack-bench/images-<MB>``), a tracked folder source (``format:
imagefolder``: each image verified, its bytes stored). Each run is a first refresh into a
fresh filesystem store, in a fresh process (``python -c 'datastack.refresh(...)'``), with
``DATASTACK_WORKERS=2`` or ``DATASTACK_DASK_ADDRESS`` of a LocalCluster started here (its 2
worker processes, one thread each, started before the clock for each of its runs: an idle
cluster beside the other runs slowed them). The three systems run in turn, ``--repeat``
rounds (5 by default: interleaved, because the machine's speed drifts over minutes, so each
round compares runs made side by side; one refresh on this VM moves by +-15%, so one round
alone says little). Printed per case: median wall seconds, the ratio against one process,
each round's ratios (the goals are judged on their median), the same ratios counted from the
moment the sources are stored (the retrieval and start-up, the same serial work for every
system, left out: what the workers themselves gained), the peak RSS of the
refresh process and of the largest worker (each process's peak as the kernel keeps it,
VmHWM, read four times a second over every process below this one), and the goals of #25
(2 local workers <= 0.6x, Dask <= 0.7x). The run checks that the three versions hold the
same samples (split sizes, and a digest of a random sample of rows). JSON:
``benchmarks/results/parallel``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _common import ROOT, write_results
from ingest import big_csv

#: The environment before the LocalCluster starts: starting one sets MALLOC_TRIM_THRESHOLD_,
#: OMP_NUM_THREADS=1 (which Arrow reads: one CSV thread) and others in this process's
#: environment, meant for its workers; the refreshes run with the machine's own.
CLEAN_ENV = dict(os.environ)
CACHE = Path.home() / ".cache" / "datastack-bench" / "ingest"
IMAGES = Path.home() / ".cache" / "datastack-bench"
SYSTEMS = ("1 process", "2 local workers", "Dask LocalCluster, 2 workers")


class PeakRss:
    """The largest RSS of each process below this one, sampled while it runs."""

    def __init__(self) -> None:
        import psutil

        self.me = psutil.Process()
        self.peaks: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        commands: dict[int, str] = {}
        while not self._stop.is_set():
            for proc in self.me.children(recursive=True):
                try:
                    if proc.pid not in commands:
                        commands[proc.pid] = " ".join(proc.cmdline())[:80]
                    rss = _high_water(proc.pid) or proc.memory_info().rss
                except psutil.Error:
                    continue
                if rss > self.peaks.get(proc.pid, ("", 0))[1]:
                    self.peaks[proc.pid] = (commands[proc.pid], rss)
            # the kernel keeps each process's peak (VmHWM): a few looks a second suffice,
            # and cost the runs that keep both cores busy next to nothing
            time.sleep(0.25)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _high_water(pid: int) -> int:
    """A process's peak RSS so far (Linux: VmHWM of /proc/PID/status), 0 if unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _spec(folder: Path, csv: Path) -> Path:
    import hashlib

    with open(csv, "rb") as f:
        digest = hashlib.file_digest(f, "sha256")
    spec = folder / "spec.yaml"
    spec.write_text(
        f"datasets:\n  big:\n    sources: [{{url: {csv.as_uri()!r}, "
        f"sha256: {digest.hexdigest()}}}]\n"
        "    format: csv\n    csv: {target: label, categorical: [label], text: [text]}\n"
        "    splits: {train: 0.9, test: 0.1}\n")
    return spec


def _run(spec: Path, store: Path, env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    code = ("import time, datastack, json, logging; logging.basicConfig(level=logging.WARNING); "
            "logging.getLogger('datastack.pipeline').setLevel(logging.INFO); "
            "logging.getLogger('datastack.retrieval').setLevel(logging.INFO); "
            "stored=[]; source=logging.getLogger('datastack.sources'); "
            "source.setLevel(logging.INFO); "
            "source.addFilter(lambda r: stored.append(time.perf_counter()) or True); "
            "t=time.perf_counter(); "
            f"[r]=datastack.refresh({str(spec)!r}, storage={str(store)!r}); "
            "e=time.perf_counter(); "
            "print(json.dumps({'s': e-t, 'prepare_s': e-max(stored, default=t), "
            "'status': r.status, 'reason': r.reason, 'splits': r.splits}))")
    import psutil

    busy, own = _busy_seconds(), sum(psutil.Process().cpu_times()[:2])
    with PeakRss() as peaks:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              cwd=ROOT, env={**CLEAN_ENV, "PYTHONPATH": str(ROOT), **env},
                              timeout=3600)
    busy = _busy_seconds() - busy
    own = sum(psutil.Process().cpu_times()[:2]) - own  # this process's (sampler, cluster)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    phases = next((line.rsplit("(", 1)[-1].rstrip(")") for line in done.stderr.splitlines()
                   if "prepared in" in line), "one process")
    if result["status"] != "published":
        raise SystemExit(f"refresh failed: {result['reason']}")
    procs = sorted(peaks.peaks.values(), key=lambda p: -p[1])
    main = max((rss for cmd, rss in procs if "import time, datastack" in cmd), default=0)
    workers = [rss for cmd, rss in procs if "import time, datastack" not in cmd]
    return float(result["s"]), {"splits": result["splits"], "coordinator_rss": main,
                                "prepare_s": float(result["prepare_s"]), "bench_cpu_s": own,
                                "worker_rss": max(workers, default=0), "cpu_s": busy,
                                "phases": phases}


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (not idle, not waiting on I/O) since
    boot, from /proc/stat (0 elsewhere): a run's delta is the CPU time it used, every
    process included (on a quiet machine)."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def image_folder(mb: int) -> Path:
    """About ``mb`` MB of generated images in 10 class folders (3 JPEGs for 1 PNG; 512x384
    smooth random scenes with grain), generated once (``done`` marks a complete folder)."""
    import numpy as np
    from PIL import Image

    folder = IMAGES / f"images-{mb}"
    if (folder / "done").exists():
        return folder
    rng = np.random.default_rng(0)
    total, k = 0, 0
    while total < mb * 1e6:
        cls = folder / f"class{k % 10}"
        cls.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
        scene = np.asarray(Image.fromarray(coarse).resize((512, 384), Image.BICUBIC), np.int16)
        grain = rng.integers(-24, 24, scene.shape, dtype=np.int16)
        image = Image.fromarray(np.clip(scene + grain, 0, 255).astype(np.uint8))
        path = cls / (f"{k:06d}.png" if k % 4 == 3 else f"{k:06d}.jpg")
        image.save(path, **({} if path.suffix == ".png" else {"quality": 92}))
        total += path.stat().st_size
        k += 1
    (folder / "done").write_text(f"{k} images, {total} bytes\n")
    return folder


def _image_spec(folder: Path, images: Path) -> Path:
    spec = folder / "images.yaml"
    spec.write_text(
        f"datasets:\n  big:\n    sources: [{{url: {images.as_uri()!r}, track: true}}]\n"
        "    format: imagefolder\n    splits: {train: 0.9, test: 0.1}\n")
    return spec


def _fingerprint(store: Path) -> tuple[int, str]:
    """The train split of a store: its size and a digest of 200 random rows."""
    import hashlib

    import numpy as np

    import datastack

    it = datastack.load("big", "train", storage=str(store))
    rng = np.random.default_rng(0)
    rows = rng.integers(0, len(it), 200)
    digest = hashlib.sha256()
    for i in rows:
        for value in it[int(i)]:
            array = np.asarray(value)
            digest.update(repr((array.dtype.str, array.shape)).encode())
            digest.update(array.tobytes() if array.dtype != object else repr(
                array.tolist()).encode())
    return len(it), digest.hexdigest()


@contextlib.contextmanager
def _system(name: str, parts: dict[str, str]) -> Iterator[dict[str, str]]:
    """The settings of one system; for Dask, a 2-worker LocalCluster started for this one
    refresh (an idle cluster beside the others' refreshes would slow them)."""
    if name == SYSTEMS[0]:
        yield {"DATASTACK_WORKERS": "1"}
    elif name == SYSTEMS[1]:
        yield {"DATASTACK_WORKERS": "2", **parts}
    else:
        from distributed import LocalCluster

        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster:
            yield {"DATASTACK_DASK_ADDRESS": cluster.scheduler_address, **parts}


def _settle(seconds: float = 3.0) -> None:
    """Before the next run: every process of this one gone (a LocalCluster's workers exit
    after its ``close`` returns) and a few quiet seconds (the kernel frees their memory): a
    run right after a Dask teardown was slower, which favoured the systems measured against
    it (docs/performance.md, session 7)."""
    import psutil

    def lasting(proc: Any) -> bool:  # this process's own helpers stay
        try:
            command = " ".join(proc.cmdline())
        except psutil.Error:
            return False
        return "resource_tracker" in command or "forkserver" in command

    runs = [p for p in psutil.Process().children(recursive=True) if not lasting(p)]
    psutil.wait_procs(runs, timeout=30)
    time.sleep(seconds)


def _case(spec: Path, tmp: Path, parts: dict[str, str], repeat: int, source: Path
          ) -> dict[str, Any]:
    """``repeat`` rounds of one refresh of ``spec`` by each system in turn (interleaved: the
    machine's speed drifts over minutes, and each round's ratios compare runs made side by
    side; the system that goes first rotates): seconds, memory, each run's info, and
    whether the first round's three versions hold the same samples. Every store is deleted
    right after its run (round 0's once its fingerprint is taken): no run starts beside
    gigabytes of earlier stores. ``source`` is read before every run, so that no run finds
    it pushed out of the page cache by the stores written before it."""
    results: dict[str, list[float]] = {name: [] for name in SYSTEMS}
    prepare: dict[str, list[float]] = {name: [] for name in SYSTEMS}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SYSTEMS}  # each run's info
    memory: dict[str, dict[str, Any]] = {}
    prints: list[tuple[int, str]] = []
    tmp.mkdir(exist_ok=True)
    for round_ in range(repeat):
        turn = round_ % len(SYSTEMS)  # each system goes first in turn (no place is favoured)
        for name in SYSTEMS[turn:] + SYSTEMS[:turn]:
            k = SYSTEMS.index(name)
            store = tmp / f"store-{spec.stem}-{round_}-{k}"
            _warm(source)
            with _system(name, parts) as env:
                seconds, info = _run(spec, store, env)
            if round_ == 0:  # the versions compared (_fingerprint), then let go as all are
                prints.append(_fingerprint(store))
            # deleted before the quiet seconds: the next run does not pay for the deletion
            # (session 8: a run right after one whose 2 GB store was kept, as round 0's
            # stores were until the end, took 2-2.5 s longer to retrieve its source)
            shutil.rmtree(store, ignore_errors=True)
            _settle()
            results[name].append(seconds)
            prepare[name].append(info["prepare_s"])
            memory[name] = info
            runs[name].append({k: v for k, v in info.items() if k != "splits"})
    return {"seconds": results, "prepare_seconds": prepare, "memory": memory, "runs": runs,
            "same": len(set(prints)) == 1}


def _report(title: str, case: dict[str, Any], goals: bool = True) -> list[str]:
    """The case's table; with ``goals``, #25's goals (which are the CSV's) judged on it."""
    results, memory = case["seconds"], case["memory"]
    base = statistics.median(results["1 process"])
    mib = 1024 * 1024
    lines = [title, f"{'system':30} {'seconds':>8} {'ratio':>7} {'refresh RSS':>12} "
             f"{'worker RSS':>11} {'CPU s':>6} {'cores busy':>10}"]
    for name, values in results.items():
        info = memory[name]
        wall = statistics.median(values)
        lines.append(f"{name:30} {wall:8.2f} {wall / base:6.2f}x "
                     f"{info['coordinator_rss'] / mib:9.0f} MiB "
                     f"{info['worker_rss'] / mib:8.0f} MiB {info.get('cpu_s', 0):6.1f} "
                     f"{info.get('cpu_s', 0) / wall:10.2f}")
    lines += [f"  {name}: {memory[name].get('phases', '')}" for name in results
              if memory[name].get("phases", "one process") != "one process"]
    cores = memory["1 process"].get("cpu_s", 0) / base
    lines.append(f"one process keeps {cores:.2f} of 2 cores busy: with the same CPU work, "
                 f"2 cores cannot go below {cores / 2:.2f}x")
    rounds = {name: [v / b for v, b in zip(results[name], results["1 process"], strict=True)]
              for name in SYSTEMS[1:]}
    lines += [f"  {name}, each round against its own one-process run: "
              + ", ".join(f"{r:.2f}x" for r in ratios) for name, ratios in rounds.items()]
    # the same rounds from the moment the sources are stored (retrieval and start-up, the
    # same serial work for every system, left out): what the workers themselves gained
    prepared = case["prepare_seconds"]
    lines += [f"  {name}, after the sources are stored ({statistics.median(prepared[name]):.2f}"
              f" s against {statistics.median(prepared['1 process']):.2f} s): "
              + ", ".join(f"{v / b:.2f}x" for v, b in zip(prepared[name], prepared["1 process"],
                                                         strict=True))
              for name in SYSTEMS[1:]]
    local = statistics.median(rounds["2 local workers"])
    dask = statistics.median(rounds["Dask LocalCluster, 2 workers"])
    same = f"the three versions hold the same samples: {'yes' if case['same'] else 'NO'}"
    if not goals:
        return [*lines, f"(the goals of #25 are the CSV's; here: {local:.2f}x / {dask:.2f}x)",
                same]
    return [
        *lines,
        "goals (the median of the rounds' ratios):",
        f"goal 2 local workers <= 0.60x: {local:.2f}x {'PASS' if local <= 0.6 else 'FAIL'}",
        f"goal Dask LocalCluster <= 0.70x: {dask:.2f}x {'PASS' if dask <= 0.7 else 'FAIL'}",
        same]


def _warm(path: Path) -> None:
    """Read every file below ``path`` once (warm page cache for every system)."""
    for file in [path] if path.is_file() else sorted(path.rglob("*")):
        if file.is_file():
            with open(file, "rb") as f:
                while f.read(1 << 24):
                    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=("both", "csv", "images"), default="both")
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--images-mb", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--part-mb", type=int, default=64)
    args = parser.parse_args()
    inputs = {}
    if args.case in ("both", "csv"):
        inputs["csv"] = big_csv(CACHE, int(args.gb * 1e9))
    if args.case in ("both", "images"):
        inputs["images"] = image_folder(args.images_mb)
    for path in inputs.values():
        _warm(path)
    parts = {"DATASTACK_PART_BYTES": str(args.part_mb * 1024 * 1024)}
    cases: dict[str, dict[str, Any]] = {}
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="datastack-parallel-") as tmp:
        for kind, path in inputs.items():
            spec = (_spec if kind == "csv" else _image_spec)(Path(tmp), path)
            cases[kind] = _case(spec, Path(tmp) / kind, parts, args.repeat, path)
            size = (path.stat().st_size if path.is_file()
                    else sum(f.stat().st_size for f in path.rglob("*") if f.is_file()))
            lines += _report(f"{path.name} ({size / 1e9:.2f} GB), parts of {args.part_mb} "
                             f"MiB, load {os.getloadavg()[0]:.1f}", cases[kind],
                             goals=kind == "csv")
    print("\n".join(lines))
    write_results("parallel", {
        "seconds": cases.get("csv", {}).get("seconds"), "memory": cases.get("csv", {}).get(
            "memory"), "same": cases.get("csv", {}).get("same"), "cases": cases,
        "table": lines, "load": os.getloadavg()})


if __name__ == "__main__":
    main()
