"""Benchmark: the catalog web page and its JSON API for 1,000 datasets in MongoDB, against the
same listing through ``datastack ls --json``; bytes read for a dataset page with 24 image
previews.

A SecantusDB server is started the way the other benchmarks do (or ``--mongo URI``). In one
run:

1. 1,000 published records (a few with two versions) and their status documents are written
   through the catalog API (``begin``/``publish``/``record_check``), with some failing and
   some overdue datasets;
2. ``datastack ls --json`` in-process (``main([...])``, output captured): time per call;
   the same listing read the way ``ls`` did before the bulk reads (one query per dataset);
3. the app served by uvicorn on 127.0.0.1: ``/`` (the catalog page) and ``/api/datasets``,
   server time per request (the app's ``Server-Timing``) and the round trip seen by a client;
   alternated with step 2, medians of ``--repeat`` rounds;
4. in a fresh process (cold caches), an image dataset of real photos (scikit-image and
   scikit-learn samples, re-encoded crops): the bytes pymongo received for the dataset page
   and for its 24 thumbnails (command monitoring), against the data file's size.

Prints a table, writes ``benchmarks/results/web.json``.

    python benchmarks/web.py            # 1,000 datasets, 15 rounds
    python benchmarks/web.py --quick    # 200 datasets, 5 rounds
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import ROOT, median, mongo_server, write_results

GOAL_RATIO, GOAL_SECONDS = 1.5, 0.5


# -- the catalog ------------------------------------------------------------------------------
def fill_catalog(uri: str, count: int) -> None:
    """``count`` published datasets with status documents, through the catalog API."""
    from datastack.catalog import VersionRecord
    from datastack.store import Store

    catalog = Store.open(uri).catalog
    now = dt.datetime.now(dt.UTC)
    fields = [{"name": "features", "kind": "array", "dtype": "float32", "shape": [12],
               "columns": [f"c{j}" for j in range(12)]},
              {"name": "label", "kind": "label", "dtype": "int64", "shape": [],
               "names": [f"class-{j}" for j in range(10)]}]
    for i in range(count):
        name = f"dataset-{i:04d}"
        for version in range(1, 3 if i % 10 == 0 else 2):
            rows = 1000 + 37 * i + 100 * version
            rec = catalog.begin(VersionRecord(
                name=name, spec_hash=f"spec-{i}-{version}", format="csv",
                description=f"benchmark dataset {i}: {rows} rows of twelve features",
                sources=[{"url": f"https://data.example.org/{name}.csv",
                          "sha256": f"{i:032x}{version:032x}", "size": rows * 60}],
                producer={"flow_run_id": f"run-{i}-{version}", "host": "bench",
                          "datastack_version": "0.1.0"},
            ))
            catalog.publish(
                name, rec.version,
                resources=[{"identifier": f"datasets/{name}/v{rec.version}/data.h5",
                            "size": rows * 52, "sha256": "0" * 64}],
                splits={"train": rows * 4 // 5, "test": rows - rows * 4 // 5},
                schema={"format_version": 2, "fields": fields},
                encodings={"label": [f"class-{j}" for j in range(10)]},
            )
        outcome = "failed" if i % 50 == 7 else "published"
        at = now - dt.timedelta(days=3) if i % 40 == 3 else now
        catalog.record_check(name, outcome, version=1, at=at, reason="gate min_samples" if
                             outcome == "failed" else "", schedule="0 * * * *" if i % 4 else None)


def naive_listing(uri: str) -> int:
    """The listing as ``ls`` read it before the bulk reads: one query per dataset and status."""
    from datastack.store import Store

    catalog = Store.open(uri).catalog
    rows = 0
    states = {}
    for name in catalog.datasets():
        status = catalog.status(name)
        states[name] = status.state() if status else "fresh"
        record = catalog.latest(name)
        rows += bool(record.splits)
    return rows


# -- timing -----------------------------------------------------------------------------------
def time_ls(uri: str) -> float:
    from datastack.cli import main

    out = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out):
        code = main(["ls", "--storage", uri, "--json"])
    spent = time.perf_counter() - t0
    if code != 0 or not out.getvalue().startswith("["):
        raise RuntimeError(f"datastack ls failed with {code}")
    return spent


class Served:
    def __init__(self, uri: str) -> None:
        import uvicorn

        from datastack.web.app import create_app
        from tests.mongo_server import free_port

        self.port = free_port()
        config = uvicorn.Config(create_app(uri), host="127.0.0.1", port=self.port,
                                log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def get(self, session: Any, path: str) -> tuple[float, float, int]:
        """(server seconds, round-trip seconds, body bytes) of one GET."""
        t0 = time.perf_counter()
        r = session.get(f"http://127.0.0.1:{self.port}{path}", timeout=60)
        wall = time.perf_counter() - t0
        r.raise_for_status()
        server = float(re.search(r"dur=([0-9.]+)", r.headers["server-timing"]).group(1)) / 1000
        return server, wall, len(r.content)


def listing_rounds(uri: str, repeat: int) -> dict[str, Any]:
    import requests

    samples: dict[str, list[float]] = {k: [] for k in (
        "ls", "naive", "page_server", "page_wall", "api_server", "api_wall")}
    sizes = {}
    with Served(uri) as served, requests.Session() as session:
        for warm in range(2):  # connections, templates, first queries
            time_ls(uri)
            served.get(session, "/")
            served.get(session, "/api/datasets")
            del warm
        for _ in range(repeat):
            samples["ls"].append(time_ls(uri))
            t0 = time.perf_counter()
            naive_listing(uri)
            samples["naive"].append(time.perf_counter() - t0)
            server, wall, sizes["page"] = served.get(session, "/")
            samples["page_server"].append(server)
            samples["page_wall"].append(wall)
            server, wall, sizes["api"] = served.get(session, "/api/datasets")
            samples["api_server"].append(server)
            samples["api_wall"].append(wall)
    out = {k: median(v) for k, v in samples.items()}
    out["bytes"] = sizes
    return out


# -- the image page (child process) -----------------------------------------------------------
def image_sources() -> list[Path]:
    import skimage
    import sklearn

    skdata = Path(skimage.__file__).parent / "data"
    found = sorted(p for p in skdata.iterdir() if p.suffix in (".png", ".jpg"))
    found += [Path(sklearn.__file__).parent / "datasets" / "images" / n
              for n in ("china.jpg", "flower.jpg")]
    return found


def publish_photos(uri: str, folder: Path, per_source: int) -> dict[str, Any]:
    """An image folder of real photos: ``per_source`` re-encoded crops of each source image,
    one class per source."""
    from PIL import Image

    from datastack.api import refresh
    from tests.fields.realdata import tar_folder, write_spec

    count = 0
    for source in image_sources():
        with Image.open(source) as image:
            image = image.convert("RGB")
            cls = folder / "photos" / re.sub(r"[^a-z0-9]+", "-", source.stem.lower())
            cls.mkdir(parents=True, exist_ok=True)
            for k in range(per_source):
                w, h = image.size
                box = (k * w // (4 * per_source), k * h // (4 * per_source), w, h)
                image.crop(box).save(cls / f"{k}.jpg", quality=88)
                count += 1
    archive = tar_folder(folder / "photos", folder / "photos.tar.gz")
    spec = write_spec(folder / "photos.yaml", "photos", [archive], "    format: imagefolder\n")
    [result] = refresh(spec, storage=uri)
    if result.status != "published":
        raise RuntimeError(result.reason)
    return {"images": count}


CHILD = r"""
import json, re, sys, time
import pymongo.monitoring as monitoring
got = {"bytes": 0, "commands": 0}


class Counter(monitoring.CommandListener):
    def started(self, event):
        got["commands"] += 1

    def failed(self, event):
        pass

    def succeeded(self, event):
        cursor = event.reply.get("cursor") if hasattr(event.reply, "get") else None
        for doc in (cursor or {}).get("firstBatch", []) + (cursor or {}).get("nextBatch", []):
            if "data" in doc:
                got["bytes"] += len(doc["data"])


monitoring.register(Counter())
from starlette.testclient import TestClient
from datastack.web.app import create_app
client = TestClient(create_app(sys.argv[1]), base_url="http://127.0.0.1")
t0 = time.perf_counter()
html = client.get("/datasets/photos?size=24").text
page = {"bytes": got["bytes"], "commands": got["commands"], "seconds": time.perf_counter() - t0}
thumbs = [s.replace("&amp;", "&") for s in re.findall(r'<img src="(/thumbs/[^"]+)"', html)]
got.update(bytes=0, commands=0)
t0 = time.perf_counter()
sizes = [len(client.get(s).content) for s in thumbs]
print(json.dumps({"page": page, "thumbnails": {
    "count": len(thumbs), "bytes": got["bytes"], "commands": got["commands"],
    "seconds": time.perf_counter() - t0, "png_bytes": sum(sizes)}}))
"""


def image_page(uri: str, folder: Path, per_source: int) -> dict[str, Any]:
    from datastack.store import Store

    made = publish_photos(uri, folder, per_source)
    record = Store.open(uri).catalog.latest("photos")
    data = next(r for r in record.resources if r["identifier"].endswith("data.h5"))
    it = __import__("datastack").load("photos", storage=uri).with_image_options(decode=False)
    shown = sum(len(it[i][0]) for i in range(min(24, len(it))))
    done = subprocess.run([sys.executable, "-c", CHILD, uri], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    return {**made, **measured, "data_file_bytes": int(data["size"]),
            "encoded_bytes_of_24_images": shown}


# -- report -----------------------------------------------------------------------------------
def report(listing: dict[str, Any], photos: dict[str, Any], count: int) -> dict[str, Any]:
    ls = listing["ls"]
    rows = [
        ("datastack ls --json (in-process main)", ls, 1.0),
        ("per-dataset queries (how ls listed before)", listing["naive"], listing["naive"] / ls),
        ("catalog page /, server time", listing["page_server"], listing["page_server"] / ls),
        ("catalog page /, client round trip", listing["page_wall"], listing["page_wall"] / ls),
        ("/api/datasets, server time", listing["api_server"], listing["api_server"] / ls),
        ("/api/datasets, client round trip", listing["api_wall"], listing["api_wall"] / ls),
    ]
    print(f"\n{count} datasets in MongoDB (SecantusDB), medians")
    print(f"{'':48} {'seconds':>9} {'vs ls':>7}")
    for label, seconds, ratio in rows:
        print(f"{label:48} {seconds:9.4f} {ratio:6.2f}x")
    ok = all(r <= GOAL_RATIO and s < GOAL_SECONDS for _, s, r in rows[2:])
    verdict = "met" if ok else "NOT met"
    print(f"goal: within {GOAL_RATIO}x of ls and under {GOAL_SECONDS} s: {verdict}")
    p, t = photos["page"], photos["thumbnails"]
    print(f"\ndataset page of {photos['images']} photos, 24 previews (cold process)")
    print(f"{'':48} {'MiB read':>9} {'seconds':>9}")
    print(f"{'page HTML (labels, layout)':48} {p['bytes'] / 2**20:9.2f} {p['seconds']:9.3f}")
    print(f"{'24 thumbnails':48} {t['bytes'] / 2**20:9.2f} {t['seconds']:9.3f}")
    total = p["bytes"] + t["bytes"]
    print(f"{'page + thumbnails':48} {total / 2**20:9.2f}")
    print(f"{'the 24 images as stored (encoded)':48} "
          f"{photos['encoded_bytes_of_24_images'] / 2**20:9.2f}")
    print(f"{'the data file':48} {photos['data_file_bytes'] / 2**20:9.2f}")
    return {"datasets": count, "listing_seconds": {k: v for k, v in listing.items()
                                                   if k != "bytes"},
            "response_bytes": listing["bytes"], "goal_met": ok, "image_page": photos}


def main() -> None:
    # Bytes are counted from the storage: no local disk cache (datastack.offline) in this run.
    os.environ["DATASTACK_CACHE_DIR_BYTES"] = "0"
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mongo", default=None, help="an existing server (mongodb://host:port)")
    parser.add_argument("--datasets", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--per-source", type=int, default=8, help="crops per source photo")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.datasets, args.repeat, args.per_source = 200, 5, 3
    with mongo_server(args.mongo) as base, tempfile.TemporaryDirectory() as tmp:
        uri = f"{base}/bench_web_{int(time.time())}"
        t0 = time.perf_counter()
        fill_catalog(uri, args.datasets)
        print(f"wrote {args.datasets} datasets in {time.perf_counter() - t0:.1f} s")
        listing = listing_rounds(uri, args.repeat)
        photos = image_page(f"{base}/bench_web_photos_{int(time.time())}", Path(tmp),
                            args.per_source)
    payload = report(listing, photos, args.datasets)
    path = write_results("web.json", payload)
    print(f"\nwrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
