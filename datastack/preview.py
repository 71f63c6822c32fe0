"""A picture of a dataset (``datastack show NAME --preview FILE.png``), drawn with Pillow.

* a dataset with an image field: a grid of the first samples, each captioned with its label
  name (or target value);
* any other dataset: a table of the first rows (field values, shortened) and a histogram of
  the targets (class names for a label field).

Reading is bounded: at most ``count`` samples for the grid or table, at most
:data:`MAX_HISTOGRAM_SAMPLES` targets for the histogram.

>>> import tempfile, os, numpy as np
>>> from datastack.iterators import SequenceDatasetIterator
>>> it = SequenceDatasetIterator(np.zeros((5, 3), np.float32), np.array([0, 1, 1, 2, 2]))
>>> out = os.path.join(tempfile.mkdtemp(), "p.png")
>>> render_preview(it, out, title="demo").size[0] > 0
True
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from datastack.fields import IMAGE, LABEL, pillow

if TYPE_CHECKING:  # pragma: no cover
    from datastack.fields import Field
    from datastack.iterators.base import DatasetIterator

TILE = 128
CAPTION = 16
MAX_HISTOGRAM_SAMPLES = 100_000
_BACKGROUND = (255, 255, 255)
_INK = (30, 30, 30)
_BAR = (70, 110, 180)


def _caption(fields: Sequence[Field], sample: Sequence[Any]) -> str:
    for fld, value in zip(fields, sample, strict=True):
        if fld.kind == LABEL and fld.names:
            return str(fld.names[int(value)])
    last = sample[-1]
    return str(last.item() if isinstance(last, np.generic) else last)[:18]


def _tile(array: Any) -> Any:
    Image = pillow()
    image = Image.fromarray(np.asarray(array, dtype=np.uint8))
    image = image.convert("RGBA").convert("RGB") if image.mode != "RGB" else image
    image.thumbnail((TILE, TILE))
    return image


def _image_grid(it: DatasetIterator, fields: list[Field], count: int, title: str) -> Any:
    Image = pillow()
    from PIL import ImageDraw

    position = next(i for i, f in enumerate(fields) if f.kind == IMAGE)
    n = min(count, len(it))
    columns = min(n, 8) or 1
    rows = -(-n // columns)
    canvas = Image.new("RGB", (columns * TILE, rows * (TILE + CAPTION) + CAPTION), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), title, fill=_INK)
    for k in range(n):
        sample = it[k]
        x, y = (k % columns) * TILE, (k // columns) * (TILE + CAPTION) + CAPTION
        tile = _tile(sample[position])
        canvas.paste(tile, (x + (TILE - tile.width) // 2, y + (TILE - tile.height) // 2))
        draw.text((x + 4, y + TILE + 2), _caption(fields, sample), fill=_INK)
    return canvas


def _cell(value: Any) -> str:
    if isinstance(value, np.ndarray):
        shown = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v)
                          for v in value.reshape(-1)[:4].tolist())
        return f"[{shown}{', ...' if value.size > 4 else ''}]"
    if isinstance(value, np.generic):
        value = value.item()
    return str(value)[:28]


def _histogram(it: DatasetIterator, fields: list[Field]) -> tuple[list[str], list[int]]:
    target = fields[-1]
    values = np.asarray(it.get_targets(len(fields) - 1))[:MAX_HISTOGRAM_SAMPLES]
    if target.kind == LABEL and target.names:
        counts = np.bincount(values.astype(np.int64), minlength=len(target.names))
        return [str(n)[:12] for n in target.names], counts.tolist()
    if values.dtype.kind not in "biuf" or values.ndim != 1 or not len(values):
        return [], []
    finite = values[np.isfinite(values.astype(np.float64))]
    if not len(finite):
        return [], []
    counts, edges = np.histogram(finite, bins=min(10, max(1, len(np.unique(finite)))))
    return [f"{e:.3g}" for e in edges[:-1]], counts.tolist()


def _table_and_histogram(it: DatasetIterator, fields: list[Field], count: int, title: str
                         ) -> Any:
    Image = pillow()
    from PIL import ImageDraw

    n = min(count, len(it))
    width = max(480, 180 * len(fields))
    labels, counts = _histogram(it, fields)
    height = 40 + 16 * (n + 1) + (170 if counts else 0)
    canvas = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((6, 4), title, fill=_INK)
    step = width // max(1, len(fields))
    for j, fld in enumerate(fields):
        draw.text((6 + j * step, 24), f"{fld.name} ({fld.kind})", fill=_BAR)
    for k in range(n):
        for j, value in enumerate(it[k]):
            draw.text((6 + j * step, 40 + 16 * k), _cell(value), fill=_INK)
    if counts:
        top, base = 40 + 16 * (n + 1), height - 20
        draw.text((6, top), f"targets: {fields[-1].name}", fill=_INK)
        bar = max(8, (width - 12) // len(counts))
        peak = max(counts) or 1
        for i, (label, value) in enumerate(zip(labels, counts, strict=True)):
            x = 6 + i * bar
            draw.rectangle((x, base - int(120 * value / peak), x + bar - 4, base), fill=_BAR)
            draw.text((x, base + 4), label, fill=_INK)
    return canvas


def render_preview(
    it: DatasetIterator, path: str | os.PathLike[str], *, count: int = 16, title: str = ""
) -> Any:
    """Draw a preview of ``it`` (see the module docstring) into the PNG ``path``; return it."""
    fields = list(it.fields.values())
    if any(f.kind == IMAGE for f in fields):
        picture = _image_grid(it, fields, count, title)
    else:
        picture = _table_and_histogram(it, fields, count, title)
    picture.save(os.fspath(path), format="PNG")
    return picture


__all__ = ["render_preview"]
