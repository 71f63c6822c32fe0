"""Scenario 5: network faults during a refresh (a misbehaving HTTP server on 127.0.0.1) and a
full disk while the filesystem connector writes (``RLIMIT_FSIZE`` in a child process). Each
ends with a clear result, no temporary files, and the previous version intact.
"""

from __future__ import annotations

import hashlib
import io
import time
from pathlib import Path

import numpy as np
import pytest

from datastack.pipeline.sequence import refresh
from tests.reliability.helpers import (
    arrays_spec,
    catalog_state,
    read_all,
    run_child,
    snapshot,
    write_arrays,
    write_spec,
)
from tests.retrieval.servers import Behaviour, FaultyServer


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


@pytest.fixture
def published(storage: str, tmp_path: Path, private_tmp: Path) -> dict[str, object]:
    """Version 1 of dataset "net" from local files."""
    x, y = write_arrays(tmp_path / "v1", 60, 4, seed=1)
    spec = arrays_spec(tmp_path / "spec.yaml", "net", tmp_path / "v1")
    assert refresh(spec, storage=storage)[0].version == 1
    return {"x": x, "y": y, "spec": spec, "storage": storage, "tmp": private_tmp}


def _http_spec(spec: Path, server: FaultyServer, x_sha: str, y_path: Path) -> None:
    write_spec(spec, {"net": {"format": "npy", "sources": [
        {"url": server.url("/x.npy"), "sha256": x_sha, "role": "samples"},
        {"url": y_path.as_uri(), "sha256": hashlib.sha256(y_path.read_bytes()).hexdigest(),
         "role": "targets"},
    ]}})


FAULTS = {
    # name: (behaviour, serve wrong bytes?, expected status, words in the reason)
    "drop-once-then-resume": (Behaviour(drop_at=3000, drop_times=1), False, "published", ()),
    "404": (Behaviour(status_script=[404] * 10), False, "failed", ("404",)),
    "html-instead-of-data": (Behaviour(), True, "failed", ("ChecksumError", "expected")),
    "short-content-length": (Behaviour(declared_length=500), False, "failed",
                             ("expected",)),
    "redirect-to-file": (Behaviour(redirect_to="file:///etc/passwd"), False, "failed",
                         ("file",)),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_network_fault_during_refresh(
    published: dict[str, object], tmp_path: Path, fault: str
) -> None:
    behaviour, wrong_bytes, status, words = FAULTS[fault]
    storage = str(published["storage"])
    spec = Path(str(published["spec"]))
    x2 = np.random.default_rng(5).normal(size=(60, 4)).astype(np.float32)
    y2 = tmp_path / "y2.npy"
    np.save(y2, np.arange(60) + 100)
    good = _npy(x2)
    served = b"<html><body>503 Service Unavailable</body></html>" * 50 if wrong_bytes else good
    with FaultyServer(served, behaviour) as server:
        _http_spec(spec, server, hashlib.sha256(good).hexdigest(), y2)
        started = time.monotonic()
        [result] = refresh(spec, storage=storage)
        elapsed = time.monotonic() - started
    assert result.status == status, result
    assert elapsed < 30, elapsed
    for word in words:
        assert word in result.reason, result.reason
    if status == "failed":
        assert "net" in result.reason or result.name == "net"
        assert "Traceback" not in result.reason and len(result.reason) < 1500
        xs, ys = read_all("net", storage)
        assert np.array_equal(xs, published["x"]) and np.array_equal(ys, published["y"])
        assert [v for _, v, s in catalog_state(storage) if s == "published"] == [1]
        from datastack.storage import connect

        stored = connect(storage).list_resources("datasets/net/raw/")
        assert not any(hashlib.sha256(good).hexdigest() in r for r in stored), stored
    else:
        xs, ys = read_all("net", storage)
        assert np.array_equal(xs, x2) and np.array_equal(ys, np.arange(60) + 100)
    assert list(Path(str(published["tmp"])).iterdir()) == []


def test_disk_full_during_refresh(tmp_path: Path) -> None:
    storage = str(tmp_path / "store")
    spec = tmp_path / "spec.yaml"
    x1, y1 = write_arrays(tmp_path / "v1", 50, 4, seed=1)
    arrays_spec(spec, "full", tmp_path / "v1")
    assert refresh(spec, storage=storage)[0].version == 1
    write_arrays(tmp_path / "v2", 1000, 1024, seed=2)  # a 4 MB source; the limit is 1 MB
    arrays_spec(spec, "full", tmp_path / "v2")
    child_tmp = tmp_path / "child-tmp"
    child_tmp.mkdir()
    outside = snapshot(tmp_path, exclude=(tmp_path / "store", tmp_path / "child.log"))

    result = run_child(
        {"mode": "refresh", "spec": str(spec), "storage": storage, "names": ["full"],
         "rlimit_fsize": 1_000_000},
        tmp_path / "child.log", env={"TMPDIR": str(child_tmp)},
    )
    assert result.get("results"), result
    [r] = result["results"]
    assert r["status"] == "failed", r
    assert "StorageError" in r["reason"] or "FormatError" in r["reason"], r
    assert "full" in r["reason"] and ("too large" in r["reason"].lower()
                                      or "space" in r["reason"].lower()), r
    assert list(child_tmp.iterdir()) == []
    assert snapshot(tmp_path, exclude=(tmp_path / "store", tmp_path / "child.log")) == outside
    from datastack.storage import connect
    from datastack.storage.filesystem import is_temporary_name

    assert not [p for p in (tmp_path / "store").rglob("*") if is_temporary_name(p.name)]
    assert not [i for i in connect(storage).list_resources("datasets/full/")
                if i.startswith(("datasets/full/v2/", "datasets/full/v2-"))]
    xs, ys = read_all("full", storage)
    assert np.array_equal(xs, x1) and np.array_equal(ys, y1)
    assert [v for _, v, s in catalog_state(storage) if s == "published"] == [1]


def test_disk_full_while_writing_the_hdf5_file(tmp_path: Path) -> None:
    from datastack.pipeline.sequence import retrieve_sources
    from datastack.specs import load_selected as select_specs
    from datastack.store import Store

    storage = str(tmp_path / "store")
    spec = tmp_path / "spec.yaml"
    write_arrays(tmp_path / "v1", 1000, 1024, seed=2)  # 4 MB of data; the limit is 1 MB
    arrays_spec(spec, "h5full", tmp_path / "v1")
    [parsed] = select_specs(spec)
    retrieve_sources(parsed, Store.open(storage))  # raw sources stored: the child fails in preprocessing
    child_tmp = tmp_path / "child-tmp"
    child_tmp.mkdir()
    result = run_child(
        {"mode": "refresh", "spec": str(spec), "storage": storage, "names": ["h5full"],
         "rlimit_fsize": 1_000_000},
        tmp_path / "child.log", env={"TMPDIR": str(child_tmp)},
    )
    assert result["returncode"] == 0, result
    [r] = result["results"]
    assert r["status"] == "failed" and "h5full" in r["reason"], r
    assert list(child_tmp.iterdir()) == []
