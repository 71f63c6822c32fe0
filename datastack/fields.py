"""The field model: named, typed fields of a dataset, and how each kind is stored and read.

One module owns the kinds, so the canonical writer (:mod:`datastack.canonical.writer`),
the readers (:mod:`datastack.canonical.records`) and the PyTorch adapter agree on them:

==========  ===========================================  ==========================================
kind        a sample is                                  stored in a split group as
==========  ===========================================  ==========================================
``array``   a numeric array of one fixed shape           ``<field>`` (N, ...) chunked along N
``label``   an int64 class code (``names`` = classes)     ``<field>`` (N,) int64
``ragged``  a numeric array with variable dimensions     ``<field>/values`` flat, ``offsets`` (N+1),
                                                          ``shapes`` (N, ndim)
``string``  a ``str`` (UTF-8, any length)                ``<field>/values`` uint8, ``offsets``
``bytes``   ``bytes``                                    ``<field>/values`` uint8, ``offsets``
``image``   a decoded ``uint8`` array (H x W [x C])      ``<field>/values`` (encoded PNG/JPEG bytes
                                                          as they came), ``offsets``
==========  ===========================================  ==========================================

Sample ``i`` of a variable-length field is ``values[offsets[i]:offsets[i + 1]]``: offsets are
read once on open, so one random sample costs one contiguous read (one or two storage blocks),
never a walk of an HDF5 global heap. ``docs/fields.md`` has the whole layout.

>>> f = Field("title", STRING)
>>> f.variable, f.to_dict()["kind"], Field.from_dict(f.to_dict()) == f
(True, 'string', True)
>>> flat, shape = encode_value(f, "héllo")
>>> decode_value(f, flat, shape)
'héllo'
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from datastack.errors import FormatError, MissingDependencyError

ARRAY = "array"
LABEL = "label"
RAGGED = "ragged"
STRING = "string"
BYTES = "bytes"
IMAGE = "image"
KINDS = (ARRAY, LABEL, RAGGED, STRING, BYTES, IMAGE)
#: Kinds stored as flat values + offsets.
VARIABLE_KINDS = frozenset({RAGGED, STRING, BYTES, IMAGE})
#: Kinds stored as flat bytes (uint8 values).
BYTE_KINDS = frozenset({STRING, BYTES, IMAGE})
#: Decoded image modes and the channels of each (``None``: H x W).
IMAGE_CHANNELS: dict[str, int | None] = {
    "L": None, "RGB": 3, "RGBA": 4, "LA": 2, "I;16": None, "I": None, "F": None,
}
#: The dtype each decoded mode gives (16-bit, 32-bit integer and float images keep their
#: values; every other mode is 8 bits per channel).
IMAGE_DTYPES = {"I;16": "uint16", "I": "int32", "F": "float32"}
#: The pixel limit, enforced on every open from the header's size (before any decoding);
#: Pillow's own check only raises above twice its limit, so datastack checks this one itself.
MAX_IMAGE_PIXELS = 178_956_970


@dataclass(frozen=True)
class Field:
    """One named, typed field (see the module docstring for the kinds).

    ``shape`` is the shape of one sample with ``None`` for variable dimensions (``None`` as a
    whole: variable rank, e.g. images of mixed modes); ``names`` are the class names of a
    label; ``columns`` the source columns of a table's feature vector; ``modes`` the image
    modes found; ``dataset`` the name of its HDF5 dataset/group in a split (default: ``name``).

    >>> Field("image", IMAGE, "uint8", (None, None, 3), modes=("RGB",))["shape"]
    (None, None, 3)
    """

    name: str
    kind: str
    dtype: str = ""
    shape: tuple[int | None, ...] | None = ()
    names: tuple[str, ...] | None = None
    columns: tuple[str, ...] | None = None
    modes: tuple[str, ...] | None = None
    dataset: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise FormatError(
                f"field {self.name!r}: unknown kind {self.kind!r}; expected one of "
                f"{', '.join(KINDS)}"
            )
        if not self.dtype:
            default = {STRING: "str", BYTES: "bytes", IMAGE: "uint8", LABEL: "int64"}
            object.__setattr__(self, "dtype", default.get(self.kind, "float32"))
        if self.kind == IMAGE and self.shape == ():
            object.__setattr__(self, "shape", image_shape(self.modes or ()))

    @property
    def variable(self) -> bool:
        """Whether samples differ in size (stored as values + offsets)."""
        return self.kind in VARIABLE_KINDS

    @property
    def stored_name(self) -> str:
        """The HDF5 dataset or group holding this field in a split group."""
        return self.dataset or self.name

    def __getitem__(self, key: str) -> Any:
        """Mapping-style access to the description (``field["kind"]``)."""
        if key not in self.to_dict():
            raise KeyError(key)
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (the ``fields`` entry of a schema); empty extras left out."""
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "dtype": self.dtype,
            "shape": None if self.shape is None else list(self.shape),
        }
        for key in ("names", "columns", "modes"):
            value = getattr(self, key)
            if value is not None:
                out[key] = list(value)
        if self.dataset is not None and self.dataset != self.name:
            out["dataset"] = self.dataset
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Field:
        """The inverse of :meth:`to_dict`."""
        shape = data.get("shape")
        tuples = {k: tuple(data[k]) for k in ("names", "columns", "modes") if data.get(k)}
        return cls(
            name=str(data["name"]),
            kind=str(data["kind"]),
            dtype=str(data.get("dtype", "")),
            shape=None if shape is None else tuple(shape),
            dataset=data.get("dataset"),
            **tuples,
        )

    def renamed(self, name: str) -> Field:
        return replace(self, name=name)


def fields_to_schema(fields: Sequence[Field]) -> list[dict[str, Any]]:
    """The ``fields`` entry of a schema."""
    return [f.to_dict() for f in fields]


def fields_from_schema(entries: Sequence[Mapping[str, Any]]) -> dict[str, Field]:
    """An ordered ``name -> Field`` mapping from a schema's ``fields`` entry."""
    return {str(e["name"]): Field.from_dict(e) for e in entries}


def schema_fields(schema: Any, width: int) -> dict[str, Field] | None:
    """The fields a file's schema (dict or JSON text) lists, when there are ``width`` of them."""
    import json

    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError:
            return None
    entries = schema.get("fields") if isinstance(schema, Mapping) else None
    if not entries or len(entries) != width:
        return None
    return fields_from_schema(entries)


def infer_field(name: str, value: Any) -> Field:
    """Describe a field from one sample's value (iterators without a stored schema).

    >>> infer_field("x", np.zeros((2, 3), np.float32)).shape, infer_field("t", "a").kind
    ((2, 3), 'string')
    """
    if isinstance(value, str):
        return Field(name, STRING)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Field(name, BYTES)
    array = np.asarray(value)
    if array.dtype.kind not in "biufc":
        return Field(name, ARRAY, str(array.dtype), tuple(array.shape))
    return Field(name, ARRAY, array.dtype.name, tuple(int(d) for d in array.shape))


def default_names(width: int) -> list[str]:
    """Field names of an iterator with no schema: ``samples``, ``targets``, ``field_2``..."""
    return [("samples", "targets")[i] if i < 2 else f"field_{i}" for i in range(width)]


def object_column(values: Sequence[Any]) -> NDArray[Any]:
    """A 1-D object array holding ``values`` as they are (strings, bytes, ragged arrays).

    >>> object_column([np.zeros(2), np.zeros(3)]).shape
    (2,)
    """
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value
    return out


# -- storage of variable-length values ---------------------------------------------------------
class FlatRows:
    """Rows of a string or bytes field as one flat ``uint8`` buffer and ``offsets`` (N+1,
    from any base): what the writer stores, with no Python object per value."""

    def __init__(self, values: NDArray[np.uint8], offsets: NDArray[np.int64]) -> None:
        self.values = values
        self.offsets = offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def of(cls, block: Any) -> FlatRows | None:
        """A block as flat rows when it is one already or an Arrow string/binary array."""
        if isinstance(block, FlatRows):
            return block
        if not type(block).__module__.startswith("pyarrow"):
            return None
        import pyarrow as pa

        if isinstance(block, pa.ChunkedArray):  # a block of rows: small enough to gather
            block = block.combine_chunks()

        kind = block.type
        wide = pa.types.is_large_string(kind) or pa.types.is_large_binary(kind)
        if not (wide or pa.types.is_string(kind) or pa.types.is_binary(kind)):
            return None
        if block.null_count:
            block = block.fill_null(b"" if pa.types.is_binary(kind) or
                                    pa.types.is_large_binary(kind) else "")
        _, offsets_buffer, data = block.buffers()
        raw = np.frombuffer(offsets_buffer, np.int64 if wide else np.int32)
        offsets = np.asarray(raw[block.offset : block.offset + len(block) + 1], np.int64)
        values = (np.frombuffer(data, np.uint8) if data is not None
                  else np.empty(0, np.uint8))
        return cls(values, offsets)

    def flat(self) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
        """``(values of these rows, sizes)``."""
        return self.values[int(self.offsets[0]) : int(self.offsets[-1])], np.diff(self.offsets)


def encode_value(field: Field, value: Any) -> tuple[NDArray[Any], tuple[int, ...]]:
    """One sample as ``(flat values, shape)`` for the values + offsets layout."""
    if field.kind == STRING:
        if not isinstance(value, str):
            raise FormatError(f"field {field.name!r}: expected a str, got {type(value).__name__}")
        data = value.encode("utf-8", "surrogatepass")
        return np.frombuffer(data, np.uint8), (len(data),)
    if field.kind in BYTE_KINDS:
        if not isinstance(value, (bytes, bytearray, memoryview, np.ndarray)):
            raise FormatError(
                f"field {field.name!r}: expected bytes, got {type(value).__name__}"
            )
        flat = np.frombuffer(bytes(value), np.uint8)
        return flat, (len(flat),)
    array = np.asarray(value, dtype=np.dtype(field.dtype))
    if field.shape is not None and len(field.shape) != array.ndim:
        raise FormatError(
            f"field {field.name!r}: expected {len(field.shape)} dimensions, got shape "
            f"{array.shape}"
        )
    return np.ascontiguousarray(array).reshape(-1), tuple(int(d) for d in array.shape)


def decode_value(
    field: Field,
    flat: NDArray[Any],
    shape: tuple[int, ...] | None = None,
    *,
    image_mode: str | None = None,
    decode_images: bool = True,
    where: str = "",
) -> Any:
    """A stored sample (flat values, per-sample shape) back as the field's Python value."""
    if field.kind == STRING:
        try:
            return flat.tobytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError(f"{where or field.name}: stored text is not UTF-8 ({exc})") from None
    if field.kind == BYTES:
        return flat.tobytes()
    if field.kind == IMAGE:
        data = flat.tobytes()
        if not decode_images:
            return data
        return decode_image(data, mode=image_mode, where=where or field.name)
    if shape is None:
        return flat
    return flat.reshape(shape)


# -- images -----------------------------------------------------------------------------------
def pillow() -> Any:
    """The ``PIL.Image`` module with the pixel limit set (MissingDependencyError if absent)."""
    try:
        from PIL import Image
    except ImportError:
        raise MissingDependencyError(
            "image fields need Pillow: pip install 'datastack[images]'"
        ) from None
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    return Image


def _too_many_pixels(where: str, pixels: str) -> FormatError:
    return FormatError(
        f"{where}: image of {pixels} pixels is over the limit of {MAX_IMAGE_PIXELS} pixels "
        "(datastack.fields.MAX_IMAGE_PIXELS); refused before decoding as a possible "
        "decompression bomb: resize or tile the image, or raise the limit if it is expected"
    )


#: Bits per sample of a Pillow raw mode that stores more than 8 (``RGB;16B``, ``F;64F``...);
#: ``BGR;15``/``BGR;16`` are 5-6-5 packed pixels (no letter suffix), so they do not count.
_DEEP_RAWMODE = re.compile(r";(16|24|32|64)[BLNSF]")
_MODE_BITS = {"I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 32, "F": 32}


def _check_depth(image: Any, where: str) -> None:
    """Refuse an image whose samples are deeper than the mode Pillow decodes it to (a 16-bit
    colour PNG becomes 8-bit RGB, a float64 TIFF float32): never clip silently."""
    for tile in getattr(image, "tile", None) or ():
        args = tile[3] if len(tile) > 3 else None
        rawmode = args if isinstance(args, str) else (
            args[0] if isinstance(args, tuple) and args and isinstance(args[0], str) else ""
        )
        if str(image.mode) == "I" and ";32" in rawmode and "S" not in rawmode.split(";", 1)[1]:
            raise FormatError(
                f"{where}: {image.format or 'image'} with unsigned 32-bit samples ({rawmode}), "
                "which Pillow decodes to signed int32 (values above 2^31 would wrap): refused. "
                "Store it as signed 32-bit or 16-bit"
            )
        match = _DEEP_RAWMODE.search(rawmode)
        if match and int(match[1]) > _MODE_BITS.get(str(image.mode), 8):
            raise FormatError(
                f"{where}: {image.format or 'image'} with {match[1]}-bit samples ({rawmode}) "
                f"that Pillow can only decode to {image.mode} with "
                f"{_MODE_BITS.get(str(image.mode), 8)} bits: refused rather than clipped. "
                "Store single-channel 16-bit, 32-bit integer or 32-bit float images (kept "
                "as uint16, int32, float32), or convert it to 8 bits per channel yourself"
            )


def _open_image(data: bytes, where: str) -> Any:
    Image = pillow()
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        counted = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_many_pixels(where, counted[1] if counted else "more than "
                               f"{2 * MAX_IMAGE_PIXELS}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise FormatError(f"{where}: not a readable image ({exc})") from None
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        image.close()
        raise _too_many_pixels(where, f"{width} x {height} = {width * height}")
    try:
        _check_depth(image, where)
    except FormatError:
        image.close()
        raise
    return image


def decoded_mode(image: Any) -> str:
    """The mode an image decodes to: palette -> RGB or RGBA (with transparency), 1 -> L."""
    mode = str(image.mode)
    if mode == "P" or mode == "PA":
        return "RGBA" if mode == "PA" or "transparency" in image.info else "RGB"
    if mode == "1":
        return "L"
    if mode.startswith("I;16"):
        return "I;16"  # big- and little-endian 16-bit: native uint16
    if mode in IMAGE_CHANNELS:
        return mode
    return "RGB" if mode in ("CMYK", "YCbCr", "LAB", "HSV") else "L"


def decode_image(data: bytes, *, mode: str | None = None, where: str = "image") -> NDArray[Any]:
    """Decode encoded image bytes with Pillow: L -> HxW, RGB -> HxWx3, RGBA -> HxWx4, palette
    -> RGB/RGBA; ``mode`` converts to one mode. Errors are FormatErrors naming ``where``.

    >>> import numpy as np
    >>> buf = io.BytesIO(); pillow().fromarray(np.zeros((2, 3), np.uint8)).save(buf, "PNG")
    >>> decode_image(buf.getvalue()).shape, decode_image(buf.getvalue(), mode="RGB").shape
    ((2, 3), (2, 3, 3))
    """
    image = _open_image(data, where)
    try:
        with image:
            target = mode or decoded_mode(image)
            if target == "I;16" and str(image.mode).startswith("I;16"):
                return np.asarray(image).astype(np.uint16)  # native byte order
            if image.mode != target:
                image = image.convert(target)
            return np.asarray(image)
    except (OSError, ValueError, SyntaxError) as exc:
        raise FormatError(f"{where}: corrupt or truncated image ({exc})") from None


def verify_image(data: bytes, where: str, *, full: bool = False) -> str:
    """Check encoded image bytes without keeping pixels; return the mode they decode to.

    ``full`` decodes the pixels once (catches a truncated JPEG, which ``verify`` cannot)."""
    image = _open_image(data, where)
    try:
        with image:
            mode = decoded_mode(image)
            image.verify()
        if full:
            with _open_image(data, where) as again:
                again.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise FormatError(f"{where}: corrupt or truncated image ({exc})") from None
    return mode


def image_dtype(modes: Sequence[str]) -> str:
    """The dtype of an image field holding ``modes``: ``uint8``, or ``uint16`` / ``int32`` /
    ``float32`` for deeper images (mixed depths: the type that holds them all; each sample
    keeps its own).

    >>> image_dtype(["RGB", "L"]), image_dtype(["I;16"]), image_dtype(["L", "F"])
    ('uint8', 'uint16', 'float32')
    """
    return str(np.result_type(*[np.dtype(IMAGE_DTYPES.get(m, "uint8")) for m in modes or ["L"]]))


def image_shape(modes: Sequence[str]) -> tuple[int | None, ...] | None:
    """The sample shape of an image field holding ``modes`` (None: mixed ranks).

    >>> image_shape(["RGB"]), image_shape(["L"]), image_shape(["L", "RGB"])
    ((None, None, 3), (None, None), None)
    """
    channels = {IMAGE_CHANNELS.get(m) for m in modes}
    if len(channels) != 1:
        return None
    (count,) = channels
    return (None, None) if count is None else (None, None, count)


__all__ = [
    "ARRAY",
    "BYTES",
    "BYTE_KINDS",
    "IMAGE",
    "KINDS",
    "LABEL",
    "MAX_IMAGE_PIXELS",
    "RAGGED",
    "STRING",
    "VARIABLE_KINDS",
    "Field",
    "FlatRows",
    "decode_image",
    "decode_value",
    "default_names",
    "encode_value",
    "fields_from_schema",
    "fields_to_schema",
    "image_dtype",
    "image_shape",
    "infer_field",
    "object_column",
    "pillow",
    "schema_fields",
    "verify_image",
]
