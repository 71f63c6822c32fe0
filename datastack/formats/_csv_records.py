"""CSV records by Python's ``csv`` module, with the bounds of :mod:`datastack.formats.csv`:
the reader of the header (and ``skip_rows``), the reference the Arrow reader
(:mod:`._arrow_csv`) is tested against, and the reader that names the row of a malformed
record (ragged, NUL byte, oversized field or line, too many columns, undecodable bytes)."""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import re
from collections.abc import Generator, Iterator
from typing import IO, TYPE_CHECKING, Any

from datastack.errors import FormatError
from datastack.formats.inputs import RawInput
from datastack.formats.tables import MAX_COLUMNS, TooManyColumns

if TYPE_CHECKING:  # pragma: no cover
    from datastack.formats.csv import CsvOptions

MAX_FIELD = 128 * 1024
MAX_LINE = 64 * 1024 * 1024
_SURROGATE = re.compile("[\udc80-\udcff]")


class _DecodedLines:
    """Decode a binary stream line by line, counting physical lines (for error messages).

    Undecodable bytes become surrogate escapes and set :attr:`invalid`, so the caller can name
    the column holding them."""

    def __init__(self, binary: Any, encoding: str, delimiter: str = ",") -> None:
        self._reader = io.BufferedReader(binary, 1024 * 1024)
        self._delimiter = delimiter
        #: delimiters seen since the current record began (reset by the caller per record):
        #: a record with too many fields is refused before the csv module builds it
        self.record_fields = 1
        self._decoder = codecs.getincrementaldecoder(encoding)("surrogateescape")
        self._strip_bom = codecs.lookup(encoding).name == "utf-8"
        self.count = 0
        self.invalid = False
        #: bytes of the stream read so far (whole lines: where the next record starts)
        self.consumed = 0

    def __iter__(self) -> _DecodedLines:
        return self

    def __next__(self) -> str:
        self.count += 1
        line = self._reader.readline(MAX_LINE + 1)
        self.consumed += len(line)
        if not line:
            tail = self._decoder.decode(b"", final=True)
            if tail:
                return tail
            raise StopIteration
        if len(line) > MAX_LINE:
            raise csv.Error(f"line {self.count} is longer than {MAX_LINE} bytes")
        text = self._decoder.decode(line)
        if self.count == 1 and self._strip_bom:
            text = text.removeprefix("\ufeff")
        if _SURROGATE.search(text):
            self.invalid = True
        self.record_fields += text.count(self._delimiter)
        if self.record_fields > MAX_COLUMNS:
            raise TooManyColumns(self.count)
        return text


def _records(
    raw: RawInput, options: CsvOptions, span: list[int] | None = None,
    stream: IO[bytes] | None = None,
) -> Generator[tuple[int, list[str]], None, None]:
    """``(line number, fields)`` of every non-empty record after ``skip_rows``; ``span``
    (when given) holds the byte offsets where the record last yielded starts and ends;
    ``stream`` (left open) is read instead of opening ``raw``."""
    csv.field_size_limit(MAX_FIELD)
    with contextlib.nullcontext(stream) if stream is not None else raw.open() as binary:
        lines = _DecodedLines(binary, options.encoding, options.delimiter)
        reader = csv.reader(lines, delimiter=options.delimiter, strict=True)
        skipped = 0
        while True:
            try:
                lines.record_fields = 1
                start = lines.consumed
                fields = next(reader)
            except StopIteration:
                return
            except TooManyColumns as exc:
                raise FormatError(
                    f"{raw.name}: row {exc.args[0]}: more than {MAX_COLUMNS} fields in one "
                    f"record; tables are limited to {MAX_COLUMNS} columns (is the delimiter "
                    f"{options.delimiter!r} right? DATASTACK_MAX_COLUMNS raises the limit)"
                ) from None
            except UnicodeDecodeError as exc:  # codecs without surrogateescape support
                raise FormatError(
                    f"{raw.name}: row {lines.count}: bytes not valid {options.encoding} "
                    f"({exc.reason}); set csv.encoding"
                ) from None
            except csv.Error as exc:
                raise FormatError(
                    f"{raw.name}: row {reader.line_num}: malformed CSV ({exc}); fields are "
                    f"limited to {MAX_FIELD} bytes"
                ) from None
            if skipped < options.skip_rows:
                skipped += 1
                lines.invalid = False
                continue
            if not fields or fields == [""]:
                continue
            for col, value in enumerate(fields):
                if "\x00" in value:
                    raise FormatError(
                        f"{raw.name}: row {reader.line_num}, column {col}: NUL byte in field"
                    )
                if lines.invalid and _SURROGATE.search(value):
                    raise FormatError(
                        f"{raw.name}: row {reader.line_num}: bytes not valid {options.encoding} "
                        f"in column {col}; set csv.encoding to the file's encoding"
                    )
            if span is not None:
                span[:] = [start, lines.consumed]
            yield reader.line_num, fields


def header_of(
    raw: RawInput, options: CsvOptions, stream: IO[bytes] | None = None
) -> tuple[list[str], int, int]:
    """``(column names, byte offset where the data records start, line number before)``:
    ``skip_rows`` and the header read by Python's ``csv`` (bounded: fields, lines, columns)
    from ``stream`` (left open, read past the header) or a fresh ``raw.open()``."""
    span: list[int] = []
    records = _records(raw, options, span, stream)
    try:
        for line, fields in records:
            shown = fields if options.header else [""] * len(fields)
            names = _header(raw.name, line, shown, options.delimiter)
            return (names, span[1], line) if options.header else (names, span[0], 0)
    finally:
        records.close()
    raise FormatError(f"{raw.name}: no data rows (the file is empty or only a header)")


def check_whole_file(raw: RawInput, options: CsvOptions) -> None:
    """Read every record with Python's ``csv``: raises the FormatError that names the row of
    a malformed record (ragged, NUL byte, oversized field, undecodable bytes), if any."""
    for _ in data_rows(raw, options, []):
        pass


def line_of_record(raw: RawInput, options: CsvOptions, index: int) -> int:
    """The line number (1-based, where it ends) of data record ``index`` (0-based)."""
    for k, (line, _) in enumerate(data_rows(raw, options, [])):
        if k == index:
            return line
    raise IndexError(index)


def _header(name: str, line: int, fields: list[str], delimiter: str) -> list[str]:
    names = [f.strip() or f"column_{i}" for i, f in enumerate(fields)]
    if len(set(names)) != len(names):
        raise FormatError(f"{name}: row {line}: duplicate column names in header {names}")
    if len(names) < 2:
        raise FormatError(
            f"{name}: row {line}: found {len(names)} column; need features and a target "
            f"(is the delimiter {delimiter!r} right?)"
        )
    return names


def data_rows(
    raw: RawInput, options: CsvOptions, names: list[str]
) -> Iterator[tuple[int, list[str]]]:
    """The data records; fills ``names`` from the header (or ``column_<i>``) first."""
    for line, fields in _records(raw, options):
        if not names:
            shown = fields if options.header else [""] * len(fields)
            names.extend(_header(raw.name, line, shown, options.delimiter))
            if options.header:
                continue
        if len(fields) != len(names):
            raise FormatError(
                f"{raw.name}: row {line}: expected {len(names)} fields, got {len(fields)} "
                "(ragged row); fix the file, rows are never dropped"
            )
        yield line, fields


__all__ = ["MAX_FIELD", "MAX_LINE", "check_whole_file", "data_rows", "header_of", "line_of_record"]
