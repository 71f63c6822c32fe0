"""Input formats: one module per format, one registry (``format:`` name -> :class:`Format`).

The registry is what spec validation, preprocessing and the raw-stream iterators all ask, so a
format's parser exists once (see :mod:`datastack.formats.base`). Built in: ``csv``, ``jsonl``,
``json``, ``parquet``, ``excel`` (tables, one typing policy: :mod:`datastack.formats.tables`),
``imagefolder``, ``npy``, ``npz``, ``hdf5``, ``idx``. Another package adds one with an entry
point in the ``datastack.formats`` group naming its :class:`Format` instance, or by calling
``FORMATS.register(name, "module:OBJECT")``.

Containers are not formats: gzip (``.gz``), tar and zip sources are expanded safely first
(:mod:`datastack.formats.archives`, :mod:`datastack.formats.inputs`).

>>> get_format("csv").options_key, format_names()[:3]
('csv', ['csv', 'excel', 'hdf5'])
>>> import io
>>> from datastack.resources import StreamedResource
>>> it = open_iterator("csv", [StreamedResource.from_bytes("t.csv", b"a,y\\n1,x\\n2,y\\n")])
>>> it[1][0].tolist(), int(it[1][1]), it.encodings
([2.0], 1, {'y': ['x', 'y']})
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from datastack._registry import Registry
from datastack.formats.base import ArrayNames, Decoded, Format, SplitArrays

if TYPE_CHECKING:  # pragma: no cover
    from datastack.iterators.base import DatasetIterator
    from datastack.resources import StreamedResource

#: ``format:`` name -> the format object.
FORMATS: Registry[Format] = Registry("format", entry_points="datastack.formats")
for _name in ("csv", "npy", "npz", "hdf5", "idx", "parquet", "excel", "imagefolder"):
    FORMATS.register(_name, f"datastack.formats.{_name}:FORMAT")
FORMATS.register("jsonl", "datastack.formats.jsonl:JSONL_FORMAT")
FORMATS.register("json", "datastack.formats.jsonl:JSON_FORMAT")


def get_format(name: str) -> Format:
    """The :class:`Format` registered as ``name`` (ConfigurationError listing the known ones)."""
    return FORMATS.get(name)


def format_names() -> list[str]:
    """Every known format name, sorted."""
    return FORMATS.names()


def open_iterator(
    name: str, resources: Sequence[StreamedResource], options: Any = None
) -> DatasetIterator:
    """An iterator over ``resources`` read directly in format ``name`` (no preprocessing).

    ``options`` is the format's options object (e.g. :class:`~datastack.formats.csv.CsvOptions`);
    default: the format's defaults. Samples equal those of the same file once published.
    """
    fmt = get_format(name)
    return fmt.iterator(resources, options if options is not None else fmt.default_options())


__all__ = [
    "FORMATS",
    "ArrayNames",
    "Decoded",
    "Format",
    "SplitArrays",
    "format_names",
    "get_format",
    "open_iterator",
]
