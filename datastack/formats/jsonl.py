"""JSON tables: JSON Lines (``format: jsonl``, one object per line) and JSON (``format: json``,
an array of objects), both read in bounded blocks through the shared table policy.

Columns are the keys of the first record, in order; a later record may leave keys out (missing
values) but not add new ones. Values must be scalars (strings, numbers, booleans as 1/0,
``null`` as missing). Row numbers are line numbers (JSON Lines; blank lines are not records)
or record numbers (JSON).

Hostile input (``docs/formats.md``):

* a line (JSON Lines) or one record (JSON) over :data:`MAX_RECORD_BYTES` is refused;
* nesting deeper than Python's recursion limit (~1000) is a FormatError, never a crash;
* duplicate keys in an object are refused (JSON leaves it undefined which one wins);
* ``NaN``, ``Infinity`` and ``-Infinity`` literals (not JSON, but written by Python's ``json``
  and pandas) are read as floats: NaN is a missing value, infinities are numbers; a literal
  that overflows float64 (``1e400``) is an error, and so is an integer above 2^53 in a
  numeric column (the numbers policy);
* bytes that are not UTF-8 (and lone ``\\uD800``-``\\uDFFF`` escapes) are an error naming
  the row and the column; a BOM is stripped.

JSON Lines are read by pyarrow's streaming JSON reader (:mod:`._arrow_jsonl`), with the
Python reader (:mod:`._jsonl_records`) as the reference and the locator of errors: whatever
pyarrow refuses or may read differently goes to the Python reader, which gives the result and
the error naming the row. A file whose column changes kind (numbers, then strings: legal for a
categorical column) is read correctly, but from that record on at the Python reader's speed.
JSON arrays stay on the Python reader (streamed record by record): pyarrow reads
newline-delimited objects only, and an array would have to be loaded whole or re-framed.

>>> import io
>>> from datastack.formats._table_policy import TableOptions
>>> raw = RawInput(None, "r.jsonl", lambda: io.BytesIO(b'{"t": "good", "y": 1}\\n{"t": "bad"}\\n'))
>>> [b] = JSONL_FORMAT.blocks(raw, TableOptions())
>>> b.names, [c.to_pylist() for c in b.columns], list(b.rows)
(['t', 'y'], [['good', 'bad'], [1.0, None]], [1, 2])
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from typing import Any

from datastack.errors import FormatError
from datastack.formats._arrow_jsonl import arrow_blocks
from datastack.formats._jsonl_records import (
    MAX_RECORD_BYTES,
    Records,
    decode_value,
    python_rows,
)
from datastack.formats._table_policy import Block
from datastack.formats.inputs import RawInput
from datastack.formats.tables import TableFormat, row_blocks

_READ = 1024 * 1024
_BOM = "\ufeff"
_SPACE = re.compile(r"[ \t\n\r]*")


def _blocks(name: str, records: Iterator[tuple[int, Any]]) -> Iterator[Block]:
    names: list[str] = []
    table = Records(name, names)
    return row_blocks(names, ((number, table.row(record, number)) for number, record in records))


class _ArrayReader:
    """The elements of a JSON array read one by one from a text stream (bounded buffer)."""

    def __init__(self, stream: Any, name: str) -> None:
        self.stream = stream
        self.name = name
        self.buffer = ""
        self.pos = 0
        self.eof = False

    def _fill(self) -> bool:
        chunk = "" if self.eof else self.stream.read(_READ)
        self.eof = not chunk
        self.buffer = self.buffer[self.pos :] + chunk
        self.pos = 0
        return bool(chunk)

    def _skip_space(self) -> str:
        while True:
            match = _SPACE.match(self.buffer, self.pos)
            self.pos = match.end() if match else self.pos
            if self.pos < len(self.buffer):
                return self.buffer[self.pos]
            if not self._fill():
                return ""

    def _value(self, number: int) -> Any:
        where = f"{self.name}: row {number}"
        while True:
            try:
                value, end = decode_value(self.buffer, self.pos, where)
                if end < len(self.buffer) or self.eof:
                    self.pos = end
                    return value
            except json.JSONDecodeError as exc:
                if self.eof:
                    raise FormatError(f"{where}: invalid JSON ({exc.msg})") from None
            if len(self.buffer) - self.pos > MAX_RECORD_BYTES:
                raise FormatError(f"{where}: record longer than {MAX_RECORD_BYTES} bytes")
            self._fill()

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        self._fill()
        self.buffer = self.buffer.removeprefix(_BOM)
        if self._skip_space() != "[":
            raise FormatError(f"{self.name}: expected a JSON array of records ('[' ...)")
        self.pos += 1
        number = 0
        while True:
            head = self._skip_space()
            if head == "]":
                self.pos += 1
                if self._skip_space():
                    raise FormatError(f"{self.name}: data after the end of the JSON array")
                return
            if number:
                if head != ",":
                    raise FormatError(f"{self.name}: row {number}: expected ',' or ']' after "
                                      "the record")
                self.pos += 1
                self._skip_space()
            number += 1
            yield number, self._value(number)


class JsonLinesFormat(TableFormat):
    """One JSON object per line (``jsonl:`` block: the table options)."""

    name = "jsonl"
    options_key = "jsonl"

    def blocks(self, raw: RawInput, options: Any) -> Iterator[Block]:
        return arrow_blocks(raw)

    def python_blocks(self, raw: RawInput, options: Any) -> Iterator[Block]:
        """The same blocks by Python's ``json`` (the reference :func:`arrow_blocks` is checked
        against, and the reader that names the row and column of a bad record)."""
        names: list[str] = []
        return row_blocks(names, python_rows(raw, names))


class JsonFormat(TableFormat):
    """A JSON array of objects (``json:`` block: the table options), streamed record by record."""

    name = "json"
    options_key = "json"

    def blocks(self, raw: RawInput, options: Any) -> Iterator[Block]:
        with raw.open() as binary:
            text = io.TextIOWrapper(binary, encoding="utf-8", errors="surrogateescape")  # type: ignore[type-var]
            yield from _blocks(raw.name, iter(_ArrayReader(text, raw.name)))


JSONL_FORMAT = JsonLinesFormat()
JSON_FORMAT = JsonFormat()

__all__ = [
    "JSONL_FORMAT",
    "JSON_FORMAT",
    "MAX_RECORD_BYTES",
    "JsonFormat",
    "JsonLinesFormat",
]
