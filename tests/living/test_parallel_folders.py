"""An image folder (one folder per class) prepared in parts of its files (#25.1, #25.6) by 2
local worker processes gives the version one process gives, sample for sample (image bytes,
class codes, splits, row ids, schema): real photographs (scikit-image and scikit-learn's
images, several Pillow modes) and generated PNGs; plain, stratified, with bad files skipped,
a changed folder continued in a second version; a bad image fails the refresh naming its
part's files."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import datastack
from datastack.canonical.layout import shards_of
from datastack.store import Store
from tests.fields.realdata import image_files
from tests.living.test_parallel import _same_version as same_version
from tests.living.test_parallel import refreshed_twice

Image = pytest.importorskip("PIL.Image")

SPLITS = "{train: 0.6, val: 0.1, test: 0.3}"
CLASSES = ("ant", "bee", "cat")


def _folder(root: Path, generated: int = 60) -> Path:
    """Real photos in class folders (``photo``, ``scan``, ``cutout``, ``made``),
    ``generated`` small PNGs (RGB, L and RGBA) in three more, and a text file larger than a
    part between them (a part without images)."""
    folder = root / "photos"
    image_files(folder)
    (folder / "docs").mkdir()
    (folder / "docs" / "readme.txt").write_text("not an image\n" * 12_000)
    rng = np.random.default_rng(5)
    for i in range(generated):
        cls = folder / CLASSES[i % 3 if i % 7 else 0]
        cls.mkdir(exist_ok=True)
        mode, depth = (("RGB", 3), ("L", 1), ("RGBA", 4))[i % 3]
        pixels = rng.integers(0, 255, (24 + i % 9, 32, depth), dtype=np.uint8)
        Image.fromarray(pixels.squeeze() if depth == 1 else pixels, mode).save(
            cls / f"g{i:03d}.png")
    return folder


def _spec(root: Path, folder: Path, **keys: str) -> Path:
    lines = [f"datasets:\n  big:\n    sources: [{{url: {folder.as_uri()}, track: true}}]",
             f"    format: imagefolder\n    splits: {SPLITS}"]
    lines += [f"    {k}: {v}" for k, v in keys.items()]
    path = root / "spec.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _refresh(spec: Path, storage: str) -> Any:
    [result] = datastack.refresh(spec, storage=storage)
    return result


def _twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: int = 0,
           storage: str | None = None, env: dict[str, str] | None = None,
           **keys: str) -> tuple[str, str]:
    """The same folder refreshed by one process and by 2 local workers (or the settings
    ``env``; into ``storage``, else a local store)."""
    def inputs(root: Path) -> Path:
        folder = _folder(root)
        for k in range(bad):  # not images: skipped with on_error: skip
            (folder / CLASSES[k % 3] / f"bad{k}.png").write_bytes(b"not a png " * (k + 1))
        return _spec(root, folder, **keys)

    return refreshed_twice(tmp_path, monkeypatch, inputs, "120K", env, storage)


def _samples(storage: str, version: int) -> dict[str, list[tuple[str, str, int]]]:
    """Each sample as the digest of its image's pixels, their shape and its class code."""
    record = Store.open(storage).catalog.get("big", version)
    out = {}
    for split in record.splits:
        it = datastack.load("big", split, version=version, storage=storage)
        out[split] = []
        for i in range(len(it)):
            image, label = it[i]
            pixels = np.asarray(image)
            out[split].append((hashlib.sha256(pixels.tobytes()).hexdigest(),
                               str(pixels.shape), int(label)))
    return out


def _same_version(one: str, many: str, version: int = 1) -> None:
    same_version(one, many, version, _samples)


def _parts(storage: str) -> set[str]:
    record = Store.open(storage).catalog.latest("big")
    return {e["part"] for es in shards_of(record).values() for e in es}


@pytest.mark.parametrize("case", ["plain", "stratified", "skip"])
def test_an_image_folder_in_parts_gives_the_one_process_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str,
) -> None:
    keys = {"stratify": "true"} if case == "stratified" else {}
    if case == "skip":
        keys["imagefolder"] = "{on_error: skip}"
    one, many = _twice(tmp_path, monkeypatch, bad=4 if case == "skip" else 0, **keys)
    _same_version(one, many)
    parts = _parts(many)
    assert len(parts) >= 4 and all(p.startswith("photos.tar file") for p in parts), parts
    record = Store.open(many).catalog.latest("big")
    assert record.encodings["label"] == sorted([*CLASSES, "cutout", "made", "photo", "scan"])
    assert len(record.schema["fields"][0]["modes"]) >= 3  # every part's modes merged
    if case == "skip":
        skipped = record.schema["skipped"]
        assert skipped["count"] == 4 and len(skipped["files"]) == 4


def test_an_image_folder_in_parts_on_gridfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mongo_uri: str,
) -> None:
    """The workers read the folder's raw copy from GridFS (no local chunk files) and store
    their shards there."""
    one, many = _twice(tmp_path, monkeypatch, storage=mongo_uri)
    _same_version(one, many)
    assert len(_parts(many)) >= 4


@pytest.mark.slow
def test_an_image_folder_on_a_dask_local_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        one, many = _twice(tmp_path, monkeypatch, env={
            "DATASTACK_DASK_ADDRESS": cluster.scheduler_address})
        workers = {w.worker_address for w in cluster.workers.values()}
    _same_version(one, many)
    record = Store.open(many).catalog.latest("big")
    used = {e["worker"].get("dask_worker") for es in shards_of(record).values() for e in es}
    assert used and used <= workers


def test_a_worker_killed_mid_part_is_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    marker = tmp_path / "killed"
    one, many = _twice(tmp_path, monkeypatch, env={
        "DATASTACK_WORKERS": "2", "DATASTACK_TEST_KILL_PART": f"2:{marker}"})
    assert marker.exists()  # the worker writing part 2 was SIGKILLed once
    _same_version(one, many)
    record = Store.open(many).catalog.latest("big")
    entries = [e["identifier"] for es in shards_of(record).values() for e in es]
    assert len(entries) == len(set(entries))


def test_a_changed_folder_continued_in_parts_equals_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """v2 of a folder that lost a file and gained a class (not an append): the splits of
    v1's images kept, the codes continued (the new class takes the next code)."""
    one, many = _twice(tmp_path, monkeypatch)
    for name, storage in (("one", one), ("many", many)):
        root = tmp_path / name
        folder = root / "photos"
        (folder / "bee" / "g001.png").unlink()
        (folder / "aardvark").mkdir()
        shutil.copyfile(folder / "photo" / "coffee.png", folder / "aardvark" / "copy.png")
        with monkeypatch.context() as patch:
            patch.setenv("DATASTACK_PART_BYTES", "120K")
            if name == "many":
                patch.setenv("DATASTACK_WORKERS", "2")
            result = _refresh(root / "spec.yaml", storage)
        assert (result.status, result.version) == ("published", 2), result.reason
    _same_version(one, many, 2)
    assert Store.open(many).catalog.get("big", 2).encodings["label"][-1] == "aardvark"
    assert len(_parts(many)) >= 4


def test_a_bad_image_fails_the_refresh_naming_its_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = _folder(tmp_path)
    (folder / "cat" / "g100.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    monkeypatch.setenv("DATASTACK_PART_BYTES", "120K")
    monkeypatch.setenv("DATASTACK_WORKERS", "2")
    result = _refresh(_spec(tmp_path, folder), str(tmp_path / "store"))
    assert result.status == "failed"
    assert "photos.tar file" in result.reason and "cat/g100.png" in result.reason, result.reason
    assert not Store.open(str(tmp_path / "store")).catalog.versions("big")


@pytest.mark.parametrize("local", [True, False], ids=["in-place", "copied"])
def test_part_inputs_are_the_files_of_each_part(tmp_path: Path, local: bool) -> None:
    """Every part's inputs are its files with their bytes, in archive order, read in place
    from a local raw copy (nothing copied into the work folder) or from a copy of the
    part's bytes when the raw copy is not a local file."""
    import tarfile

    from datastack.formats._parts import cut_parts, open_part
    from datastack.formats.inputs import part_inputs
    from datastack.resources import StreamedResource
    from datastack.specs.model import SourceSpec

    folder = _folder(tmp_path, generated=30)
    archive = tmp_path / "photos.tar"
    with tarfile.open(archive, "w") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
    raw = (StreamedResource.from_path("photos.tar", archive) if local
           else StreamedResource.from_bytes("photos.tar", archive.read_bytes()))
    parts = cut_parts(raw, "tar", None, target_bytes=100_000)
    assert len(parts) >= 4
    source = SourceSpec(url=archive.as_uri(), filename="photos.tar")
    seen = []
    for part in parts:
        work = tmp_path / f"work-{part.start}"
        work.mkdir()
        for raw_input in part_inputs(source, raw, part, lambda p=part: open_part(raw, p),
                                     work):
            with raw_input.open() as stream:
                data = stream.read()
            relative = raw_input.name.split("!", 1)[1]
            assert data == (folder / relative).read_bytes(), relative
            seen.append(relative)
        assert (not any(work.iterdir())) == local  # in place: no copy of the part
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert seen == files


def test_a_file_that_is_no_tar_is_one_part() -> None:
    from datastack.formats._parts import cut_parts
    from datastack.resources import StreamedResource

    raw = StreamedResource.from_bytes("photos.tar", b"\x89PNG not a tar " * 100)
    [part] = cut_parts(raw, "tar", None, target_bytes=10)
    assert (part.kind, part.start, part.end) == ("bytes", 0, 1500)
