"""CIFAR-10 binary version: a custom :class:`~datastack.preprocessing.Preprocessor`.

The archive ``cifar-10-binary.tar.gz`` holds ``cifar-10-batches-bin/data_batch_{1..5}.bin``
(train) and ``test_batch.bin`` (test): records of 1 label byte + 3072 pixel bytes (3 x 32 x 32,
channel-major), plus ``batches.meta.txt`` with the class names. This class is also the worked
example of the ``preprocessor:`` extension point (see ``docs/preprocessing.md``).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datastack.canonical.writer import PreparedData, write_arrays
from datastack.errors import FormatError
from datastack.formats.archives import extract_archive
from datastack.resources import StreamedResource
from datastack.specs import DatasetSpec, SourceSpec

RECORD = 1 + 3 * 32 * 32
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILES = ("test_batch.bin",)


class _Concat:
    """Rows of several (N_i, ...) arrays seen as one array, sliced lazily (writer input)."""

    def __init__(self, parts: Sequence[np.ndarray[Any, Any]]) -> None:
        self.parts = list(parts)
        self.shape = (sum(p.shape[0] for p in parts), *parts[0].shape[1:])
        self.dtype = parts[0].dtype

    def __getitem__(self, key: Any) -> Any:
        if not isinstance(key, slice):
            raise TypeError("_Concat supports row slices only")
        start, stop, _ = key.indices(self.shape[0])
        out, offset = [], 0
        for part in self.parts:
            lo, hi = max(start - offset, 0), min(stop - offset, part.shape[0])
            if lo < hi:
                out.append(np.asarray(part[lo:hi]))
            offset += part.shape[0]
        return np.concatenate(out) if out else np.empty((0, *self.shape[1:]), self.dtype)


def _batches(folder: Path, names: Sequence[str]) -> tuple[_Concat, _Concat]:
    found = {p.name: p for p in folder.rglob("*.bin") if p.is_file() and not p.is_symlink()}
    images, labels = [], []
    for name in names:
        if name not in found:
            raise FormatError(f"cifar10: {name} missing from the archive (found {sorted(found)})")
        size = found[name].stat().st_size
        if size == 0 or size % RECORD:
            raise FormatError(
                f"cifar10: {name} has {size} bytes, not a positive multiple of {RECORD}"
            )
        records = np.memmap(found[name], dtype=np.uint8, mode="r").reshape(-1, RECORD)
        labels.append(records[:, :1].reshape(-1))
        images.append(records[:, 1:].reshape(-1, 3, 32, 32))
    return _Concat(images), _Concat(labels)


class Cifar10Binary:
    """Preprocess ``cifar-10-binary.tar.gz`` into splits train (50,000) and test (10,000)."""

    def __call__(
        self,
        spec: DatasetSpec,
        sources: Sequence[tuple[SourceSpec, StreamedResource]],
        out_path: Path,
    ) -> PreparedData:
        if len(sources) != 1:
            raise FormatError(f"{spec.name}: expected one source (the tarball), got {len(sources)}")
        source, resource = sources[0]
        work = Path(tempfile.mkdtemp(prefix=".datastack-cifar-", dir=Path(out_path).parent))
        try:
            archive = work / "archive"
            resource.copy_to(archive)
            folder = work / "x"
            extract_archive(archive, folder, name=source.filename)
            train = _batches(folder, TRAIN_FILES)
            test = _batches(folder, TEST_FILES)
            classes = [str(c) for c in spec.extra.get("classes", [])]
            meta = list(folder.rglob("batches.meta.txt"))
            if not classes and meta:
                classes = [ln.strip() for ln in meta[0].read_text().splitlines() if ln.strip()]
            return write_arrays(
                out_path,
                spec.name,
                {"train": train, "test": test},
                target="label",
                encodings={"label": classes} if classes else None,
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)


__all__ = ["Cifar10Binary"]
