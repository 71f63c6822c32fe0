"""The YAML dataset spec: parse and validate, with clear errors, before any download.

A spec file holds a ``datasets:`` mapping of dataset name -> definition (see ``docs/specs.md``).
Every problem raises :class:`~datastack.errors.SpecError` naming the file, the dataset, the key
and the reason; unknown keys get a "did you mean" suggestion. Each format validates its own
block (``csv:``, ``hdf5:``...) through :mod:`datastack.formats`.

>>> specs = load_spec('''
... datasets:
...   iris:
...     sources:
...       - url: https://example.org/iris.csv
...         md5: 0123456789abcdef0123456789abcdef
...     format: csv
...     csv: {target: species}
...     splits: {train: 0.8, test: 0.2}
... ''')
>>> specs["iris"].csv.target, specs["iris"].splits
('species', {'train': 0.8, 'test': 0.2})
>>> load_spec("datasets: {iris: {sources: [], formt: csv}}")
Traceback (most recent call last):
...
datastack.errors.SpecError: <string>: dataset 'iris': key 'formt': unknown key; did you mean ...
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from datastack._cron import validate_cron
from datastack.formats.base import ArrayNames
from datastack.formats.csv import CsvOptions
from datastack.specs._load import load_spec
from datastack.specs._parse import parse_spec, select_specs
from datastack.specs.model import (
    COMPRESSIONS,
    DEFAULT_COMPRESSION,
    DatasetSpec,
    Expectations,
    SourceSpec,
)


def load_selected(
    path: str | os.PathLike[str], names: Sequence[str] | None = None
) -> list[DatasetSpec]:
    """The datasets ``names`` of the spec file at ``path`` (all when ``names`` is empty)."""
    return select_specs(load_spec(Path(path)), names, os.fspath(path))


__all__ = [
    "COMPRESSIONS",
    "DEFAULT_COMPRESSION",
    "ArrayNames",
    "CsvOptions",
    "DatasetSpec",
    "Expectations",
    "SourceSpec",
    "load_selected",
    "load_spec",
    "parse_spec",
    "select_specs",
    "validate_cron",
]
