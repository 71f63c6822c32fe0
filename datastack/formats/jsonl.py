"""JSON tables: JSON Lines (``format: jsonl``, one object per line) and JSON (``format: json``,
an array of objects), both read in bounded blocks through the shared table policy.

Columns are the keys of the first record, in order; a later record may leave keys out (missing
values) but not add new ones. Values must be scalars (strings, numbers, booleans as 1/0,
``null`` as missing).

Hostile input (``docs/formats.md``):

* a line (JSON Lines) or one record (JSON) over :data:`MAX_RECORD_BYTES` is refused;
* nesting deeper than Python's recursion limit (~1000) is a FormatError, never a crash;
* duplicate keys in an object are refused (JSON leaves it undefined which one wins);
* ``NaN``, ``Infinity`` and ``-Infinity`` literals (not JSON, but written by Python's ``json``
  and pandas) are read as floats: NaN is a missing value, infinities are numbers;
* bytes that are not UTF-8 are an error naming the row and the column; a BOM is stripped.

>>> import io
>>> raw = RawInput(None, "r.jsonl", lambda: io.BytesIO(b'{"t": "good", "y": 1}\\n{"t": "bad"}\\n'))
>>> [b] = JSONL_FORMAT.blocks(raw, TableOptions())
>>> b.names, [list(c) for c in b.columns], list(b.rows)
(['t', 'y'], [['good', 'bad'], [1, None]], [1, 2])
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Generator, Iterator
from typing import Any

from datastack.errors import FormatError
from datastack.formats._numbers import json_float
from datastack.formats._table_policy import Block
from datastack.formats.inputs import RawInput
from datastack.formats.tables import MAX_COLUMNS, TableFormat, TooManyColumns, row_blocks

#: Largest JSON Lines line / JSON array element.
MAX_RECORD_BYTES = 64 * 1024 * 1024
_READ = 1024 * 1024
#: Undecodable bytes (surrogate escapes) and lone surrogates written as ``\\uXXXX`` escapes.
_SURROGATE = re.compile("[\ud800-\udfff]")
_BOM = "\ufeff"
_SPACE = re.compile(r"[ \t\n\r]*")


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len(pairs) > MAX_COLUMNS:
        raise TooManyColumns(len(pairs))
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Duplicate(key)
        out[key] = value
    return out


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_float=json_float)


def _decode(text: str, pos: int, where: str) -> tuple[Any, int]:
    """One JSON value of ``text`` at ``pos`` -> ``(value, end)``, errors as FormatErrors."""
    try:
        return _DECODER.raw_decode(text, pos)
    except _Duplicate as exc:
        raise FormatError(f"{where}: duplicate key {exc.args[0]!r} in an object; keep one"
                          ) from None
    except TooManyColumns as exc:
        raise FormatError(f"{where}: {exc.args[0]} keys in one record; tables are limited to "
                          f"{MAX_COLUMNS} columns (DATASTACK_MAX_COLUMNS raises the limit)"
                          ) from None
    except RecursionError:
        raise FormatError(f"{where}: JSON nested too deeply (refused); tables hold flat records"
                          ) from None


class _Records:
    """Turn JSON objects into rows of the columns fixed by the first one."""

    def __init__(self, name: str, names: list[str]) -> None:
        self.name = name
        self.names = names  # filled from the first record
        self.position: dict[str, int] = {}

    def row(self, record: Any, number: int) -> list[Any]:
        if not isinstance(record, dict):
            raise FormatError(f"{self.name}: row {number}: expected an object, got "
                              f"{type(record).__name__}")
        if not self.names:
            if not record:
                raise FormatError(f"{self.name}: row {number}: the first record has no keys "
                                  "(its keys are the columns of the table)")
            bad = [k for k in record if _SURROGATE.search(k)]
            if bad:
                raise FormatError(f"{self.name}: row {number}: key {bad[0]!r}: bytes not "
                                  "valid UTF-8 (or a lone \\uD800-\\uDFFF escape)")
            self.names.extend(str(k) for k in record)
            self.position = {k: i for i, k in enumerate(self.names)}
        out: list[Any] = [None] * len(self.names)
        for key, value in record.items():
            if key not in self.position:
                raise FormatError(f"{self.name}: row {number}: key {key!r} is not a column of "
                                  f"the first record ({', '.join(self.names)})")
            if isinstance(value, (dict, list)):
                raise FormatError(f"{self.name}: row {number}, column {key!r}: nested JSON "
                                  f"value ({type(value).__name__}); tables take scalar values")
            if isinstance(value, str) and _SURROGATE.search(value):
                raise FormatError(f"{self.name}: row {number}, column {key!r}: bytes not valid "
                                  "UTF-8 (or a lone \\uD800-\\uDFFF escape)")
            out[self.position[key]] = value
        return out


def _blocks(name: str, records: Iterator[tuple[int, Any]]) -> Iterator[Block]:
    names: list[str] = []
    table = _Records(name, names)
    return row_blocks(names, ((number, table.row(record, number)) for number, record in records))


def _text_lines(raw: RawInput) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of every line that is not blank (``str.strip()``: Unicode
    whitespace), decoded with surrogate escapes; a BOM opening the file is stripped."""
    with raw.open() as binary:
        reader = io.BufferedReader(binary, _READ)  # type: ignore[arg-type,type-var]
        number = 0
        while True:
            line = reader.readline(MAX_RECORD_BYTES + 1)
            number += 1
            if not line:
                return
            if len(line) > MAX_RECORD_BYTES:
                raise FormatError(f"{raw.name}: row {number}: line longer than "
                                  f"{MAX_RECORD_BYTES} bytes; refused")
            text = line.decode("utf-8", "surrogateescape")
            if number == 1:
                text = text.removeprefix(_BOM)
            if text.strip():
                yield number, text


def _lines(raw: RawInput) -> Iterator[tuple[int, Any]]:
    for number, text in _text_lines(raw):
        where = f"{raw.name}: row {number}"
        try:
            value, end = _decode(text, len(text) - len(text.lstrip()), where)
        except json.JSONDecodeError as exc:
            raise FormatError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})"
                              ) from None
        if text[end:].strip():
            raise FormatError(f"{where}: more than one JSON value on the line")
        yield number, value


def python_rows(
    raw: RawInput, names: list[str]
) -> Generator[tuple[int, list[Any]], None, None]:
    """``(line number, cells)`` of every record, in the columns of the first record (which
    fill ``names``); raises the FormatError naming the row and column of a bad record."""
    table = _Records(raw.name, names)
    for number, record in _lines(raw):
        yield number, table.row(record, number)


def record_line(raw: RawInput, index: int) -> int:
    """The line number of record ``index`` (0-based; blank lines are not records), read by
    the Python reader: a bad record before it raises its own FormatError (a reader that
    counted records differently, or read one Python refuses, never names a wrong row)."""
    for k, (number, _) in enumerate(python_rows(raw, [])):
        if k == index:
            return number
    raise IndexError(index)


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
                value, end = _decode(self.buffer, self.pos, where)
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
        from datastack.formats._arrow_jsonl import arrow_blocks

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
    "python_rows",
    "record_line",
]
