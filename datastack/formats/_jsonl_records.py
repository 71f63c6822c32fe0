"""JSON Lines records by Python's ``json``: the reference the Arrow reader
(:mod:`._arrow_jsonl`) is tested against, the reader that names the row and column of a bad
record, and the record checks the JSON array reader shares (:class:`Records`). The rules are
in :mod:`datastack.formats.jsonl`."""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Generator, Iterator
from typing import Any

from datastack.errors import FormatError
from datastack.formats._numbers import json_float
from datastack.formats.inputs import RawInput, RecordingStream
from datastack.formats.tables import MAX_COLUMNS, TooManyColumns

#: Largest JSON Lines line / JSON array element.
MAX_RECORD_BYTES = 64 * 1024 * 1024
_READ = 1024 * 1024
#: Undecodable bytes (surrogate escapes) and lone surrogates written as ``\\uXXXX`` escapes.
_SURROGATE = re.compile("[\ud800-\udfff]")
_BOM = "\ufeff"


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


def decode_value(text: str, pos: int, where: str) -> tuple[Any, int]:
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


class Records:
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


def _text_lines(
    raw: RawInput, stream: RecordingStream | None = None
) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of every line that is not blank (``str.strip()``: Unicode
    whitespace), decoded with surrogate escapes; a BOM opening the file is stripped.
    ``stream`` (left open) is read instead of opening ``raw``."""
    with contextlib.nullcontext(stream) if stream is not None else raw.open() as binary:
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


def _lines(raw: RawInput, stream: RecordingStream | None = None) -> Iterator[tuple[int, Any]]:
    for number, text in _text_lines(raw, stream):
        where = f"{raw.name}: row {number}"
        try:
            value, end = decode_value(text, len(text) - len(text.lstrip()), where)
        except json.JSONDecodeError as exc:
            raise FormatError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})"
                              ) from None
        if text[end:].strip():
            raise FormatError(f"{where}: more than one JSON value on the line")
        yield number, value


def python_rows(
    raw: RawInput, names: list[str], stream: RecordingStream | None = None
) -> Generator[tuple[int, list[Any]], None, None]:
    """``(line number, cells)`` of every record, in the columns of the first record (which
    fill ``names``); raises the FormatError naming the row and column of a bad record.
    ``stream`` (left open) is read instead of opening ``raw``."""
    table = Records(raw.name, names)
    for number, record in _lines(raw, stream):
        yield number, table.row(record, number)


def record_line(raw: RawInput, index: int) -> int:
    """The line number of record ``index`` (0-based; blank lines are not records), read by
    the Python reader: a bad record before it raises its own FormatError (a reader that
    counted records differently, or read one Python refuses, never names a wrong row)."""
    for k, (number, _) in enumerate(python_rows(raw, [])):
        if k == index:
            return number
    raise IndexError(index)


__all__ = [
    "MAX_RECORD_BYTES",
    "Records",
    "decode_value",
    "python_rows",
    "record_line",
]
