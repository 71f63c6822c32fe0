"""``preprocess``: raw sources -> the canonical HDF5 file, dispatching by format or by import path.

>>> import pathlib, tempfile
>>> from datastack.resources import StreamedResource
>>> from datastack.specs import load_spec
>>> spec = load_spec('''datasets: {tiny: {format: csv, sources: [{url: "https://x/t.csv",
...     md5: "00000000000000000000000000000000"}]}}''')["tiny"]
>>> raw = StreamedResource.from_bytes("t.csv", b"a,b,y\\n1,2,0\\n3,4,1\\n")
>>> out = pathlib.Path(tempfile.mkdtemp()) / "tiny.h5"
>>> preprocess(spec, [(spec.sources[0], raw)], out).splits
{'train': 2}
"""

from __future__ import annotations

import os
import pkgutil
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from datastack._codes import KnownCodes
from datastack.canonical.rowids import (
    AppendRefused,
    PreviousVersion,
    current_previous,
    hash_columns,
    identity_of,
    write_row_ids,
)
from datastack.canonical.writer import (
    CanonicalWriter,
    PreparedData,
    classic_fields,
    default_compression,
    read_prepared,
)
from datastack.errors import FormatError, SpecError
from datastack.fields import LABEL, Field
from datastack.formats import SplitArrays, get_format
from datastack.formats.archives import DEFAULT_LIMITS, ArchiveLimits
from datastack.formats.inputs import RawInput, prepare_inputs
from datastack.resources import StreamedResource
from datastack.specs import DatasetSpec, SourceSpec
from datastack.splits import kept_split_indices, tail_split_indices

Sources = Sequence[tuple[SourceSpec, StreamedResource]]


@runtime_checkable
class Preprocessor(Protocol):
    """Turns a dataset's raw sources into the canonical HDF5 file at ``out_path``.

    Any callable with this signature works (a function, or a class with ``__call__``; a class
    named in a spec's ``preprocessor:`` is instantiated without arguments). See
    ``docs/preprocessing.md`` for a worked example.
    """

    def __call__(self, spec: DatasetSpec, sources: Sources, out_path: Path) -> PreparedData: ...


def load_preprocessor(reference: str, dataset: str = "?") -> Preprocessor:
    """Import ``"module.path:attr"``; instantiate it when it is a class.

    >>> load_preprocessor("datastack.builtin.cifar:Cifar10Binary")  # doctest: +ELLIPSIS
    <datastack.builtin.cifar.Cifar10Binary object at ...>
    """
    try:
        obj: Any = pkgutil.resolve_name(reference)
    except (ImportError, AttributeError, ValueError) as exc:
        raise SpecError(
            f"dataset {dataset!r}: key 'preprocessor': cannot import {reference!r} ({exc}); "
            "is the module installed and on sys.path?"
        ) from None
    _check_shape(obj, reference, dataset)
    if isinstance(obj, type):
        obj = obj()
    return obj  # type: ignore[no-any-return]


def _check_shape(obj: Any, reference: str, dataset: str) -> None:
    """A preprocessor is a function, or a class whose instances are called, taking
    ``(spec, sources, out_path)``: anything else (``os:system``, ``sys:exit``, a string) is
    refused before it is called or instantiated."""
    import inspect

    target = obj.__call__ if isinstance(obj, type) else obj
    if not callable(obj) or (isinstance(obj, type) and "__call__" not in vars(obj) and not any(
        "__call__" in vars(base) for base in obj.__mro__[1:-1]
    )):
        raise SpecError(
            f"dataset {dataset!r}: key 'preprocessor': {reference!r} is {type(obj).__name__}, "
            "not a function or a class with __call__(spec, sources, out_path)"
        )
    try:
        signature = inspect.signature(target)
        args = ("self", "spec", "sources", "out") if isinstance(obj, type) else (
            "spec", "sources", "out"
        )
        signature.bind(*args)
    except (TypeError, ValueError):
        raise SpecError(
            f"dataset {dataset!r}: key 'preprocessor': {reference!r} does not take "
            "(spec, sources, out_path); a preprocessor is a function or a class with "
            "__call__(self, spec, sources, out_path)"
        ) from None


def preprocess(
    spec: DatasetSpec,
    sources: Sources,
    out_path: str | os.PathLike[str],
    *,
    limits: ArchiveLimits = DEFAULT_LIMITS,
    probe_hdf5: bool = True,
    known: KnownCodes | None = None,
) -> PreparedData:
    """Convert ``sources`` (in ``spec.sources`` order) into the canonical HDF5 at ``out_path``.

    ``known``: the category codes of the dataset's last published version, continued (known
    labels keep their codes, new ones take the next: ``docs/living.md``); ``None`` for a
    first version (codes over the sorted labels). A custom ``preprocessor:`` chooses its own.

    The file is written under a temporary name next to ``out_path`` and renamed into place only
    when complete; temporary files are removed on success and on error. Raises
    :class:`~datastack.errors.FormatError` for malformed inputs and
    :class:`~datastack.errors.UnsafeArchiveError` for hostile archives.
    """
    out = Path(out_path)
    if spec.preprocessor is not None:
        return _run_custom(spec, sources, out)
    workdir = Path(tempfile.mkdtemp(prefix=".datastack-prep-", dir=out.parent))
    tmp_out = workdir / "out.h5"
    try:
        inputs = prepare_inputs(sources, workdir, limits)
        if not inputs:
            raise FormatError(f"{spec.name}: the sources hold no files to read")
        prepared = _convert(spec, inputs, workdir, tmp_out, limits, probe_hdf5, known)
        os.replace(tmp_out, out)
        return prepared
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run_custom(spec: DatasetSpec, sources: Sources, out: Path) -> PreparedData:
    preprocessor = load_preprocessor(spec.preprocessor or "", spec.name)
    with default_compression(spec.compression):  # its write_arrays calls follow the spec
        result = preprocessor(spec, sources, out)
    if not isinstance(result, PreparedData):
        raise FormatError(
            f"{spec.name}: preprocessor {spec.preprocessor!r} returned {type(result).__name__}, "
            "expected datastack.preprocessing.PreparedData"
        )
    checked = read_prepared(out)
    if checked.splits != result.splits:
        raise FormatError(
            f"{spec.name}: preprocessor {spec.preprocessor!r} reported splits {result.splits} "
            f"but {out.name} holds {checked.splits}"
        )
    result.schema.setdefault("splits", checked.schema["splits"])
    return result


def _convert(
    spec: DatasetSpec,
    inputs: list[RawInput],
    workdir: Path,
    out: Path,
    limits: ArchiveLimits,
    probe_hdf5: bool,
    known: KnownCodes | None = None,
) -> PreparedData:
    if spec.format is None:
        raise SpecError(f"dataset {spec.name!r}: key 'format': missing")
    decoded = get_format(spec.format).decode_continuing(
        spec, inputs, workdir, limits, known, probe=probe_hdf5
    )
    try:
        with CanonicalWriter(out, spec.name, spec.compression) as writer:
            if decoded.fields is not None:
                write_field_splits(
                    spec, decoded.fields, decoded.columns, decoded.transforms, writer,
                    decoded.encodings,
                )
            else:
                _write_splits(spec, decoded, writer)
            return writer.prepared(
                decoded.features, decoded.target, decoded.encodings, decoded.schema_extra
            )
    finally:
        decoded.close()


def _stratify_labels(
    spec: DatasetSpec, fields: Sequence[Field], columns: Any, transforms: Mapping[str, Any]
) -> Any:
    """The final class codes of the label field (else the last field) of all rows."""
    chosen = next((f for f in fields if f.kind == LABEL), fields[-1])
    if chosen.variable or chosen.shape:
        raise FormatError(f"{spec.name}: stratify needs a label or 1-D target field")
    labels = np.asarray(columns[chosen.name][:])
    transform = transforms.get(chosen.name)
    return transform(labels) if transform is not None else labels


def write_field_splits(
    spec: DatasetSpec,
    fields: Sequence[Field],
    split_columns: Mapping[str | None, Mapping[str, Any]],
    transforms: Mapping[str, Any],
    writer: CanonicalWriter,
    encodings: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """Write named fields per split: the splits the sources name, else ``spec.splits`` cut
    from all rows (stratified by the label field when ``spec.stratify``; rows of the version
    being continued keep their split: :func:`cut_splits`), else ``train``."""
    if None not in split_columns:  # the sources name their splits
        for split, columns in split_columns.items():
            writer.add_fields(str(split), fields, columns, None, transforms)
        return
    columns = split_columns[None]
    if not spec.splits:
        writer.add_fields("train", fields, columns, None, transforms)
        return
    labels = _stratify_labels(spec, fields, columns, transforms) if spec.stratify else None
    chosen, ids, identity = cut_splits(spec, fields, columns, transforms, encodings, labels)
    for split, indices in chosen.items():
        writer.add_fields(split, fields, columns, indices, transforms)
        write_row_ids(writer.group(split), ids[indices], identity)


def cut_splits(
    spec: DatasetSpec,
    fields: Sequence[Field],
    columns: Mapping[str, Any],
    transforms: Mapping[str, Any] | None,
    encodings: Mapping[str, Sequence[str]] | None,
    labels: Any,
) -> tuple[dict[str, Any], Any, str]:
    """``(indices per split, row ids, identity)``: ``spec.splits`` cut so that every row of the
    version being continued (:func:`~datastack.canonical.rowids.current_previous`) keeps its
    split and new rows fill the splits towards their ratios (``docs/living.md``)."""
    identity = identity_of(spec.key)
    previous = current_previous()
    if previous is not None and previous.tail:  # only the appended rows (pipeline._tail)
        return _cut_tail(spec, fields, columns, transforms, encodings, labels, previous)
    ids = hash_columns(fields, columns, transforms, encodings, spec.key)
    history = None if previous is None else previous.history(identity, list(spec.splits or {}))
    match = ids
    if history is not None and history.identity != identity:  # the upgrade, a new key:
        match = hash_columns(fields, columns, transforms, encodings, None)
    chosen = kept_split_indices(
        match, spec.splits or {}, spec.seed, labels, None if history is None else history.splits
    )
    return chosen, ids, identity


def _cut_tail(
    spec: DatasetSpec, fields: Sequence[Field], columns: Mapping[str, Any],
    transforms: Mapping[str, Any] | None, encodings: Mapping[str, Sequence[str]] | None,
    labels: Any, previous: PreviousVersion,
) -> tuple[dict[str, Any], Any, str]:
    """:func:`cut_splits` of rows appended after ``previous``'s: their ids and splits are
    those a preparation of every row would give them (``tail_split_indices``)."""
    identity = identity_of(spec.key)
    names = list(spec.splits or {})
    stored = previous.stored_ids(identity) if previous.resource is None else None
    if stored is None or set(stored) != set(names):
        raise AppendRefused(f"{spec.name}: the version before holds no row ids of this key")
    before = np.concatenate([stored[n] for n in names])
    ids = hash_columns(fields, columns, transforms, encodings, spec.key, before=before)
    kept = previous.kept(names, labels is not None)
    chosen = tail_split_indices(len(ids), spec.splits or {}, spec.seed, labels, kept)
    return chosen, ids, identity


def _write_splits(spec: DatasetSpec, decoded: Any, writer: CanonicalWriter) -> None:
    parts: SplitArrays = decoded.parts
    if None not in parts:  # the sources name their splits
        for split, (samples, targets) in parts.items():
            writer.add_split(str(split), samples, targets)
        return
    samples, targets = parts[None]
    if targets is not None and targets.shape[0] != samples.shape[0]:
        raise FormatError(
            f"{spec.name}: {samples.shape[0]} samples but {targets.shape[0]} targets; the "
            "sources must have the same number of rows"
        )
    if not spec.splits:
        writer.add_split("train", samples, targets)
        return
    labels = None
    if spec.stratify:
        if targets is None or len(targets.shape) != 1:
            raise FormatError(f"{spec.name}: stratify needs 1-D targets")
        labels = np.asarray(targets[:])
    fields, columns = _classic_columns(samples, targets, decoded)
    chosen, ids, identity = cut_splits(spec, fields, columns, None, decoded.encodings, labels)
    for split, indices in chosen.items():
        writer.add_split(split, samples, targets, indices)
        write_row_ids(writer.group(split), ids[indices], identity)


def _classic_columns(
    samples: Any, targets: Any, decoded: Any
) -> tuple[list[Field], dict[str, Any]]:
    """The fields a classic (samples, targets) file will have, and their columns."""
    arrays = {role: {"shape": list(array.shape), "dtype": np.dtype(array.dtype).str}
              for role, array in (("samples", samples), ("targets", targets)) if array is not None}
    fields = classic_fields({"all": arrays}, decoded.features, decoded.target, decoded.encodings)
    return fields, dict(zip((f.name for f in fields), (samples, targets), strict=False))


__all__ = ["Preprocessor", "load_preprocessor", "preprocess", "write_field_splits"]
