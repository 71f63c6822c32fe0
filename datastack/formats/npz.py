"""``format: npz``: two named arrays of one ``.npz`` archive per split (``npz:`` block).

Members are read as ``.npy`` (never unpickled); their declared sizes are checked against the
expansion caps before anything is decompressed.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datastack._checks import Checker
from datastack.errors import FormatError, UnsafeArchiveError
from datastack.formats.archives import ArchiveLimits, check_zip_directory
from datastack.formats.base import (
    ArrayLike,
    ArrayNames,
    Decoded,
    Format,
    SplitArrays,
    one_per_split,
    parse_array_names,
)
from datastack.formats.inputs import RawInput
from datastack.formats.npy import read_npy

if TYPE_CHECKING:  # pragma: no cover
    from datastack.iterators.base import DatasetIterator
    from datastack.resources import StreamedResource
    from datastack.specs import DatasetSpec


def _member(
    zf: zipfile.ZipFile, raw: RawInput, name: str, workdir: Path, limits: ArchiveLimits
) -> ArrayLike:
    try:
        info = zf.getinfo(f"{name}.npy")
    except KeyError:
        present = sorted(n.removesuffix(".npy") for n in zf.namelist())
        raise FormatError(f"{raw.name}: no array {name!r} in the npz; it holds {present}") from None
    if info.file_size > limits.max_total_bytes or (
        info.file_size > limits.ratio_floor
        and info.file_size > limits.max_ratio * max(info.compress_size, 1)
    ):
        raise UnsafeArchiveError(f"{raw.name}: array {name!r} expands past the caps; refused")
    member = RawInput(raw.source, f"{raw.name}!{name}", lambda: zf.open(info), info.file_size)
    return read_npy(member, workdir, limits, size=info.file_size)


class NpzFormat(Format):
    """Named arrays of a ``.npz`` (``npz: {samples: x, targets: y}``)."""

    name = "npz"
    options_key = "npz"

    def default_options(self) -> ArrayNames:
        return ArrayNames()

    def parse_options(self, raw: Mapping[str, Any], check: Checker) -> ArrayNames:
        return parse_array_names(raw, check)

    def decode(
        self,
        spec: DatasetSpec,
        inputs: list[RawInput],
        workdir: Path,
        limits: ArchiveLimits,
        *,
        probe: bool = True,
    ) -> Decoded:
        names: ArrayNames = spec.options or ArrayNames()
        parts: SplitArrays = {}
        for group, raw in one_per_split(inputs, "npz").items():
            path = raw.local_path(workdir)
            with open(path, "rb") as stream:
                check_zip_directory(stream, raw.name, limits.max_members)
            try:
                with zipfile.ZipFile(path) as zf:
                    samples = _member(zf, raw, names.samples, workdir, limits)
                    targets = (
                        None
                        if names.targets is None
                        else _member(zf, raw, names.targets, workdir, limits)
                    )
            except (zipfile.BadZipFile, EOFError, OSError) as exc:
                if isinstance(exc, OSError) and exc.errno is not None:
                    raise
                raise FormatError(f"{raw.name}: not a valid .npz (zip) file ({exc})") from None
            parts[group] = (samples, targets)
        return Decoded(parts)

    def iterator(
        self, resources: Sequence[StreamedResource], options: Any = None
    ) -> DatasetIterator:
        from datastack.formats.array_iterators import NPZDatasetIterator

        names = options or ArrayNames()
        return NPZDatasetIterator(resources[0], names.samples, names.targets)


FORMAT = NpzFormat()

__all__ = ["FORMAT", "NpzFormat"]
