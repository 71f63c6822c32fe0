"""JSON Lines records as Arrow record batches: pyarrow's streaming JSON reader, checked.

The first records are read by Python's ``json`` (:func:`._jsonl_records.python_rows`):
they fix the columns (the keys of the first record, in order) and their Arrow types (a
string is ``string``, a boolean ``bool``, every number ``float64`` so that integers and
floats may mix in a column; a key that is ``null`` in the first record takes the type of its
first value in the next records, up to :data:`LOOKAHEAD` of them or 1 MiB, ``string`` if
none). pyarrow's streaming reader (:func:`pyarrow.json.open_json`) then reads the file -- the
first records' bytes handed on, so the file is read once -- with that schema, a key that is
not a column being an error, and the table policy types each batch with Arrow compute.

The Python reader stays the reference, and takes over whenever pyarrow's reading may differ:

* **pyarrow raises** (malformed JSON, a key not in the first record, a nested value, a
  duplicate key, bytes that are not UTF-8, a record longer than :data:`BLOCK_BYTES`, or a
  column whose values change kind -- numbers, then strings: legal for a categorical column):
  the records from the batch that failed on are read by the Python reader (which also
  re-reads and checks the records before them, so an error anywhere names its row and
  column). A file whose columns change kind is read correctly, at the Python reader's speed
  (about 5x slower);
* **a value pyarrow may have read differently**: bytes that are not UTF-8 in a string
  (pyarrow keeps them as they are) and a NaN with its sign bit set (pyarrow reads ``-NaN``,
  not JSON) hand that batch and the rest to the Python reader; a float of magnitude 2^53 or
  more, an infinity or a negative zero make the input's bytes be read once more for the
  literals that give them differently (an integer of 16 digits or more, which pyarrow
  rounds to a double; ``Inf`` or a literal beyond float64, which pyarrow reads as inf; the
  integer ``-0``, 0 for Python): if one is there, the Python reader takes over too, which
  keeps integers exact and refuses what is not JSON (``1e20``, ``Infinity`` and ``-0.0``
  alone stay on Arrow);
* **what pyarrow accepts and Python refuses, seen in the bytes as they stream**: two values on
  one line (``}`` then ``{``), or a record across lines (fewer records than non-blank lines):
  at the end, the Python reader reads the file and raises the error naming the row (a false
  alarm -- ``"} {"`` inside a string -- costs that read and changes nothing).

Row numbers are line numbers (blank lines are not records, as for the Python reader), found
only when an error names one (:class:`~datastack.formats.tables.RowsOnDemand`).
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterator
from typing import IO, Any

import numpy as np

from datastack.errors import FormatError
from datastack.formats._jsonl_records import python_rows, record_line
from datastack.formats._numbers import EXACT_INTEGER
from datastack.formats._table_policy import Block
from datastack.formats.inputs import RawInput, RecordingStream
from datastack.formats.tables import RowsOnDemand, row_blocks

#: Bytes pyarrow parses at a time (a longer record goes to the Python reader).
BLOCK_BYTES = 4 * 1024 * 1024
#: Records looked at for the type of a key that is null in the first record.
LOOKAHEAD = 1000
#: ... within the first bytes of the input (the read-ahead is kept until pyarrow reads it).
LOOKAHEAD_BYTES = 1024 * 1024
_JOINED = re.compile(rb"\}[ \t\r]*\{")
_JOIN_START = re.compile(rb"[ \t\r]*\{")
_BLANK = re.compile(rb"\n[ \t\r]*(?=\n)")
_CONTENT = re.compile(rb"[^ \t\r\n]")
#: Literals pyarrow reads differently from Python, looked for when a batch holds a value
#: one of them may give: the integer -0 (pyarrow: -0.0); an infinity that is not written
#: ``Infinity`` (pyarrow reads ``Inf``, and a literal just beyond float64, to inf); an
#: integer of 16 digits or more (pyarrow rounds it to a double). Bytes inside a string may
#: match: the Python reader then reads the rest, slower, with the same result.
_MINUS_ZERO = re.compile(rb"-0[,}\] \t\r\n]")
_NOT_INFINITY = re.compile(rb"Inf(?!inity)|\d[eE]\+?\d|\d{300}")
_BIG_INTEGER = re.compile(rb"(?<![.\d])\d{16,}(?![.\deE])")
_OVERLAP = 320
_READ = 1024 * 1024
_NOT_SPACE = re.compile(rb"[^ \t\r]")
_BOM = b"\xef\xbb\xbf"


def _pyarrow_json() -> Any:
    import pyarrow.json

    return pyarrow.json


class _Switch(Exception):
    """A batch pyarrow may have read differently: the Python reader takes over."""


class _Watched:
    """``first`` then the rest of ``stream``, counting non-blank lines and seeing two values
    on one line as the bytes go by."""

    def __init__(self, stream: IO[bytes], first: bytes) -> None:
        self.stream = stream
        self.closed = False
        self._pending = first
        self.lines = 0  # complete lines, blank or not
        self.blank = 0  # complete lines of spaces, tabs and CRs only
        self.content = False  # the line being read so far holds more than whitespace
        self.joined = False  # "}" then "{" on one line (maybe inside a string)
        self._brace = False  # the bytes so far end with "}" and whitespace
        self._offset = 0  # bytes of a BOM opening the stream seen so far (not content)

    def read(self, size: int = -1) -> bytes:
        if size > 0 and len(self._pending) >= size:
            data, self._pending = self._pending[:size], self._pending[size:]
        elif self._pending:
            data = self._pending + self.stream.read(size - len(self._pending) if size > 0
                                                    else size)
            self._pending = b""
        else:
            data = self.stream.read(size)
        if data:
            self._scan(self._past_bom(data))
        return data

    def _past_bom(self, data: bytes) -> bytes:
        """``data`` without the bytes of a BOM opening the stream (cut anywhere)."""
        if self._offset >= len(_BOM):
            return data
        head = _BOM[self._offset :]
        n = 0
        while n < min(len(head), len(data)) and data[n] == head[n]:
            n += 1
        self._offset = len(_BOM) if n < min(len(head), len(data)) else self._offset + n
        return data[n:]

    def _scan(self, data: bytes) -> None:
        if (self._brace and _JOIN_START.match(data)) or _JOINED.search(data):
            self.joined = True
        self._brace = data.rstrip(b" \t\r").endswith(b"}") or (
            self._brace and not _NOT_SPACE.search(data))
        first = data.find(b"\n")
        if first < 0:
            self.content = self.content or bool(_CONTENT.search(data))
            return
        if not (self.content or _CONTENT.search(data, 0, first)):
            self.blank += 1
        self.blank += len(_BLANK.findall(data))
        self.lines += data.count(b"\n")
        self.content = bool(_CONTENT.search(data, data.rfind(b"\n") + 1))

    def records(self) -> int:
        """Lines holding more than whitespace (a record each, in a valid file)."""
        return self.lines - self.blank + (1 if self.content else 0)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


def _arrow_type(value: Any) -> Any:
    import pyarrow as pa

    if isinstance(value, str):
        return pa.string()
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, (int, float)):
        return pa.float64()
    return None


def schema_of(raw: RawInput, stream: RecordingStream | None = None) -> Any:
    """The Arrow schema of the first record's keys (types: module docstring), or ``None``
    when the Python reader must read the file (no record, an error in the first records).
    ``stream`` (left open) is read instead of opening ``raw``."""
    import pyarrow as pa

    names: list[str] = []
    types: dict[str, Any] = {}
    rows = python_rows(raw, names, stream)
    try:
        for _, cells in itertools.islice(rows, LOOKAHEAD):
            for name, cell in zip(names, cells, strict=True):
                if name not in types and cell is not None:
                    types[name] = _arrow_type(cell)
            if len(types) == len(names) or (
                stream is not None and len(stream.kept) > LOOKAHEAD_BYTES
            ):
                break
        if not names:
            return None
        return pa.schema([(n, types.get(n) or pa.string()) for n in names])
    except (FormatError, ValueError, pa.ArrowException):  # the Python reader says why
        return None
    finally:
        rows.close()


class _Checks:
    """Whether a batch holds a value pyarrow may have read differently from Python."""

    def __init__(self, raw: RawInput) -> None:
        self.raw = raw
        self.found: dict[re.Pattern[bytes], bool] = {}  # looked for once each

    def changed(self, batch: Any) -> bool:
        """Bytes that are not UTF-8 in a string (pyarrow keeps them), or a float listed in
        the module docstring."""
        import pyarrow as pa

        for column in batch.columns:
            if pa.types.is_string(column.type):
                try:
                    column.validate(full=True)
                except pa.ArrowInvalid:
                    return True
            elif pa.types.is_floating(column.type) and self._changed_floats(column):
                return True
        return False

    def _changed_floats(self, column: Any) -> bool:
        values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
        with np.errstate(invalid="ignore"):
            big = np.abs(values) >= EXACT_INTEGER
            signed = np.signbit(values)
            if not (big.any() or signed.any()):
                return False
            if bool((signed & np.isnan(values)).any()):  # -NaN: not JSON
                return True
            infinite = bool(np.isinf(values[big]).any())
            finite = bool(np.isfinite(values[big]).any())
            zero = bool((signed & (values == 0)).any())
        return (infinite and self._holds(_NOT_INFINITY)) or (
            finite and self._holds(_BIG_INTEGER)) or (zero and self._holds(_MINUS_ZERO))

    def _holds(self, pattern: re.Pattern[bytes]) -> bool:
        """Whether the input's bytes match ``pattern`` (read once per pattern, only when a
        batch holds a value that may come from such a literal)."""
        if pattern not in self.found:
            self.found[pattern] = _search(self.raw, pattern)
        return self.found[pattern]


def _search(raw: RawInput, pattern: re.Pattern[bytes]) -> bool:
    with raw.open() as stream:
        tail = b""
        while chunk := stream.read(_READ):
            if pattern.search(tail + chunk):
                return True
            tail = chunk[-_OVERLAP:]
    return False


def _python_from(raw: RawInput, skip: int) -> Iterator[Block]:
    """The blocks of the Python reader from record ``skip`` on (the records before are read
    too, so that an error in them is raised, naming its row)."""
    names: list[str] = []
    return row_blocks(names, itertools.islice(python_rows(raw, names), skip, None))


def arrow_blocks(raw: RawInput) -> Iterator[Block]:
    """The records of a JSON Lines input as blocks of Arrow columns (module docstring)."""
    pjson = _pyarrow_json()
    import pyarrow as pa

    done = 0
    switch = False
    checks = _Checks(raw)
    with raw.open() as stream:
        recording = RecordingStream(stream)
        schema = schema_of(raw, recording)
        if schema is None:
            switch = True
        names = [] if schema is None else list(schema.names)
        read = pjson.ReadOptions(block_size=BLOCK_BYTES, use_threads=True)
        parse = pjson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
        watched = _Watched(stream, bytes(recording.kept))
        try:
            if switch:
                raise _Switch
            for batch in pjson.open_json(watched, read_options=read, parse_options=parse):
                if batch.num_rows == 0:
                    continue
                if checks.changed(batch):
                    raise _Switch
                locate = functools.partial(record_line, raw)
                yield Block(names, batch.columns, RowsOnDemand(locate, done, batch.num_rows))
                done += batch.num_rows
        except (_Switch, pa.ArrowException, ValueError):
            switch = True
    if switch:
        yield from _python_from(raw, done)
    elif watched.joined or watched.records() != done:
        for _ in python_rows(raw, []):  # raises the error that names the row
            pass


__all__ = ["BLOCK_BYTES", "LOOKAHEAD", "arrow_blocks", "schema_of"]
