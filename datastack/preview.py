"""Pictures of samples, drawn once for ``datastack show NAME --preview FILE.png`` and for the
web page's thumbnails (``datastack.web.samples``), with Pillow.

* :func:`thumbnail` draws one value shown as a picture: an encoded image (refused above
  :data:`MAX_THUMBNAIL_PIXELS` before decoding, JPEGs decoded at a reduced scale) or a
  picture-like array (:func:`picture_like`: ``H x W [x 1|3|4]``, MNIST, CIFAR), at most
  :data:`THUMBNAIL` pixels a side, small pictures enlarged to at least :data:`MIN_SHOWN`.
  An array is subsampled with a strided view *before* anything is converted, so a thumbnail
  of a 4096 x 4096 float64 field costs a few hundred kilobytes, not copies of the field;
* :func:`render_preview` draws the first ``count`` samples of a split: a grid of those
  thumbnails captioned with the label name (or target value) when a field is shown as a
  picture, else a table of the first rows (the web page's cells: :func:`field_cells`, label
  and category names, feature vectors one column per source column) and a histogram of the
  targets.

Reading is bounded: the ``count`` samples of the grid or table are read as one batch (images
left encoded), at most :data:`MAX_HISTOGRAM_SAMPLES` targets for the histogram.

>>> import tempfile, os, numpy as np
>>> from datastack.iterators import SequenceDatasetIterator
>>> it = SequenceDatasetIterator(np.zeros((5, 3), np.float32), np.array([0, 1, 1, 2, 2]))
>>> out = os.path.join(tempfile.mkdtemp(), "p.png")
>>> render_preview(it, out, title="demo").size[0] > 0
True
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from datastack.errors import FormatError
from datastack.fields import IMAGE, LABEL, Field, pillow

if TYPE_CHECKING:  # pragma: no cover
    from datastack.catalog.record import VersionRecord
    from datastack.iterators.base import DatasetIterator

#: Longest side of a thumbnail (pixels); small pictures are enlarged to at least MIN_SHOWN.
THUMBNAIL = 128
MIN_SHOWN = 96
#: Pictures with more pixels than this are not drawn (about 40 megapixels).
MAX_THUMBNAIL_PIXELS = 40_000_000
#: Characters of a text value shown in a table cell.
MAX_TEXT = 300
#: Feature vectors with at most this many named columns are shown one cell per column.
MAX_TABLE_COLUMNS = 32
CAPTION = 16
MAX_HISTOGRAM_SAMPLES = 100_000
_BACKGROUND = (255, 255, 255)
_INK = (30, 30, 30)
_BAR = (70, 110, 180)


# -- which fields are pictures ------------------------------------------------------------------
def picture_like(field: Field) -> bool:
    """Whether a fixed-shape numeric field holds pictures (``H x W [x 1|3|4]``, sides >= 8)."""
    shape = field.shape
    if field.kind != "array" or shape is None or any(d is None for d in shape):
        return False
    dims = [int(d) for d in shape if d is not None]
    if len(dims) == 3 and dims[2] not in (1, 3, 4):
        return False
    return len(dims) in (2, 3) and min(dims[:2]) >= 8 and dims[0] * dims[1] <= 4096 * 4096


def shown_as_image(field: Field) -> bool:
    """Whether a field is drawn as a picture (an image field, or a picture-like array)."""
    return field.kind == IMAGE or picture_like(field)


def target_names(record: VersionRecord) -> tuple[str, ...] | None:
    """Class names of a classic (samples, targets) version's encoded target, if any."""
    schema = record.schema if isinstance(record.schema, dict) else {}
    target = schema.get("target")
    names = (record.encodings or {}).get(str(target)) if target is not None else None
    return tuple(str(n) for n in names) if isinstance(names, list) else None


def shown_fields(it: DatasetIterator, record: VersionRecord | None = None) -> list[Field]:
    """The fields of ``it`` as pictures show them: a classic file's encoded target becomes
    a label with the class names of ``record``."""
    fields = list(it.fields.values())
    names = target_names(record) if record is not None else None
    if len(fields) == 2 and fields[1].names is None and names is not None:
        fields[1] = Field(fields[1].name, LABEL, "int64", (), names=names)
    return fields


# -- table cells --------------------------------------------------------------------------------
def category_names(record: VersionRecord | None) -> dict[str, Sequence[Any]]:
    """Category names by column (the record's encodings, not copied): a categorical
    column's code is shown as its name."""
    encodings = record.encodings if record is not None and isinstance(record.encodings, dict) \
        else {}
    return {str(column): names for column, names in encodings.items()
            if isinstance(names, list)}


def cell_text(field: Field, value: Any, names: Sequence[Any] | None) -> str:
    """A value as a short text (label or category names, a snippet for text)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer() and names is not None:
        value = int(value)  # a category code inside a float feature vector
    if names is not None and isinstance(value, int) and 0 <= value < len(names):
        return str(names[value])[:MAX_TEXT]
    if isinstance(value, str):
        return value if len(value) <= MAX_TEXT else f"{value[:MAX_TEXT]}... ({len(value)} chars)"
    if isinstance(value, (bytes, bytearray)):
        return f"{len(value)} bytes"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, np.ndarray):
        flat = value.reshape(-1)
        shown = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v)
                          for v in flat[:8].tolist())
        more = ", ..." if flat.size > 8 else ""
        return f"[{shown}{more}]" if value.ndim <= 1 else f"{value.shape} [{shown}{more}]"
    return str(value)[:MAX_TEXT]


def expanded(field: Field) -> bool:
    """Whether a feature vector is shown one column per source column (a table row)."""
    shape = field.shape
    return (field.kind == "array" and shape is not None and len(shape) == 1
            and field.columns is not None and len(field.columns) == shape[0]
            and len(field.columns) <= MAX_TABLE_COLUMNS)


def column_names(field: Field) -> list[str]:
    """The table columns of a field (its source columns when :func:`expanded`)."""
    return list(field.columns or ()) if expanded(field) else [field.name]


def field_cells(field: Field, value: Any, categories: dict[str, Sequence[Any]]
                ) -> list[tuple[str, str]]:
    """``(column, text)`` of one field of one sample, as every table shows it."""
    if expanded(field):
        values = np.asarray(value).reshape(-1)
        return [(c, cell_text(field, v, categories.get(c)))
                for c, v in zip(field.columns or (), values, strict=False)]
    names = field.names if field.kind == LABEL else categories.get(field.name)
    return [(field.name, cell_text(field, value, names))]


# -- one thumbnail ------------------------------------------------------------------------------
def _to_uint8(view: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``view`` (already subsampled: small) scaled to 0..255: values in [0, 1] as fractions,
    others from their finite minimum to maximum; NaN as the minimum."""
    if view.dtype == np.uint8:
        return np.ascontiguousarray(view)
    values = np.asarray(view, dtype=np.float64)  # the small view only
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if lo >= 0.0 and hi <= 1.0:
        lo, hi = 0.0, 1.0
    np.nan_to_num(values, copy=False, nan=lo, posinf=hi, neginf=lo)
    values -= lo
    values *= 255.0 / ((hi - lo) or 1.0)
    np.clip(values, 0.0, 255.0, out=values)
    return values.astype(np.uint8)


def _array_picture(value: Any, where: str) -> Any:
    array = np.asarray(value)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise FormatError(f"{where}: an array of shape {array.shape} is not a picture")
    height, width = array.shape[:2]
    if height * width > MAX_THUMBNAIL_PIXELS:
        raise FormatError(f"{where}: {width} x {height} pixels is too large to preview "
                          f"(at most {MAX_THUMBNAIL_PIXELS})")
    step = max(1, -(-max(height, width) // (2 * THUMBNAIL)))
    return pillow().fromarray(_to_uint8(array[::step, ::step]))  # a strided view: no copy


def _encoded_picture(value: bytes | bytearray, where: str) -> Any:
    Image = pillow()
    try:
        image = Image.open(io.BytesIO(bytes(value)))
        if image.width * image.height > MAX_THUMBNAIL_PIXELS:
            raise FormatError(f"{where}: {image.width} x {image.height} pixels is too "
                              f"large to preview (at most {MAX_THUMBNAIL_PIXELS})")
        image.draft("RGB", (THUMBNAIL, THUMBNAIL))  # JPEG: decode at a reduced scale
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise FormatError(f"{where}: not a readable image ({exc})") from None
    return image


def thumbnail(value: Any, where: str = "sample") -> Any:
    """A PIL image of at most :data:`THUMBNAIL` pixels a side (at least :data:`MIN_SHOWN`)
    of an encoded image or a picture-like array (FormatError if unreadable or oversized)."""
    Image = pillow()
    if isinstance(value, (bytes, bytearray)):
        image = _encoded_picture(value, where)
        if image.mode in ("I", "F") or image.mode.startswith("I;16"):  # deeper than 8 bits:
            image = _array_picture(np.asarray(image), where)  # scaled, never clipped
    else:
        image = _array_picture(value, where)
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    side = max(image.width, image.height)
    if side < MIN_SHOWN:
        factor = -(-MIN_SHOWN // side)
        image = image.resize((image.width * factor, image.height * factor), Image.NEAREST)
    return image


def render_thumbnail(value: Any, where: str) -> bytes:
    """The PNG of :func:`thumbnail` (what the web page serves)."""
    out = io.BytesIO()
    thumbnail(value, where).save(out, format="PNG", optimize=False)
    return out.getvalue()


# -- a picture of the first samples -------------------------------------------------------------
def _caption(fields: Sequence[Field], sample: Sequence[Any]) -> str:
    for fld, value in zip(fields, sample, strict=True):
        if fld.kind == LABEL and fld.names and value is not None and (
            0 <= int(value) < len(fld.names)
        ):
            return str(fld.names[int(value)])[:18]
    last = sample[-1]
    return str(last.item() if isinstance(last, np.generic) else last)[:18]


def _image_grid(it: DatasetIterator, fields: list[Field], count: int, title: str) -> Any:
    Image = pillow()
    from PIL import ImageDraw

    position = next(i for i, f in enumerate(fields) if shown_as_image(f))
    encoded = it.with_image_options(decode=False)  # decoded by thumbnail(), as on the web
    rows = encoded.get_samples(range(min(count, len(it))))
    tiles = [thumbnail(sample[position], f"sample {k}") for k, sample in enumerate(rows)]
    tile = max([THUMBNAIL, *(max(t.width, t.height) for t in tiles)])
    columns = min(len(tiles), 8) or 1
    lines = -(-len(tiles) // columns)
    canvas = Image.new("RGB", (columns * tile, lines * (tile + CAPTION) + CAPTION), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), title, fill=_INK)
    for k, (sample, picture) in enumerate(zip(rows, tiles, strict=True)):
        x, y = (k % columns) * tile, (k // columns) * (tile + CAPTION) + CAPTION
        picture = picture if picture.mode == "RGB" else picture.convert("RGBA").convert("RGB")
        canvas.paste(picture, (x + (tile - picture.width) // 2, y + (tile - picture.height) // 2))
        draw.text((x + 4, y + tile + 2), _caption(fields, sample), fill=_INK)
    return canvas


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


def _table_and_histogram(it: DatasetIterator, fields: list[Field], count: int, title: str,
                         categories: dict[str, Sequence[Any]]) -> Any:
    Image = pillow()
    from PIL import ImageDraw

    rows = [[text for fld, value in zip(fields, row, strict=True)
             for _, text in field_cells(fld, value, categories)]
            for row in it.get_samples(range(min(count, len(it))))]
    columns = [f"{c} ({f.kind})" for f in fields for c in column_names(f)]
    width = max(480, 180 * len(columns))
    labels, counts = _histogram(it, fields)
    height = 40 + 16 * (len(rows) + 1) + (170 if counts else 0)
    canvas = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((6, 4), title, fill=_INK)
    step = width // max(1, len(columns))
    for j, column in enumerate(columns):
        draw.text((6 + j * step, 24), column[:28], fill=_BAR)
    for k, texts in enumerate(rows):
        for j, text in enumerate(texts):
            draw.text((6 + j * step, 40 + 16 * k), text[:28], fill=_INK)
    if counts:
        top, base = 40 + 16 * (len(rows) + 1), height - 20
        draw.text((6, top), f"targets: {fields[-1].name}", fill=_INK)
        bar = max(8, (width - 12) // len(counts))
        peak = max(counts) or 1
        for i, (label, value) in enumerate(zip(labels, counts, strict=True)):
            x = 6 + i * bar
            draw.rectangle((x, base - int(120 * value / peak), x + bar - 4, base), fill=_BAR)
            draw.text((x, base + 4), label, fill=_INK)
    return canvas


def render_preview(
    it: DatasetIterator,
    path: str | os.PathLike[str] | None = None,
    *,
    count: int = 16,
    title: str = "",
    record: VersionRecord | None = None,
) -> Any:
    """Draw the first ``count`` samples of the split iterator ``it`` (see the module
    docstring); save it as the PNG ``path`` when given; return the PIL image. ``record``
    (the version's catalog record) names the classes of a classic file's encoded target."""
    fields = shown_fields(it, record)
    if any(shown_as_image(f) for f in fields):
        picture = _image_grid(it, fields, count, title)
    else:
        picture = _table_and_histogram(it, fields, count, title, category_names(record))
    if path is not None:
        picture.save(os.fspath(path), format="PNG")
    return picture


__all__ = [
    "MAX_TABLE_COLUMNS",
    "MAX_TEXT",
    "MAX_THUMBNAIL_PIXELS",
    "MIN_SHOWN",
    "THUMBNAIL",
    "category_names",
    "cell_text",
    "column_names",
    "expanded",
    "field_cells",
    "picture_like",
    "render_preview",
    "render_thumbnail",
    "shown_as_image",
    "shown_fields",
    "target_names",
    "thumbnail",
]
