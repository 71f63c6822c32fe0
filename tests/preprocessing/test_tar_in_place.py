"""A plain tar is read in place (#23.3): the same members, bytes and refusals as extracting it."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from datastack.errors import FormatError, UnsafeArchiveError
from datastack.formats._tar_in_place import open_span, tar_spans
from datastack.formats.archives import ArchiveLimits, extract_archive
from datastack.formats.inputs import prepare_inputs
from datastack.resources import StreamedResource
from datastack.specs import SourceSpec


def _tar(path: Path, members: list[tuple[str, bytes | None]], mode: str = "w") -> Path:
    """``(name, data)`` files, ``(name, None)`` folders."""
    with tarfile.open(path, mode) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def _inputs(archive: Path, workdir: Path, **extra: object) -> list[tuple[str, bytes]]:
    source = SourceSpec(archive.as_uri(), sha256="0" * 64, filename=archive.name,
                        **extra)  # type: ignore[arg-type]
    resource = StreamedResource.from_path(archive.name, str(archive))
    out = []
    for raw in prepare_inputs([(source, resource)], workdir):
        with raw.open() as stream:
            out.append((raw.name, stream.read()))
    return out


def test_members_are_read_in_place_with_the_bytes_extraction_gives(tmp_path: Path) -> None:
    members = [("d/", None), ("d/a.csv", b"x,y\n1,2\n"), ("./d/b.csv", b"x,y\n3,4\n" * 5000),
               ("empty.csv", b"")]
    archive = _tar(tmp_path / "a.tar", members)
    work = tmp_path / "work"
    work.mkdir()
    got = _inputs(archive, work)
    assert list(work.iterdir()) == []  # nothing extracted
    files = extract_archive(archive, tmp_path / "x")
    expected = [(f"a.tar!{f.relative_to(tmp_path / 'x').as_posix()}", f.read_bytes())
                for f in files]
    assert got == expected


def test_a_member_reader_seeks_within_its_member_only(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "a.tar", [("a.bin", b"A" * 700), ("b.bin", b"0123456789")])
    span = next(s for s in tar_spans(archive) or [] if s.name == "b.bin")
    with open_span(archive, span) as stream:
        assert stream.read(3) == b"012"
        stream.seek(-2, io.SEEK_END)
        assert stream.read() == b"89"
        stream.seek(100)
        assert stream.read() == b""


def test_member_option_picks_one_member_in_place(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "a.tar", [("a.csv", b"a\n1\n"), ("b.csv", b"b\n2\n")])
    work = tmp_path / "w"
    work.mkdir()
    assert _inputs(archive, work, member="b.csv") == [("a.tar!b.csv", b"b\n2\n")]


Hostile = Callable[[Path], Path]


def _symlink(path: Path) -> Path:
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo("link.csv")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
    return path


@pytest.mark.parametrize(
    ("build", "error", "words"),
    [
        (lambda p: _tar(p, [("../escape.csv", b"a\n")]), UnsafeArchiveError, "escapes"),
        (lambda p: _tar(p, [("/abs.csv", b"a\n")]), UnsafeArchiveError, "absolute"),
        (_symlink, UnsafeArchiveError, "link"),
        (lambda p: _tar(p, [("a.csv", b"1"), ("./a.csv", b"2")]), UnsafeArchiveError, "twice"),
        (lambda p: _tar(p, [("a", b"1"), ("a/b.csv", b"2")]), UnsafeArchiveError, "clashes"),
        (lambda p: _tar(p, [("a/b.csv", b"2"), ("a", b"1")]), UnsafeArchiveError, "clashes"),
    ],
    ids=["traversal", "absolute", "symlink", "twice", "file-then-folder", "folder-then-file"],
)
def test_hostile_plain_tars_are_refused_as_extraction_refuses_them(
    tmp_path: Path, build: Hostile, error: type[Exception], words: str
) -> None:
    archive = build(tmp_path / "h.tar")
    with pytest.raises(error, match=words):
        extract_archive(archive, tmp_path / "x")
    work = tmp_path / "w"
    work.mkdir()
    with pytest.raises(error, match=words):
        _inputs(archive, work)


def test_a_truncated_plain_tar_is_a_format_error(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "t.tar", [("a.bin", b"z" * 5000)])
    data = archive.read_bytes()
    archive.write_bytes(data[: 512 + 3000])  # header and part of the member
    work = tmp_path / "w"
    work.mkdir()
    with pytest.raises(FormatError, match="truncated"):
        _inputs(archive, work)


def test_caps_apply_to_a_plain_tar_read_in_place(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "m.tar", [(f"{i}.csv", b"a\n") for i in range(20)])
    with pytest.raises(UnsafeArchiveError, match="members"):
        tar_spans(archive, limits=ArchiveLimits(max_members=10))


@pytest.mark.parametrize("suffix", ["gz", "bz2", "xz"])
def test_compressed_tars_are_extracted_not_read_in_place(tmp_path: Path, suffix: str) -> None:
    archive = _tar(tmp_path / f"c.tar.{suffix}", [("a.csv", b"a\n1\n")], f"w:{suffix}")
    assert tar_spans(archive) is None
    work = tmp_path / "w"
    work.mkdir()
    assert _inputs(archive, work) == [(f"c.tar.{suffix}!a.csv", b"a\n1\n")]
    assert [p.name for p in work.iterdir()] == ["extract-0"]
