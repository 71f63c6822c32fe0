"""Records benchmark: images and text through datastack vs torchvision, HF datasets, MosaicML.

One run, the same data for everyone:

* a few thousand real-size images (JPEG and PNG, 96-480 px sides) cut and resized from the
  real photographs that scikit-image and scikit-learn ship, in an ImageFolder layout;
* a text corpus of real prose (scikit-learn's dataset descriptions, sliced into samples of
  varied length).

Measured: a DataLoader pass with 2 workers (batch 64, the same per-sample work everywhere:
Pillow decode of the stored bytes, RGB, resize to 64x64, to a uint8 tensor; texts: UTF-8
length) through datastack on the filesystem and over GridFS (a SecantusDB server started like
``benchmarks/_common.py`` does; the local disk cache off unless ``--disk-cache``), both with
datastack's ``data_loader`` (the README's way: whole batches, small tensors sent from the
workers by value) and with ``TorchDataset`` in a plain DataLoader (the per-sample way, exactly
as the peers are used); torchvision ``ImageFolder`` on the same files, Hugging Face
``datasets`` (``Image`` feature / string column, ``save_to_disk`` + ``load_from_disk``) and
MosaicML ``streaming`` (MDS, local directory); random access to one text sample vs Hugging
Face; peak RSS (VmHWM of a child process) preprocessing a 1 GB CSV vs a 100 MB one. The same
images are also passed without decoding (each sample: its encoded bytes' length), where the
reader is what is measured (no goal in issue #13). Each pass
also counts the CPU time it cost every process (workers, main, the SecantusDB server), per
sample: the passes are CPU-bound, and CPU time is what a faster reader would save.

    .venv-bench/bin/python benchmarks/records.py [--quick] [--images N] [--skip-csv]
        [--disk-cache] [--rounds 15]

Needs the ``bench`` extra and torchvision next to a matching torch (see docs/performance.md).
Prints a ratio table and writes ``benchmarks/results/records.json``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from _common import MIB, ROOT, mongo_server, write_results

SIZE = 64
BATCH = 64
WORKERS = 2


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- data -------------------------------------------------------------------------------------
def make_images(folder: Path, count: int, seed: int = 0) -> list[tuple[Path, int]]:
    """``count`` JPEG/PNG files of varied size cut from the real photos, 10 classes."""
    import skimage
    import sklearn
    from PIL import Image

    sources = [Path(skimage.__file__).parent / "data" / n for n in (
        "astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "retina.jpg",
        "hubble_deep_field.jpg", "motorcycle_left.png", "color.png")]
    sources += [Path(sklearn.__file__).parent / "datasets" / "images" / n
                for n in ("china.jpg", "flower.jpg")]
    photos = [Image.open(p).convert("RGB") for p in sources]
    rng = random.Random(seed)
    out = []
    for i in range(count):
        photo = photos[i % len(photos)]
        w, h = photo.size
        cw, ch = rng.randint(w // 4, w), rng.randint(h // 4, h)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        side = rng.randint(96, 480)
        crop = photo.crop((x, y, x + cw, y + ch))
        crop = crop.resize((side, max(32, side * ch // cw)))
        cls = i % 10
        (folder / f"class{cls}").mkdir(parents=True, exist_ok=True)
        path = folder / f"class{cls}" / f"{i:05d}.{'png' if i % 3 == 0 else 'jpg'}"
        crop.save(path, quality=90) if path.suffix == ".jpg" else crop.save(path)
        out.append((path, cls))
    return out


def make_texts(count: int, seed: int = 0) -> list[str]:
    import sklearn

    corpus = "\n".join(p.read_text(encoding="utf-8") for p in sorted(
        (Path(sklearn.__file__).parent / "datasets" / "descr").glob("*.rst")))
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        start = rng.randrange(len(corpus) - 4000)
        texts.append(corpus[start : start + rng.randint(40, 4000)])
    return texts


# -- per-sample work (the same for every peer) --------------------------------------------------
def transform_image(image: Any) -> Any:
    import torch

    image = image.convert("RGB").resize((SIZE, SIZE))
    return torch.from_numpy(np.asarray(image))


def transform_bytes(data: bytes) -> Any:
    from PIL import Image

    return transform_image(Image.open(io.BytesIO(data)))


def text_length(text: str) -> Any:
    import torch

    return torch.tensor(len(text.encode("utf-8")))


def byte_length(data: bytes) -> Any:
    """The reader-bound pass: the encoded image's bytes reach the worker, nothing decodes."""
    import torch

    return torch.tensor(len(data))


def read_file(path: str) -> bytes:
    """torchvision ImageFolder's ``loader`` for the no-decode pass: the file's bytes."""
    with open(path, "rb") as f:
        return f.read()


def _ds_bytes(sample: tuple[Any, ...]) -> tuple[Any, ...]:
    return (byte_length(sample[0]), sample[1])


def _ds_image(sample: tuple[Any, ...]) -> tuple[Any, ...]:
    return (transform_bytes(sample[0]), sample[1])


def _ds_text(sample: tuple[Any, ...]) -> tuple[Any, ...]:
    return (text_length(sample[0]), sample[1])


# -- peers ------------------------------------------------------------------------------------
class HFImages:
    def __init__(self, ds: Any, column: str, fn: Any) -> None:
        self.ds, self.column, self.fn = ds, column, fn

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> Any:
        row = self.ds[i]
        value = row[self.column]
        return self.fn(value["bytes"] if isinstance(value, dict) else value), row["label"]

    def __getitems__(self, indices: list[int]) -> list[Any]:
        rows = self.ds[indices]
        values = [v["bytes"] if isinstance(v, dict) else v for v in rows[self.column]]
        return [(self.fn(v), y) for v, y in zip(values, rows["label"], strict=True)]


def _tree_cpu_seconds() -> float:
    """CPU seconds used so far by this process, its reaped children (DataLoader workers are
    joined at the end of a pass) and its live children (the SecantusDB server, whose work for
    the GridFS passes counts too)."""
    import resource

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    me, tick = os.getpid(), os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:  # ppid; utime and stime are fields 14 and 15 of stat
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _loader_pass(make: Any) -> tuple[float, float]:
    """Samples/s of one pass over the loader ``make()`` builds (its workers start in it), and
    the CPU milliseconds per sample that the pass cost all processes."""
    loader = make()
    cpu0, t0 = _tree_cpu_seconds(), time.perf_counter()
    count = sum(len(batch[1]) for batch in loader)
    elapsed = time.perf_counter() - t0
    cpu = _tree_cpu_seconds() - cpu0
    if count != len(loader.dataset):
        raise RuntimeError(f"pass read {count} of {len(loader.dataset)} samples")
    return count / elapsed, 1000 * cpu / count


def _plain(dataset: Any) -> Any:
    """How every peer is used: a DataLoader with 2 workers and batches of 64."""
    from torch.utils.data import DataLoader

    return lambda: DataLoader(dataset, batch_size=BATCH, num_workers=WORKERS)


def build(work: Path, images: list[tuple[Path, int]], texts: list[str], mongo: str) -> dict:
    """Publish the data in every system (not timed)."""
    import tarfile

    import datasets as hf
    from streaming import MDSWriter

    import datastack

    archive = work / "images.tar"
    with tarfile.open(archive, "w") as tar:
        for p, _ in images:
            tar.add(p, arcname=p.relative_to(work / "images").as_posix())
    spec = work / "spec.yaml"
    spec.write_text(f"datasets:\n  photos:\n    sources: [{{url: {archive.as_uri()}, sha256: "
                    f"{_sha(archive)}}}]\n    format: imagefolder\n")
    stores = {"file": str(work / "store"), "gridfs": f"{mongo}/bench_records"}
    for uri in stores.values():
        [r] = datastack.refresh(spec, storage=uri)
        assert r.status in ("published", "unchanged"), r.reason
        datastack.publish("corpus", {"text": texts, "label": np.arange(len(texts)) % 5},
                          target="label", storage=uri)
    features = hf.Features({"image": hf.Image(decode=False), "label": hf.Value("int64")})
    hf.Dataset.from_dict(
        {"image": [{"bytes": p.read_bytes(), "path": None} for p, _ in images],
         "label": [c for _, c in images]}, features=features,
    ).save_to_disk(str(work / "hf-images"))
    hf.Dataset.from_dict({"text": texts, "label": [i % 5 for i in range(len(texts))]}
                         ).save_to_disk(str(work / "hf-text"))
    with MDSWriter(out=str(work / "mds-images"), columns={"image": "bytes", "label": "int"}) as w:
        for p, c in images:
            w.write({"image": p.read_bytes(), "label": c})
    with MDSWriter(out=str(work / "mds-text"), columns={"text": "str", "label": "int"}) as w:
        for i, t in enumerate(texts):
            w.write({"text": t, "label": i % 5})
    return stores


def _mds(local: Path, column: str, fn: Any) -> Any:
    from streaming import StreamingDataset

    class Transformed(StreamingDataset):  # type: ignore[misc]
        def __getitem__(self, i: int) -> Any:
            row = super().__getitem__(i)
            return fn(row[column]), int(row["label"])

    return Transformed(local=str(local), remote=None, shuffle=False, batch_size=BATCH)


def measure_loaders(
    work: Path, stores: dict[str, str], repeat: int
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, float]]:
    """Samples/s of one DataLoader pass per system and round; rounds alternate the systems
    (the machine is shared: the table shows the best of the rounds, the median, and each
    round's ratio to the fastest peer in the same round, with its quartiles), and the CPU
    time per sample of each pass (the passes are CPU-bound on 2 cores: the work each system
    costs, less disturbed by the machine's other tenants than wall time)."""
    import datasets as hf
    from streaming.base.util import clean_stale_shared_memory
    from torchvision.datasets import ImageFolder

    import datastack
    from datastack.iterators.torch import TorchDataset, data_loader

    passes: dict[str, Any] = {}
    for name, uri in stores.items():
        images = datastack.load("photos", storage=uri).with_image_options(decode=False)
        text = datastack.load("corpus", storage=uri)
        for kind, it in (("images", images.map(_ds_image)), ("text", text.map(_ds_text)),
                         ("encoded images", images.map(_ds_bytes))):
            # datastack's loader (README): whole batches, small tensors sent by value
            passes[f"{kind} datastack {name}"] = functools.partial(
                data_loader, it, batch_size=BATCH, shuffle=False, num_workers=WORKERS)
            # the per-sample way: TorchDataset in a plain DataLoader, like the peers
            passes[f"{kind} datastack {name}, per-sample DataLoader"] = _plain(TorchDataset(it))
    passes["images torchvision ImageFolder"] = _plain(ImageFolder(str(work / "images"),
                                                                  transform=transform_image))
    passes["images HF datasets"] = _plain(HFImages(hf.load_from_disk(str(work / "hf-images")),
                                                   "image", transform_bytes))
    passes["text HF datasets"] = _plain(HFImages(hf.load_from_disk(str(work / "hf-text")),
                                                 "text", text_length))
    # the same images, not decoded: what the reader alone costs (no goal in #13)
    passes["encoded images torchvision ImageFolder"] = _plain(ImageFolder(
        str(work / "images"), loader=read_file, transform=byte_length))
    passes["encoded images HF datasets"] = _plain(HFImages(
        hf.load_from_disk(str(work / "hf-images")), "image", byte_length))
    clean_stale_shared_memory()
    passes["images MosaicML streaming (MDS)"] = _plain(_mds(work / "mds-images", "image",
                                                            transform_bytes))
    passes["text MosaicML streaming (MDS)"] = _plain(_mds(work / "mds-text", "text",
                                                          text_length))
    passes["encoded images MosaicML streaming (MDS)"] = _plain(_mds(work / "mds-images", "image",
                                                                    byte_length))
    rounds: dict[str, list[float]] = {key: [] for key in passes}
    cpu: dict[str, list[float]] = {key: [] for key in passes}
    order = list(passes)
    for r in range(repeat):
        # rotated each round, so that no system always runs after the same one
        for key in order[r % len(order):] + order[: r % len(order)]:
            rate, ms = _loader_pass(passes[key])
            rounds[key].append(rate)
            cpu[key].append(ms)
    cost = {key: _fetch_cost(make, max(3, repeat // 3)) for key, make in passes.items()
            if key.startswith("images") and "gridfs" not in key}
    return rounds, cpu, cost


def _fetch_cost(make: Any, repeat: int) -> float:
    """CPU milliseconds per sample of what a worker of the loader ``make()`` does for a pass
    (fetch each batch of its sampler and collate it: torch's own fetcher), in this process,
    the least of ``repeat`` passes. A 2-worker pass is bound by this cost (rate x CPU per
    sample = the 2 cores), which one process measures far more steadily than the pass's wall
    time on a shared machine: other tenants only ever add to it."""
    from torch.utils.data import IterableDataset
    from torch.utils.data._utils.fetch import _IterableDatasetFetcher, _MapDatasetFetcher

    loader = make()
    kind = (_IterableDatasetFetcher if isinstance(loader.dataset, IterableDataset)
            else _MapDatasetFetcher)
    best = float("inf")
    for _ in range(repeat):
        fetcher = kind(loader.dataset, loader._auto_collation, loader.collate_fn,
                       loader.drop_last)
        count, t0 = 0, time.process_time()
        try:
            for batch in loader._index_sampler:  # an iterable's sampler never ends
                out = fetcher.fetch(batch)
                count += len(batch) if kind is _MapDatasetFetcher else len(out[1])
        except StopIteration:
            pass
        best = min(best, time.process_time() - t0)
    if count != len(loader.dataset):
        raise RuntimeError(f"fetched {count} of {len(loader.dataset)} samples")
    return 1000 * best / count


def measure_random_text(work: Path, stores: dict[str, str], reads: int) -> dict[str, float]:
    """Microseconds per random read of one text sample (generator created once)."""
    import datasets as hf

    import datastack

    out: dict[str, float] = {}
    targets = {
        "datastack file": datastack.load("corpus", storage=stores["file"]),
        "datastack gridfs": datastack.load("corpus", storage=stores["gridfs"]),
        "HF datasets": hf.load_from_disk(str(work / "hf-text")),
    }
    for name, it in targets.items():
        n = len(it)
        rng = random.Random(1)
        order = [rng.randrange(n) for _ in range(reads)]
        get = (lambda i, d=it: d[i]["text"]) if name.startswith("HF") else (
            lambda i, d=it: d[i][0])
        get(order[0])  # open
        t0 = time.perf_counter()
        for i in order:
            get(i)
        out[name] = (time.perf_counter() - t0) / reads * 1e6
    return out


# -- memory -------------------------------------------------------------------------------------
def _csv_child(path: str) -> None:
    """In a fresh process: preprocess one CSV, print the peak RSS (VmHWM) as JSON."""
    from datastack.preprocessing import preprocess
    from datastack.resources import StreamedResource
    from datastack.specs import load_spec

    digest = "0" * 64  # preprocess reads the file; checksums are the retriever's business
    spec = load_spec(f"datasets: {{big: {{format: csv, sources: [{{url: '{Path(path).as_uri()}',"
                     f" sha256: '{digest}'}}], csv: {{target: y}}}}}}")["big"]
    t0 = time.perf_counter()
    out = Path(path).with_suffix(".h5")
    prepared = preprocess(spec, [(spec.sources[0], StreamedResource.from_path("b.csv", path))],
                          out)
    elapsed = time.perf_counter() - t0
    hwm = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
               if line.startswith("VmHWM"))
    print(json.dumps({"rows": prepared.splits["train"], "hwm_mib": hwm / 1024,
                      "seconds": elapsed}))


def write_csv(path: Path, size: int) -> None:
    rng = np.random.default_rng(0)
    block = io.StringIO()
    values = rng.normal(size=(50_000, 8))
    labels = rng.choice(["cat", "dog", "emu"], size=50_000)
    block.write("a,b,c,d,e,f,g,h,y\n")
    for row, label in zip(values.round(5).tolist(), labels.tolist(), strict=True):
        block.write(",".join(map(str, row)) + f",{label}\n")
    data = block.getvalue()
    body = data.split("\n", 1)[1].encode()
    with open(path, "wb") as out:
        out.write(data.encode())
        while out.tell() < size:
            out.write(body)


def measure_csv_memory(work: Path, sizes: tuple[int, int]) -> dict[str, Any]:
    out = {}
    for size in sizes:
        path = work / f"t{size // MIB}.csv"
        write_csv(path, size)
        done = subprocess.run([sys.executable, __file__, "--csv-child", str(path)],
                              capture_output=True, text=True, check=True)
        out[f"{path.stat().st_size / MIB:.0f} MiB CSV"] = json.loads(
            done.stdout.strip().splitlines()[-1])
        path.unlink()
        path.with_suffix(".h5").unlink(missing_ok=True)
    return out


# -- report -------------------------------------------------------------------------------------
def _quartiles(values: list[float]) -> tuple[float, float, float]:
    from statistics import median, quantiles

    if len(values) < 2:
        return values[0], values[0], values[0]
    low, _, high = quantiles(values, n=4, method="inclusive")
    return low, median(values), high


def report(rounds: dict[str, list[float]], cpu: dict[str, list[float]], cost: dict[str, float],
           text: dict[str, float], memory: dict[str, Any]) -> str:
    from statistics import median

    lines = ["| measurement | samples/s (best) | vs fastest peer (best) | median vs fastest "
             "peer's median | paired with that peer: median [quartiles] | CPU ms/sample "
             "(median) | CPU vs that peer |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for kind in ("images", "encoded images", "text"):
        mine = {k: v for k, v in rounds.items() if k.startswith(kind)}
        peers = {k: v for k, v in mine.items() if "datastack" not in k}
        fastest = max(max(v) for v in peers.values())
        # "the fastest peer": the one with the highest median rate; paired = each round's
        # rate over that peer's rate in the same round (rounds alternate the systems)
        peer = max(peers, key=lambda k: median(peers[k]))
        for key, values in sorted(mine.items(), key=lambda kv: -median(kv[1])):
            ratios = [v / f for v, f in zip(values, peers[peer], strict=True)]
            low, mid, high = _quartiles(ratios)
            lines.append(f"| {key} | {max(values):,.0f} | {max(values) / fastest:.2f} | "
                         f"{median(values) / median(peers[peer]):.2f} | "
                         f"{mid:.2f} [{low:.2f}-{high:.2f}] | {median(cpu[key]):.3f} | "
                         f"{median(cpu[key]) / median(cpu[peer]):.2f} |")
    if cost:
        cheapest = min(v for k, v in cost.items() if "datastack" not in k)
        lines += ["", "| images, local files: a worker's fetch + collate, one process, least of "
                  "the passes | CPU ms/sample | vs the cheapest peer |", "|---|---:|---:|"]
        for key, value in sorted(cost.items(), key=lambda kv: kv[1]):
            lines.append(f"| {key} | {value:.3f} | {value / cheapest:.3f} |")
    lines += ["", "| random read of one text sample | us/read | vs HF datasets |",
              "|---|---:|---:|"]
    for key, value in text.items():
        lines.append(f"| {key} | {value:.1f} | {value / text['HF datasets']:.2f} |")
    if memory:
        lines += ["", "| preprocessing | rows | peak RSS (VmHWM) | seconds |",
                  "|---|---:|---:|---:|"]
        for key, value in memory.items():
            lines.append(f"| {key} | {value['rows']:,} | {value['hwm_mib']:.0f} MiB | "
                         f"{value['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--texts", type=int, default=20000)
    parser.add_argument("--skip-csv", action="store_true")
    parser.add_argument("--rounds", type=int, default=15,
                        help="DataLoader passes per system, alternating (the machine is shared)")
    parser.add_argument("--mongo-uri", default=None)
    parser.add_argument("--disk-cache", action="store_true",
                        help="keep datastack's read-through local disk cache on (the default "
                             "of the library): later GridFS passes then read the local copy")
    parser.add_argument("--csv-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.csv_child:
        _csv_child(args.csv_child)
        return
    # np.asarray of a PIL image is read-only: torch warns once per worker, for every peer alike
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    images_n, texts_n = (300, 2000) if args.quick else (args.images, args.texts)
    repeat = 1 if args.quick else args.rounds
    with tempfile.TemporaryDirectory(prefix="datastack-records-") as tmp, mongo_server(
        args.mongo_uri
    ) as mongo:
        work = Path(tmp)
        # GridFS reads fill datastack's local disk cache (read-through, the default): off here,
        # so that every GridFS pass reads GridFS; with --disk-cache, kept out of the user's
        # cache folder
        os.environ.setdefault("DATASTACK_CACHE_DIR", str(work / "localcache"))
        if not args.disk_cache:
            os.environ["DATASTACK_CACHE_DIR_BYTES"] = "0"
        images = make_images(work / "images", images_n)
        texts = make_texts(texts_n)
        stores = build(work, images, texts, mongo)
        rates, cpu, cost = measure_loaders(work, stores, repeat)
        text = measure_random_text(work, stores, 2000)
        size = sum(p.stat().st_size for p, _ in images)
        memory = {} if args.skip_csv else measure_csv_memory(
            work, (100 * MIB, 1024 * MIB) if not args.quick else (10 * MIB, 100 * MIB))
    table = report(rates, cpu, cost, text, memory)
    print(table)
    print(f"{images_n} images, {size / MIB:.1f} MiB encoded; {texts_n} texts; local disk cache "
          f"{'off' if os.environ.get('DATASTACK_CACHE_DIR_BYTES') == '0' else 'on'}")
    write_results("records.json", {"images": images_n, "texts": texts_n, "loader": rates,
                                   "cpu_ms_per_sample": cpu, "fetch_cost_ms": cost,
                                   "random_text_us": text, "csv_memory": memory,
                                   "table": table, "bytes": size})


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
