"""CSV records as Arrow record batches: pyarrow's streaming reader with every column as text.

The header (and ``skip_rows``) is read first by Python's ``csv`` module with the bounds of
:mod:`._csv_records` (field size, line length, column count); pyarrow's streaming
reader (:func:`pyarrow.csv.open_csv`) then reads the records from the byte where the data
starts, with the header's names and every column typed ``string``, so typing stays the
table policy's (:mod:`._table_policy`, per batch with Arrow compute). Quoted newlines are
allowed (``newlines_in_values``), empty lines are skipped, as by the Python reader.

What pyarrow does not check, or reports without a row, is handed to the Python reader: a NUL
byte (seen in the raw bytes as they stream), an oversized field (from the batch's string
lengths), a ragged record or undecodable bytes (pyarrow raises) -- the Python reader reads the
file again and raises the FormatError that names the row and column. Row numbers (the line
where a record ends, as the Python reader counts them) are known only when an error names
one: :class:`~datastack.formats.tables.RowsOnDemand` finds them by reading the file again up
to that record.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

from datastack.errors import FormatError
from datastack.formats._csv_records import (
    MAX_FIELD,
    check_whole_file,
    header_of,
    line_of_record,
)
from datastack.formats._table_policy import Block
from datastack.formats.inputs import RawInput, RecordingStream
from datastack.formats.tables import RowsOnDemand

if TYPE_CHECKING:  # pragma: no cover
    from datastack.formats.csv import CsvOptions

#: Bytes pyarrow parses at a time (a record longer than this is refused by pyarrow).
BLOCK_BYTES = 4 * 1024 * 1024


def _pyarrow_csv() -> Any:
    import pyarrow.csv

    return pyarrow.csv


class _NulByte(Exception):
    """A NUL byte in the stream: the Python reader names its row."""


class _Guarded:
    """``first`` then the rest of ``stream``; raises :class:`_NulByte` on a NUL byte and
    counts the quote characters (an odd count: a quote left open, which pyarrow takes as a
    value running to the end of the file)."""

    def __init__(self, stream: IO[bytes], first: bytes) -> None:
        self.stream = stream
        self.closed = False
        self._pending = first
        self.quotes = 0

    def read(self, size: int = -1) -> bytes:
        if size > 0 and len(self._pending) >= size:
            data, self._pending = self._pending[:size], self._pending[size:]
        else:
            data = self._pending + self.stream.read(size - len(self._pending) if size > 0
                                                    else size)
            self._pending = b""
        if b"\x00" in data:
            raise _NulByte
        if len(data) > 1 and data.endswith(b"\r"):
            # pyarrow (26) drops the LF of a CRLF inside a quoted value when a block ends
            # between the two: a block never ends on a CR (tests/fields/test_arrow_tables.py)
            data, self._pending = data[:-1], b"\r" + self._pending
        self.quotes += data.count(b'"')
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


def arrow_blocks(raw: RawInput, options: CsvOptions) -> Iterator[Block]:
    """The data records of a CSV input as blocks of Arrow string columns."""
    pcsv = _pyarrow_csv()
    import pyarrow as pa

    read = pcsv.ReadOptions(block_size=BLOCK_BYTES, use_threads=True,
                            encoding=options.encoding)
    parse = pcsv.ParseOptions(delimiter=options.delimiter, newlines_in_values=True,
                              ignore_empty_lines=True)
    convert = pcsv.ConvertOptions(strings_can_be_null=False, null_values=[],
                                  quoted_strings_can_be_null=False, check_utf8=True)
    first = 0
    with raw.open() as stream:
        recording = RecordingStream(stream)
        names, offset, _ = header_of(raw, options, recording)  # type: ignore[arg-type]
        read.column_names = names
        convert.column_types = {n: pa.string() for n in names}
        guarded = _Guarded(stream, bytes(recording.kept[offset:]))
        try:
            reader = pcsv.open_csv(guarded, read_options=read,
                                   parse_options=parse, convert_options=convert)
            for batch in reader:
                if batch.num_rows == 0:
                    continue
                _check_sizes(batch, raw, options)
                locate = functools.partial(line_of_record, raw, options)
                yield Block(names, batch.columns, RowsOnDemand(locate, first, batch.num_rows))
                first += batch.num_rows
            if guarded.quotes % 2:  # a quote left open (or a lone quote inside a value)
                check_whole_file(raw, options)  # the Python reader names the row, if malformed
        except (_NulByte, pa.ArrowException) as exc:
            if first == 0 and "Empty CSV file" in str(exc):
                return  # a header and no records: the caller says "no data rows"
            raise _error(raw, options, exc) from None


def _check_sizes(batch: Any, raw: RawInput, options: CsvOptions) -> None:
    import pyarrow.compute as pc

    for column in batch.columns:
        longest = pc.max(pc.binary_length(column)).as_py()
        if longest is not None and longest > MAX_FIELD:
            raise _error(raw, options, None)


def _error(raw: RawInput, options: CsvOptions, exc: BaseException | None) -> FormatError:
    """The Python reader's error for this input (it names the row), else pyarrow's."""
    try:
        check_whole_file(raw, options)
    except FormatError as found:
        return found
    shown = str(exc).splitlines()[0] if exc is not None and str(exc) else "malformed record"
    if "straddling" in shown:
        shown = f"a record longer than {BLOCK_BYTES // (1024 * 1024)} MiB"
    return FormatError(f"{raw.name}: malformed CSV ({shown[:200]}); check the quoting and "
                       "the delimiter of the file")


__all__ = ["BLOCK_BYTES", "arrow_blocks"]
