"""The Arrow table path (#23.1): CSV read by pyarrow's streaming reader and typed per batch
gives exactly what Python's ``csv`` reader gives through the same policy (generated tables
with quoted newlines, commas, quotes, padded numbers, missing markers, Unicode; records cut
across every block boundary), and each format's published samples equal pyarrow's own
reading of the file (features, text, labels), on a real table (Palmer penguins)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import datastack
from datastack.errors import FormatError
from datastack.formats import _arrow_csv
from datastack.formats.csv import FORMAT, CsvOptions
from datastack.formats.inputs import RawInput
from tests.fields.policy_helpers import typed
from tests.fields.realdata import penguins_csv, write_spec

pa = pytest.importorskip("pyarrow")
pcsv = pytest.importorskip("pyarrow.csv")
pd = pytest.importorskip("pandas")


def _raw(data: bytes, name: str = "t.csv") -> RawInput:
    return RawInput(None, name, lambda: io.BytesIO(data), len(data))


def _typed(blocks: Any, options: Any) -> Any:
    """Every block through one policy (fixed fields as lists, to compare with lists)."""
    fields, out, encodings = typed(blocks, options, "csv.", "t.csv")
    return fields, {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in out.items()}, \
        encodings


def _both(data: bytes, options: CsvOptions) -> tuple[Any, Any]:
    results = []
    for read in (FORMAT.blocks, FORMAT.python_blocks):
        try:
            results.append(("ok", _typed(read(_raw(data), options), options)))
        except FormatError as exc:
            results.append(("error", str(exc)))
    return results[0], results[1]


NUMBERS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.integers(-10**6, 10**6).map(str),
    st.sampled_from([" 1.5", "2 ", "+3", ".5", "5.", "1e3", "-0", "inf", "NaN"]),
)
MISSING = st.sampled_from(["", "NA", " NA ", "?", "null"])
WORDS = st.text(alphabet=st.sampled_from(list('ab ,"\n\r\té€;x')), min_size=1, max_size=12)


@st.composite
def tables(draw: Any) -> tuple[bytes, CsvOptions]:
    rows = draw(st.integers(1, 40))
    kinds = draw(st.lists(st.sampled_from(["num", "cat", "text"]), min_size=1, max_size=4))
    columns = []
    for kind in kinds:
        if kind == "num":
            cells = draw(st.lists(st.one_of(NUMBERS, MISSING), min_size=rows, max_size=rows))
        elif kind == "cat":
            cells = draw(st.lists(st.one_of(st.sampled_from(["red", " blue", "green "]),
                                            NUMBERS, MISSING), min_size=rows, max_size=rows))
        else:
            cells = draw(st.lists(st.one_of(WORDS, MISSING), min_size=rows, max_size=rows))
        columns.append(cells)
    target = draw(st.lists(st.sampled_from(["x", "y", "z"]), min_size=rows, max_size=rows))
    names = [f"c{i}" for i in range(len(kinds))] + ["label"]
    buffer = io.StringIO()
    # "\r\n" ends lines so that a bare CR in a field is quoted (a CR-only file is read as
    # lines by pyarrow and refused by Python's reader: the one place the two differ)
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(names)
    for r in range(rows):
        writer.writerow([c[r] for c in columns] + [target[r]])
    text = tuple(n for n, k in zip(names, kinds, strict=False) if k == "text")
    categorical = tuple(n for n, k in zip(names, kinds, strict=False) if k == "cat")
    options = CsvOptions(target="label", text=text, categorical=categorical)
    return buffer.getvalue().encode("utf-8"), options


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=tables(), block=st.sampled_from([64, 256, 1 << 20]))
def test_arrow_reader_equals_python_reader(case: tuple[bytes, CsvOptions], block: int) -> None:
    """Same fields, values, codes and errors; small blocks put record boundaries (and quoted
    newlines) at every position of a block."""
    data, options = case
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_arrow_csv, "BLOCK_BYTES", block)
        arrow, python = _both(data, options)
    if arrow[0] == "error" and "longer than" in arrow[1]:
        return  # a record longer than the (tiny) block: refused by the Arrow reader alone
    assert arrow[0] == python[0], (arrow, python)
    if arrow[0] == "ok":
        fields_a, values_a, enc_a = arrow[1]
        fields_p, values_p, enc_p = python[1]
        assert fields_a == fields_p and enc_a == enc_p
        for name, column in values_a.items():
            if column and isinstance(column[0], str):
                assert column == values_p[name]
            else:
                np.testing.assert_array_equal(np.asarray(column), np.asarray(values_p[name]))
    else:
        assert arrow[1] == python[1]


def test_quoted_newlines_across_every_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [[f"{i}.5", f'line one of {i}\nline "two",\r\nthree', "abc"[i % 3]] for i in range(60)]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([["x", "note", "label"], *rows])
    data = buffer.getvalue().encode()
    options = CsvOptions(target="label", text=("note",))
    for block in (48, 64, 100, 128, 333):
        monkeypatch.setattr(_arrow_csv, "BLOCK_BYTES", block)
        _, values, _ = _typed(FORMAT.blocks(_raw(data), options), options)
        assert values["note"] == [r[1] for r in rows]
        assert values["features"] == [[float(r[0])] for r in rows]


def test_errors_name_the_line_where_the_record_ends() -> None:
    """A record after multi-line quoted fields: the row named is its line, as before."""
    data = b'a,note,y\n1,"two\nlines",x\n2,"three\nmore\nlines",y\nfive,ok,z\n'
    options = CsvOptions(target="y", text=("note",))
    with pytest.raises(FormatError, match=r"row 7, column 'a' \(index 0\): 'five' is not a"):
        _typed(FORMAT.blocks(_raw(data), options), options)


def _expected_from_pyarrow(table: Any, target: str, features: list[str]) -> dict[str, Any]:
    """What the policy promises, computed from pyarrow's own reading of the file."""
    matrix = np.column_stack([
        np.asarray(table[c].cast(pa.float64()).to_numpy(zero_copy_only=False))
        if pa.types.is_floating(table[c].type) or pa.types.is_integer(table[c].type)
        else _codes(table[c].to_pylist())[0] for c in features
    ]).astype(np.float32)
    codes, names = _codes(table[target].to_pylist())
    return {"features": matrix, "target": codes, "names": names}


def _codes(values: list[Any]) -> tuple[np.ndarray, list[str]]:
    names = sorted({v for v in values if v is not None})
    lookup = {v: i for i, v in enumerate(names)}
    return np.array([np.nan if v is None else lookup[v] for v in values]), names


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_published_samples_equal_pyarrow_reading(tmp_path: Path, fmt: str) -> None:
    source = penguins_csv()
    reference = pcsv.read_csv(source, convert_options=pcsv.ConvertOptions(
        null_values=["NA"], strings_can_be_null=True))
    path = tmp_path / f"penguins.{fmt}"
    if fmt == "csv":
        path.write_bytes(source.read_bytes())
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(reference, path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in reference.to_pylist()))
    body = f"    format: {fmt}\n    {fmt}: {{target: species, text: [island]}}\n"
    spec = write_spec(tmp_path / "s.yaml", f"p-{fmt}", [path], body)
    storage = str(tmp_path / "store")
    [result] = datastack.refresh(spec, storage=storage)
    assert result.status == "published", result.reason
    loaded = datastack.load(f"p-{fmt}", storage=storage)
    features, island, species = loaded.get_batch(range(len(loaded)))
    columns = [c for c in reference.column_names if c not in ("species", "island")]
    expected = _expected_from_pyarrow(reference, "species", columns)
    np.testing.assert_array_equal(features, expected["features"])
    np.testing.assert_array_equal(species, expected["target"])
    assert loaded.fields["species"].names == tuple(expected["names"])
    assert list(island) == reference["island"].to_pylist()


def test_a_missing_marker_that_is_a_number_is_missing() -> None:
    data = b"a,b,y\n1,-999,x\n-999,2,y\n3,4,x\n"
    options = CsvOptions(target="y", missing=("-999", ""))
    _, values, _ = _typed(FORMAT.blocks(_raw(data), options), options)
    np.testing.assert_array_equal(np.asarray(values["features"]),
                                  [[1, np.nan], [np.nan, 2], [3, 4]])


@pytest.mark.parametrize("where", [7, 150, 299])
def test_a_quote_left_open_is_refused_not_swallowed(where: int) -> None:
    """pyarrow reads an unterminated quote as a value running to the end of the file (the
    rest of the rows gone into one label); the reader counts quotes and refuses it."""
    lines = ["a,b,y"] + [f"{i},{i},x" for i in range(300)]
    lines[where] = '5,5,"x'
    data = ("\n".join(lines) + "\n").encode()
    options = CsvOptions(target="y")
    arrow, python = _both(data, options)
    assert python[0] == "error" and "unexpected end of data" in python[1]
    assert arrow == python


def test_a_lone_quote_inside_a_value_is_kept() -> None:
    """An odd count from a literal quote in an unquoted value (which both readers accept)
    costs one Python read and changes nothing."""
    data = b'a,note,y\n1,ab"c,x\n2,ok,y\n'
    options = CsvOptions(target="y", text=("note",))
    arrow, python = _both(data, options)
    assert arrow == python and arrow[0] == "ok"
    assert arrow[1][1]["note"] == ['ab"c', "ok"]
