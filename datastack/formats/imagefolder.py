"""Image folders (``format: imagefolder``): one folder per class, or a manifest.

Sources are archives (``.tar``, ``.tar.gz``, ``.zip``: extracted safely, :mod:`.archives`)
or single image files. Two layouts:

* **folders** (default): ``cat/001.jpg``, ``dog/002.png``... -> fields ``image`` and ``label``
  (class names sorted; the class is an image's parent folder; a later version keeps the
  codes of the classes it knew and gives a new class folder the next code, ``docs/living.md``);
* **manifest**: ``imagefolder: {manifest: labels.csv}`` names a CSV or JSON Lines file (a
  member of the archive or a source of its own) with a ``path`` column (relative to the
  archive root; key ``path:``) and a label column (key ``label:``, default ``label``); its
  other columns become table fields through the shared table policy: fields
  ``image, [features], path, [text...], label``.

Images are copied as their encoded bytes (PNG/JPEG/... exactly as they came); at publish
time each is only *verified* with Pillow (``check: verify``, header and integrity without
decoding the pixels, the pixel limit enforced) or decoded once, one at a time
(``check: decode``, catches truncated JPEGs). A bad image is a FormatError naming the file,
or, with ``on_error: skip``, left out and counted (``skipped`` in the schema).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from numpy.typing import NDArray

from datastack._checks import Checker
from datastack._codes import KnownCodes, continued, known_for, new_labels, new_values_schema
from datastack.errors import FormatError
from datastack.fields import IMAGE, LABEL, Field, image_dtype, image_shape, verify_image
from datastack.formats.archives import ArchiveLimits
from datastack.formats.base import Decoded, Format
from datastack.formats.inputs import RawInput

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp")
_KEYS = ("manifest", "path", "label", "on_error", "check")
_SHOWN = 20


@dataclass(frozen=True)
class ImageFolderOptions:
    """Options of the ``imagefolder:`` block."""

    manifest: str | None = None
    path: str = "path"
    label: str = "label"
    on_error: str = "raise"
    check: str = "verify"


def _relative(raw: RawInput) -> str:
    """An input's path inside its archive (``photos.tar!cat/1.jpg`` -> ``cat/1.jpg``)."""
    return raw.name.split("!", 1)[1] if "!" in raw.name else raw.name


def _read(raw: RawInput) -> bytes:
    with raw.open() as stream:
        return stream.read()


class ImageRows:
    """Encoded image bytes of some inputs, read on demand (a RowSource for the writer)."""

    def __init__(self, inputs: Sequence[RawInput]) -> None:
        self.inputs = list(inputs)

    def __len__(self) -> int:
        return len(self.inputs)

    def take(self, rows: NDArray[np.int64]) -> list[bytes]:
        return [_read(self.inputs[int(i)]) for i in rows]


class KeptRows:
    """Rows ``keep`` (sorted) of a column source: what remains after skipping bad images."""

    def __init__(self, source: Any, keep: NDArray[np.int64]) -> None:
        self.source = source
        self.keep = keep

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, key: Any) -> Any:
        return np.asarray(self.source[self.keep[key]])

    def take(self, rows: NDArray[np.int64]) -> list[Any]:
        return list(self.source.take(self.keep[rows]))


class _Checked:
    """Verify images one at a time; collect modes and what was skipped."""

    def __init__(self, options: ImageFolderOptions) -> None:
        self.options = options
        self.modes: set[str] = set()
        self.skipped: list[str] = []

    def ok(self, raw: RawInput) -> bool:
        try:
            self.modes.add(verify_image(_read(raw), raw.name, full=self.options.check == "decode"))
        except FormatError:
            if self.options.on_error != "skip":
                raise
            self.skipped.append(raw.name)
            return False
        return True

    def image_field(self) -> Field:
        return image_field(sorted(self.modes))

    def extra(self) -> dict[str, Any]:
        return {"skipped": {"count": len(self.skipped), "files": self.skipped[:_SHOWN]}}


class ImageFolderFormat(Format):
    """Image classification folders and manifests (see the module docstring)."""

    name = "imagefolder"
    options_key = "imagefolder"

    def default_options(self) -> ImageFolderOptions:
        return ImageFolderOptions()

    def parse_options(self, raw: Mapping[str, Any], check: Checker) -> ImageFolderOptions:
        check.keys(raw, _KEYS)
        manifest = raw.get("manifest")
        on_error = check.string(raw.get("on_error", "raise"), "on_error")
        if on_error not in ("raise", "skip"):
            raise check.fail("on_error", f"expected raise or skip, got {on_error!r}")
        mode = check.string(raw.get("check", "verify"), "check")
        if mode not in ("verify", "decode"):
            raise check.fail("check", f"expected verify or decode, got {mode!r}")
        return ImageFolderOptions(
            None if manifest is None else check.string(manifest, "manifest"),
            check.string(raw.get("path", "path"), "path"),
            check.string(raw.get("label", "label"), "label"),
            on_error,
            mode,
        )

    def decode(
        self,
        spec: Any,
        inputs: list[RawInput],
        workdir: Path,
        limits: ArchiveLimits,
        *,
        probe: bool = True,
    ) -> Decoded:
        return self.decode_continuing(spec, inputs, workdir, limits, None, probe=probe)

    def decode_continuing(
        self,
        spec: Any,
        inputs: list[RawInput],
        workdir: Path,
        limits: ArchiveLimits,
        known: KnownCodes | None,
        *,
        probe: bool = True,
    ) -> Decoded:
        options = spec.options or ImageFolderOptions()
        if options.manifest is not None:
            return _decode_manifest(options, inputs, workdir, known)
        return _decode_folders(options, inputs, known)


def _is_image(raw: RawInput) -> bool:
    return raw.name.lower().endswith(IMAGE_EXTENSIONS)


def folder_images(
    options: ImageFolderOptions, inputs: Sequence[RawInput], skipped: Sequence[str] | None = None
) -> tuple[_Checked, list[tuple[RawInput, str]]]:
    """The images of ``inputs`` in order with their class folder, each verified (a bad one is
    an error, or left out with ``on_error: skip``); ``skipped``: the names already found bad
    (a part of a folder written after it was verified: nothing is read here)."""
    checked = _Checked(options)
    out: list[tuple[RawInput, str]] = []
    bad = None if skipped is None else set(skipped)
    for raw in inputs:
        if not _is_image(raw):
            continue
        folder = PurePosixPath(_relative(raw)).parent.name
        if not folder:
            raise FormatError(
                f"{raw.name}: an image outside any class folder; the folder layout is "
                "CLASS/IMAGE (cat/001.jpg), or give imagefolder.manifest"
            )
        if (raw.name not in bad) if bad is not None else checked.ok(raw):
            out.append((raw, folder))
    return checked, out


def image_field(modes: Sequence[str]) -> Field:
    """The ``image`` field of images of these Pillow modes."""
    ordered = tuple(sorted(set(modes)))
    return Field("image", IMAGE, image_dtype(ordered), image_shape(ordered), modes=ordered)


def _decode_folders(
    options: ImageFolderOptions, inputs: list[RawInput], known: KnownCodes | None
) -> Decoded:
    checked, images = folder_images(options, inputs)
    groups: dict[str | None, list[tuple[RawInput, str]]] = {}
    for raw, folder in images:
        groups.setdefault(raw.split, []).append((raw, folder))
    if not groups:
        raise FormatError(f"no readable images ({', '.join(IMAGE_EXTENSIONS)}) in the sources")
    folders = [folder for members in groups.values() for _, folder in members]
    before = known_for(known, "label")
    rows = Counter(folders)
    classes = continued(before, rows)
    code = {name: i for i, name in enumerate(classes)}
    found = {} if before is None else {
        "label": {name: rows[name] for name in new_labels(before, classes)}}
    fields = [checked.image_field(), Field("label", LABEL, "int64", (), names=tuple(classes))]
    columns: dict[str | None, dict[str, Any]] = {
        split: {
            "image": ImageRows([raw for raw, _ in members]),
            "label": np.array([code[f] for _, f in members], dtype=np.int64),
        }
        for split, members in groups.items()
    }
    return Decoded({}, None, "label", {"label": classes}, [], fields, columns, {},
                   {**checked.extra(), **new_values_schema(found)})


def _manifest_input(options: ImageFolderOptions, inputs: list[RawInput]) -> RawInput:
    for raw in inputs:
        if options.manifest in (_relative(raw), raw.name, raw.source and raw.source.filename):
            return raw
    shown = ", ".join(_relative(r) for r in inputs[:_SHOWN])
    raise FormatError(f"imagefolder.manifest {options.manifest!r} is not among the inputs: {shown}")


def _decode_manifest(
    options: ImageFolderOptions, inputs: list[RawInput], workdir: Path, known: KnownCodes | None
) -> Decoded:
    from datastack.formats import get_format
    from datastack.formats.tables import TableFormat, stage_table

    manifest = _manifest_input(options, inputs)
    kind = "jsonl" if manifest.name.lower().endswith((".jsonl", ".ndjson")) else "csv"
    fmt = get_format(kind)
    assert isinstance(fmt, TableFormat)
    table_options = dataclasses.replace(
        fmt.default_options(), target=options.label, text=(options.path,)
    )
    table = stage_table(fmt, table_options, [manifest], workdir, known)
    members = {_relative(r): r for r in inputs if r is not manifest}
    [paths] = [v for k, v in table.columns[None].items() if k == options.path]
    checked = _Checked(options)
    images: list[RawInput] = []
    keep: list[int] = []
    for row, rel in enumerate(paths.take(np.arange(len(paths), dtype=np.int64))):
        raw = members.get(str(PurePosixPath(rel)))
        if raw is None:
            raise FormatError(f"{manifest.name}: row {row + 2}: image {rel!r} not found in "
                              "the sources")
        if checked.ok(raw):
            images.append(raw)
            keep.append(row)
    kept = np.asarray(keep, dtype=np.int64)
    columns = {k: KeptRows(v, kept) for k, v in table.columns[None].items()}
    columns["image"] = ImageRows(images)  # type: ignore[assignment]
    fields = [checked.image_field(),
              *[dataclasses.replace(f, dataset=None) for f in table.fields or []]]
    return Decoded({}, table.features, table.target, table.encodings, table.handles, fields,
                   {None: columns}, table.transforms, {**table.schema_extra, **checked.extra()})


FORMAT = ImageFolderFormat()

__all__ = ["FORMAT", "IMAGE_EXTENSIONS", "ImageFolderFormat", "ImageFolderOptions", "ImageRows",
           "folder_images", "image_field"]
