"""One renderer of sample pictures (#22.5): ``datastack show --preview`` and the web page draw
the same samples the same way (datastack/preview.py); a thumbnail of a large float picture-like
field is bounded and computed in place (#26.12)."""

from __future__ import annotations

import io
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import datastack
from datastack.preview import CAPTION, THUMBNAIL, render_thumbnail, thumbnail
from tests.web.conftest import World, client_for

MiB = 1 << 20


def _peak_bytes(fn: Any) -> int:
    """Bytes allocated at the peak of ``fn()`` beyond what existed before (numpy reports its
    buffers to tracemalloc)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((4096, 4096), np.float64), ((3000, 2000, 3), np.float32), ((2048, 4096, 4), np.float64),
     ((4096, 4096, 1), np.int32)],
)
def test_a_thumbnail_of_a_large_numeric_picture_costs_kilobytes(
    shape: tuple[int, ...], dtype: Any
) -> None:
    rng = np.random.default_rng(0)
    big = rng.standard_normal(shape).astype(dtype) * 1000
    big.reshape(-1)[::997] = np.nan if big.dtype.kind == "f" else 0
    if big.dtype.kind == "f":
        big.reshape(-1)[5::1009] = np.inf
    peak = _peak_bytes(lambda: render_thumbnail(big, "big sample"))
    assert peak < 4 * MiB, f"{peak / MiB:.1f} MiB for a {big.nbytes / MiB:.0f} MiB sample"
    with Image.open(io.BytesIO(render_thumbnail(big, "big sample"))) as image:
        assert max(image.size) == THUMBNAIL
        assert len(set(np.asarray(image).reshape(-1).tolist())) > 50  # scaled, not flat


def test_values_keep_their_meaning_when_scaled() -> None:
    ramp = np.linspace(-5.0, 5.0, 256 * 256).reshape(256, 256)
    pixels = np.asarray(thumbnail(ramp))
    assert pixels.min() == 0 and pixels.max() >= 250  # the finite range spans 0..255
    unit = np.full((64, 64), 0.5, np.float32)
    assert set(np.asarray(thumbnail(unit)).reshape(-1).tolist()) == {127}  # [0, 1]: fractions


def test_a_web_thumbnail_of_a_large_float_field_stays_near_one_sample(tmp_path: Path) -> None:
    uri = str(tmp_path / "store")
    rng = np.random.default_rng(1)
    fields = rng.random((2, 1536, 1536, 3))  # float64: 54 MiB a sample
    datastack.publish("heat", {"field": fields, "label": np.array(["a", "b"])},
                      target="label", storage=uri)
    client = client_for(uri)
    assert client.get("/thumbs/heat/1/train/0.png?field=field").status_code == 200  # warm up
    sample = fields[0].nbytes
    peak = _peak_bytes(lambda: client.get("/thumbs/heat/1/train/1.png?field=field"))
    assert peak < 1.5 * sample, f"{peak / MiB:.0f} MiB for a {sample / MiB:.0f} MiB sample"


def test_show_preview_draws_the_web_pages_thumbnails(world: World, tmp_path: Path) -> None:
    """The first tiles of ``show --preview`` are pixel for pixel the web page's thumbnails of
    the same samples, captioned with the same label names."""
    out = tmp_path / "digits.png"
    done = subprocess.run(
        [sys.executable, "-m", "datastack.cli", "show", "digits", "--storage", world.uri,
         "--preview", str(out)], capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    client = client_for(world.uri)
    with Image.open(out) as grid:
        canvas = np.asarray(grid.convert("RGB"))
    for index in range(3):
        png = client.get(f"/thumbs/digits/1/train/{index}.png").content
        with Image.open(io.BytesIO(png)) as image:
            web = np.asarray(image.convert("RGB"))
        height, width = web.shape[:2]
        x = index * THUMBNAIL + (THUMBNAIL - width) // 2
        y = CAPTION + (THUMBNAIL - height) // 2
        assert np.array_equal(canvas[y:y + height, x:x + width], web), f"sample {index}"


@pytest.mark.parametrize(("name", "split"), [("flowers", "test"), ("notes", "train")])
def test_show_preview_tables_draw_the_web_pages_cells(
    world: World, monkeypatch: pytest.MonkeyPatch, name: str, split: str
) -> None:
    """A dataset without pictures: the preview's table rows are the web page's table cells
    (category and label names, a feature vector one column per source column)."""
    import html
    import re

    from PIL import ImageDraw

    from datastack.preview import render_preview
    from datastack.store import Store

    drawn: list[str] = []
    original = ImageDraw.ImageDraw.text

    def spy(self: Any, xy: Any, text: Any, *args: Any, **kwargs: Any) -> None:
        drawn.append(str(text))
        original(self, xy, text, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", spy)
    record = Store.open(world.uri).catalog.latest(name)
    it = datastack.load(name, split, storage=world.uri)
    render_preview(it, count=3, title="t", record=record)
    page = client_for(world.uri).get(f"/datasets/{name}?split={split}").text
    rows = re.findall(r'<tr data-index="\d+">(.*?)</tr>', page)[:3]
    assert rows
    for row in rows:
        cells = [html.unescape(c)[:28] for c in re.findall(r'<span class="cell">(.*?)</span>', row)]
        assert cells and cells == [
            t for t in drawn[drawn.index(cells[0]):][:len(cells)]
        ], f"web {cells} not drawn in order: {drawn}"


def test_deep_encoded_images_are_scaled_not_clipped() -> None:
    """A 16-bit or 32-bit picture's thumbnail spans the grey range (Pillow's own conversion
    to RGB clips everything above 255 to white)."""
    import io

    import numpy as np
    from PIL import Image

    from datastack.preview import thumbnail

    ramp = np.tile(np.linspace(0, 60000, 64), (64, 1))
    for array in (ramp.astype(np.uint16), ramp.astype(np.int32), ramp.astype(np.float32)):
        out = io.BytesIO()
        Image.fromarray(array).save(out, format="TIFF" if array.dtype != np.uint16 else "PNG")
        shown = np.asarray(thumbnail(out.getvalue()).convert("L"), dtype=np.int64)
        assert shown.min() <= 5 and shown.max() >= 250, (array.dtype, shown.min(), shown.max())
        middle = shown[:, shown.shape[1] // 2]
        assert 90 <= middle.mean() <= 165, (array.dtype, middle.mean())
