"""Image folders: real photographs and scans of mixed sizes and modes published and read back
over the filesystem and GridFS; pixels equal Pillow's decoding of the source files."""

from __future__ import annotations

import io
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import datastack
from datastack.errors import DatastackError, FormatError
from datastack.store import Store
from tests.fields.realdata import Image, image_files, tar_folder, write_spec


@pytest.fixture(params=["file", pytest.param("gridfs", marks=pytest.mark.mongo)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return str(tmp_path / "store")
    return str(request.getfixturevalue("mongo_uri"))


def _published(tmp_path: Path, storage: str, body: str = "    format: imagefolder\n",
               extra: dict[str, bytes] | None = None) -> tuple[dict[str, Path], Any]:
    files = image_files(tmp_path / "photos")
    archive = tar_folder(tmp_path / "photos", tmp_path / "photos.tar.gz", extra)
    spec = write_spec(tmp_path / "spec.yaml", "photos", [archive], body)
    return files, datastack.refresh(spec, storage=storage)


def test_pixels_equal_pillow_decoding_of_the_sources(tmp_path: Path, storage: str) -> None:
    files, [result] = _published(tmp_path, storage)
    assert result.status == "published", result.reason
    it = datastack.load("photos", storage=storage)
    assert list(it.fields) == ["image", "label"]
    assert it.fields["label"].names == ("cutout", "made", "photo", "scan")
    assert it.fields["image"].kind == "image" and it.fields["image"].shape is None
    assert set(it.fields["image"].modes or ()) == {"L", "RGB", "RGBA"}
    assert len(it) == len(files)
    by_name = {}
    for image, label in it:
        by_name.setdefault(int(label), []).append(image)
    seen = 0
    for key, path in files.items():
        cls = key.split("/")[0]
        code = it.fields["label"].names.index(cls)
        with Image.open(path) as source:
            mode = source.mode
            if mode == "P":
                mode = "RGBA" if "transparency" in source.info else "RGB"
            expected = np.asarray(source.convert(mode))
        assert any(a.shape == expected.shape and np.array_equal(a, expected)
                   for a in by_name[code]), key
        seen += 1
    assert seen == len(files)
    shapes = {a.shape for a in it.get_batch(range(len(it)))[0]}
    assert {2, 3} == {len(s) for s in shapes}  # grayscale HxW and colour HxWxC mixed


def test_encoded_bytes_and_mode_conversion(tmp_path: Path, storage: str) -> None:
    files, [result] = _published(tmp_path, storage)
    assert result.status == "published", result.reason
    it = datastack.load("photos", storage=storage)
    raw = it.with_image_options(decode=False)
    sources = {p.read_bytes() for p in files.values()}
    stored = [raw[i][0] for i in range(len(raw))]
    assert set(stored) == sources  # copied exactly as they came
    rgb = it.with_image_options(mode="RGB").shuffle(3)[:5]
    for image, _ in rgb:
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
    as_dict = it.as_dict()[0]
    assert set(as_dict) == {"image", "label"}


def test_record_schema_lists_the_fields(tmp_path: Path, storage: str) -> None:
    _published(tmp_path, storage)
    record = Store.open(storage).catalog.latest("photos")
    kinds = [(f["name"], f["kind"]) for f in record.schema["fields"]]
    assert kinds == [("image", "image"), ("label", "label")]
    assert record.schema["format_version"] == 2 and record.schema["skipped"]["count"] == 0


def _png_bomb() -> bytes:
    width = height = 60000
    header = b"\x89PNG\r\n\x1a\n"
    ihdr = (width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0]))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))

    return header + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(
        b"IEND", b"")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("photo/bomb.png", _png_bomb(), "decompression bomb"),
        ("photo/broken.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "not a readable image"),
        ("scan/text.jpg", b"not an image at all", "not a readable image"),
    ],
)
def test_bad_image_names_the_file_and_leaves_the_catalog(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    storage = str(tmp_path / "store")
    _files, [result] = _published(tmp_path, storage)  # a good first version
    assert result.status == "published"
    archive = tar_folder(tmp_path / "photos", tmp_path / "photos2.tar.gz", {name: content})
    spec = write_spec(tmp_path / "spec2.yaml", "photos", [archive], "    format: imagefolder\n")
    [bad] = datastack.refresh(spec, storage=storage)
    assert bad.status == "failed" and "FormatError" in bad.reason
    assert name in bad.reason and message in bad.reason
    assert Store.open(storage).catalog.latest("photos").version == 1


def test_bad_images_skipped_and_counted(tmp_path: Path) -> None:
    storage = str(tmp_path / "store")
    body = "    format: imagefolder\n    imagefolder: {on_error: skip}\n"
    files, [result] = _published(tmp_path, storage, body,
                                 {"photo/bomb.png": _png_bomb(), "scan/x.png": b"garbage"})
    assert result.status == "published", result.reason
    record = Store.open(storage).catalog.latest("photos")
    assert record.schema["skipped"]["count"] == 2
    assert sorted(f.split("!")[1] for f in record.schema["skipped"]["files"]) == [
        "photo/bomb.png", "scan/x.png"]
    assert len(datastack.load("photos", storage=storage)) == len(files)


def test_truncated_jpeg_is_a_format_error_at_read_time(tmp_path: Path) -> None:
    storage = str(tmp_path / "store")
    files = image_files(tmp_path / "photos")
    data = files["photo/rocket.jpg"].read_bytes()
    files["photo/rocket.jpg"].write_bytes(data[: len(data) // 2])
    archive = tar_folder(tmp_path / "photos", tmp_path / "p.tar.gz")
    spec = write_spec(tmp_path / "s.yaml", "photos", [archive], "    format: imagefolder\n")
    [result] = datastack.refresh(spec, storage=storage)
    assert result.status == "published", result.reason  # verify cannot see a cut JPEG
    it = datastack.load("photos", storage=storage)
    errors = []
    for i in range(len(it)):
        try:
            it[i]
        except FormatError as exc:
            errors.append(str(exc))
    assert len(errors) == 1 and "truncated" in errors[0] and "sample" in errors[0]
    decode = write_spec(tmp_path / "s2.yaml", "photos2", [archive],
                        "    format: imagefolder\n    imagefolder: {check: decode}\n")
    [strict] = datastack.refresh(decode, storage=storage)
    assert strict.status == "failed" and "rocket.jpg" in strict.reason


def test_manifest_layout(tmp_path: Path) -> None:
    files = image_files(tmp_path / "photos")
    rows = ["path,label,rating"] + [
        f"{key},{'good' if i % 2 else 'bad'},{i}" for i, key in enumerate(sorted(files))
    ]
    archive = tar_folder(tmp_path / "photos", tmp_path / "p.tar.gz",
                         {"labels.csv": ("\n".join(rows) + "\n").encode()})
    spec = write_spec(tmp_path / "s.yaml", "rated", [archive],
                      "    format: imagefolder\n    imagefolder: {manifest: labels.csv}\n")
    storage = str(tmp_path / "store")
    [result] = datastack.refresh(spec, storage=storage)
    assert result.status == "published", result.reason
    it = datastack.load("rated", storage=storage)
    assert [(n, f.kind) for n, f in it.fields.items()] == [
        ("image", "image"), ("features", "array"), ("path", "string"), ("label", "label")]
    for image, rating, path, label in it:
        with Image.open(files[path]) as source:
            assert image.shape[:2] == (source.height, source.width)
        assert int(rating[0]) == sorted(files).index(path)
        assert it.fields["label"].names[int(label)] == ("good" if int(rating[0]) % 2 else "bad")


def test_spec_errors_before_download(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "s.yaml", "p", [Path(__file__)],
                      "    format: imagefolder\n    imagefolder: {on_error: ignore}\n")
    with pytest.raises(DatastackError, match=r"on_error.*expected raise or skip"):
        datastack.refresh(spec, storage=str(tmp_path / "store"))


def test_decode_image_of_bytes_is_pillows() -> None:
    from datastack.fields import decode_image

    buf = io.BytesIO()
    array = np.random.default_rng(0).integers(0, 255, (7, 5, 4), dtype=np.uint8)
    Image.fromarray(array, "RGBA").save(buf, "PNG")
    np.testing.assert_array_equal(decode_image(buf.getvalue()), array)
    assert decode_image(buf.getvalue(), mode="L").shape == (7, 5)
