"""The Arrow JSON Lines path (#23.1): pyarrow's streaming reader, typed per batch, gives
exactly what Python's ``json`` reader gives through the same policy -- same fields, values,
codes, and the same error naming the same row and column -- on generated files (numbers of
every kind, labels, text, nulls, missing keys, blank lines, a BOM, no final newline, and
now and then a bad record), cut into batches at every size; and each rule of the format holds
on the Arrow path, which is really taken for well-formed files (and left when it must be)."""

from __future__ import annotations

import io
import itertools
import json
import math
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datastack.errors import FormatError
from datastack.formats import _arrow_jsonl
from datastack.formats._jsonl_records import python_rows
from datastack.formats._table_policy import Block, TableOptions
from datastack.formats.inputs import RawInput
from datastack.formats.jsonl import JSONL_FORMAT
from datastack.formats.tables import RowsOnDemand, row_blocks
from tests.fields.policy_helpers import typed

pa = pytest.importorskip("pyarrow")


def _raw(data: bytes, name: str = "t.jsonl") -> RawInput:
    return RawInput(None, name, lambda: io.BytesIO(data), len(data))


def _typed(blocks: Any, options: TableOptions) -> Any:
    """Every block through one policy: staged columns joined, then the final fields."""
    return typed(blocks, options, "jsonl.", "t.jsonl")


def _read(read: Any, data: bytes, options: TableOptions) -> tuple[str, Any]:
    try:
        return "ok", _typed(read(_raw(data), options), options)
    except FormatError as exc:
        return "error", str(exc)


def _assert_same(arrow: tuple[str, Any], python: tuple[str, Any]) -> None:
    assert arrow[0] == python[0], (arrow, python)
    if arrow[0] == "error":
        assert arrow[1] == python[1]
        return
    fields_a, values_a, enc_a = arrow[1]
    fields_p, values_p, enc_p = python[1]
    assert fields_a == fields_p and enc_a == enc_p
    assert values_a.keys() == values_p.keys()
    for name, column in values_a.items():
        if isinstance(column, list):
            assert column == values_p[name], name
            continue
        np.testing.assert_array_equal(column, values_p[name])
        assert column.dtype == values_p[name].dtype
        if column.dtype.kind == "f":  # the sign of zeros too
            np.testing.assert_array_equal(np.signbit(column), np.signbit(values_p[name]))


class _Spy:
    """Counts the times the Arrow path hands over to the Python reader."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.skips: list[int] = []
        original = _arrow_jsonl._python_from

        def spied(raw: RawInput, skip: int) -> Any:
            self.skips.append(skip)
            return original(raw, skip)

        monkeypatch.setattr(_arrow_jsonl, "_python_from", spied)


# -- generated files ---------------------------------------------------------------------------
FLOATS = st.floats(allow_nan=False, allow_infinity=False).map(repr)
SMALL_FLOATS = st.floats(-1e6, 1e6, allow_nan=False).map(repr)
NUMBER_LITERALS = st.one_of(
    FLOATS, SMALL_FLOATS, st.integers(-10**6, 10**6).map(str),
    st.sampled_from(["-0", "0", "-0.0", "1.0", "1e20", "1E5", "2.5e-3", "9007199254740992",
                     "9007199254740993", "-9007199254740993", "99999999999999999999",
                     "123456789012345678901234567890", "NaN", "Infinity", "-Infinity",
                     "1e400", "-1e400", "1.7976931348623159e308", "true", "false"]),
)
NUMERIC_STRINGS = st.sampled_from(['"1.5"', '" 2"', '"+3"', '"1e3"', '"NA"', '""', '"?"',
                                   '"1_000"', '"12"'])
LABELS = st.sampled_from(['"red"', '" blue"', '"green "', '"NA"', '""', "1", "2", "3.5",
                          "1.0", "-0", "9007199254740993"])
WORDS = st.text(alphabet=st.sampled_from(list('ab {}[],:"\\\t\u00e9\u20ac\U0001f600x0')),
                max_size=10)
TEXTS = st.tuples(WORDS, st.booleans()).map(lambda t: json.dumps(t[0], ensure_ascii=t[1]))
NULL = st.just("null")
BROKEN = st.sampled_from([
    '{"c0": 1 {"c0": 2}', '{"c0": [1]}', '{"c0": {"x": 1}}', '{"zz": 1}', '{"c0": 1, "c0": 2}',
    '{"c0": Inf}', '{"c0": -NaN}', '{"c0": 01}', '[1, 2]', '"text"', '{"c0": 1,}', '{"c0":',
    '{"c0": "\\ud800"}', '{"c0": "\udc80"}', '{"c0": tru}', '{} {}',
    # complete records, so that nothing but the reader can refuse them
    '{"c0": "red", "label": "x"} {"c0": "red", "label": "y"}',
    '{"c0": "red", "label": "x"}\r{"c0": 1, "label": "y"}',
    '{"c0": 2, "label": "x"}{"c0": "red", "label": "y"}',
    '{"c0": "red",\n"label": "x"}', '{"c0": 2, "label":\n"x"}', '{\n"label": "z"}',
    '{"c0": "\udc80", "label": "x"}', '{"c0": "a\udcc3b", "label": "x"}',
    '{"label": "x", "\udcff": 1}', '{"c0": -NaN, "label": "x"}', '{"c0": Inf, "label": "x"}',
    '{"c0": -Inf, "label": "x"}', '{"c0": 1.8e308, "label": "x"}',
    '{"c0": 12345678901234567890, "label": "x"}', '\x0c{"c0": 2, "label": "y"}',
    '\u00a0', '\x0c', '\ufeff{"c0": 2, "label": "y"}',
])


@st.composite
def jsonl_files(draw: Any, broken: bool) -> tuple[bytes, TableOptions]:
    """A JSON Lines table; ``broken``: with now and then a record the reader refuses (and
    only text and categorical columns, so that the policy finds nothing else to refuse)."""
    rows = draw(st.integers(1, 30))
    kinds = draw(st.lists(st.sampled_from(["cat", "text"] if broken else ["num", "cat", "text"]),
                          min_size=1, max_size=3))
    names = [f"c{i}" for i in range(len(kinds))] + ["label"]
    lines: list[str] = []
    for row in range(rows):
        cells = []
        for name, kind in zip(names, kinds, strict=False):
            if kind == "num":
                value = draw(st.one_of(NUMBER_LITERALS, NUMBER_LITERALS, NUMERIC_STRINGS, NULL))
            elif kind == "cat":
                # no booleans nor whole floats from 2^53 up here: the Python reader's labels
                # of those depend on the other cells of its block (module docstring of
                # _arrow_columns), so no two readers with different blocks can agree
                value = draw(st.one_of(LABELS, NULL))
            else:
                value = draw(st.one_of(TEXTS, LABELS, NULL))
            if (broken and row == 0) or draw(st.integers(0, 9)) > 0:  # a key left out
                cells.append(f'"{name}": {value}')
        cells.append(f'"label": "{draw(st.sampled_from("xyz"))}"')
        if draw(st.booleans()):
            cells = [cells[0], *draw(st.permutations(cells[1:]))]
        lines.append("{" + draw(st.sampled_from([", ", ",", " , "])).join(cells) + "}")
        if broken and draw(st.integers(0, 10)) == 0:
            lines.append(draw(BROKEN))
        if draw(st.integers(0, 8)) == 0:
            lines.append(draw(st.sampled_from(["", "  ", "\t", "\r", " \r"])))
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    text = ending.join(lines) + draw(st.sampled_from([ending, "", ending * 2]))
    if draw(st.integers(0, 5)) == 0:
        text = "\ufeff" + text
    data = text.encode("utf-8", "surrogateescape")
    text_cols = tuple(n for n, k in zip(names, kinds, strict=False) if k == "text")
    categorical = tuple(n for n, k in zip(names, kinds, strict=False) if k == "cat")
    return data, TableOptions(target="label", text=text_cols, categorical=categorical)


def _partitioned(data: bytes, sizes: list[int]) -> Iterator[Block]:
    """The Python reader's rows cut into blocks of ``sizes`` rows, then its own blocks."""
    names: list[str] = []
    rows = python_rows(_raw(data), names)
    for size in sizes:
        chunk = list(itertools.islice(rows, size))
        yield Block(list(names), list(zip(*[c for _, c in chunk], strict=True)),
                    [n for n, _ in chunk])
    yield from row_blocks(names, rows)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=jsonl_files(broken=False), block=st.sampled_from([48, 128, 512, 1 << 20]))
def test_arrow_reader_equals_python_reader(case: tuple[bytes, TableOptions], block: int) -> None:
    """Same fields, values (sign of zeros included) and codes as the Python reader; the same
    error as the Python reader's rows cut into the same blocks (the first of two errors the
    policy finds depends on the blocks: that is the policy's, for both readers). Small blocks
    put a batch boundary, and a hand-over to the Python reader, everywhere."""
    data, options = case
    sizes: list[int] = []

    def counted(raw: RawInput, opts: TableOptions) -> Iterator[Block]:
        for b in JSONL_FORMAT.blocks(raw, opts):
            sizes.append(len(b.rows))
            yield b

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_arrow_jsonl, "BLOCK_BYTES", block)
        arrow = _read(counted, data, options)
    if arrow[0] == "ok":
        _assert_same(arrow, _read(JSONL_FORMAT.python_blocks, data, options))
    _assert_same(arrow, _read(lambda raw, opts: _partitioned(data, sizes), data, options))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=jsonl_files(broken=True), block=st.sampled_from([48, 128, 512, 1 << 20]))
def test_arrow_reader_refuses_what_python_refuses(case: tuple[bytes, TableOptions],
                                                  block: int) -> None:
    """Files with records the reader refuses (two on a line, across lines, nested, a key
    not in the first record, duplicates, Inf, -NaN, bytes not UTF-8, ...): the same error,
    naming the same row, or the same result."""
    data, options = case
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_arrow_jsonl, "BLOCK_BYTES", block)
        arrow = _read(JSONL_FORMAT.blocks, data, options)
    _assert_same(arrow, _read(JSONL_FORMAT.python_blocks, data, options))


# -- the Arrow path is taken, and left when it must be -------------------------------------------
def _lines(*records: str, end: str = "\n") -> bytes:
    return (end.join(records) + end).encode()


def _arrow_only(monkeypatch: pytest.MonkeyPatch, data: bytes, options: TableOptions) -> Any:
    spy = _Spy(monkeypatch)
    blocks = list(JSONL_FORMAT.blocks(_raw(data), options))
    assert spy.skips == [], "the Python reader took over"
    assert all(isinstance(b.rows, RowsOnDemand) for b in blocks)
    assert all(pa.types.is_floating(b.columns[0].type) or pa.types.is_string(b.columns[0].type)
               or pa.types.is_boolean(b.columns[0].type) for b in blocks)
    result = _typed(iter(blocks), options)
    _assert_same(("ok", result), _read(JSONL_FORMAT.python_blocks, data, options))
    return result


OPTIONS = TableOptions(target="y")


@pytest.mark.parametrize("records", [
    # integers and floats mixed in a column (written by JavaScript: 3 for 3.0)
    ['{"a": 3, "y": "p"}', '{"a": 3.5, "y": "q"}', '{"a": -2, "y": "p"}'],
    # a key left out, null, a null first value, NaN and infinities, -0.0 (a float for both)
    ['{"a": null, "b": 1, "y": "p"}', '{"b": NaN, "y": "q"}', '{"a": -0.0, "b": Infinity, '
     '"y": "p"}', '{"a": 1e-400, "b": -Infinity, "y": "q"}'],
    # booleans as 1/0; strings holding numbers; keys in another order
    ['{"a": true, "b": "1.5", "y": "p"}', '{"y": "q", "b": " 2 ", "a": false}'],
    # text with braces, quotes, escapes and Unicode
    ['{"a": 1, "t": "} {", "y": "p"}', '{"a": 2, "t": "\\"\\u00e9\\ud83d\\ude00\\n", "y": "q"}'],
    # integers of 15 digits (16 digits may be above 2^53: the Python reader reads those)
    ['{"a": 999999999999999, "y": "p"}', '{"a": -123456789012345, "y": "q"}'],
    # a float from 2^53 up, Infinity written out
    ['{"a": 100000000000000000000.0, "b": 12345678901234567.5, "y": "p"}',
     '{"a": Infinity, "b": 1, "y": "q"}'],
])
def test_well_formed_files_stay_on_arrow(monkeypatch: pytest.MonkeyPatch,
                                         records: list[str]) -> None:
    options = TableOptions(target="y", text=("t",) if '"t"' in records[0] else ())
    _arrow_only(monkeypatch, _lines(*records), options)


def test_blank_lines_bom_crlf_and_no_final_newline_stay_on_arrow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = b'\xef\xbb\xbf\n  \n{"a": "1", "y": "p"}\r\n\r\n\t \r\n{"a": "x", "y": "q"}\n\n' \
           b'{"a": "2", "y": "q"}'
    # "x" after a number is an error the policy finds in an Arrow batch: its row is its line
    spy = _Spy(monkeypatch)
    assert "row 6, column 'a' (index 0): 'x' is not a number" in _error(data)
    assert spy.skips == []
    _arrow_only(monkeypatch, data.replace(b'"x"', b'"3"'), OPTIONS)


def test_only_blank_lines_are_no_rows(tmp_path: Any) -> None:
    for data in (b"", b"\n", b"\n \n\t\r\n", b"\xef\xbb\xbf\n"):
        assert list(JSONL_FORMAT.blocks(_raw(data), OPTIONS)) == []
        assert list(JSONL_FORMAT.python_blocks(_raw(data), OPTIONS)) == []


def test_numbers_then_strings_is_read_the_python_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """Legal for a categorical column; pyarrow refuses the change of kind: the Python reader
    takes over from the batch that failed, and the result is the Python reader's."""
    records = [f'{{"c": {i % 3}, "y": "p"}}' for i in range(300)] + ['{"c": "red", "y": "q"}']
    data = _lines(*records)
    options = TableOptions(target="y", categorical=("c",))
    monkeypatch.setattr(_arrow_jsonl, "BLOCK_BYTES", 1024)
    spy = _Spy(monkeypatch)
    arrow = _read(JSONL_FORMAT.blocks, data, options)
    assert len(spy.skips) == 1 and spy.skips[0] > 0  # Arrow batches first, then Python
    _assert_same(arrow, _read(JSONL_FORMAT.python_blocks, data, options))
    assert arrow[1][2]["c"] == ["0", "1", "2", "red"]


@pytest.mark.parametrize(("literal", "error"), [
    ("99999999999999999999", "99999999999999999999 is an integer above 2^53"),
    ("9007199254740993", "9007199254740993 is an integer above 2^53"),
    ("1e400", "1e400 overflows float64"),
    ("Inf", "invalid JSON"),
    ("-NaN", "invalid JSON"),
])
def test_numbers_pyarrow_would_change_are_the_python_readers(
    monkeypatch: pytest.MonkeyPatch, literal: str, error: str
) -> None:
    """pyarrow rounds 99999999999999999999 to 1e20 and reads Inf and -NaN: those batches go
    to the Python reader, which names the row."""
    data = _lines('{"a": 1.5, "y": "p"}', "", f'{{"a": {literal}, "y": "q"}}')
    spy = _Spy(monkeypatch)
    with pytest.raises(FormatError, match=rf"t.jsonl: row 3.*{re.escape(error)}"):
        _typed(JSONL_FORMAT.blocks(_raw(data), OPTIONS), OPTIONS)
    assert spy.skips == [0]


def test_big_integers_keep_their_digits_as_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _lines('{"id": 99999999999999999999, "y": "p"}', '{"id": 9007199254740993, "y": "q"}')
    options = TableOptions(target="y", categorical=("id",))
    spy = _Spy(monkeypatch)
    _, _, encodings = _typed(JSONL_FORMAT.blocks(_raw(data), options), options)
    assert encodings["id"] == ["9007199254740993", "99999999999999999999"]
    assert spy.skips == [0]


def test_minus_zero_integer_is_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    """``-0`` is the integer 0 for Python (pyarrow: -0.0); ``-0.0`` is a float for both."""
    spy = _Spy(monkeypatch)
    _, values, _ = _typed(JSONL_FORMAT.blocks(_raw(_lines('{"a": -0, "y": 1}')), OPTIONS),
                          OPTIONS)
    assert not np.signbit(values["features"][0, 0]) and spy.skips == [0]
    spy.skips.clear()
    _, values, _ = _typed(JSONL_FORMAT.blocks(_raw(_lines('{"a": -0.0, "y": 1}')), OPTIONS),
                          OPTIONS)
    assert np.signbit(values["features"][0, 0]) and spy.skips == []


# -- the rules of the format, on the Arrow path ---------------------------------------------------
def _error(data: bytes, options: TableOptions = OPTIONS) -> str:
    with pytest.raises(FormatError) as caught:
        _typed(JSONL_FORMAT.blocks(_raw(data), options), options)
    python = _read(JSONL_FORMAT.python_blocks, data, options)
    assert python == ("error", str(caught.value))
    return str(caught.value)


GOOD = '{"a": 1, "y": "p"}'


@pytest.mark.parametrize(("bad", "message"), [
    ('{"a": 2, "y": "q", "z": 3}', "row 3: key 'z' is not a column of the first record"),
    ('{"a": [1, 2], "y": "q"}', "row 3, column 'a': nested JSON value (list)"),
    ('{"a": {"b": 1}, "y": "q"}', "row 3, column 'a': nested JSON value (dict)"),
    ('{"a": 2, "a": 3, "y": "q"}', "row 3: duplicate key 'a' in an object"),
    ('{"a": ' + "[" * 5000 + "]" * 5000 + ', "y": "q"}', "row 3: JSON nested too deeply"),
    ('{"a": 2, "y": "q"} {"a": 3, "y": "q"}', "row 3: more than one JSON value on the line"),
    ('{"a": 2,\n "y": "q"}', "row 3: invalid JSON"),
    ('{"a": 2, "y": "\\ud800"}', "row 3, column 'y': bytes not valid UTF-8"),
    ('{"a": 2, "y": "q"}garbage', "row 3: more than one JSON value on the line"),
    ("[1, 2]", "row 3: expected an object, got list"),
    ('{"a": "x", "y": "q"}', "row 3, column 'a' (index 0): 'x' is not a number"),
    ('{"a": 1e400, "y": "q"}', "row 3, column 'a': 1e400 overflows float64"),
])
def test_bad_records_name_their_row(bad: str, message: str) -> None:
    data = _lines(GOOD, "", bad, GOOD)
    assert message in _error(data)


def test_bytes_not_utf8_name_row_and_column() -> None:
    data = _lines(GOOD, GOOD) + b'{"a": 2, "y": "caf\xe9"}\n'
    assert "row 3, column 'y': bytes not valid UTF-8" in _error(data)
    data = _lines(GOOD) + b'{"a": 2, "y": "ok", "\xff": 1}\n'
    assert "row 2: key '\\udcff' is not a column" in _error(data)


def test_integers_above_2_53_are_errors_in_numeric_columns() -> None:
    assert "row 2, column 'a': 9007199254740993 is an integer above 2^53" in _error(
        _lines(GOOD, '{"a": 9007199254740993, "y": "q"}'))


def test_records_over_the_limit_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("datastack.formats._jsonl_records.MAX_RECORD_BYTES", 100)
    monkeypatch.setattr(_arrow_jsonl, "BLOCK_BYTES", 64)
    data = _lines(GOOD, '{"a": 2, "y": "' + "q" * 200 + '"}')
    assert "row 2: line longer than 100 bytes; refused" in _error(data)


def test_a_record_longer_than_a_block_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_arrow_jsonl, "BLOCK_BYTES", 64)
    long_text = "w" * 500
    data = _lines(*[f'{{"a": {i}, "t": "{long_text if i == 5 else "s"}", "y": "p"}}'
                    for i in range(10)])
    options = TableOptions(target="y", text=("t",))
    ok = _read(JSONL_FORMAT.blocks, data, options)
    _assert_same(ok, _read(JSONL_FORMAT.python_blocks, data, options))
    assert ok[1][1]["t"][5] == long_text


def test_rows_of_arrow_blocks_are_line_numbers() -> None:
    data = b'\n{"a": 1, "y": "p"}\n\n \n{"a": 2, "y": "p"}\n{"a": 3, "y": "p"}'
    [block] = JSONL_FORMAT.blocks(_raw(data), OPTIONS)
    assert isinstance(block, Block) and isinstance(block.rows, RowsOnDemand)
    assert list(block.rows) == [2, 5, 6] and block.rows[-1] == 6 and block.rows[1:] == [5, 6]
    with pytest.raises(IndexError):
        block.rows[3]


def test_null_first_value_takes_the_type_of_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _lines('{"a": null, "t": null, "y": "p"}', '{"a": 2.5, "t": "w", "y": "q"}')
    options = TableOptions(target="y", text=("t",))
    _, values, _ = _arrow_only(monkeypatch, data, options)
    assert values["t"] == ["", "w"] and math.isnan(values["features"][0, 0])


def test_the_file_is_read_once() -> None:
    """The first records' read-ahead goes on to pyarrow (#23.3): a well-formed file's bytes
    are read once, whatever its size against the read-ahead."""
    for rows in (3, 40_000):
        data = _lines(*[f'{{"a": {i * 0.5}, "t": "w{i % 7}", "y": "{"pq"[i % 2]}"}}'
                        for i in range(rows)])
        reads: list[int] = []

        class Counting(io.BytesIO):
            def read(self, size: int | None = -1) -> bytes:
                chunk = super().read(size)
                reads.append(len(chunk))
                return chunk

        raw = RawInput(None, "t.jsonl", lambda: Counting(data), len(data))
        options = TableOptions(target="y", text=("t",))
        blocks = list(JSONL_FORMAT.blocks(raw, options))
        assert sum(len(b.rows) for b in blocks) == rows
        assert sum(reads) == len(data)


def test_null_first_value_beyond_the_lookahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key null in the first MiB is read as text by pyarrow: its first number hands over to
    the Python reader, and the result is the Python reader's."""
    monkeypatch.setattr(_arrow_jsonl, "LOOKAHEAD_BYTES", 100)
    data = _lines(*['{"a": null, "y": "p"}'] * 20, '{"a": 2.5, "y": "q"}')
    spy = _Spy(monkeypatch)
    assert _arrow_jsonl.schema_of(_raw(data)).field("a").type == pa.float64()  # no bound
    _assert_same(_read(JSONL_FORMAT.blocks, data, OPTIONS),
                 _read(JSONL_FORMAT.python_blocks, data, OPTIONS))
    assert spy.skips == [0]


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.sampled_from(['{"a": 1}', '{"a": "}  {"}', "", " ", "\t\r", "\r",
                                       '{"a": 2} {"a": 3}', '{"a":', "}"]), max_size=12),
       end=st.sampled_from(["\n", "\r\n"]), final=st.booleans(), bom=st.booleans(),
       cuts=st.lists(st.integers(1, 7), min_size=1, max_size=40))
def test_the_byte_watch_counts_lines_and_sees_joined_values(
    lines: list[str], end: str, final: bool, bom: bool, cuts: list[int]
) -> None:
    """Read in pieces of any size: the non-blank lines (as the Python reader counts them)
    and whether "}" then "{" sit on one line, whatever the cuts."""
    text = end.join(lines) + (end if final else "")
    data = ("\ufeff" if bom else "").encode() + text.encode()
    watched = _arrow_jsonl._Watched(io.BytesIO(data[3:] if bom else data),
                                    data[:3] if bom else b"")
    k = 0
    while watched.read(cuts[k % len(cuts)]):
        k += 1
    assert watched.records() == sum(1 for line in text.split("\n") if line.strip())
    assert watched.joined == any("}" in line and "{" in line.split("}", 1)[1]
                                 and line.split("}", 1)[1].split("{", 1)[0].strip(" \t\r") == ""
                                 for line in text.split("\n"))
