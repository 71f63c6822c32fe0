"""End to end: spec -> `datastack refresh` -> `datastack ls --json` -> `datastack.load`.

Sources are served by a real HTTP server on 127.0.0.1; storage is the filesystem and a real
MongoDB wire server (SecantusDB). The refresh runs in-process (`--engine local`); the Prefect
path is covered by tests/flows.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pytest_httpserver import HTTPServer

import datastack
from datastack.cli import main


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def idx_bytes(array: np.ndarray) -> bytes:
    codes = {np.dtype("uint8"): 0x08}
    header = struct.pack(">HBB", 0, codes[array.dtype], array.ndim)
    header += struct.pack(">" + "I" * array.ndim, *array.shape)
    return header + array.tobytes()


@pytest.fixture
def payloads() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    with_header = "a,b,label\n" + "".join(
        f"{rng.normal():.6f},{rng.normal():.6f},{i % 3}\n" for i in range(50)
    )
    no_header = "".join(f"{i},{i * 0.5:.3f},{i % 2}\n" for i in range(40))
    images = rng.integers(0, 255, size=(30, 4, 4), dtype=np.uint8)
    labels = (np.arange(30) % 10).astype(np.uint8)
    return {
        "with_header.csv": with_header.encode(),
        "no_header.csv.gz": gzip.compress(no_header.encode(), mtime=0),
        "x.npy": npy_bytes(rng.normal(size=(25, 3)).astype(np.float32)),
        "y.npy": npy_bytes(np.arange(25, dtype=np.int64)),
        "images-idx3-ubyte.gz": gzip.compress(idx_bytes(images), mtime=0),
        "labels-idx1-ubyte.gz": gzip.compress(idx_bytes(labels), mtime=0),
    }


def serve(httpserver: HTTPServer, payloads: dict[str, bytes]) -> None:
    httpserver.clear()
    for name, data in payloads.items():
        httpserver.expect_request(f"/{name}").respond_with_data(
            data, content_type="application/octet-stream"
        )


def write_spec(path: Path, httpserver: HTTPServer, payloads: dict[str, bytes]) -> Path:
    def src(name: str, **extra: Any) -> dict[str, Any]:
        return {"url": httpserver.url_for(f"/{name}"), "sha256": sha(payloads[name]), **extra}

    spec = {
        "datasets": {
            "table": {
                "sources": [src("with_header.csv")],
                "format": "csv",
                "csv": {"header": True, "target": "label"},
                "splits": {"train": 0.8, "test": 0.2},
                "seed": 1,
            },
            "plain": {
                "sources": [src("no_header.csv.gz")],
                "format": "csv",
                "csv": {"header": False},
            },
            "arrays": {
                "sources": [src("x.npy", role="samples"), src("y.npy", role="targets")],
                "format": "npy",
            },
            "digits": {
                "sources": [
                    src("images-idx3-ubyte.gz", role="samples"),
                    src("labels-idx1-ubyte.gz", role="targets"),
                ],
                "format": "idx",
            },
        }
    }
    import yaml

    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(params=["file", "secantus"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return str(tmp_path / "store")
    return str(request.getfixturevalue("mongo_uri"))


def ls_json(storage: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["ls", "--storage", storage, "--json"]) == 0
    return {row["name"]: row for row in json.loads(capsys.readouterr().out)}


def all_samples(it: Any) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[(s[0], s[1]) for s in it])
    return np.stack(xs), np.array(ys)


def test_refresh_ls_load_and_versions(
    httpserver: HTTPServer,
    payloads: dict[str, bytes],
    storage: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    serve(httpserver, payloads)
    spec = write_spec(tmp_path / "spec.yaml", httpserver, payloads)

    assert main(["refresh", "--spec", str(spec), "--storage", storage, "--engine", "local"]) == 0
    rows = ls_json(storage, capsys)
    assert sorted(rows) == ["arrays", "digits", "plain", "table"]
    assert all(row["version"] == 1 for row in rows.values())
    assert rows["table"]["splits"] == {"train": 40, "test": 10}
    assert rows["plain"]["splits"] == {"train": 40}

    # CSV with header: exactly the source values, split sizes as asked, train+test = all rows.
    expected = np.loadtxt(io.StringIO(payloads["with_header.csv"].decode()), delimiter=",",
                          skiprows=1)
    both = datastack.load("table", split="train+test", storage=storage)
    x, y = all_samples(both)
    order = np.lexsort(x.T[::-1])
    want = np.lexsort(expected[:, :2].T[::-1])
    np.testing.assert_allclose(x[order], expected[want, :2].astype(x.dtype), rtol=1e-6)
    np.testing.assert_array_equal(y[order].astype(int), expected[want, 2].astype(int))
    assert len(datastack.load("table", split="train", storage=storage)) == 40
    assert len(datastack.load("table", split="test", storage=storage)) == 10

    # gzipped CSV without header: target is the last column, order preserved without splits.
    plain = np.loadtxt(io.StringIO(gzip.decompress(payloads["no_header.csv.gz"]).decode()),
                       delimiter=",")
    x, y = all_samples(datastack.load("plain", storage=storage))
    np.testing.assert_allclose(x, plain[:, :2].astype(x.dtype), rtol=1e-6)
    np.testing.assert_array_equal(y.astype(int), plain[:, 2].astype(int))

    # NPY pair and IDX: exact arrays.
    x, y = all_samples(datastack.load("arrays", storage=storage))
    np.testing.assert_array_equal(x, np.load(io.BytesIO(payloads["x.npy"])))
    np.testing.assert_array_equal(y, np.load(io.BytesIO(payloads["y.npy"])))
    x, y = all_samples(datastack.load("digits", storage=storage))
    assert x.shape == (30, 4, 4)
    np.testing.assert_array_equal(y, np.arange(30) % 10)

    # Unchanged sources: nothing new is published.
    assert main(["refresh", "--spec", str(spec), "--storage", storage, "--engine", "local"]) == 0
    assert all(row["version"] == 1 for row in ls_json(storage, capsys).values())

    # A changed source publishes version 2; version 1 stays loadable by pin.
    changed = dict(payloads)
    changed["y.npy"] = npy_bytes(np.arange(25, dtype=np.int64) * 7)
    serve(httpserver, changed)
    spec = write_spec(tmp_path / "spec.yaml", httpserver, changed)
    assert main(["refresh", "arrays", "--spec", str(spec), "--storage", storage,
                 "--engine", "local"]) == 0
    assert ls_json(storage, capsys)["arrays"]["version"] == 2
    _, y2 = all_samples(datastack.load("arrays", storage=storage))
    _, y1 = all_samples(datastack.load("arrays", version=1, storage=storage))
    np.testing.assert_array_equal(y2, np.arange(25) * 7)
    np.testing.assert_array_equal(y1, np.arange(25))

    capsys.readouterr()
    assert main(["show", "arrays", "--storage", storage, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == 2
    assert [v["version"] for v in shown["versions"] if v["status"] == "published"] == [1, 2]


@pytest.mark.parametrize("fault", ["checksum", "404", "invalid-spec"])
def test_failures_leave_catalog_unchanged(
    fault: str,
    httpserver: HTTPServer,
    payloads: dict[str, bytes],
    storage: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    serve(httpserver, payloads)
    spec = write_spec(tmp_path / "spec.yaml", httpserver, payloads)
    assert main(["refresh", "table", "--spec", str(spec), "--storage", storage,
                 "--engine", "local"]) == 0
    before = ls_json(storage, capsys)
    import yaml

    doc = yaml.safe_load(spec.read_text())
    source = doc["datasets"]["table"]["sources"][0]
    if fault == "checksum":
        source["sha256"] = "0" * 64
    elif fault == "404":
        httpserver.expect_request("/missing.csv").respond_with_data("gone", status=404)
        source["url"] = httpserver.url_for("/missing.csv")
        source["sha256"] = "1" * 64
    else:
        doc["datasets"]["table"]["splits"] = {"train": 0.5, "test": 0.7}
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    capsys.readouterr()
    code = main(["refresh", "table", "--spec", str(spec), "--storage", storage,
                 "--engine", "local"])
    err = capsys.readouterr().err
    assert code != 0
    assert "table" in err
    if fault == "checksum":
        assert "0" * 64 in err and sha(payloads["with_header.csv"]) in err
    elif fault == "404":
        assert "404" in err
    else:
        assert "splits" in err
    after = ls_json(storage, capsys)
    # The catalog is unchanged (same version, files, times); only the freshness says so:
    # a failed check makes the dataset "failing" (a spec rejected before any run does not).
    assert after["table"].pop("state") == ("fresh" if fault == "invalid-spec" else "failing")
    assert before["table"].pop("state") == "fresh"
    assert after == before
    assert len(datastack.load("table", split="train", storage=storage)) == 40
