"""Malformed and hostile NPY, IDX, CSV and HDF5 inputs raise FormatError, fast, naming the place."""

from __future__ import annotations

import gzip
import os
import struct
import time
from pathlib import Path

import h5py
import numpy as np
import psutil
import pytest

from datastack.errors import FormatError
from tests.preprocessing.helpers import make_spec, run, write_idx


def _npy_spec(tmp_path: Path, name: str = "x.npy") -> object:
    return make_spec(tmp_path, [{"name": name, "role": "samples"}], format="npy")


def _npy_header(shape: tuple[int, ...], descr: str = "<f8", pad: int = 0) -> bytes:
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}) + " " * pad
    header += " " * (-(len(header) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()


@pytest.mark.parametrize("in_memory", [False, True])
def test_npy_huge_claim_fails_before_allocating(tmp_path: Path, in_memory: bool) -> None:
    (tmp_path / "x.npy").write_bytes(_npy_header((100_000_000,)) + b"\x00" * 64)
    assert (tmp_path / "x.npy").stat().st_size < 200
    rss = psutil.Process().memory_info().rss
    start = time.perf_counter()
    with pytest.raises(FormatError, match=r"shape \(100000000,\).*800000000 bytes.*holds 64"):
        run(_npy_spec(tmp_path), tmp_path / "o.h5", in_memory=in_memory)  # type: ignore[arg-type]
    assert time.perf_counter() - start < 1.0
    assert psutil.Process().memory_info().rss - rss < 100 * 1024**2


def test_npy_huge_claim_in_gzip_fails_without_allocating(tmp_path: Path) -> None:
    data = _npy_header((100_000_000,)) + b"\x00" * 64
    (tmp_path / "x.npy.gz").write_bytes(gzip.compress(data))
    rss = psutil.Process().memory_info().rss
    with pytest.raises(FormatError, match="truncated: 64 of 800000000"):
        run(_npy_spec(tmp_path, "x.npy.gz"), tmp_path / "o.h5")  # type: ignore[arg-type]
    assert psutil.Process().memory_info().rss - rss < 100 * 1024**2
    assert not list(tmp_path.glob(".datastack-prep-*"))


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch /tmp/datastack-pwned",))


def test_npy_needing_pickle_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.array([_Evil()], dtype=object), allow_pickle=True)
    with pytest.raises(FormatError, match="needs pickle; refused"):
        run(_npy_spec(tmp_path), tmp_path / "o.h5")  # type: ignore[arg-type]
    assert not Path("/tmp/datastack-pwned").exists()


@pytest.mark.parametrize(
    ("payload", "pattern"),
    [
        (b"", "not a valid .npy"),
        (b"\x93NUMPY", "not a valid .npy"),
        (b"PK\x03\x04 not numpy at all", "not a valid .npy"),
        (_npy_header((3,), pad=40_000), "not a valid .npy"),  # 40 KB header
        (_npy_header((4,)) + b"\x00" * 31, "holds 31 data bytes"),  # truncated
        (_npy_header((4,)) + b"\x00" * 40, "holds 40 data bytes"),  # trailing data
        (_npy_header((), "<f8") + b"\x00" * 8, "0-d array"),
        (_npy_header((2,), "<U3") + b"\x00" * 24, "not a plain numeric"),
    ],
)
def test_npy_malformed(tmp_path: Path, payload: bytes, pattern: str) -> None:
    (tmp_path / "x.npy").write_bytes(payload)
    with pytest.raises(FormatError, match=pattern):
        run(_npy_spec(tmp_path), tmp_path / "o.h5")  # type: ignore[arg-type]


def test_npy_length_mismatch(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((5, 2)))
    np.save(tmp_path / "y.npy", np.zeros(4))
    spec = make_spec(
        tmp_path,
        [{"name": "x.npy", "role": "samples"}, {"name": "y.npy", "role": "targets"}],
        format="npy",
    )
    with pytest.raises(FormatError, match="5 samples but 4 targets"):
        run(spec, tmp_path / "o.h5")


@pytest.mark.parametrize("compress", [False, True])
def test_idx_malformed(tmp_path: Path, compress: bool) -> None:
    def check(data: bytes, pattern: str) -> None:
        name = "x.idx.gz" if compress else "x.idx"
        (tmp_path / name).write_bytes(gzip.compress(data) if compress else data)
        (tmp_path / "y.idx").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 2) + b"\x01\x02")
        spec = make_spec(tmp_path, [name, "y.idx"], format="idx")
        with pytest.raises(FormatError, match=pattern):
            run(spec, tmp_path / "o.h5")

    good = write_idx(tmp_path / "g", np.zeros((2, 3, 3), np.uint8)).read_bytes()
    check(good[: len(good) - 5], "truncated|holds 13 data bytes")
    check(b"\x01\x02\x08\x03" + good[4:], "not an IDX file")
    check(b"\x00\x00\x42\x03" + good[4:], "not an IDX file")
    check(good[:6], "truncated IDX")
    check(
        bytes([0, 0, 8, 3]) + struct.pack(">3I", 60000, 28, 28) + b"\x00" * 10,
        "shape \\(60000, 28, 28\\)|truncated: 10 of",
    )
    check(good + b"extra", "unexpected bytes after|holds 23 data bytes")


def test_idx_length_mismatch_and_ambiguous_roles(tmp_path: Path) -> None:
    write_idx(tmp_path / "x.idx", np.zeros((3, 2, 2), np.uint8))
    write_idx(tmp_path / "y.idx", np.zeros(2, np.uint8))
    with pytest.raises(FormatError, match="3 samples but 2 targets"):
        run(make_spec(tmp_path, ["x.idx", "y.idx"], format="idx"), tmp_path / "o.h5")
    write_idx(tmp_path / "z.idx", np.zeros((3, 2, 2), np.uint8))
    with pytest.raises(FormatError, match="expected one samples input"):
        run(make_spec(tmp_path, ["x.idx", "z.idx"], format="idx"), tmp_path / "o.h5")


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b"", "no data rows"),
        (b"a,b,y\n", "no data rows"),
        (b"a,b,y\n1,2,3\n4,5\n", r"row 3: expected 3 fields, got 2 \(ragged"),
        (b"a,b,y\n1,2,3\n4,5,6,7\n", r"row 3: expected 3 fields, got 4"),
        (b"a,b,y\n1,2,3\n4,x\x005,6\n", r"row 3, column 1: NUL byte"),
        (b"a,b,y\n1,2,3\n4," + b"9" * 200_000 + b",6\n", r"row \d+: malformed CSV.*field larger"),
        (b"a,b,y\n1,2,3\n4,\xff\xfe,6\n", r"row 3: bytes not valid utf-8"),
        (b"a,b,y\n1,2,3\n4,five,6\n", r"row 3, column 'b' \(index 1\): 'five' is not a number"),
        (b"a,a,y\n1,2,3\n", r"row 1: duplicate column names"),
        (b'a,b,y\n1,"2,3\n', r"malformed CSV"),
        (b"abc\n1\n", r"need features and a target"),
    ],
)
def test_csv_malformed(tmp_path: Path, content: bytes, pattern: str) -> None:
    (tmp_path / "d.csv").write_bytes(content)
    with pytest.raises(FormatError, match=pattern) as info:
        run(make_spec(tmp_path, ["d.csv"], format="csv"), tmp_path / "o.h5")
    assert str(info.value).startswith("d.csv")
    assert not (tmp_path / "o.h5").exists()


def test_csv_option_errors(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_bytes(b"a,b,y\n1,2,x\n3,4,\n")
    with pytest.raises(FormatError, match=r"row 3, column 'y': missing target class"):
        run(make_spec(tmp_path, ["d.csv"], format="csv"), tmp_path / "o.h5")
    with pytest.raises(FormatError, match=r"csv.target column 'nope' not in header"):
        run(make_spec(tmp_path, ["d.csv"], format="csv", csv={"target": "nope"}), tmp_path / "o.h5")
    with pytest.raises(FormatError, match=r"csv.target index 7 out of range"):
        run(make_spec(tmp_path, ["d.csv"], format="csv", csv={"target": 7}), tmp_path / "o.h5")
    (tmp_path / "l1.csv").write_bytes("a,b\n1,é\n".encode("latin-1"))
    prepared = run(
        make_spec(tmp_path, ["l1.csv"], format="csv", csv={"encoding": "latin-1"}),
        tmp_path / "o.h5",
    )
    assert prepared.encodings == {"b": ["é"]}


def _h5(path: Path, build: object) -> Path:
    with h5py.File(path, "w") as f:
        build(f)  # type: ignore[operator]
    return path


@pytest.mark.parametrize("probe", [True, False])
def test_hdf5_hostile(tmp_path: Path, probe: bool) -> None:
    secret = tmp_path / "secret.h5"
    _h5(secret, lambda f: f.create_dataset("data", data=np.arange(10)))
    raw = tmp_path / "raw.bin"
    raw.write_bytes(np.arange(10, dtype="<i8").tobytes())

    def external_link(f: h5py.File) -> None:
        f["samples"] = np.zeros((10, 2))
        f["targets"] = h5py.ExternalLink(str(secret), "/data")

    def external_storage(f: h5py.File) -> None:
        f["samples"] = np.zeros((10, 2))
        f.create_dataset("targets", shape=(10,), dtype="<i8", external=[(str(raw), 0, 80)])

    def virtual(f: h5py.File) -> None:
        f["samples"] = np.zeros((10, 2))
        layout = h5py.VirtualLayout(shape=(10,), dtype="<i8")
        layout[:] = h5py.VirtualSource(str(secret), "data", shape=(10,))
        f.create_virtual_dataset("targets", layout)

    def deep_link(f: h5py.File) -> None:
        f["samples"] = np.zeros((10, 2))
        f["targets"] = np.zeros(10)
        f.create_group("a/b")["c"] = h5py.ExternalLink(str(secret), "/data")

    cases = {
        "external link": external_link,
        "external files": external_storage,
        "virtual dataset": virtual,
        "deep": deep_link,
    }
    for pattern, build in cases.items():
        name = pattern.replace(" ", "-") + ".h5"
        _h5(tmp_path / name, build)
        spec = make_spec(tmp_path, [name], format="hdf5")
        with pytest.raises(FormatError, match="external link" if pattern == "deep" else pattern):
            run(spec, tmp_path / "o.h5", probe_hdf5=probe)


@pytest.mark.parametrize("probe", [True, False])
def test_hdf5_truncated_garbage_and_missing_names(tmp_path: Path, probe: bool) -> None:
    good = _h5(
        tmp_path / "good.h5",
        lambda f: (
            f.create_dataset("samples", data=np.zeros((500, 50))),
            f.create_dataset("targets", data=np.zeros(500)),
        ),
    )
    data = good.read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 3])
    (tmp_path / "junk.h5").write_bytes(os.urandom(4096))
    (tmp_path / "fuzz.h5").write_bytes(data[:2048] + os.urandom(512) + data[2560:])
    for name in ("cut.h5", "junk.h5"):
        with pytest.raises(FormatError, match="HDF5"):
            run(make_spec(tmp_path, [name], format="hdf5"), tmp_path / "o.h5", probe_hdf5=probe)
    try:  # a fuzzed file may or may not still be readable; it must never crash us
        run(make_spec(tmp_path, ["fuzz.h5"], format="hdf5"), tmp_path / "o.h5", probe_hdf5=probe)
    except FormatError:
        pass
    spec = make_spec(tmp_path, ["good.h5"], format="hdf5", hdf5={"samples": "images"})
    with pytest.raises(FormatError, match=r"no dataset 'images'.*\['samples', 'targets'\]"):
        run(spec, tmp_path / "o.h5", probe_hdf5=probe)


def test_npz_with_pickled_member_and_missing_name(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", samples=np.array([_Evil()], dtype=object), targets=np.zeros(1))
    spec = make_spec(tmp_path, ["d.npz"], format="npz")
    with pytest.raises(FormatError, match="needs pickle; refused"):
        run(spec, tmp_path / "o.h5")
    assert not Path("/tmp/datastack-pwned").exists()
    np.savez(tmp_path / "e.npz", x=np.zeros(3))
    with pytest.raises(FormatError, match=r"no array 'samples' in the npz; it holds \['x'\]"):
        run(make_spec(tmp_path, ["e.npz"], format="npz"), tmp_path / "o.h5")
    (tmp_path / "f.npz").write_bytes(b"not a zip at all")
    with pytest.raises(FormatError, match=r"not a valid \.npz"):
        run(make_spec(tmp_path, ["f.npz"], format="npz"), tmp_path / "o.h5")


def test_stratify_needs_targets(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((10, 2)))
    spec = make_spec(
        tmp_path,
        [{"name": "x.npy", "role": "samples"}],
        format="npy",
        splits={"a": 0.5, "b": 0.5},
        stratify=True,
    )
    with pytest.raises(FormatError, match="stratify needs 1-D targets"):
        run(spec, tmp_path / "o.h5")
    assert not (tmp_path / "o.h5").exists()
