"""Archives: safe extraction round trips, and hostile archives refused with nothing written."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from datastack.errors import FormatError, UnsafeArchiveError
from datastack.preprocessing import ArchiveLimits, CappedGzipReader, extract_archive
from tests.preprocessing.helpers import make_spec, read_h5, run, write_tar


def _tar(
    path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz"
) -> Path:
    return write_tar(path, members, mode)


def _info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def test_tar_gz_of_csv_round_trip(tmp_path: Path) -> None:
    data = "a,b,y\n1,2,x\n3,4,z\n5,6,x\n"
    _tar(tmp_path / "d.tar.gz", [(_info("folder/d.csv"), data.encode())])
    prepared = run(make_spec(tmp_path, ["d.tar.gz"], format="csv"), tmp_path / "o.h5")
    out = read_h5(tmp_path / "o.h5")["train"]
    np.testing.assert_array_equal(out["samples"], [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(out["targets"], [0, 1, 0])
    assert prepared.encodings == {"y": ["x", "z"]}


def test_zip_of_npy_with_members(tmp_path: Path) -> None:
    x, y = np.arange(12.0).reshape(6, 2), np.arange(6)
    with zipfile.ZipFile(tmp_path / "d.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for name, arr in (("x.npy", x), ("y.npy", y)):
            buf = io.BytesIO()
            np.save(buf, arr)
            zf.writestr(f"arrays/{name}", buf.getvalue())
        zf.writestr("README", "ignored")
    (tmp_path / "d2.zip").write_bytes((tmp_path / "d.zip").read_bytes())
    spec = make_spec(
        tmp_path,
        [
            {"name": "d.zip", "role": "samples", "member": "arrays/x.npy"},
            {"name": "d2.zip", "role": "targets", "member": "arrays/y.npy"},
        ],
        format="npy",
    )
    run(spec, tmp_path / "o.h5")
    out = read_h5(tmp_path / "o.h5")["train"]
    np.testing.assert_array_equal(out["samples"], x)
    np.testing.assert_array_equal(out["targets"], y)
    missing = make_spec(
        tmp_path, [{"name": "d.zip", "role": "samples", "member": "nope.npy"}], format="npy"
    )
    with pytest.raises(FormatError, match=r"member 'nope.npy' not found.*arrays/x.npy"):
        run(missing, tmp_path / "o2.h5")


def _evil_tars(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    tmp_path.mkdir(exist_ok=True)
    char = _info("dev", tarfile.CHRTYPE)
    char.devmajor, char.devminor = 1, 3
    cases = {
        "dotdot": ([(_info("../x"), b"x")], r"escapes the folder"),
        "nested-dotdot": ([(_info("a/../../x"), b"x")], r"escapes the folder"),
        "absolute": ([(_info("/tmp/abs-x"), b"x")], r"absolute path"),
        "symlink-out": (
            [(_info("link", tarfile.SYMTYPE, "/etc"), None), (_info("link/x"), b"x")],
            r"symbolic link",
        ),
        "hardlink": ([(_info("passwd", tarfile.LNKTYPE, "/etc/passwd"), None)], r"hard link"),
        "chardev": ([(char, None)], r"device"),
        "fifo": ([(_info("pipe", tarfile.FIFOTYPE), None)], r"device, FIFO"),
        "duplicate": ([(_info("a"), b"1"), (_info("a"), b"2")], r"appears twice"),
    }
    return {
        name: (_tar(tmp_path / f"{name}.tar.gz", members), pattern)
        for name, (members, pattern) in cases.items()
    }


def test_hostile_tars_are_refused_and_leave_nothing(tmp_path: Path) -> None:
    for name, (archive, pattern) in _evil_tars(tmp_path).items():
        dest = tmp_path / f"out-{name}"
        with pytest.raises(UnsafeArchiveError, match=pattern):
            extract_archive(archive, dest)
        assert not dest.exists(), name
    # Nothing escaped: not next to the archive folder, not at the absolute path, not via links.
    assert not (tmp_path.parent / "x").exists() and not (tmp_path / "x").exists()
    assert not Path("/tmp/abs-x").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{name}.tar.gz" for name in _evil_tars(tmp_path / "again").keys()
    )


def test_hostile_tar_through_preprocess_leaves_no_workdir(tmp_path: Path) -> None:
    archive, _ = _evil_tars(tmp_path)["symlink-out"]
    (tmp_path / "spec").mkdir()
    os.replace(archive, tmp_path / "spec" / "evil.tar.gz")
    spec = make_spec(tmp_path / "spec", ["evil.tar.gz"], format="csv")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(UnsafeArchiveError):
        run(spec, out_dir / "o.h5")
    assert os.listdir(out_dir) == []


@pytest.mark.parametrize(
    ("name", "pattern"),
    [("../../x", "escapes the folder"), ("/abs", "absolute path"), ("a\\..\\..\\x", "backslash")],
)
def test_zip_slip(tmp_path: Path, name: str, pattern: str) -> None:
    with zipfile.ZipFile(tmp_path / "z.zip", "w") as zf:
        zf.writestr("ok.txt", "fine")
        zf.writestr(name, "evil")
    with pytest.raises(UnsafeArchiveError, match=pattern):
        extract_archive(tmp_path / "z.zip", tmp_path / "dest")
    assert not (tmp_path / "dest").exists() and not (tmp_path.parent / "x").exists()


def test_zip_symlink(tmp_path: Path) -> None:
    info = zipfile.ZipInfo("link")
    info.external_attr = 0o120777 << 16
    with zipfile.ZipFile(tmp_path / "z.zip", "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        extract_archive(tmp_path / "z.zip", tmp_path / "dest")


def _zeros_gzip(path: Path, mib: int) -> Path:
    block = bytes(1024 * 1024)
    with gzip.open(path, "wb", compresslevel=9) as f:
        for _ in range(mib):
            f.write(block)
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """256 MiB of zeros as a ~260 KB gzip."""
    path = _zeros_gzip(tmp_path_factory.mktemp("bomb") / "zeros.csv.gz", 256)
    assert path.stat().st_size < 400_000
    return path


def test_gzip_bomb_total_cap(bomb: Path) -> None:
    reader = CappedGzipReader(
        open(bomb, "rb"), "zeros.csv.gz", ArchiveLimits(max_total_bytes=4 * 1024**2)
    )
    with pytest.raises(UnsafeArchiveError, match="expands to more than 4194304 bytes"), reader:
        while reader.read(1024 * 1024):
            pass
    assert reader.expanded <= 5 * 1024**2


def test_gzip_bomb_ratio_cap_by_default(bomb: Path) -> None:
    reader = CappedGzipReader(open(bomb, "rb"), "zeros.gz", ArchiveLimits(ratio_floor=8 * 1024**2))
    with pytest.raises(UnsafeArchiveError, match="expansion ratio"), reader:
        while reader.read(1024 * 1024):
            pass


def test_gzip_bomb_through_preprocess(bomb: Path, tmp_path: Path) -> None:
    os.symlink(bomb, tmp_path / "zeros.csv.gz")
    spec = make_spec(tmp_path, ["zeros.csv.gz"], format="csv")
    with pytest.raises(UnsafeArchiveError):
        run(spec, tmp_path / "o.h5", limits=ArchiveLimits(max_total_bytes=2 * 1024**2))
    assert not (tmp_path / "o.h5").exists()
    assert not list(tmp_path.glob(".datastack-prep-*"))


def test_tar_bomb_declared_size(tmp_path: Path) -> None:
    big = tmp_path / "big.tar.gz"
    with tarfile.open(big, "w:gz") as tf:
        info = _info("zeros.bin")
        info.size = 64 * 1024**2
        tf.addfile(info, io.BytesIO(bytes(info.size)))
    with pytest.raises(UnsafeArchiveError, match="expands to more than"):
        extract_archive(big, tmp_path / "d", limits=ArchiveLimits(max_total_bytes=1024**2))
    assert not (tmp_path / "d").exists()


def test_too_many_members(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "many.tar", [(_info(f"f{i}"), b"x") for i in range(20)], "w")
    with pytest.raises(UnsafeArchiveError, match="more than 10 members"):
        extract_archive(archive, tmp_path / "d", limits=ArchiveLimits(max_members=10))


def test_truncated_and_corrupt(tmp_path: Path) -> None:
    good = _tar(tmp_path / "g.tar.gz", [(_info("a.bin"), os.urandom(200_000))])
    data = good.read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match="corrupt or truncated"):
        extract_archive(tmp_path / "cut.tar.gz", tmp_path / "d1")
    assert not (tmp_path / "d1").exists()
    (tmp_path / "junk.tar").write_bytes(os.urandom(5000))
    with pytest.raises(FormatError):
        extract_archive(tmp_path / "junk.tar", tmp_path / "d2")
    gz = gzip.compress(b"a,b\n1,2\n" * 1000)
    with pytest.raises(FormatError, match="truncated"):
        CappedGzipReader(io.BytesIO(gz[: len(gz) // 2]), "half.gz").read()
    with pytest.raises(FormatError, match="corrupt gzip"):
        CappedGzipReader(io.BytesIO(gz[:20] + b"\xff" * 50 + gz[70:]), "bad.gz").read()
    with pytest.raises(FormatError, match="truncated or empty"):
        CappedGzipReader(io.BytesIO(b""), "empty.gz").read()
    with pytest.raises(FormatError, match="after the gzip stream"):
        CappedGzipReader(io.BytesIO(gz + b"garbage"), "tail.gz").read()
    assert CappedGzipReader(io.BytesIO(gz + gz), "two.gz").read() == b"a,b\n1,2\n" * 2000
