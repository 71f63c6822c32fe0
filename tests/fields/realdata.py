"""Real files for the field tests: photographs and scans shipped by scikit-image and
scikit-learn, the Palmer penguins table, scikit-learn's dataset descriptions (Unicode text)."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

Image = pytest.importorskip("PIL.Image")
skimage = pytest.importorskip("skimage")
sklearn = pytest.importorskip("sklearn")

SKIMAGE_DATA = Path(skimage.__file__).parent / "data"
SKLEARN_DATA = Path(sklearn.__file__).parent / "datasets"

#: class folder -> real source files (modes: RGB, L, RGBA PNGs, RGB JPEGs).
REAL_IMAGES = {
    "photo": [SKIMAGE_DATA / "astronaut.png", SKIMAGE_DATA / "coffee.png",
              SKIMAGE_DATA / "rocket.jpg", SKLEARN_DATA / "images" / "china.jpg",
              SKLEARN_DATA / "images" / "flower.jpg"],
    "scan": [SKIMAGE_DATA / "camera.png", SKIMAGE_DATA / "coins.png", SKIMAGE_DATA / "page.png"],
    "cutout": [SKIMAGE_DATA / "logo.png", SKIMAGE_DATA / "horse.png"],
}


def penguins_csv() -> Path:
    palmerpenguins = pytest.importorskip("palmerpenguins")
    path = Path(palmerpenguins.__file__).parent / "data" / "penguins.csv"
    assert path.is_file()
    return path


def descr_texts() -> dict[str, str]:
    """scikit-learn's dataset descriptions: real prose with Unicode (name -> text)."""
    texts = {p.stem: p.read_text(encoding="utf-8") for p in (SKLEARN_DATA / "descr").glob("*.rst")}
    assert len(texts) >= 10 and any(ord(c) > 127 for t in texts.values() for c in t)
    return texts


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def image_files(folder: Path) -> dict[str, Path]:
    """Real images copied into ``folder/CLASS/``, plus a palette PNG, a palette PNG with
    transparency and a grayscale JPEG made from real photos with Pillow."""
    out: dict[str, Path] = {}
    for cls, sources in REAL_IMAGES.items():
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for src in sources:
            assert src.is_file(), src
            target = folder / cls / src.name
            target.write_bytes(src.read_bytes())
            out[f"{cls}/{src.name}"] = target
    made = folder / "made"
    made.mkdir(exist_ok=True)
    chelsea = Image.open(SKIMAGE_DATA / "chelsea.png")
    chelsea.quantize(64).save(made / "chelsea_palette.png")
    with_alpha = chelsea.quantize(32)
    with_alpha.info["transparency"] = 0
    with_alpha.save(made / "chelsea_transparent.png", transparency=0)
    Image.open(SKIMAGE_DATA / "camera.png").crop((0, 0, 300, 200)).save(
        made / "camera_crop.jpg", quality=90)
    for name in ("chelsea_palette.png", "chelsea_transparent.png", "camera_crop.jpg"):
        out[f"made/{name}"] = made / name
    return out


def tar_folder(folder: Path, target: Path, extra: dict[str, bytes] | None = None) -> Path:
    with tarfile.open(target, "w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=path.relative_to(folder).as_posix())
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return target


def write_spec(path: Path, name: str, sources: list[Path], body: str) -> Path:
    listed = ", ".join(f"{{url: {s.as_uri()}, sha256: {sha256(s)}}}" for s in sources)
    path.write_text(f"datasets:\n  {name}:\n    sources: [{listed}]\n{body}")
    return path


__all__ = ["Image", "os"]
