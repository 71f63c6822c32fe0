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

import importlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from datastack.errors import FormatError, SpecError
from datastack.preprocessing.archives import DEFAULT_LIMITS, ArchiveLimits
from datastack.preprocessing.arrays import Pools, idx_pools, npy_pools, npz_pools
from datastack.preprocessing.csvfmt import CsvParser
from datastack.preprocessing.hdf5fmt import hdf5_pools
from datastack.preprocessing.inputs import RawInput, prepare_inputs
from datastack.preprocessing.splits import split_indices
from datastack.preprocessing.writer import (
    CanonicalWriter,
    PreparedData,
    default_compression,
    read_prepared,
)
from datastack.resources import StreamedResource
from datastack.specs import DatasetSpec, SourceSpec

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
    module_name, _, attr = reference.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise SpecError(
            f"dataset {dataset!r}: key 'preprocessor': cannot import {reference!r} ({exc}); "
            "is the module installed and on sys.path?"
        ) from None
    if isinstance(obj, type):
        obj = obj()
    if not callable(obj):
        raise SpecError(f"dataset {dataset!r}: key 'preprocessor': {reference!r} is not callable")
    return obj  # type: ignore[no-any-return]


def preprocess(
    spec: DatasetSpec,
    sources: Sources,
    out_path: str | os.PathLike[str],
    *,
    limits: ArchiveLimits = DEFAULT_LIMITS,
    probe_hdf5: bool = True,
) -> PreparedData:
    """Convert ``sources`` (in ``spec.sources`` order) into the canonical HDF5 at ``out_path``.

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
        prepared = _convert(spec, inputs, workdir, tmp_out, limits, probe_hdf5)
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
) -> PreparedData:
    features: list[str] | None = None
    target: str | None = None
    encodings: dict[str, list[str]] = {}
    handles: list[Any] = []
    try:
        if spec.format == "csv":
            pools, features, target, encodings = _csv_pools(spec, inputs)
        elif spec.format == "npy":
            pools = npy_pools(inputs, workdir, limits)
        elif spec.format == "idx":
            pools = idx_pools(inputs, workdir, limits)
        elif spec.format == "npz":
            pools = npz_pools(inputs, workdir, limits, spec.npz.samples, spec.npz.targets)
        elif spec.format == "hdf5":
            pools, handles = hdf5_pools(
                inputs, workdir, spec.hdf5.samples, spec.hdf5.targets, subprocess_probe=probe_hdf5
            )
        else:
            raise SpecError(f"dataset {spec.name!r}: key 'format': unsupported {spec.format!r}")
        with CanonicalWriter(out, spec.name, spec.compression) as writer:
            _write_splits(spec, pools, writer)
            return writer.prepared(features, target, encodings)
    finally:
        for handle in handles:
            handle.close()


def _csv_pools(
    spec: DatasetSpec, inputs: list[RawInput]
) -> tuple[Pools, list[str], str | None, dict[str, list[str]]]:
    parser = CsvParser(spec.csv)
    order: list[str | None] = []
    parts = []
    for raw in inputs:
        parts.append(parser.parse(raw))
        order.append(raw.split)
    finished = parser.finish(parts)
    grouped: dict[str | None, list[tuple[Any, Any]]] = {}
    for split, part in zip(order, finished, strict=True):
        grouped.setdefault(split, []).append(part)
    pools: Pools = {
        split: (np.concatenate([p[0] for p in group]), np.concatenate([p[1] for p in group]))
        for split, group in grouped.items()
    }
    return pools, parser.features, parser.target_name, parser.encodings()


def _write_splits(spec: DatasetSpec, pools: Pools, writer: CanonicalWriter) -> None:
    if None not in pools:  # the sources name their splits
        for split, (samples, targets) in pools.items():
            writer.add_split(str(split), samples, targets)
        return
    samples, targets = pools[None]
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
    parts = split_indices(samples.shape[0], spec.splits, spec.seed, labels)
    for split, indices in parts.items():
        writer.add_split(split, samples, targets, indices)


__all__ = ["Preprocessor", "load_preprocessor", "preprocess"]
