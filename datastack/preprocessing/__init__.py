"""Preprocessing: raw sources -> the canonical HDF5 file of a dataset version.

Public API::

    preprocess(spec, sources, out_path, *, limits=ArchiveLimits(), probe_hdf5=True) -> PreparedData
    Preprocessor            # Protocol: (spec, sources, out_path) -> PreparedData
    PreparedData            # splits {name: length}, schema, encodings
    write_arrays(out_path, name, {split: (samples, targets)}) -> PreparedData
    read_prepared(path) -> PreparedData          # check a canonical file
    ArchiveLimits, extract_archive, CappedGzipReader      # safe decompression (datastack.formats)
    split_sizes, split_indices                           # split arithmetic (datastack.splits)

Heavy imports (h5py) happen inside the functions that need them.

>>> from datastack.preprocessing import split_sizes
>>> split_sizes(150, {"train": 0.8, "test": 0.2})
{'train': 120, 'test': 30}
"""

from __future__ import annotations

from datastack.canonical.writer import (
    FORMAT_VERSION,
    CanonicalWriter,
    PreparedData,
    read_prepared,
    write_arrays,
)
from datastack.formats.archives import (
    DEFAULT_LIMITS,
    ArchiveLimits,
    CappedGzipReader,
    extract_archive,
)
from datastack.pipeline.prepare import Preprocessor, load_preprocessor, preprocess
from datastack.splits import split_indices, split_sizes

__all__ = [
    "DEFAULT_LIMITS",
    "FORMAT_VERSION",
    "ArchiveLimits",
    "CanonicalWriter",
    "CappedGzipReader",
    "PreparedData",
    "Preprocessor",
    "extract_archive",
    "load_preprocessor",
    "preprocess",
    "read_prepared",
    "split_indices",
    "split_sizes",
    "write_arrays",
]
