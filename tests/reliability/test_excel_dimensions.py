"""A tiny .xlsx declaring A1:XFD1048576, or with cells far apart, is read quickly (the declared
dimension is ignored) or refused clearly (#26.9)."""

from __future__ import annotations

import re
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from datastack.errors import FormatError
from datastack.formats import get_format
from datastack.formats.inputs import RawInput

openpyxl = pytest.importorskip("openpyxl")


def _workbook(path: Path, rows: list[list[Any]]) -> Path:
    book = openpyxl.Workbook()
    for row in rows:
        book.active.append(row)
    book.save(path)
    return path


def _rewrite_sheet(path: Path, out: Path, dimension: str, extra_rows: bytes = b"",
                   all_rows: bytes | None = None) -> Path:
    """``path`` with its first sheet's <dimension> replaced and ``extra_rows`` appended (or
    every row replaced by ``all_rows``)."""
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                data, count = re.subn(rb'<dimension ref="[^"]*" ?/>',
                                      f'<dimension ref="{dimension}"/>'.encode(), data)
                assert count == 1
                data = data.replace(b"</sheetData>", extra_rows + b"</sheetData>")
                if all_rows is not None:
                    data = re.sub(rb"<sheetData>.*</sheetData>",
                                  b"<sheetData>" + all_rows + b"</sheetData>", data, flags=re.S)
            dst.writestr(info, data)
    return out


def _blocks(path: Path) -> list[Any]:
    raw = RawInput(None, path.name, lambda: open(path, "rb"), path.stat().st_size, path)
    fmt: Any = get_format("excel")
    return list(fmt.blocks(raw, fmt.default_options()))


TABLE = [["a", "b", "y"], *[[i, i * 2.5, i % 2] for i in range(6)]]


@pytest.mark.parametrize("dimension", ["A1:XFD1048576", "A1:XFD1", "A1:C1048576", "A1:ZZZ9"])
def test_bogus_dimension_is_ignored(dimension: str, tmp_path: Path) -> None:
    plain = _workbook(tmp_path / "plain.xlsx", TABLE)
    # the last row far below: before, 10^6 rows padded to 16,384 columns were scanned
    far = b'<row r="1048576"><c r="A1048576"><v>9</v></c><c r="C1048576"><v>1</v></c></row>'
    bogus = _rewrite_sheet(plain, tmp_path / "bogus.xlsx", dimension, far)
    assert bogus.stat().st_size < 10_000
    started = time.monotonic()
    blocks = _blocks(bogus)
    assert time.monotonic() - started < 20  # generous: minutes before the fix
    columns = [list(c) for b in blocks for c in zip(*b.columns, strict=True)]
    assert [row[0] for row in columns] == [0, 1, 2, 3, 4, 5, 9]
    assert [row[2] for row in columns] == [0, 1, 0, 1, 0, 1, 1]


def test_a_stray_cell_far_right_is_a_ragged_row_at_once(tmp_path: Path) -> None:
    plain = _workbook(tmp_path / "plain.xlsx", TABLE)
    stray = b'<row r="9"><c r="XFD9"><v>1</v></c></row>'
    bogus = _rewrite_sheet(plain, tmp_path / "stray.xlsx", "A1:XFD1048576", stray)
    with pytest.raises(FormatError, match="row 9: values beyond the 3 columns"):
        _blocks(bogus)


def test_sparse_cells_far_apart_are_refused_by_the_cell_budget(tmp_path: Path) -> None:
    """A header reaching column XFD and many rows with one cell each: every row would pad to
    16,384 cells (~40 bytes of XML each); refused once one cell per XML byte is passed."""
    rows = b'<row r="1"><c r="A1" t="inlineStr"><is><t>a</t></is></c>' \
           b'<c r="XFD1" t="inlineStr"><is><t>y</t></is></c></row>'
    rows += b"".join(f'<row r="{r}"><c r="XFD{r}"><v>1</v></c></row>'.encode()
                     for r in range(2, 3000))
    plain = _workbook(tmp_path / "one.xlsx", [["a"]])
    sparse = _rewrite_sheet(plain, tmp_path / "sparse.xlsx", "A1:XFD3000", b"", rows)
    started = time.monotonic()
    with pytest.raises(FormatError, match=r"row \d+: the sheet pads more than \d+ cells"):
        _blocks(sparse)
    assert time.monotonic() - started < 20
