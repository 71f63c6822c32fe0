"""HDF5 passthrough: read two named arrays from an untrusted HDF5 file, safely.

A crafted HDF5 file can crash the HDF5 library (h5py#1183 and several CVEs), and links or
storage pointing outside the file can read local files. So:

1. the file is first opened and walked in a *subprocess* (:func:`probe_file`); a crash, hang or
   error there becomes a :class:`FormatError` in the parent;
2. the walk rejects external links, datasets with external storage and virtual datasets
   anywhere in the file (soft links are not followed during the walk);
3. only then does the parent open the file (read-only) and copy the named arrays in blocks.

Run as ``python -m datastack.formats.hdf5 FILE LABEL SAMPLES [TARGETS]`` to probe by hand.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datastack._checks import Checker
from datastack._env import env_int
from datastack.errors import FormatError, UnsafeArchiveError
from datastack.formats.archives import DEFAULT_LIMITS, ArchiveLimits
from datastack.formats.base import (
    ArrayNames,
    Decoded,
    Format,
    SplitArrays,
    one_per_split,
    parse_array_names,
)
from datastack.formats.inputs import RawInput

if TYPE_CHECKING:  # pragma: no cover
    from datastack.iterators.base import DatasetIterator
    from datastack.resources import StreamedResource
    from datastack.specs import DatasetSpec

PROBE_TIMEOUT = 60.0
MAX_OBJECTS = 100_000
#: Largest HDF5 chunk read from an untrusted file (bytes): h5py decodes a chunk whole.
MAX_CHUNK_BYTES = 256 * 1024 * 1024
#: Chunks one dataset may have (``DATASTACK_MAX_HDF5_CHUNKS``): the chunk index is walked
#: to check what is written, and 2 million one-element chunks are a 112 MB file.
MAX_CHUNKS = 1_000_000
MAX_CHUNKS_ENV = "DATASTACK_MAX_HDF5_CHUNKS"
#: Chunks touched by one read: HDF5 keeps ~2.5 KB of bookkeeping per chunk of a selection,
#: so a read of millions of tiny chunks at once needs gigabytes (:class:`BoundedReads`).
MAX_CHUNKS_PER_READ = 16_384


def max_chunks() -> int:
    """The chunk cap of one dataset (``$DATASTACK_MAX_HDF5_CHUNKS`` or :data:`MAX_CHUNKS`)."""
    return env_int(MAX_CHUNKS_ENV, MAX_CHUNKS, minimum=1)


def chunk_count(shape: Sequence[int], chunks: Sequence[int]) -> int:
    """Chunks a dataset of ``shape`` cut in ``chunks`` has (written or not).

    >>> chunk_count((10, 7), (3, 7))
    4
    """
    return math.prod(-(-int(n) // max(1, int(c))) for n, c in zip(shape, chunks, strict=True))


def check_file(h5file: Any, label: str) -> None:
    """Walk every hard-linked object; raise :class:`FormatError` on anything that reaches out."""
    import h5py

    stack: list[tuple[str, Any]] = [("/", h5file)]
    seen = 0
    visited: set[Any] = set()
    while stack:
        path, group = stack.pop()
        for key in group:
            seen += 1
            if seen > MAX_OBJECTS:
                raise FormatError(f"{label}: more than {MAX_OBJECTS} objects; refused")
            link = group.get(key, getlink=True)
            where = f"{path.rstrip('/')}/{key}"
            if isinstance(link, h5py.ExternalLink):
                raise FormatError(
                    f"{label}: {where} is an external link to {link.filename!r}; external links "
                    "are refused in untrusted files"
                )
            if isinstance(link, h5py.SoftLink):
                continue
            obj = group.get(key)
            if isinstance(obj, h5py.Dataset):
                if obj.is_virtual:
                    raise FormatError(f"{label}: {where} is a virtual dataset; refused")
                if obj.external:
                    raise FormatError(
                        f"{label}: {where} stores its data in external files; refused"
                    )
            elif isinstance(obj, h5py.Group):
                addr = obj.id.addr if hasattr(obj.id, "addr") else id(obj)
                if addr not in visited:
                    visited.add(addr)
                    stack.append((where, obj))


def _check_size(obj: Any, name: str, label: str) -> None:
    """Bound what a dataset declares before anything is read (small files can declare a lot:
    unwritten chunks are fill values, a single chunk can be gigabytes)."""
    limits = DEFAULT_LIMITS
    declared = int(math.prod(obj.shape)) * obj.dtype.itemsize
    if declared > limits.max_total_bytes:
        raise UnsafeArchiveError(
            f"{label}: dataset {name!r} declares {declared} bytes ({obj.shape} of {obj.dtype}), "
            f"over the cap of {limits.max_total_bytes} bytes; refused before reading"
        )
    written = int(obj.id.get_storage_size())  # contiguous data is stored as declared
    if obj.chunks is not None:
        chunk = int(math.prod(obj.chunks)) * obj.dtype.itemsize
        if chunk > MAX_CHUNK_BYTES:
            raise UnsafeArchiveError(
                f"{label}: dataset {name!r} has chunks of {chunk} bytes ({obj.chunks}); at most "
                f"{MAX_CHUNK_BYTES} bytes per chunk are read (one chunk is decoded whole); "
                "refused before reading"
            )
        total, cap = chunk_count(obj.shape, obj.chunks), max_chunks()
        if total > cap:
            raise UnsafeArchiveError(
                f"{label}: dataset {name!r} is cut into {total} chunks of {obj.chunks} "
                f"({obj.shape} of {obj.dtype}); at most {cap} chunks per dataset are read "
                f"({MAX_CHUNKS_ENV}); refused before reading. Rewrite it with larger chunks "
                "(e.g. h5repack -l CHUNK=...) or raise the setting"
            )
        # What is written is what has chunks allocated, whatever they compress to: a fully
        # written, very compressible dataset is not "unwritten".
        written = min(declared, int(obj.id.get_num_chunks()) * chunk)
    if declared > limits.ratio_floor and declared > limits.max_ratio * max(written, 1):
        raise UnsafeArchiveError(
            f"{label}: dataset {name!r} declares {declared} bytes but only {written} are "
            "written (the rest are fill values): it is mostly unwritten and would expand "
            "without bound; refused"
        )


class BoundedReads:
    """An h5py dataset whose reads along the first axis touch at most ``max_chunks`` chunks
    each (split into pieces and joined), so memory stays bounded however small the chunks;
    everything else is the dataset's."""

    def __init__(self, dataset: Any, max_chunks: int = MAX_CHUNKS_PER_READ) -> None:
        self.dataset = dataset
        self.rows: int | None = None
        chunks = dataset.chunks
        if chunks is not None and dataset.ndim >= 1:
            per_band = chunk_count(dataset.shape[1:], chunks[1:]) if dataset.ndim > 1 else 1
            self.rows = max(1, max_chunks // max(1, per_band)) * int(chunks[0])

    def __getattr__(self, name: str) -> Any:
        return getattr(self.dataset, name)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Any) -> Any:
        import numpy as np

        step = self.rows
        n = int(self.dataset.shape[0]) if self.dataset.ndim else 0
        if step is not None and isinstance(key, slice) and key.step in (None, 1):
            start, stop, _ = key.indices(n)
            if stop - start > step:
                out = np.empty((stop - start, *self.dataset.shape[1:]), self.dataset.dtype)
                for lo in range(start, stop, step):
                    hi = min(lo + step, stop)
                    out[lo - start : hi - start] = self.dataset[lo:hi]
                return out
        elif step is not None and isinstance(key, np.ndarray) and key.ndim == 1 and (
            len(key) > step and key.dtype.kind in "iu"
        ):
            return np.concatenate([self.dataset[key[i : i + step]]
                                   for i in range(0, len(key), step)])
        return self.dataset[key]


def _describe(h5file: Any, name: str, label: str) -> dict[str, Any]:
    import h5py

    obj = h5file.get(name)
    if not isinstance(obj, h5py.Dataset):
        found = sorted(h5file.keys())
        raise FormatError(f"{label}: no dataset {name!r} in the file; top level holds {found}")
    if obj.dtype.kind not in "biufc" or obj.dtype.names is not None:
        raise FormatError(f"{label}: dataset {name!r} has non-numeric dtype {obj.dtype}")
    if obj.ndim < 1:
        raise FormatError(f"{label}: dataset {name!r} is a scalar; expected (N, ...)")
    _check_size(obj, name, label)
    for index in range(obj.id.get_create_plist().get_nfilters()):
        code = obj.id.get_create_plist().get_filter(index)[0]
        if not h5py.h5z.filter_avail(code):
            raise FormatError(
                f"{label}: dataset {name!r} uses HDF5 filter {code}, which this installation "
                "cannot decode; store it uncompressed or with gzip/lzf"
            )
    return {"shape": list(obj.shape), "dtype": obj.dtype.str}


def inspect(path: str | Path, names: Sequence[str], label: str) -> dict[str, Any]:
    """Open ``path``, check it and describe the named datasets (runs in the probe process)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            check_file(f, label)
            return {name: _describe(f, name, label) for name in names}
    except FormatError:
        raise
    except Exception as exc:  # h5py raises OSError, KeyError, RuntimeError... on bad files
        reason = f"{type(exc).__name__}: {exc}"
        raise FormatError(f"{label}: not a readable HDF5 file ({reason})") from None


def probe_file(
    path: Path, names: Sequence[str], label: str, timeout: float = PROBE_TIMEOUT
) -> None:
    """Run :func:`inspect` in a subprocess; turn a crash, hang or error into FormatError."""
    command = [sys.executable, "-m", "datastack.formats.hdf5", str(path), label, *names]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise FormatError(
            f"{label}: probing the HDF5 file took over {timeout:g} s; refused"
        ) from None
    if done.returncode == 0:
        return
    message = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode == 3 and message:
        raise FormatError(message)
    raise FormatError(
        f"{label}: the HDF5 library failed on this file (probe exit code {done.returncode}: "
        f"{done.stderr.strip()[-300:]!r}); the file is corrupt or hostile"
    )


class Hdf5Format(Format):
    """Two named arrays of an HDF5 file per split (``hdf5: {samples: x, targets: y}``)."""

    name = "hdf5"
    options_key = "hdf5"

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
        """Open each split's file safely (probed in a subprocess) and return its datasets.

        The returned :class:`Decoded` holds the open ``h5py.File`` objects: close it.
        """
        import h5py

        options: ArrayNames = spec.options or ArrayNames()
        names = [options.samples] + ([options.targets] if options.targets else [])
        decoded = Decoded({})
        parts: SplitArrays = decoded.parts
        try:
            for group, raw in one_per_split(inputs, "hdf5").items():
                path = raw.local_path(workdir)
                if probe:
                    probe_file(path, names, raw.name)
                inspect(path, names, raw.name)
                handle = h5py.File(path, "r")
                decoded.handles.append(handle)
                parts[group] = (
                    BoundedReads(handle[options.samples]),
                    BoundedReads(handle[options.targets]) if options.targets else None,
                )
        except BaseException:
            decoded.close()
            raise
        return decoded

    def iterator(
        self, resources: Sequence[StreamedResource], options: Any = None
    ) -> DatasetIterator:
        from datastack.canonical.hdf5 import HDF5DatasetIterator

        names = options or ArrayNames()
        return HDF5DatasetIterator(
            resources[0], "/", samples=names.samples, targets=names.targets or "targets"
        )


FORMAT = Hdf5Format()


def _main(argv: list[str]) -> int:
    path, label, *names = argv
    try:
        print(json.dumps(inspect(path, names, label)))
    except FormatError as exc:
        print(str(exc))
        return 3
    return 0


__all__ = [
    "FORMAT",
    "MAX_CHUNKS",
    "MAX_CHUNKS_PER_READ",
    "MAX_OBJECTS",
    "PROBE_TIMEOUT",
    "BoundedReads",
    "Hdf5Format",
    "check_file",
    "chunk_count",
    "inspect",
    "max_chunks",
    "probe_file",
]


if __name__ == "__main__":  # pragma: no cover - exercised through probe()
    raise SystemExit(_main(sys.argv[1:]))
