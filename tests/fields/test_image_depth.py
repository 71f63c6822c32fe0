"""Images deeper than 8 bits keep their values or are refused, never clipped (#26.8); the
documented pixel limit is enforced exactly, from the header (#26.11); EXIF orientation is not
applied (documented in docs/fields.md)."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import datastack
from datastack import fields
from datastack.errors import FormatError
from datastack.fields import decode_image, verify_image
from tests.fields.realdata import tar_folder, write_spec

Image = pytest.importorskip("PIL.Image")


def tiff(array: np.ndarray, sample_format: int) -> bytes:
    """A minimal little-endian baseline TIFF of ``array`` (H x W or H x W x C), one strip;
    ``sample_format`` 1 unsigned, 2 signed, 3 float."""
    a = np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<")))
    h, w = a.shape[:2]
    c = 1 if a.ndim == 2 else a.shape[2]
    bits = a.dtype.itemsize * 8
    data = a.tobytes()
    bps_offset = 8 + 2 + 11 * 12 + 4
    extra = struct.pack("<" + "H" * c, *([bits] * c)) if c > 2 else b""
    entries = []

    def short(tag: int, value: int) -> None:
        entries.append(struct.pack("<HHIHH", tag, 3, 1, value, 0))

    def long(tag: int, value: int) -> None:
        entries.append(struct.pack("<HHII", tag, 4, 1, value))

    long(256, w)
    long(257, h)
    entries.append(struct.pack("<HHII", 258, 3, c, bps_offset) if c > 2
                   else struct.pack("<HHIHH", 258, 3, 1, bits, 0))
    short(259, 1)
    short(262, 2 if c >= 3 else 1)
    long(273, bps_offset + len(extra))
    short(277, c)
    long(278, h)
    long(279, len(data))
    short(284, 1)
    short(339, sample_format)
    ifd = struct.pack("<H", len(entries)) + b"".join(entries) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + extra + data


def png(width: int, height: int, depth: int, color: int, raw: bytes) -> bytes:
    """A PNG from its IHDR fields and unfiltered scanlines (``raw``, filter bytes included)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    header = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def _pillow_saved(image: Any, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


rng = np.random.default_rng(26)
KEPT = {
    "tiff-int32": (tiff(np.array([[1, -70_000], [2**31 - 1, -(2**31)]], np.int32), 2), "int32"),
    "tiff-int16-signed": (tiff(np.array([[1, -300], [32767, 4]], np.int16), 2), "int32"),
    "tiff-float32": (tiff(np.array([[0.5, -3e30], [np.pi, 1e-7]], np.float32), 3), "float32"),
    "tiff-uint16-little": (tiff(rng.integers(0, 65535, (5, 3)).astype(np.uint16), 1), "uint16"),
    "png-uint16": (_pillow_saved(Image.fromarray(
        rng.integers(256, 65535, (4, 6)).astype(np.uint16)), "PNG"), "uint16"),
}


@pytest.mark.parametrize("case", sorted(KEPT))
def test_deep_images_keep_their_values(case: str) -> None:
    data, dtype = KEPT[case]
    with Image.open(io.BytesIO(data)) as source:
        source.load()
        expected = np.asarray(source)
    decoded = decode_image(data, where=case)
    assert decoded.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(decoded, expected.astype(dtype))
    assert fields.image_dtype([verify_image(data, case)]) == dtype


def test_big_endian_16_bit_is_native_uint16() -> None:
    values = np.array([[1, 300, 65535], [4096, 0, 2]], np.uint16)
    image = Image.frombytes("I;16B", (3, 2), values.astype(">u2").tobytes())
    decoded = decode_image(_pillow_saved(image, "TIFF"))
    assert decoded.dtype == np.uint16 and decoded.dtype.isnative
    np.testing.assert_array_equal(decoded, values)


def _rows(array: np.ndarray) -> bytes:
    return b"".join(b"\x00" + row.astype(">u2").tobytes() for row in array)


REFUSED = {
    "png-rgb16": png(3, 2, 16, 2, _rows(np.full((2, 9), 40_000))),
    "png-rgba16": png(2, 2, 16, 6, _rows(np.full((2, 8), 513))),
    "png-gray-alpha16": png(2, 1, 16, 4, _rows(np.full((1, 4), 700))),
    "tiff-rgb16": tiff(np.arange(12, dtype=np.uint16).reshape(2, 2, 3) * 5000, 1),
    "tiff-uint32": tiff(np.array([[1, 2**32 - 1]], np.uint32), 1),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_deep_images_pillow_would_clip_are_refused(case: str) -> None:
    data = REFUSED[case]
    for call in (lambda: verify_image(data, case), lambda: decode_image(data, where=case)):
        with pytest.raises(FormatError, match=rf"^{case}: .*refused"):
            call()


def test_a_16_bit_image_folder_publishes_uint16(tmp_path: Path) -> None:
    folder = tmp_path / "depth"
    (folder / "near").mkdir(parents=True)
    (folder / "far").mkdir()
    values = {}
    for i, cls in enumerate(("near", "far")):
        array = (np.arange(20, dtype=np.uint16).reshape(4, 5) + 1000 * (i + 1)) * 17
        Image.fromarray(array).save(folder / cls / "a.png")
        values[cls] = array
    archive = tar_folder(folder, tmp_path / "depth.tar")
    spec = write_spec(tmp_path / "s.yaml", "depth", [archive], "    format: imagefolder\n")
    [result] = datastack.refresh(spec, storage=str(tmp_path / "store"))
    assert result.status == "published", result.reason
    it = datastack.load("depth", storage=str(tmp_path / "store"))
    assert it.fields["image"].dtype == "uint16"
    names = it.fields["label"].names
    for image, label in it:
        assert image.dtype == np.uint16
        np.testing.assert_array_equal(image, values[names[int(label)]])


def _declaring(width: int, height: int) -> bytes:
    """A tiny grayscale PNG whose header declares ``width`` x ``height`` (pixels absent)."""
    return png(width, height, 8, 0, b"\x00" * 16)


@pytest.mark.parametrize("limit", [fields.MAX_IMAGE_PIXELS, 10_000, 999])
def test_pixel_limit_is_the_documented_one(limit: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fields, "MAX_IMAGE_PIXELS", limit)
    width = min(1000, limit)
    height = limit // width
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        verify_image(_declaring(width, height), "at.png")  # at (or just under) the limit
        for over in (limit + 1, int(limit * 1.5), 3 * limit):
            with pytest.raises(FormatError) as info:
                verify_image(_declaring(over, 1), "over.png")
            message = str(info.value)
            assert f"over the limit of {limit} pixels" in message, message
            assert f"{over} pixels" in message or f"= {over}" in message, message
            with pytest.raises(FormatError, match=f"limit of {limit} pixels"):
                decode_image(_declaring(over, 1), where="over.png")


def test_exif_orientation_is_not_applied() -> None:
    stored = np.arange(8, dtype=np.uint8).reshape(2, 4) * 30
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    out = io.BytesIO()
    image.save(out, "PNG", exif=exif)
    with Image.open(io.BytesIO(out.getvalue())) as check:
        assert check.getexif().get(0x0112) == 6
    decoded = decode_image(out.getvalue())
    assert decoded.shape == (2, 4)  # as stored, like torchvision's decode_image
    np.testing.assert_array_equal(decoded, stored)
