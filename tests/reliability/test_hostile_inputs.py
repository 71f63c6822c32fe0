"""Scenario 6 through the public entry points: a spec with a hostile source or option goes
through ``datastack refresh --engine local``; it must fail with a clear error (exit 2 for an
invalid spec, before any download; exit 1 naming the dataset for bad data), the catalog must
be unchanged (a good dataset published before stays as it was, the bad one has no version),
and nothing may appear outside the storage root (the whole test folder is snapshotted,
temporary folders included).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from datastack.cli import main
from tests.reliability.helpers import arrays_spec, catalog_state, read_all, snapshot, write_arrays

Case = Callable[[Path, Path], dict[str, Any]]
CASES: dict[str, tuple[Case, str, tuple[str, ...]]] = {}


def case(name: str, outcome: str, *needles: str) -> Callable[[Case], Case]:
    """Register a bad input: ``outcome`` "spec" (exit 2) or "failed" (exit 1); ``needles``
    are words the error must contain (any one of each tuple entry separated by '|')."""

    def register(func: Case) -> Case:
        CASES[name] = (func, outcome, needles)
        return func

    return register


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def src(path: Path, **extra: Any) -> dict[str, Any]:
    return {"url": path.as_uri(), "sha256": sha(path), **extra}


GOOD_CSV = b"a,b,label\n1.0,2.0,0\n3.0,4.0,1\n5.0,6.0,0\n"


def csv_dataset(path: Path, **extra: Any) -> dict[str, Any]:
    return {"sources": [src(path, **extra)], "format": "csv", "csv": {"target": "label"}}


def tar_with(path: Path, add: Callable[[tarfile.TarFile], None]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("data.csv")
        info.size = len(GOOD_CSV)
        tar.addfile(info, io.BytesIO(GOOD_CSV))
        add(tar)
    return path


def _file_member(name: str, data: bytes = GOOD_CSV) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, io.BytesIO(data)


# -- archives ----------------------------------------------------------------------------------
@case("tar-traversal", "failed", "UnsafeArchiveError", "escape")
def _tar_traversal(d: Path, out: Path) -> dict[str, Any]:
    tar = tar_with(d / "a.tar.gz", lambda t: t.addfile(*_file_member("../../escape.csv")))
    return csv_dataset(tar, member="data.csv")


@case("tar-absolute", "failed", "UnsafeArchiveError")
def _tar_absolute(d: Path, out: Path) -> dict[str, Any]:
    tar = tar_with(d / "a.tar.gz", lambda t: t.addfile(*_file_member(str(out / "abs.csv"))))
    return csv_dataset(tar, member="data.csv")


@case("tar-symlink-out", "failed", "UnsafeArchiveError", "link")
def _tar_symlink(d: Path, out: Path) -> dict[str, Any]:
    def add(t: tarfile.TarFile) -> None:
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, str(out)
        t.addfile(link)
        t.addfile(*_file_member("link/escape.csv"))

    return csv_dataset(tar_with(d / "a.tar.gz", add), member="data.csv")


@case("tar-hardlink-out", "failed", "UnsafeArchiveError", "link")
def _tar_hardlink(d: Path, out: Path) -> dict[str, Any]:
    def add(t: tarfile.TarFile) -> None:
        link = tarfile.TarInfo("passwd")
        link.type, link.linkname = tarfile.LNKTYPE, "/etc/passwd"
        t.addfile(link)

    return csv_dataset(tar_with(d / "a.tar.gz", add), member="data.csv")


@case("tar-device", "failed", "UnsafeArchiveError", "device")
def _tar_device(d: Path, out: Path) -> dict[str, Any]:
    def add(t: tarfile.TarFile) -> None:
        dev = tarfile.TarInfo("null")
        dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1, 3
        t.addfile(dev)

    return csv_dataset(tar_with(d / "a.tar.gz", add), member="data.csv")


@case("zip-slip", "failed", "UnsafeArchiveError")
def _zip_slip(d: Path, out: Path) -> dict[str, Any]:
    path = d / "a.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("data.csv", GOOD_CSV)
        z.writestr("../../escape.csv", GOOD_CSV)
    return csv_dataset(path, member="data.csv")


@case("zip-absolute", "failed", "UnsafeArchiveError")
def _zip_absolute(d: Path, out: Path) -> dict[str, Any]:
    path = d / "a.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("data.csv", GOOD_CSV)
        z.writestr(str(out / "abs.csv"), GOOD_CSV)
    return csv_dataset(path, member="data.csv")


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


@case("tar-bomb", "failed", "UnsafeArchiveError", "ratio|cap|expands")
def _tar_bomb(d: Path, out: Path) -> dict[str, Any]:
    size = 300 * 1024 * 1024  # 300 MiB of zeros: a ~300 KB .tar.gz
    path = d / "bomb.tar.gz"
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9,
                                                mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        info = tarfile.TarInfo("data.csv")
        info.size = size
        tar.addfile(info, io.BufferedReader(_Zeros(size), 1 << 20))
    return csv_dataset(path, member="data.csv")


@case("gzip-truncated", "failed", "FormatError", "truncated|corrupt|end")
def _gzip_truncated(d: Path, out: Path) -> dict[str, Any]:
    data = gzip.compress(GOOD_CSV * 200, mtime=0)
    path = d / "cut.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    return csv_dataset(path)


# -- arrays ------------------------------------------------------------------------------------
def _npy_pair(d: Path, x_path: Path) -> dict[str, Any]:
    y = d / "y.npy"
    np.save(y, np.arange(3))
    return {"sources": [src(x_path, role="samples"), src(y, role="targets")], "format": "npy"}


@case("npy-pickle", "failed", "FormatError", "pickle")
def _npy_pickle(d: Path, out: Path) -> dict[str, Any]:
    x = d / "x.npy"
    np.save(x, np.array([{"a": 1}, None, object()], dtype=object), allow_pickle=True)
    return _npy_pair(d, x)


@case("npy-huge-header", "failed", "FormatError", "shape|size|bytes")
def _npy_huge(d: Path, out: Path) -> dict[str, Any]:
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (100000000, 100), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    x = d / "x.npy"
    x.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()
                  + bytes(64))
    return _npy_pair(d, x)


@case("hdf5-truncated", "failed", "FormatError")
def _h5_truncated(d: Path, out: Path) -> dict[str, Any]:
    import h5py

    path = d / "t.h5"
    with h5py.File(path, "w") as f:
        f["samples"] = np.random.default_rng(0).normal(size=(500, 50))
        f["targets"] = np.arange(500)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return {"sources": [src(path)], "format": "hdf5"}


@case("hdf5-garbage", "failed", "FormatError")
def _h5_garbage(d: Path, out: Path) -> dict[str, Any]:
    path = d / "g.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 40)
    return {"sources": [src(path)], "format": "hdf5"}


@case("hdf5-external-link", "failed", "FormatError", "external")
def _h5_external(d: Path, out: Path) -> dict[str, Any]:
    import h5py

    secret = out / "secret.h5"
    with h5py.File(secret, "w") as f:
        f["data"] = np.arange(3.0)
    path = d / "e.h5"
    with h5py.File(path, "w") as f:
        f["samples"] = h5py.ExternalLink(str(secret), "/data")
        f["targets"] = np.arange(3)
    return {"sources": [src(path)], "format": "hdf5"}


@case("idx-truncated", "failed", "FormatError")
def _idx_truncated(d: Path, out: Path) -> dict[str, Any]:
    images, labels = d / "images-idx3-ubyte", d / "labels-idx1-ubyte"
    images.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 100, 28, 28) + bytes(1000))
    labels.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 100) + bytes(100))
    return {"sources": [src(images, role="samples"), src(labels, role="targets")],
            "format": "idx"}


@case("idx-huge-dims", "failed", "FormatError")
def _idx_huge(d: Path, out: Path) -> dict[str, Any]:
    images, labels = d / "images-idx3-ubyte", d / "labels-idx1-ubyte"
    images.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**31, 2**16, 2**16) + bytes(64))
    labels.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 1) + bytes(1))
    return {"sources": [src(images, role="samples"), src(labels, role="targets")],
            "format": "idx"}


# -- csv ---------------------------------------------------------------------------------------
def _csv_file(d: Path, data: bytes) -> dict[str, Any]:
    path = d / "bad.csv"
    path.write_bytes(data)
    return csv_dataset(path)


@case("csv-ragged", "failed", "FormatError", "row")
def _csv_ragged(d: Path, out: Path) -> dict[str, Any]:
    return _csv_file(d, b"a,b,label\n1,2,0\n3,4\n5,6,1\n")


@case("csv-non-numeric", "failed", "FormatError", "row|column")
def _csv_text(d: Path, out: Path) -> dict[str, Any]:
    return _csv_file(d, b"a,b,label\n1,2,0\n3,oops,1\n")


@case("csv-empty", "failed", "FormatError", "empty|no ")
def _csv_empty(d: Path, out: Path) -> dict[str, Any]:
    return _csv_file(d, b"")


@case("csv-nul", "failed", "FormatError", "NUL|row")
def _csv_nul(d: Path, out: Path) -> dict[str, Any]:
    return _csv_file(d, b"a,b,label\n1,2\x00,0\n")


# -- checksums and URLs ------------------------------------------------------------------------
@case("wrong-checksum", "failed", "ChecksumError", "expected")
def _wrong_checksum(d: Path, out: Path) -> dict[str, Any]:
    path = d / "good.csv"
    path.write_bytes(GOOD_CSV)
    return {"sources": [{"url": path.as_uri(), "sha256": "0" * 64}], "format": "csv"}


# -- specs -------------------------------------------------------------------------------------
def _good_csv(d: Path) -> Path:
    path = d / "good.csv"
    path.write_bytes(GOOD_CSV)
    return path


@case("spec-unknown-key", "spec", "formt")
def _unknown_key(d: Path, out: Path) -> dict[str, Any]:
    return {"sources": [src(_good_csv(d))], "formt": "csv"}


@case("spec-bad-cron", "spec", "schedule")
def _bad_cron(d: Path, out: Path) -> dict[str, Any]:
    return {**csv_dataset(_good_csv(d)), "schedule": "61 25 * * *"}


@case("spec-bad-checksum", "spec", "sha256", "hex")
def _bad_checksum(d: Path, out: Path) -> dict[str, Any]:
    return {"sources": [{"url": _good_csv(d).as_uri(), "sha256": "xyz"}], "format": "csv"}


@case("spec-ftp", "spec", "ftp")
def _ftp(d: Path, out: Path) -> dict[str, Any]:
    return {"sources": [{"url": "ftp://127.0.0.1/x.csv", "sha256": "0" * 64}], "format": "csv"}


@case("spec-gopher", "spec", "gopher")
def _gopher(d: Path, out: Path) -> dict[str, Any]:
    return {"sources": [{"url": "gopher://127.0.0.1/x", "sha256": "0" * 64}], "format": "csv"}


@case("spec-member-traversal", "spec", "member")
def _member(d: Path, out: Path) -> dict[str, Any]:
    return csv_dataset(_good_csv(d), member="../../etc/passwd")


@case("spec-filename-traversal", "spec", "filename")
def _filename(d: Path, out: Path) -> dict[str, Any]:
    return csv_dataset(_good_csv(d), filename="../escape.csv")


@case("spec-negative-split", "spec", "splits")
def _splits(d: Path, out: Path) -> dict[str, Any]:
    return {**csv_dataset(_good_csv(d)), "splits": {"train": 1.5, "test": -0.5}}


# -- the test ----------------------------------------------------------------------------------
@pytest.fixture
def world(tmp_path: Path, private_tmp: Path) -> dict[str, Any]:
    """A storage with a good dataset published, plus folders for sources and 'outside'."""
    storage = tmp_path / "store"
    x, y = write_arrays(tmp_path / "good-src", 30, 3, seed=1)
    spec = arrays_spec(tmp_path / "good.yaml", "good", tmp_path / "good-src")
    assert main(["refresh", "--spec", str(spec), "--storage", str(storage),
                 "--engine", "local"]) == 0
    for sub in ("bad-src", "outside"):
        (tmp_path / sub).mkdir()
    return {"storage": storage, "x": x, "y": y, "tmp": tmp_path, "private_tmp": private_tmp}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input_is_rejected_and_nothing_escapes(
    world: dict[str, Any], name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    build, outcome, needles = CASES[name]
    tmp: Path = world["tmp"]
    storage: Path = world["storage"]
    dataset = build(tmp / "bad-src", tmp / "outside")
    spec = tmp / "bad.yaml"
    spec.write_text(yaml.safe_dump({"datasets": {"bad": dataset}}, sort_keys=False))
    catalog_before = catalog_state(str(storage))
    outside_before = snapshot(tmp, exclude=(storage,))
    resources_before = snapshot(storage / "resources")
    capsys.readouterr()

    code = main(["refresh", "--spec", str(spec), "--storage", str(storage),
                 "--engine", "local"])
    captured = capsys.readouterr()
    err = captured.err
    assert code == (2 if outcome == "spec" else 1), (code, captured.out, err)
    if outcome == "failed":
        assert "bad" in err and "failed" in err, err
    for needle in needles:
        assert any(n in err for n in needle.split("|")), (needle, err)
    assert "Traceback" not in err
    assert len(err) < 2000, err

    # Nothing outside the storage root changed; temporary folders are gone.
    assert snapshot(tmp, exclude=(storage,)) == outside_before
    assert list(world["private_tmp"].iterdir()) == []
    # The catalog has no published version of "bad"; "good" is unchanged and loads.
    after = catalog_state(str(storage))
    assert [r for r in after if r[0] == "good"] == [r for r in catalog_before if r[0] == "good"]
    assert not [r for r in after if r[0] == "bad" and r[2] == "published"], after
    xs, ys = read_all("good", str(storage))
    assert np.array_equal(xs, world["x"]) and np.array_equal(ys, world["y"])
    # Only content-addressed raw copies of the bad sources may have been added to storage.
    added = set(snapshot(storage / "resources")) - set(resources_before)
    assert all(p == "datasets/bad" or p.startswith("datasets/bad/raw") for p in added), added
    if outcome == "spec":
        assert added == set()


def test_http_redirect_to_file_url_is_refused(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    from tests.retrieval.servers import Behaviour, FaultyServer

    tmp: Path = world["tmp"]
    storage: Path = world["storage"]
    target = tmp / "outside" / "local.csv"
    target.write_bytes(GOOD_CSV)
    with FaultyServer(GOOD_CSV, Behaviour(redirect_to=target.as_uri())) as server:
        spec = tmp / "bad.yaml"
        spec.write_text(yaml.safe_dump({"datasets": {"bad": {
            "sources": [{"url": server.url("/data.csv"), "sha256": sha(target)}],
            "format": "csv"}}}))
        before = snapshot(tmp, exclude=(storage,))
        capsys.readouterr()
        code = main(["refresh", "--spec", str(spec), "--storage", str(storage),
                     "--engine", "local"])
        err = capsys.readouterr().err
    assert code == 1, err
    assert "file" in err and "bad" in err, err
    assert snapshot(tmp, exclude=(storage,)) == before
    assert not [r for r in catalog_state(str(storage)) if r[0] == "bad"]
