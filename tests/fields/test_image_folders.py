"""Folder sources: ``format: imagefolder`` straight from a directory of real photographs (no
archive), pinned by the sha256 of its deterministic tar stream or tracked."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

import datastack
from datastack.errors import RetrievalError
from datastack.retrieval.folder import FolderTar, folder_sha256
from datastack.store import Store
from tests.fields.realdata import image_files, tar_folder, write_spec


@pytest.fixture(params=["file", pytest.param("gridfs", marks=pytest.mark.mongo)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return str(tmp_path / "store")
    return str(request.getfixturevalue("mongo_uri"))


def _folder_spec(path: Path, name: str, folder: Path, pin: str | None, body: str = "") -> Path:
    how = f"sha256: {pin}" if pin else "track: true"
    path.write_text(f"datasets:\n  {name}:\n    sources: [{{url: {folder.as_uri()}, {how}}}]\n"
                    f"    format: imagefolder\n{body}")
    return path


def _samples(it: datastack.iterators.DatasetIterator) -> list[tuple[bytes, int]]:
    raw = it.with_image_options(decode=False)
    return sorted((bytes(image), int(label)) for image, label in raw)


def test_folder_source_equals_its_archive(tmp_path: Path, storage: str) -> None:
    """The same photographs from a folder and from a tar.gz of it: the same samples, fields
    and pixels; the folder is pinned by the sha256 ``folder_sha256`` gives."""
    folder = tmp_path / "photos"
    files = image_files(folder)
    (folder / ".DS_Store").write_bytes(b"\0Bud1")  # hidden files are left out
    (folder / "README.txt").write_text("photos from scikit-image\n")  # not an image: ignored
    archive = tar_folder(folder, tmp_path / "photos.tar.gz")
    by_archive = write_spec(tmp_path / "a.yaml", "from_archive", [archive],
                            "    format: imagefolder\n")
    by_folder = _folder_spec(tmp_path / "f.yaml", "from_folder", folder, folder_sha256(folder))
    [a] = datastack.refresh(by_archive, storage=storage)
    [f] = datastack.refresh(by_folder, storage=storage)
    assert a.status == f.status == "published", (a.reason, f.reason)
    one, other = (datastack.load(n, storage=storage) for n in ("from_archive", "from_folder"))
    assert len(other) == len(files)
    assert other.fields == one.fields
    assert _samples(other) == _samples(one)
    image, label = other[0]
    assert image.ndim in (2, 3) and isinstance(int(label), int)


def test_folder_tar_is_deterministic_and_a_valid_archive(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    files = image_files(folder)
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)  # other mtimes, other inode order
    for path in copy.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000))
    assert folder_sha256(folder) == folder_sha256(copy)
    tar_path = tmp_path / "out.tar"
    with FolderTar(folder, "photos") as stream:
        tar_path.write_bytes(stream.read())
        assert stream.size == tar_path.stat().st_size
    with tarfile.open(tar_path) as tar:
        names = tar.getnames()
        assert names == sorted(files)
        for name in names:
            member = tar.extractfile(name)
            assert member is not None and member.read() == files[name].read_bytes()
    first = sorted(files)[0]
    (copy / first).write_bytes((copy / first).read_bytes() + b"\0")
    assert folder_sha256(copy) != folder_sha256(folder)


def test_changed_folder_fails_its_pin_and_publishes_nothing(tmp_path: Path) -> None:
    """Pinned: the raw copy made while the folder matched stays in use; a store that copies
    the folder after it changed refuses it (checksum) and publishes nothing."""
    folder = tmp_path / "photos"
    files = image_files(folder)
    spec = _folder_spec(tmp_path / "s.yaml", "photos", folder, folder_sha256(folder))
    [first] = datastack.refresh(spec, storage=str(tmp_path / "store"))
    assert first.status == "published", first.reason
    victim = folder / sorted(files)[0]
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    [again] = datastack.refresh(spec, storage=str(tmp_path / "store"))
    assert again.status == "unchanged", again.reason
    [other] = datastack.refresh(spec, storage=str(tmp_path / "other"))
    assert other.status == "failed" and "failed verification" in other.reason, other.reason
    assert "sha256" in other.reason
    assert Store.open(str(tmp_path / "other")).catalog.latest_records() == {}
    assert len(datastack.load("photos", storage=str(tmp_path / "store"))) == len(files)


def test_tracked_folder_publishes_changes_only(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    files = image_files(folder)
    storage = str(tmp_path / "store")
    spec = _folder_spec(tmp_path / "s.yaml", "photos", folder, None)
    [first] = datastack.refresh(spec, storage=storage)
    assert first.status == "published", first.reason
    [same] = datastack.refresh(spec, storage=storage)
    assert same.status == "unchanged", same.reason
    extra = sorted(files)[0]
    shutil.copy(folder / extra, folder / Path(extra).parent / f"copy{Path(extra).suffix}")
    [grown] = datastack.refresh(spec, storage=storage)
    assert grown.status == "published", grown.reason
    assert len(datastack.load("photos", storage=storage)) == len(files) + 1


def test_folder_with_a_manifest(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    files = image_files(folder)
    rows = ["path,label"] + [f"{k},{'a' if i % 2 else 'b'}" for i, k in enumerate(sorted(files))]
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    storage = str(tmp_path / "store")
    spec = _folder_spec(tmp_path / "s.yaml", "rated", folder, None,
                        "    imagefolder: {manifest: labels.csv}\n")
    [result] = datastack.refresh(spec, storage=storage)
    assert result.status == "published", result.reason
    it = datastack.load("rated", storage=storage)
    assert list(it.fields) == ["image", "path", "label"]
    assert sorted(path for _, path, _ in it) == sorted(files)


def test_links_out_of_the_folder_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    image_files(folder)
    secret = tmp_path / "secret.txt"
    secret.write_text("password")
    os.symlink(secret, folder / "cutout" / "leak.png")
    storage = str(tmp_path / "store")
    spec = _folder_spec(tmp_path / "s.yaml", "photos", folder, None)
    [result] = datastack.refresh(spec, storage=storage)
    assert result.status == "failed"
    assert "cutout/leak.png links out of the folder" in result.reason
    assert Store.open(storage).catalog.latest_records() == {}


def test_a_file_that_changes_while_copied_fails_the_copy(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    files = image_files(folder)
    stream = FolderTar(folder, "photos")
    victim = folder / sorted(files)[-1]
    victim.write_bytes(victim.read_bytes()[:5])
    with pytest.raises(RetrievalError, match="changed size while it was copied"):
        stream.read()
    assert np.all([f.exists() for f in files.values()])


def test_a_folder_of_small_files_is_read_in_full_pieces(tmp_path: Path) -> None:
    """Each read of the folder's tar stream fills what was asked (short only at the end):
    the store then hashes large pieces on its own thread and writes them in few calls. The
    bytes are those of reading it one small piece at a time."""
    for k in range(300):
        (tmp_path / f"f{k:03d}.bin").write_bytes(os.urandom(1000 + 37 * k))
    with FolderTar(tmp_path, "small") as stream:
        pieces = iter(lambda: stream.read(1 << 16), b"")
        sizes, whole = [], b""
        for piece in pieces:
            sizes.append(len(piece))
            whole += piece
    assert all(size == 1 << 16 for size in sizes[:-1]) and len(sizes) > 20
    with FolderTar(tmp_path, "small") as stream:
        small = b"".join(iter(lambda: stream.read(100), b""))
    assert whole == small and len(whole) == stream.size
    with tarfile.open(fileobj=io.BytesIO(whole)) as archive:
        assert len(archive.getnames()) == 300
