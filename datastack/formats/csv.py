"""CSV tables: the tokenizer of delimited text; typing is the shared table policy.

The policy (typed columns, categorical codes, NaN for missing values, text and feature
columns, float32 features) lives in :mod:`datastack.formats._table_policy`, shared with the
other table formats; this module turns CSV bytes into blocks of columns for it:

* completely empty lines are not rows and are skipped; every other line must have exactly the
  header's number of fields. Ragged rows, NUL bytes, fields over 128 KiB, lines over 64 MiB,
  undecodable bytes (naming row and column) and files with no data rows raise
  :class:`FormatError` naming the row (1-based line) and column; a UTF-8 byte order mark is
  stripped.

>>> import io
>>> raw = RawInput(None, "x.csv", lambda: io.BytesIO(b"a,b,cls\\n1,2,x\\n3,,y\\n"))
>>> [block] = CsvFormat().blocks(raw, CsvOptions(target="cls"))
>>> block.names, [c.to_pylist() for c in block.columns], list(block.rows)
(['a', 'b', 'cls'], [['1', '3'], ['2', ''], ['x', 'y']], [2, 3])
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from datastack._checks import Checker
from datastack.formats._arrow_csv import arrow_blocks
from datastack.formats._csv_records import MAX_FIELD, data_rows
from datastack.formats._table_policy import (
    DEFAULT_MISSING,
    TABLE_KEYS,
    Block,
    parse_table_keys,
)
from datastack.formats.inputs import RawInput
from datastack.formats.tables import TableDatasetIterator, TableFormat, row_blocks

if TYPE_CHECKING:  # pragma: no cover
    from datastack.resources import StreamedResource

_CSV_KEYS = ("header", "skip_rows", "delimiter", "encoding")


@dataclass(frozen=True)
class CsvOptions:
    """Options of the ``csv:`` block (all optional)."""

    header: bool = True
    skip_rows: int = 0
    target: str | int | None = None
    delimiter: str = ","
    categorical: tuple[str | int, ...] = ()
    missing: tuple[str, ...] = DEFAULT_MISSING
    encoding: str = "utf-8"
    text: tuple[str | int, ...] = ()
    features: tuple[str | int, ...] | None = None
    dtype: str = "float32"


def parse_csv_options(raw: Mapping[str, Any], check: Checker) -> CsvOptions:
    """Validate a ``csv:`` block (see ``docs/specs.md``)."""
    check.keys(raw, (*_CSV_KEYS, *TABLE_KEYS))
    header = check.boolean(raw.get("header", True), "header")
    skip_rows = check.integer(raw.get("skip_rows", 0), "skip_rows")
    shared = parse_table_keys(raw, check)
    named = [shared["target"], *shared["categorical"], *shared["text"], *(shared["features"] or ())]
    if not header and any(isinstance(ref, str) for ref in named):
        key = "target" if isinstance(shared["target"], str) else "categorical"
        raise check.fail(key, "columns given by name but header is false; use indices")
    delimiter = check.string(raw.get("delimiter", ","), "delimiter")
    if len(delimiter) != 1 or delimiter in "\r\n\"" or delimiter.isalnum():
        raise check.fail("delimiter", f"expected one separator character, got {delimiter!r}")
    encoding = check.string(raw.get("encoding", "utf-8"), "encoding")
    try:
        "".encode(encoding)
    except LookupError:
        raise check.fail("encoding", f"unknown text encoding {encoding!r}") from None
    return CsvOptions(header=header, skip_rows=skip_rows, delimiter=delimiter,
                      encoding=encoding, **shared)


class CsvFormat(TableFormat):
    """Delimited text tables (``csv:`` block): numeric features, categorical codes, NaN."""

    name = "csv"
    options_key = "csv"
    options_class = CsvOptions

    def parse_options(self, raw: Mapping[str, Any], check: Checker) -> CsvOptions:
        return parse_csv_options(raw, check)

    def blocks(self, raw: RawInput, options: Any) -> Iterator[Block]:
        return arrow_blocks(raw, options)

    def python_blocks(self, raw: RawInput, options: Any) -> Iterator[Block]:
        """The same blocks by Python's ``csv`` module (the reference :func:`arrow_blocks` is
        checked against, and the reader that names the row of a malformed record)."""
        names: list[str] = []
        return row_blocks(names, data_rows(raw, options, names))


FORMAT = CsvFormat()

class CSVDatasetIterator(TableDatasetIterator):
    """Samples ``(features, text..., target)`` of a CSV resource, parsed once per process.

    Pass ``options`` (a :class:`~datastack.formats.csv.CsvOptions`, the spec's ``csv:``
    block), or the same options as keywords.

    >>> from datastack.resources import StreamedResource
    >>> data = b"a,b,label\\n1,2,x\\n3,4.5,y\\n"
    >>> it = CSVDatasetIterator(StreamedResource.from_bytes("t.csv", data))
    >>> it[1][0].tolist(), int(it[1][1]), it.encodings, it.column_names
    ([3.0, 4.5], 1, {'label': ['x', 'y']}, ['a', 'b', 'label'])
    """

    def __init__(
        self,
        resource: StreamedResource,
        *,
        options: CsvOptions | None = None,
        **keywords: Any,
    ) -> None:
        if options is not None and keywords:
            raise TypeError("pass either options= or CSV option keywords, not both")
        for key in ("categorical", "missing", "text", "features"):
            if keywords.get(key) is not None:
                keywords[key] = tuple(keywords[key])
        super().__init__(resource, "csv", options or CsvOptions(**keywords))


__all__ = [
    "DEFAULT_MISSING",
    "FORMAT",
    "MAX_FIELD",
    "CSVDatasetIterator",
    "CsvFormat",
    "CsvOptions",
    "parse_csv_options",
]
