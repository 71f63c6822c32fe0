"""The same real table (Palmer penguins: strings and NA) in CSV, Parquet, Excel, JSON Lines,
JSON and a DataFrame gives identical published samples; real Unicode texts come back exactly;
malformed inputs of each format get clear errors and leave the catalog unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import datastack
from datastack.errors import DatastackError
from datastack.store import Store
from tests.fields.realdata import descr_texts, penguins_csv, write_spec

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")
pytest.importorskip("openpyxl")

FORMATS = {"csv": ".csv", "parquet": ".parquet", "excel": ".xlsx", "jsonl": ".jsonl",
           "json": ".json"}


def _write(frame: Any, fmt: str, folder: Path) -> Path:
    path = folder / f"table{FORMATS[fmt]}"
    if fmt == "csv":
        path.write_bytes(penguins_csv().read_bytes())
    elif fmt == "parquet":
        frame.to_parquet(path)
    elif fmt == "excel":
        frame.to_excel(path, index=False, sheet_name="penguins")
    elif fmt == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_json(path, orient="records")
    return path


def _publish(tmp_path: Path, fmt: str, options: str, storage: str, name: str) -> Any:
    frame = pd.read_csv(penguins_csv())
    path = _write(frame, fmt, tmp_path)
    body = f"    format: {fmt}\n    {fmt}: {options}\n    splits: {{train: 0.7, test: 0.3}}\n"
    spec = write_spec(tmp_path / f"{name}.yaml", name, [path], body)
    [result] = datastack.refresh(spec, storage=storage)
    assert result.status == "published", result.reason
    return datastack.load(name, "train+test", storage=storage)


def _columns(it: Any) -> tuple[np.ndarray, ...]:
    return it.get_batch(range(len(it)))


def test_same_table_in_every_format_and_a_dataframe(tmp_path: Path) -> None:
    storage = str(tmp_path / "store")
    reference = _publish(tmp_path, "csv", "{target: species}", storage, "p-csv")
    assert list(reference.fields) == ["features", "species"]
    assert reference.fields["species"].names == ("Adelie", "Chinstrap", "Gentoo")
    assert reference.fields["features"].dtype == "float32"
    x, y = _columns(reference)
    assert x.dtype == np.float32 and np.isnan(x).any()  # NA in the real table
    frame = pd.read_csv(penguins_csv())
    assert len(x) == len(frame) == 344
    options = {"excel": "{target: species, sheet: penguins}"}
    for fmt in ("parquet", "excel", "jsonl", "json"):
        it = _publish(tmp_path, fmt, options.get(fmt, "{target: species}"), storage, f"p-{fmt}")
        xf, yf = _columns(it)
        np.testing.assert_array_equal(xf, x, err_msg=fmt)
        np.testing.assert_array_equal(yf, y, err_msg=fmt)
        assert it.fields == reference.fields, fmt
    record = datastack.publish("p-frame", frame, target="species", storage=storage,
                               splits={"train": 0.7, "test": 0.3})
    published = datastack.load("p-frame", "train+test", storage=storage)
    np.testing.assert_array_equal(_columns(published)[0], x)
    np.testing.assert_array_equal(_columns(published)[1], y)
    assert record.encodings == Store.open(storage).catalog.latest("p-csv").encodings


def test_text_columns_keep_real_unicode_exactly(tmp_path: Path) -> None:
    texts = descr_texts()
    rows = [{"name": k, "body": v, "size": len(v), "topic": "image" if "image" in v else "table"}
            for k, v in sorted(texts.items())]
    path = tmp_path / "descr.jsonl"
    path.write_text("\ufeff" + "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n",
                    encoding="utf-8")
    spec = write_spec(tmp_path / "s.yaml", "descr", [path],
                      "    format: jsonl\n    jsonl: {target: topic, text: [name, body]}\n")
    storage = str(tmp_path / "store")
    [result] = datastack.refresh(spec, storage=storage)
    assert result.status == "published", result.reason
    it = datastack.load("descr", storage=storage)
    assert [(n, f.kind) for n, f in it.fields.items()] == [
        ("features", "array"), ("name", "string"), ("body", "string"), ("topic", "label")]
    for (size, name, body, _), row in zip(it, rows, strict=True):
        assert body == texts[name] and int(size[0]) == len(body)
    batch = it.get_batch([3, 0, 3])
    assert batch[2].dtype == object and batch[2][0] == rows[3]["body"]
    assert it.as_dict()[1]["body"] == rows[1]["body"]


def test_dtype_float64_keeps_doubles(tmp_path: Path) -> None:
    it = _publish(tmp_path, "csv", "{target: species, dtype: float64}", str(tmp_path / "s"), "d")
    x, _ = _columns(it)
    frame = pd.read_csv(penguins_csv())
    assert x.dtype == np.float64
    assert sorted(np.nan_to_num(x[:, 1]).tolist()) == sorted(
        np.nan_to_num(frame["bill_length_mm"].to_numpy()).tolist())


def _xlsx_bomb(path: Path) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/worksheets/sheet1.xml", b"\0" * (64 * 1024 * 1024))
    return path


MALFORMED = {
    "jsonl-syntax": ("jsonl", b'{"a": 1, "y": 2}\n{"a": 1, "y": \n', "row 2: invalid JSON"),
    "jsonl-deep": ("jsonl", b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b', "y": 1}\n',
                   "nested too deeply"),
    "jsonl-duplicate": ("jsonl", b'{"a": 1, "a": 2, "y": 3}\n', "duplicate key 'a'"),
    "jsonl-utf8": ("jsonl", b'{"a": "caf\xe9", "y": 1}\n', "row 1, column 'a': bytes not valid"),
    "jsonl-nested": ("jsonl", b'{"a": {"b": 1}, "y": 1}\n', "nested JSON value"),
    "json-not-array": ("json", b'{"a": 1}', "expected a JSON array"),
    "json-truncated": ("json", b'[{"a": 1, "y": 1}, {"a": 2', "invalid JSON"),
    "csv-utf8": ("csv", b"a,t,y\n1,ok,0\n2,caf\xe9,1\n",
                 "row 3: bytes not valid utf-8 in column 1"),
    "parquet-garbage": ("parquet", b"PAR1 not really", "not a readable Parquet file"),
    "excel-garbage": ("excel", b"PK\x03\x04 broken", "not an .xlsx workbook"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_inputs_clear_error_catalog_unchanged(tmp_path: Path, case: str) -> None:
    fmt, content, message = MALFORMED[case]
    storage = str(tmp_path / "store")
    good = tmp_path / "good.csv"
    good.write_text("a,y\n1,0\n2,1\n")
    [first] = datastack.refresh(write_spec(tmp_path / "a.yaml", "t", [good], "    format: csv\n"),
                                storage=storage)
    assert first.status == "published"
    bad = tmp_path / f"bad{FORMATS[fmt]}"
    bad.write_bytes(content)
    spec = write_spec(tmp_path / "b.yaml", "t", [bad], f"    format: {fmt}\n")
    [result] = datastack.refresh(spec, storage=storage)
    assert result.status == "failed" and message in result.reason, result.reason
    assert bad.name in result.reason
    assert Store.open(storage).catalog.latest("t").version == 1


def test_excel_zip_bomb_refused_before_inflating(tmp_path: Path, monkeypatch: Any) -> None:
    from datastack.errors import UnsafeArchiveError
    from datastack.formats import excel, get_format
    from datastack.formats.inputs import RawInput

    monkeypatch.setattr(excel, "MAX_EXPANDED_BYTES", 32 * 1024 * 1024)  # 64 MiB declared

    path = _xlsx_bomb(tmp_path / "bomb.xlsx")
    assert path.stat().st_size < 1024 * 1024
    raw = RawInput(None, "bomb.xlsx", lambda: open(path, "rb"), path.stat().st_size, path)
    fmt: Any = get_format("excel")
    with pytest.raises(UnsafeArchiveError, match="expands to"):
        list(fmt.blocks(raw, fmt.default_options()))


def test_excel_reads_cached_values_never_formulas(tmp_path: Path) -> None:
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["a", "b", "y"])
    sheet.append([1, "=A2*2", "x"])
    sheet.append([2, 5, "z"])
    book.save(tmp_path / "f.xlsx")  # openpyxl stores no cached value for the formula
    spec = write_spec(tmp_path / "s.yaml", "f", [tmp_path / "f.xlsx"], "    format: excel\n")
    [result] = datastack.refresh(spec, storage=str(tmp_path / "store"))
    assert result.status == "published", result.reason
    x, _ = datastack.load("f", storage=str(tmp_path / "store")).get_batch([0, 1])
    assert np.isnan(x[0, 1]) and x[1, 1] == 5  # the formula is a missing value, not evaluated


def test_json_non_finite_literals_are_documented_floats(tmp_path: Path) -> None:
    path = tmp_path / "n.json"
    path.write_text('[{"a": NaN, "b": Infinity, "y": 1}, {"a": 1, "b": -Infinity, "y": 0}]')
    from datastack.formats import open_iterator
    from datastack.resources import StreamedResource

    it = open_iterator("json", [StreamedResource.from_path("n.json", str(path))])
    x, _y = it.get_batch([0, 1])
    assert np.isnan(x[0, 0]) and x[0, 1] == np.inf and x[1, 1] == -np.inf


def test_spec_option_errors(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    path.write_bytes(b"x")
    for body, key in (
        ("    format: parquet\n    parquet: {dtype: float16}\n", "parquet.dtype"),
        ("    format: excel\n    excel: {sheet: -1}\n", "excel.sheet"),
        ("    format: jsonl\n    jsonl: {txt: [a]}\n", "jsonl.txt"),
    ):
        spec = write_spec(tmp_path / "s.yaml", "t", [path], body)
        with pytest.raises(DatastackError, match=key.replace(".", r"\.")):
            datastack.refresh(spec, storage=str(tmp_path / "store"))


def test_blocks_of_a_streamed_table_get_one_set_of_codes(tmp_path: Path, monkeypatch: Any) -> None:
    """Read in many small blocks (as a large file is), the codes are those of one whole read."""
    from datastack.formats import tables

    frame = pd.read_csv(penguins_csv()).iloc[::-1]  # classes first seen in another order
    path = tmp_path / "p.csv"
    frame.to_csv(path, index=False)
    spec = write_spec(tmp_path / "s.yaml", "p", [path],
                      "    format: csv\n    csv: {target: species, text: [island]}\n"
                      "    splits: {train: 0.5, test: 0.5}\n    stratify: true\n")
    whole = str(tmp_path / "whole")
    [result] = datastack.refresh(spec, storage=whole)
    assert result.status == "published", result.reason
    monkeypatch.setattr(tables, "BLOCK_ROWS", 7)
    small = str(tmp_path / "small")
    [again] = datastack.refresh(spec, storage=small)
    assert again.status == "published", again.reason
    for split in ("train", "test"):
        a = datastack.load("p", split, storage=whole)
        b = datastack.load("p", split, storage=small)
        for col_a, col_b in zip(a.get_batch(range(len(a))), b.get_batch(range(len(b))),
                                strict=True):
            np.testing.assert_array_equal(col_a, col_b)
    it = datastack.load("p", "train+test", storage=small)
    names = it.fields["species"].names
    _x, island, species = it.get_batch(range(len(it)))
    assert sorted(set(island)) == ["Biscoe", "Dream", "Torgersen"]
    counts = frame["species"].value_counts()
    assert {n: int((species == i).sum()) for i, n in enumerate(names)} == counts.to_dict()


def test_csv_byte_order_mark_is_stripped(tmp_path: Path) -> None:
    from datastack.formats import open_iterator
    from datastack.resources import StreamedResource
    from datastack.specs import CsvOptions

    data = "\ufeffname,score,grade\nÅsa,1.5,a\nZoë,2,b\n".encode()
    options = CsvOptions(target="grade", text=("name",))
    it = open_iterator("csv", [StreamedResource.from_bytes("bom.csv", data)], options)
    assert it.column_names == ["name", "score", "grade"]
    assert [s[1] for s in it] == ["Åsa", "Zoë"] and it[1][0].tolist() == [2.0]
