"""An image folder prepared in parts (``docs/scale.md``): a folder source (stored as a plain
tar) or a plain tar cut into runs of its files (:func:`datastack.formats._parts.cut_parts`,
``kind="members"``), each run staged and written by a worker.

* :func:`stage_folder_part` (worker) reads its part's files in archive order, verifies each
  image (a bad one fails the part, named, or is skipped with ``on_error: skip``) and returns
  what the coordinator decides from: the class folders in order of first appearance and
  each image's class among them, the Pillow modes seen, the skipped files and each row's
  content hash (image bytes and class *name*: independent of codes).
* :func:`folder_decisions` (coordinator) merges them in part order as one process reads
  the files: the classes (sorted, or the last version's codes continued), the ``image``
  field of every mode, the skipped files, the new classes.
* :func:`folder_columns` (worker, when writing) gives the part's images and class codes
  again, without verifying them twice: the files the stage skipped are left out by name.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from datastack.pipeline._part_tasks import PartJob, PartStaged

#: Formats whose folder (tar) sources are cut into runs of files.
FOLDER_PART_FORMATS = ("imagefolder",)


def folder_eligible(spec: Any) -> bool:
    """A class-per-folder image dataset of one whole tar (a folder source, stored as one; no
    manifest, no member)."""
    options = spec.options
    return (spec.format in FOLDER_PART_FORMATS
            and (options is None or getattr(options, "manifest", None) is None)
            and spec.sources[0].compression == "tar" and spec.sources[0].member is None)


@contextlib.contextmanager
def _images(job: PartJob, skipped: list[str] | None
            ) -> Iterator[tuple[Any, list[tuple[Any, str]]]]:
    """The part's images and their class folders (``folder_images``), while its bytes are
    at hand (read in place, or from a copy in the job's scratch folder, removed after)."""
    from datastack.formats._parts import open_part
    from datastack.formats.imagefolder import ImageFolderOptions, folder_images
    from datastack.formats.inputs import part_inputs
    from datastack.storage.chunked import open_raw
    from datastack.store import Store

    spec = job.spec
    raw = open_raw(Store.open(job.storage).storage, job.source)
    workdir = Path(tempfile.mkdtemp(prefix=f"folder-{job.index:06d}-", dir=job.scratch))
    try:
        inputs = part_inputs(spec.sources[job.part.source], raw, job.part,
                             lambda: open_part(raw, job.part), workdir)
        yield folder_images(spec.options or ImageFolderOptions(), inputs, skipped)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _classes(images: list[tuple[Any, str]]) -> tuple[list[str], Any]:
    """The class folders in order of first appearance, and each image's index among them."""
    order: dict[str, int] = {}
    codes = np.array([order.setdefault(folder, len(order)) for _, folder in images], np.int64)
    return list(order), codes


def stage_folder_part(job: PartJob) -> tuple[int, Any, Any, dict[str, Any]]:
    """Phase 1 of a folder's part (see the module docstring): ``(rows, content hashes or
    None, each image's class index, {"classes", "modes", "skipped"})``."""
    from datastack.canonical.rowids import hash_columns
    from datastack.fields import LABEL, Field
    from datastack.formats.imagefolder import ImageRows, image_field

    hashes = None
    with _images(job, None) as (checked, images):
        classes, codes = _classes(images)
        if job.spec.splits:
            fields = [image_field(sorted(checked.modes)),
                      Field("label", LABEL, "int64", (), names=tuple(classes))]
            columns = {"image": ImageRows([raw for raw, _ in images]), "label": codes}
            hashes = hash_columns(fields, columns, None, {"label": classes}, job.spec.key,
                                  numbered=False)
    folder = {"classes": classes, "modes": sorted(checked.modes),
              "skipped": list(checked.skipped)}
    return len(images), hashes, codes, folder


@contextlib.contextmanager
def folder_columns(job: PartJob, skipped: list[str]) -> Iterator[dict[str, Any]]:
    """The part's columns to write: its images (read on demand) and their class codes in
    the part's first-appearance order (the plan's transform makes them final)."""
    from datastack.formats.imagefolder import ImageRows

    with _images(job, skipped) as (_, images):
        yield {"image": ImageRows([raw for raw, _ in images]), "label": _classes(images)[1]}


def folder_decisions(spec: Any, staged: list[PartStaged], known: Any) -> dict[str, Any]:
    """The coordinator's decisions for a folder in parts (keys of ``_parallel._plan``)."""
    from datastack._codes import continued, known_for, new_labels, new_values_schema
    from datastack.errors import FormatError
    from datastack.fields import LABEL, Field
    from datastack.formats._arrow_columns import TargetCodes
    from datastack.formats.imagefolder import _SHOWN, IMAGE_EXTENSIONS, image_field

    rows: Counter[str] = Counter()
    for part in staged:
        names = part.folder["classes"]
        rows.update(dict(Counter(names[int(c)] for c in part.targets)))
    if not sum(rows.values()):
        raise FormatError(f"no readable images ({', '.join(IMAGE_EXTENSIONS)}) in the sources")
    before = known_for(known, "label")
    classes = continued(before, rows)
    position = {name: i for i, name in enumerate(classes)}
    transforms = [{"label": TargetCodes(np.array(
        [position[c] for c in part.folder["classes"]] or [0], np.int64))} for part in staged]
    found = {} if before is None else {
        "label": {name: rows[name] for name in new_labels(before, classes)}}
    skipped = [name for part in staged for name in part.folder["skipped"]]
    extra = {"skipped": {"count": len(skipped), "files": skipped[:_SHOWN]},
             **new_values_schema(found)}
    modes = sorted({m for part in staged for m in part.folder["modes"]})
    fields = [image_field(modes), Field("label", LABEL, "int64", (), names=tuple(classes))]
    return {"fields": fields, "transforms": transforms, "encodings": {"label": classes},
            "features": None, "target": "label", "new_values": extra}


__all__ = ["FOLDER_PART_FORMATS", "folder_columns", "folder_decisions", "folder_eligible",
           "stage_folder_part"]
