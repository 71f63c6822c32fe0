"""A tracked folder that gains files is prepared from the new files only (#24.2): a folder of
real photographs (scikit-image and scikit-learn's images) in class folders, refreshed on the
filesystem and on GridFS (SecantusDB). The new files keep every earlier sample in its split
with its bytes and code, a new class folder takes the next code and is listed in the
version's changes, the grown version shares every shard of the one before; a removed or
rewritten file makes the refresh prepare every file, still moving nothing."""

from __future__ import annotations

import logging
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import datastack
from datastack.canonical.layout import shards_of
from datastack.formats import imagefolder
from datastack.pipeline import build
from datastack.store import Store
from datastack.web.views import version_changes
from tests.fields.realdata import SKIMAGE_DATA, image_files

Image = pytest.importorskip("PIL.Image")

#: Held back from the first version: one image of a class it has, two of a class it has not
#: (``aardvark`` sorts first: its files are inserted at the start of the folder's tar).
LATE_OLD_CLASS = "photo/rocket.jpg"
NEW_CLASS = {"aardvark/chelsea.png": SKIMAGE_DATA / "chelsea.png",
             "aardvark/moon.png": SKIMAGE_DATA / "moon.png"}
SPLITS = "{train: 0.6, test: 0.4}"


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the images the preparation reads (verifies), in this process."""
    monkeypatch.setenv("DATASTACK_ISOLATE", "0")  # the preparation runs here: count its reads
    seen: list[str] = []
    verify = imagefolder.verify_image

    def counting(data: bytes, name: str, **options: Any) -> str:
        seen.append(name)
        return verify(data, name, **options)

    monkeypatch.setattr(imagefolder, "verify_image", counting)
    return seen


def _photos(tmp: Path) -> tuple[Path, Path]:
    """A folder of real images in class folders, and the late arrival ``LATE_OLD_CLASS``
    moved aside."""
    folder = tmp / "photos"
    image_files(folder)
    late = tmp / "late.jpg"
    (folder / LATE_OLD_CLASS).replace(late)
    return folder, late


def _add_files(folder: Path, late: Path) -> None:
    late.replace(folder / LATE_OLD_CLASS)
    for relative, source in NEW_CLASS.items():
        (folder / relative).parent.mkdir(exist_ok=True)
        shutil.copyfile(source, folder / relative)


def _spec(tmp: Path, folder: Path, stratify: bool) -> Path:
    path = tmp / "photos.yaml"
    path.write_text(
        f"datasets:\n  photos:\n    sources: [{{url: {folder.as_uri()}, track: true}}]\n"
        f"    format: imagefolder\n    splits: {SPLITS}\n"
        + ("    stratify: true\n" if stratify else ""))
    return path


def _refresh(spec: Path, storage: str) -> int:
    [result] = datastack.refresh(spec, storage=storage)
    assert result.status == "published", result.reason
    assert result.version is not None
    return result.version


def _samples(storage: str, version: int) -> dict[str, list[tuple[bytes, str]]]:
    """Each split's samples in order: (the image's stored bytes, its class name)."""
    record = Store.open(storage).catalog.get("photos", version)
    names = record.encodings["label"]
    out = {}
    for split in record.splits:
        it = datastack.load("photos", split, version=version, storage=storage)
        out[split] = [(bytes(image), names[int(label)])
                      for image, label in it.with_image_options(decode=False)]
    return out


def _moved(before: dict[str, list[Any]], after: dict[str, list[Any]]) -> int:
    return sum(sum((Counter(rows) - Counter(after.get(split, []))).values())
               for split, rows in before.items())


def _shards(storage: str, version: int) -> dict[str, list[str]]:
    record = Store.open(storage).catalog.get("photos", version)
    return {split: [str(e["identifier"]) for e in entries]
            for split, entries in shards_of(record).items()}


@pytest.mark.parametrize("stratify", [False, True], ids=["plain", "stratified"])
def test_a_folder_that_gains_files_prepares_the_new_files_only(
    tmp_path: Path, storage: str, stratify: bool, decoded: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder, late = _photos(tmp_path)
    spec = _spec(tmp_path, folder, stratify)
    assert _refresh(spec, storage) == 1
    assert len(decoded) == 12  # every image of the first version
    catalog = Store.open(storage).catalog
    classes = catalog.get("photos", 1).encodings["label"]
    assert "aardvark" not in classes
    _add_files(folder, late)
    decoded.clear()
    caplog.set_level(logging.INFO, logger="datastack.pipeline")
    assert _refresh(spec, storage) == 2

    # the preparation read the three new files only
    assert sorted(name.split("!")[1] for name in decoded) == sorted(
        [LATE_OLD_CLASS, *NEW_CLASS])
    assert "prepared the 3 files added upstream only" in caplog.text
    before, after = _samples(storage, 1), _samples(storage, 2)
    assert _moved(before, after) == 0
    for split, rows in before.items():  # the previous version's rows first, in their order
        assert after[split][: len(rows)] == rows
    assert sum(map(len, after.values())) == 15
    record = catalog.get("photos", 2)
    assert record.encodings["label"] == [*classes, "aardvark"]  # codes unchanged, next code
    added = Counter(label for split in after for _, label in after[split][len(before[split]):])
    assert added == {"photo": 1, "aardvark": 2}
    summaries = catalog.version_summaries("photos")
    assert "new class aardvark: 2 samples" in version_changes(summaries[0], summaries[1])
    old_shards, new_shards = _shards(storage, 1), _shards(storage, 2)
    for split, identifiers in old_shards.items():  # every v1 shard, shared, then new ones
        assert new_shards[split][: len(identifiers)] == identifiers
    total = sum(record.splits.values())
    assert abs(record.splits["train"] - 0.6 * total) <= 1 + 2 * stratify


@pytest.mark.parametrize("grayscale", [False, True], ids=["three-files", "one-grayscale"])
def test_the_added_files_go_where_a_preparation_of_every_file_puts_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grayscale: bool
) -> None:
    """The same new version prepared from the new files only and from every file (the
    planner switched off in a copy of the store): the same samples in each split, the same
    codes and schema (an image field of mixed modes stays one when the new files all have one
    mode); only the order within a split differs (the full one follows the folder's)."""
    folder, late = _photos(tmp_path)
    spec = _spec(tmp_path, folder, stratify=True)
    storage, full = tmp_path / "store", tmp_path / "full"
    _refresh(spec, str(storage))
    shutil.copytree(storage, full)
    if grayscale:
        shutil.copyfile(SKIMAGE_DATA / "text.png", folder / "scan" / "text.png")
    else:
        _add_files(folder, late)
    _refresh(spec, str(storage))
    monkeypatch.setattr(build, "tail_plan", lambda *args, **kwargs: None)
    _refresh(spec, str(full))
    tail_rows, full_rows = _samples(str(storage), 2), _samples(str(full), 2)
    assert {s: Counter(rows) for s, rows in tail_rows.items()} == {
        s: Counter(rows) for s, rows in full_rows.items()}
    tail, every = (Store.open(str(s)).catalog.get("photos", 2) for s in (storage, full))
    assert tail.encodings == every.encodings
    for key in ("fields", "splits", "new_values", "skipped"):
        assert tail.schema.get(key) == every.schema.get(key), key
    # v1's shards and the new files' (the full preparation: one shard per split)
    assert sum(map(len, shards_of(tail).values())) > sum(map(len, shards_of(every).values()))


def _same_size_rewrite(path: Path) -> None:
    """Rewrite an uncompressed PNG with other pixels: same name, same size, other bytes."""
    size = path.stat().st_size
    with Image.open(path) as image:
        image.point(lambda v: 255 - v).save(path, compress_level=0)
    assert path.stat().st_size == size
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))


@pytest.mark.parametrize(
    "change", ["removed", "rewritten", "added-and-removed", "added-and-rewritten"])
def test_a_removed_or_rewritten_file_prepares_every_file(
    tmp_path: Path, storage: str, change: str, decoded: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After an append prepared from its new files (v2), a file removed or rewritten in
    place (same size: only its bytes tell) makes v3 prepare every file; no sample moves and
    no code changes."""
    folder, late = _photos(tmp_path)
    raw = Image.open(SKIMAGE_DATA / "camera.png").crop((0, 0, 64, 48))
    raw.save(folder / "scan" / "flat.png", compress_level=0)  # rewritable at the same size
    spec = _spec(tmp_path, folder, stratify=False)
    _refresh(spec, storage)
    _add_files(folder, late)
    caplog.set_level(logging.INFO, logger="datastack.pipeline")
    _refresh(spec, storage)
    assert "files added upstream only" in caplog.text
    caplog.clear()
    decoded.clear()
    if change.endswith("rewritten"):  # names and sizes as before: only the bytes differ
        _same_size_rewrite(folder / "scan" / "flat.png")
    else:
        (folder / "scan" / "flat.png").unlink()
    if change.startswith("added"):
        shutil.copyfile(SKIMAGE_DATA / "text.png", folder / "scan" / "text.png")
    assert _refresh(spec, storage) == 3
    assert "files added upstream only" not in caplog.text
    count = sum(1 for p in folder.rglob("*") if p.is_file())
    assert len(decoded) == count  # every file read again
    before, after = _samples(storage, 2), _samples(storage, 3)
    old_flat = {row for rows in before.values() for row in rows if row[1] == "scan"} - {
        row for rows in after.values() for row in rows}
    assert len(old_flat) == 1  # the one image removed or rewritten
    assert _moved({s: [r for r in rows if r not in old_flat] for s, rows in before.items()},
                  after) == 0
    catalog = Store.open(storage).catalog
    assert catalog.get("photos", 3).encodings == catalog.get("photos", 2).encodings


def test_a_file_of_a_new_image_mode_prepares_every_file(
    tmp_path: Path, decoded: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    """An added file whose mode the image field did not hold (RGBA into RGB photographs)
    changes the field: the files are prepared again, all of them, to the same field a
    preparation of every file gives (here a schema change the spec allows)."""
    folder = tmp_path / "photos"
    files = image_files(folder)
    for relative in [r for r in files if not r.startswith("photo/")]:
        files[relative].unlink()
    spec = _spec(tmp_path, folder, stratify=False)
    spec.write_text(spec.read_text() + "    expect: {schema_change: true}\n")
    storage = str(tmp_path / "store")
    _refresh(spec, storage)
    catalog = Store.open(storage).catalog
    assert catalog.get("photos", 1).schema["fields"][0]["modes"] == ["RGB"]
    shutil.copyfile(SKIMAGE_DATA / "logo.png", folder / "photo" / "logo.png")  # RGBA
    decoded.clear()
    caplog.set_level(logging.INFO, logger="datastack.pipeline")
    _refresh(spec, storage)
    assert "prepared the 1 file added upstream only" not in caplog.text
    assert "preparing every row" in caplog.text  # tried, then refused: the field changed
    assert len(decoded) == 1 + 6  # the added file, then every file
    assert catalog.get("photos", 2).schema["fields"][0]["modes"] == ["RGB", "RGBA"]
    assert _moved(_samples(storage, 1), _samples(storage, 2)) == 0


@pytest.mark.parametrize("added", ["notes.txt", "photo/broken.png"])
def test_added_files_with_no_readable_image_are_prepared_with_every_file(
    tmp_path: Path, added: str, decoded: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A file that is not an image (not planned), or an unreadable image skipped by
    ``on_error: skip`` (the added files alone hold no image: tried, then every file): the
    version is prepared from every file, with the samples and splits of the one before."""
    folder, _ = _photos(tmp_path)
    spec = _spec(tmp_path, folder, stratify=False)
    spec.write_text(spec.read_text() + "    imagefolder: {on_error: skip}\n")
    storage = str(tmp_path / "store")
    _refresh(spec, storage)
    (folder / added).write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    decoded.clear()
    caplog.set_level(logging.INFO, logger="datastack.pipeline")
    _refresh(spec, storage)
    assert "added upstream only" not in caplog.text
    assert ("preparing every row" in caplog.text) is added.endswith(".png")
    assert len(decoded) == 12 + added.endswith(".png") * 2  # every image (the new one: twice)
    assert _samples(storage, 2) == _samples(storage, 1)
    skipped = Store.open(storage).catalog.get("photos", 2).schema["skipped"]
    assert skipped["count"] == added.endswith(".png")


CHUNK = 16 * 1024


def _stored_tar(storage: Any, folder: Path, number: int) -> dict[str, Any]:
    """The folder stored as a tracked source is (its tar as chunks), and its source record."""
    from datastack.retrieval.folder import FolderTar
    from datastack.storage.chunked import ChunkSink

    sink = ChunkSink(storage, lambda d: f"datasets/photos/raw/chunks/{d}", chunk_bytes=CHUNK)
    identifier = f"datasets/photos/raw/fetched-{number}/photos.tar"
    with FolderTar(folder, "photos") as stream:
        info = sink.set_resource(identifier, stream)
    return {"identifier": identifier, "chunks": sink.chunks, "size": info.size,
            "sha256": info.sha256}


@pytest.mark.parametrize(("added", "rewrite"), [
    ("zz/new.jpg", False),  # sorts last: only the chunks from the old end on are hashed
    ("aa/new.jpg", False),  # sorts first: every old byte moved, few old chunks changed
    ("c1/005b.jpg", False),
    ("zz/new.jpg", True),  # an old file rewritten at its size: no plan
], ids=["sorts-last", "sorts-first", "middle", "with-a-rewrite"])
def test_the_plan_hashes_only_the_old_bytes_that_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, added: str, rewrite: bool,
) -> None:
    """The planner on two stored tars (files of 3,000 bytes in chunks of 16 KiB on average):
    the old bytes it hashes again are those of the few old chunks the new record does not
    list (around the added file, and the old end), wherever the file sorts; the tar it hands
    to the preparation holds the added file only, with its bytes."""
    import io
    import random
    import tarfile

    from datastack.pipeline import _tail_folder
    from datastack.specs import load_spec
    from datastack.storage import connect
    from datastack.storage.chunked import open_raw

    folder = tmp_path / "photos"
    rng = random.Random(7)
    for i in range(40):
        path = folder / f"c{i % 4}" / f"{i:03d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(3000))
    storage = connect(str(tmp_path / "store"))
    before = _stored_tar(storage, folder, 1)
    (folder / added).parent.mkdir(exist_ok=True)
    (folder / added).write_bytes(b"new image bytes")
    if rewrite:
        (folder / "c1" / "005.jpg").write_bytes(rng.randbytes(3000))
    now = _stored_tar(storage, folder, 2)
    spec = load_spec(f"datasets:\n  photos:\n    sources: [{{url: {folder.as_uri()}, "
                     "track: true}]\n    format: imagefolder\n")["photos"]
    read: list[int] = []
    old_bytes = _tail_folder._old_bytes

    def counted(*args: Any) -> Any:
        for data in old_bytes(*args):
            read.append(len(data))
            yield data

    monkeypatch.setattr(_tail_folder, "_old_bytes", counted)
    raw = open_raw(storage, now)
    plan = _tail_folder.folder_plan(spec, before, now, raw, storage, 10_000)
    if rewrite:
        assert plan is None
        return
    assert plan is not None and plan.files == 1
    # chunks are cut where the content says: the new copy lists every old chunk but those
    # around the added file and the old end-of-archive, and only those old bytes are hashed
    kept = {(d, n) for d, n in now["chunks"]}
    changed = [n for d, n in before["chunks"] if (d, n) not in kept]
    assert sum(read) == sum(changed) < before["size"] // 4
    assert len(changed) <= 4
    with tarfile.open(fileobj=io.BytesIO(_tail_folder.folder_input(plan, raw).read())) as tf:
        assert [(m.name, tf.extractfile(m).read()) for m in tf] == [  # type: ignore[union-attr]
            (added, b"new image bytes")]
