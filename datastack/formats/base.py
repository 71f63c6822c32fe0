"""What an input format is: its spec options, its reader, its raw-stream iterator.

A :class:`Format` is registered under its ``format:`` name (:mod:`datastack.formats`). The
same object serves the three places that need to know a format:

- **spec validation** (:mod:`datastack.specs`): :meth:`Format.parse_options` reads the
  format's own block (``csv:``, ``hdf5:``, ``npz:``...), :meth:`Format.check_sources` checks
  what the format needs of the sources (roles, one file per split...);
- **preprocessing** (:mod:`datastack.preprocessing`): :meth:`Format.decode` turns the raw
  inputs of a dataset into arrays per split, which the canonical writer copies;
- **raw-stream iterators** (:mod:`datastack.iterators`): :meth:`Format.iterator` reads a
  stream in that format directly, with the same parser as preprocessing, so a file read raw
  and the same file once published give the same samples.

Adding a format is one module with a :class:`Format` subclass and one registry entry (or an
entry point in the ``datastack.formats`` group).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from datastack._checks import Checker
from datastack.errors import FormatError
from datastack.fields import Field

if TYPE_CHECKING:  # pragma: no cover
    from datastack._codes import KnownCodes
    from datastack.formats.archives import ArchiveLimits
    from datastack.formats.inputs import RawInput
    from datastack.iterators.base import DatasetIterator
    from datastack.resources import StreamedResource
    from datastack.specs import DatasetSpec, SourceSpec


class ArrayLike(Protocol):
    """What the canonical writer needs from an input array: numpy, memmap or h5py dataset."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype[Any]: ...

    def __getitem__(self, key: Any) -> Any: ...


#: Samples and targets per split: the split a source names, or ``None`` when the spec's
#: ``splits:`` ratios cut the data later.
SplitArrays = dict[str | None, tuple[ArrayLike, ArrayLike | None]]


@dataclass
class Decoded:
    """What a format read from a dataset's inputs: arrays per split and what they mean.

    ``features`` / ``target`` name the columns of tabular data; ``encodings`` maps a column to
    its category labels (code ``i`` is ``labels[i]``). ``handles`` are open files the arrays
    read from; :meth:`close` releases them once the arrays are copied.

    Formats with named fields (tables, images) set ``fields`` and give their data as
    ``columns`` per split (``{split: {field name: array-like or RowSource}}``, see
    :mod:`datastack.canonical.columns`) instead of ``parts``; ``transforms`` map a fixed
    field's blocks on copy (category codes), ``schema_extra`` goes into the schema (e.g. the
    count of skipped images).
    """

    parts: SplitArrays
    features: list[str] | None = None
    target: str | None = None
    encodings: dict[str, list[str]] = field(default_factory=dict)
    handles: list[Any] = field(default_factory=list)
    fields: list[Field] | None = None
    columns: dict[str | None, dict[str, Any]] = field(default_factory=dict)
    transforms: dict[str, Callable[[Any], Any]] = field(default_factory=dict)
    schema_extra: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        for handle in self.handles:
            handle.close()
        self.handles.clear()


@dataclass(frozen=True)
class ArrayNames:
    """Names of the samples/targets arrays inside an HDF5 or NPZ file (``hdf5:``, ``npz:``)."""

    samples: str = "samples"
    targets: str | None = "targets"


def parse_array_names(raw: Mapping[str, Any], check: Checker) -> ArrayNames:
    """The ``samples:``/``targets:`` block shared by the HDF5 and NPZ formats."""
    check.keys(raw, ("samples", "targets"))
    samples = check.string(raw.get("samples", "samples"), "samples")
    targets = raw.get("targets", "targets")
    if targets is not None:
        targets = check.string(targets, "targets")
    return ArrayNames(samples, targets)


class Format(abc.ABC):
    """An input format (see the module docstring). Subclasses set :attr:`name`."""

    #: The ``format:`` value of a spec.
    name: ClassVar[str] = ""
    #: The spec block holding this format's options (``None``: the format has none).
    options_key: ClassVar[str | None] = None

    # -- spec --------------------------------------------------------------------------------
    def default_options(self) -> Any:
        """The options when the spec has no block for this format."""
        return None

    def parse_options(self, raw: Mapping[str, Any], check: Checker) -> Any:
        """Validate the format's spec block (already known to be a mapping)."""
        if raw:
            raise check.fail(None, f"format {self.name!r} takes no options")
        return None

    def options_dict(self, options: Any) -> dict[str, Any] | None:
        """The options as plain data (fingerprinted: what shapes the prepared data)."""
        if options is None:
            return None
        return dataclasses.asdict(options)

    def check_sources(self, sources: Sequence[SourceSpec], check: Checker) -> None:
        """Refuse sources this format cannot read together (called at spec validation)."""
        return None

    # -- preprocessing -----------------------------------------------------------------------
    @abc.abstractmethod
    def decode(
        self,
        spec: DatasetSpec,
        inputs: list[RawInput],
        workdir: Path,
        limits: ArchiveLimits,
        *,
        probe: bool = True,
    ) -> Decoded:
        """Read every input of a dataset into arrays per split (never all in memory when the
        format allows otherwise). ``probe``: open untrusted files in a subprocess first."""

    def decode_continuing(
        self,
        spec: DatasetSpec,
        inputs: list[RawInput],
        workdir: Path,
        limits: ArchiveLimits,
        known: KnownCodes | None,
        *,
        probe: bool = True,
    ) -> Decoded:
        """:meth:`decode`, continuing the category codes ``known`` of the dataset's last
        published version (``docs/living.md``: known labels keep their codes, new ones take
        the next; ``schema_extra`` lists the new ones). Formats that make categories (tables,
        image folders) override it; the others have no codes to keep."""
        return self.decode(spec, inputs, workdir, limits, probe=probe)

    # -- raw streams -------------------------------------------------------------------------
    def iterator(
        self, resources: Sequence[StreamedResource], options: Any = None
    ) -> DatasetIterator:
        """An iterator reading ``resources`` in this format directly (no preprocessing)."""
        raise FormatError(f"format {self.name!r} has no raw-stream iterator; publish it first")

    def __repr__(self) -> str:
        return f"<format {self.name}>"


def group_by_split(inputs: Sequence[RawInput]) -> dict[str | None, list[RawInput]]:
    """Inputs grouped by the split their source names (``None``: not assigned)."""
    groups: dict[str | None, list[RawInput]] = {}
    for raw in inputs:
        groups.setdefault(raw.split, []).append(raw)
    return groups


def one_per_split(inputs: Sequence[RawInput], what: str) -> dict[str | None, RawInput]:
    """The single input of each split group (formats that hold everything in one file)."""
    out: dict[str | None, RawInput] = {}
    for group, members in group_by_split(inputs).items():
        if len(members) != 1:
            found = [m.name for m in members]
            raise FormatError(f"{what}: expected one file per split, got {found}")
        out[group] = members[0]
    return out


__all__ = [
    "ArrayLike",
    "ArrayNames",
    "Decoded",
    "Format",
    "SplitArrays",
    "group_by_split",
    "one_per_split",
    "parse_array_names",
]
