"""Archives are refused as soon as what they declare passes the caps (#26.10), and a zip's
listing is counted before the standard library builds it (#26.24)."""

from __future__ import annotations

import io
import struct
import tarfile
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import pytest

from datastack.errors import UnsafeArchiveError
from datastack.formats.archives import ArchiveLimits, check_zip_directory, extract_archive

COMPRESSIONS = ["gz", "bz2", "xz"]


def _tar_of_zeros(path: Path, mode: str, members: int, size: int) -> Path:
    zeros = bytes(size)
    with tarfile.open(path, f"w:{mode}") as tar:
        for i in range(members):
            info = tarfile.TarInfo(f"part{i:03d}.bin")
            info.size = size
            tar.addfile(info, io.BytesIO(zeros))
    return path


class _CountNext:
    """Counts the member headers tarfile reads (each one past the first decompresses the
    whole member before it); ``tarfile.open("r:*")`` and the content sniffing read one or
    two more per compression they try."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = tarfile.TarFile.next

        def counted(tf: tarfile.TarFile) -> Any:
            self.calls += 1
            return original(tf)

        monkeypatch.setattr(tarfile.TarFile, "next", counted)


@pytest.mark.parametrize("mode", COMPRESSIONS)
def test_tar_refused_at_the_member_that_passes_the_ratio_cap(
    mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _tar_of_zeros(tmp_path / f"z.tar.{mode}", mode, members=40, size=512 * 1024)
    limits = ArchiveLimits(max_ratio=10, ratio_floor=1024 * 1024)
    counter = _CountNext(monkeypatch)
    with pytest.raises(UnsafeArchiveError, match="expansion ratio over 10") as info:
        extract_archive(archive, tmp_path / "out", limits=limits)
    assert "the first 3 members declare 1572864 bytes" in str(info.value)
    assert counter.calls <= 3 + 3, counter.calls  # not 40 (+ tries of the openers)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("mode", COMPRESSIONS)
def test_tar_refused_at_the_member_that_passes_the_total_cap(
    mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _tar_of_zeros(tmp_path / f"z.tar.{mode}", mode, members=30, size=300_000)
    counter = _CountNext(monkeypatch)
    with pytest.raises(UnsafeArchiveError, match="more than 1000000 bytes") as info:
        extract_archive(archive, tmp_path / "out", limits=ArchiveLimits(max_total_bytes=10**6))
    assert "the first 4 members declare 1200000 bytes" in str(info.value)
    assert counter.calls <= 4 + 3, counter.calls  # not 30


@pytest.mark.parametrize("mode", COMPRESSIONS)
def test_tar_header_declaring_gibibytes_is_refused_without_reading_them(
    mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crafted member header declaring 20 GiB (over the default 16 GiB cap) in a tiny file:
    refused from the header, before tarfile skips (decompresses) the declared data."""
    info = tarfile.TarInfo("huge.bin")
    info.size = 20 * 1024**3
    raw = info.tobuf(format=tarfile.GNU_FORMAT) + bytes(4096)
    opener: Any = {"gz": __import__("gzip").compress, "bz2": __import__("bz2").compress,
                   "xz": __import__("lzma").compress}[mode]
    archive = tmp_path / f"huge.tar.{mode}"
    archive.write_bytes(opener(raw))
    assert archive.stat().st_size < 2048
    counter = _CountNext(monkeypatch)
    with pytest.raises(UnsafeArchiveError, match="the first 1 members declare 21474836480"):
        extract_archive(archive, tmp_path / "out")
    assert counter.calls <= 1 + 3, counter.calls


def _zip_of(path: Path, members: int) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for i in range(members):
            zf.writestr(f"{i}", b"")
    return path


def test_zip_with_too_many_entries_refused_before_the_listing_is_built(tmp_path: Path) -> None:
    archive = _zip_of(tmp_path / "many.zip", 20_000)
    tracemalloc.start()
    try:
        with pytest.raises(UnsafeArchiveError, match="lists 20000 members") as info:
            extract_archive(archive, tmp_path / "out", limits=ArchiveLimits(max_members=500))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "at most 500 members" in str(info.value)
    # The raw directory (~0.6 MB) is read once; ZipFile would build 20,000 ZipInfo objects.
    assert peak < 4 * 1024 * 1024, peak


def _lying_end_record(data: bytes, count: int) -> bytes:
    """The same zip with its end-of-central-directory entry counts replaced by ``count``."""
    at = data.rindex(b"PK\x05\x06")
    return data[: at + 8] + struct.pack("<HH", count, count) + data[at + 12 :]


def test_zip_whose_end_record_lies_about_the_count_is_still_counted(tmp_path: Path) -> None:
    data = _zip_of(tmp_path / "many.zip", 2_000).read_bytes()
    lying = tmp_path / "lying.zip"
    lying.write_bytes(_lying_end_record(data, 3))
    with pytest.raises(UnsafeArchiveError, match=r"more than 100 members .its end record says 3"):
        check_zip_directory(io.BytesIO(lying.read_bytes()), "lying.zip", 100)
    with pytest.raises(UnsafeArchiveError, match=r"lying\.zip"):
        extract_archive(lying, tmp_path / "out", limits=ArchiveLimits(max_members=100))


def test_zip_within_the_cap_extracts(tmp_path: Path) -> None:
    archive = _zip_of(tmp_path / "ok.zip", 50)
    files = extract_archive(archive, tmp_path / "out", limits=ArchiveLimits(max_members=50))
    assert len(files) == 50


@pytest.mark.parametrize("fmt", ["excel", "npz"])
def test_zip_based_formats_count_the_listing_first(fmt: str, tmp_path: Path) -> None:
    from datastack.formats import excel

    archive = _zip_of(tmp_path / "many.zip", excel.MAX_MEMBERS + 1)
    if fmt == "excel":
        expected = f"lists {excel.MAX_MEMBERS + 1} members"
        with open(archive, "rb") as stream, pytest.raises(UnsafeArchiveError, match=expected):
            excel.check_zip_caps(stream, "book.xlsx")
    else:
        import datastack
        from tests.fields.realdata import write_spec

        spec = write_spec(tmp_path / "s.yaml", "arrays", [archive.rename(tmp_path / "a.npz")],
                          "    format: npz\n")
        [result] = datastack.refresh(spec, storage=str(tmp_path / "store"))
        assert result.status == "failed", result.reason
        assert f"lists {excel.MAX_MEMBERS + 1} members" in result.reason, result.reason


def test_a_million_entry_listing_is_refused_in_constant_memory(tmp_path: Path) -> None:
    """A crafted zip whose central directory lists 1,000,000 entries (47 MB) and whose end
    record claims 3: ZipFile would build a million objects (~0.5 GiB); the walk stops at the
    cap, reading one 46-byte header per entry."""
    entry = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0,  # versions..date
                        0, 0, 0,  # crc, sizes
                        1, 0, 0, 0, 0,  # name length 1, no extra / comment
                        0, 0) + b"x"
    directory = entry * 1_000_000
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 3, 3, len(directory), 0, 0)
    path = tmp_path / "million.zip"
    path.write_bytes(directory + end)
    tracemalloc.start()
    try:
        with open(path, "rb") as stream, pytest.raises(
            UnsafeArchiveError, match=r"more than 10000 members .its end record says 3"
        ):
            check_zip_directory(stream, "million.zip", 10_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024, peak
    with pytest.raises(UnsafeArchiveError, match=r"million\.zip"):
        extract_archive(path, tmp_path / "out")  # default cap: 10,000 members


def test_raw_npz_iterator_counts_the_listing_first(tmp_path: Path) -> None:
    from datastack.formats import excel
    from datastack.formats.array_iterators import NPZDatasetIterator
    from datastack.resources import StreamedResource

    data = _zip_of(tmp_path / "many.npz", excel.MAX_MEMBERS + 1).read_bytes()
    iterator = NPZDatasetIterator(StreamedResource.from_bytes("many.npz", data))
    expected = rf"many\.npz: the zip directory lists {excel.MAX_MEMBERS + 1} members"
    with pytest.raises(UnsafeArchiveError, match=expected):
        len(iterator)
