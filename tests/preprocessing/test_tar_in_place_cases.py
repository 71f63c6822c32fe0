"""More cases of a plain tar read in place (``formats/_tar_in_place.py``): an image folder's
layout, ``.gz`` members, every hostile member kind and a member cut after the listing give what
extraction gives, or the same kind of refusal; sparse members are extracted."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest

from datastack.errors import DatastackError, FormatError, UnsafeArchiveError
from datastack.formats._tar_in_place import tar_spans
from datastack.formats.archives import ArchiveLimits, extract_archive
from datastack.formats.inputs import prepare_inputs
from tests.preprocessing.helpers import make_spec, resources, write_tar


def _info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w") -> Path:
    return write_tar(path, members, mode)


def _inputs(folder: Path, name: str, **source: Any) -> list[Any]:
    spec = make_spec(folder, [{"name": name, **source}], format="imagefolder")
    work = folder / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    return prepare_inputs(resources(spec), work, ArchiveLimits(max_members=50))


def _extracted(folder: Path, name: str) -> list[tuple[str, int, bytes]]:
    dest = folder / "extracted"
    shutil.rmtree(dest, ignore_errors=True)
    files = extract_archive(folder / name, dest, limits=ArchiveLimits(max_members=50))
    return [(f"{name}!{f.relative_to(dest).as_posix()}", f.stat().st_size, f.read_bytes())
            for f in files]


def _read(inputs: list[Any]) -> list[tuple[str, int | None, bytes]]:
    out = []
    for raw in inputs:
        with raw.open() as stream:
            out.append((raw.name, raw.size, stream.read()))
    return out


GOOD = [
    (_info("cat/", tarfile.DIRTYPE), None),
    ("cat/1.png", b"\x89PNG" + os.urandom(3000)),
    ("dog/2.jpg", b""),
    ("./dog/3.jpg", os.urandom(513)),
    ("notes/readme.txt.gz", None),  # filled in below: a gzip member
]


def _good(path: Path) -> Path:
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    for name, data in GOOD:
        if isinstance(name, tarfile.TarInfo):
            members.append((name, None))
        else:
            members.append((_info(name), gzip.compress(b"hello") if data is None else data))
    return _tar(path, members)


def test_in_place_members_equal_the_extracted_ones(tmp_path: Path) -> None:
    _good(tmp_path / "photos.tar")
    extracted = _extracted(tmp_path, "photos.tar")
    in_place = _read(_inputs(tmp_path, "photos.tar"))
    assert [(n, s) for n, s, _ in in_place[:3]] == [(n, s) for n, s, _ in extracted[:3]]
    assert [d for _, _, d in in_place[:3]] == [d for _, _, d in extracted[:3]]
    assert [name for name, _, _ in in_place] == [
        "photos.tar!cat/1.png", "photos.tar!dog/2.jpg", "photos.tar!dog/3.jpg",
        "photos.tar!notes/readme.txt.gz"]
    assert in_place[-1][2] == b"hello"  # a .gz member is decompressed (capped) as before
    assert not any(p.name.startswith("extract") for p in (tmp_path / "work").iterdir())
    assert _read(_inputs(tmp_path, "photos.tar", member="dog/3.jpg")) == [in_place[2]]


def test_in_place_reader_seeks_and_reads_in_parts(tmp_path: Path) -> None:
    data = os.urandom(5000)
    _tar(tmp_path / "a.tar", [(_info("x/a.bin"), data), (_info("x/b.bin"), b"tail")])
    [first, _] = _inputs(tmp_path, "a.tar")
    with first.open() as stream:
        assert stream.read(10) == data[:10]
        assert stream.seek(-5, io.SEEK_END) == 4995
        assert stream.read() == data[-5:]
        assert stream.read() == b""
        stream.seek(100)
        buffer = bytearray(50)
        assert stream.readinto(buffer) == 50 and bytes(buffer) == data[100:150]


def _hostile(tmp_path: Path) -> dict[str, list[tuple[tarfile.TarInfo, bytes | None]]]:
    char = _info("dev", tarfile.CHRTYPE)
    char.devmajor, char.devminor = 1, 3
    return {
        "dotdot": [(_info("../x"), b"x")],
        "absolute": [(_info("/tmp/abs-x"), b"x")],
        "symlink": [(_info("link", tarfile.SYMTYPE, "/etc"), None), (_info("link/x"), b"x")],
        "hardlink": [(_info("passwd", tarfile.LNKTYPE, "/etc/passwd"), None)],
        "chardev": [(char, None)],
        "fifo": [(_info("pipe", tarfile.FIFOTYPE), None)],
        "duplicate": [(_info("a/1.png"), b"1"), (_info("a/1.png"), b"2")],
        "duplicate-normalised": [(_info("a/1.png"), b"1"), (_info("a/./1.png"), b"2")],
        "file-and-folder": [(_info("a"), b"1"), (_info("a/1.png"), b"2")],
        "folder-then-file": [(_info("a/1.png"), b"1"), (_info("a"), b"2")],
        "dir-and-file": [(_info("a", tarfile.DIRTYPE), None), (_info("a"), b"2")],
        "slash-file": [(_info("a/"), b""), (_info("a/1.png"), b"2")],
        "too-many": [(_info(f"c/{i}.png"), b"x") for i in range(60)],
    }


@pytest.mark.parametrize("case", sorted(_hostile(Path())))
def test_hostile_tars_are_refused_in_place_as_by_extraction(tmp_path: Path, case: str) -> None:
    _tar(tmp_path / "evil.tar", _hostile(tmp_path)[case])
    with pytest.raises(DatastackError) as extracting:
        _extracted(tmp_path, "evil.tar")
    with pytest.raises(DatastackError) as in_place:
        _inputs(tmp_path, "evil.tar")
    assert type(in_place.value) is type(extracting.value)
    assert isinstance(in_place.value, UnsafeArchiveError)
    words = ("appears twice", "clashes", "escapes", "absolute", "link", "device", "members")
    assert [w for w in words if w in str(in_place.value)] == [
        w for w in words if w in str(extracting.value)]


def test_truncated_tar_is_refused_in_place(tmp_path: Path) -> None:
    good = _tar(tmp_path / "g.tar", [(_info("c/a.png"), os.urandom(200_000))])
    data = good.read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[:100_000])
    with pytest.raises(FormatError, match="corrupt or truncated"):
        _inputs(tmp_path, "cut.tar")


def test_a_member_cut_after_listing_fails_when_read(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "g.tar", [(_info("c/a.png"), os.urandom(20_000))])
    [raw] = _inputs(tmp_path, "g.tar")
    os.truncate(archive, 10_000)
    with raw.open() as stream, pytest.raises(FormatError, match="ends early"):
        stream.read()


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2"])
def test_compressed_tars_and_others_are_extracted(tmp_path: Path, mode: str) -> None:
    archive = _tar(tmp_path / "p.tar", [(_info("c/a.png"), b"abc")], mode)
    assert tar_spans(archive) is None
    (tmp_path / "junk.tar").write_bytes(os.urandom(5000))
    assert tar_spans(tmp_path / "junk.tar") is None
    assert _read(_inputs(tmp_path, "p.tar")) == [("p.tar!c/a.png", 3, b"abc")]


def test_sparse_members_are_extracted(tmp_path: Path) -> None:
    sparse = _info("c/s.bin", tarfile.GNUTYPE_SPARSE)
    sparse.sparse = [(0, 3)]  # type: ignore[attr-defined]
    archive = tmp_path / "s.tar"
    with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT) as tf:
        tf.addfile(_info("c/a.bin"), io.BytesIO(b""))
    # a GNU sparse member cannot be written by tarfile; its header is patched in place
    header = bytearray(archive.read_bytes())
    header[156] = ord(tarfile.GNUTYPE_SPARSE)
    checksum = sum(header[:148]) + 8 * 32 + sum(header[156:512])
    header[148:156] = b"%06o\0 " % checksum
    archive.write_bytes(bytes(header))
    with tarfile.open(archive) as tf:
        if not tf.getmembers()[0].issparse():
            pytest.skip("this tarfile does not read the patched header as sparse")
    assert tar_spans(archive) is None


def _targets() -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return out


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
def test_members_share_one_descriptor_closed_with_their_inputs(tmp_path: Path) -> None:
    """Counted on the archive's own descriptors (other threads of the test process -- servers
    of other tests -- open and close sockets meanwhile, so a process-wide count is not)."""
    import gc

    datas = [os.urandom(1000 + i) for i in range(40)]
    archive = tmp_path / "many.tar"
    _tar(archive, [(_info(f"c/{i}.png"), d) for i, d in enumerate(datas)])

    def on_archive() -> int:
        return sum(1 for target in _targets() if target == str(archive.resolve()))

    inputs = _inputs(tmp_path, "many.tar")
    streams = [raw.open() for raw in inputs]  # all open at once, read interleaved
    assert on_archive() <= 1  # opened on the first read
    halves = [s.read(500) for s in streams]
    whole = [h + s.read() for h, s in zip(halves, streams, strict=True)]
    assert whole == datas
    assert on_archive() == 1  # one descriptor of the archive, shared by the 40 readers
    for stream in streams:
        stream.close()
    del inputs, streams, stream  # the last reader holds the archive too
    gc.collect()
    assert on_archive() == 0
