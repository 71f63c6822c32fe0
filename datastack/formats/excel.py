"""Excel workbooks (``format: excel``, ``.xlsx`` via openpyxl): one sheet as a table.

``excel: {sheet: NAME or index (default 0), header: true, skip_rows: 0}`` plus the table
options. The workbook is opened read-only with cached values only (``data_only``): formulas
are never evaluated (a formula without a cached value is a missing value) and external links
are not loaded. An ``.xlsx`` is a zip: its declared expanded size, ratio and member count are
checked before openpyxl sees it (:data:`MAX_EXPANDED_BYTES`, :data:`MAX_RATIO`), so a zip bomb
is refused without inflating it. Needs the ``tables`` extra.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

from datastack._checks import Checker
from datastack.errors import FormatError, MissingDependencyError, UnsafeArchiveError
from datastack.formats._seekable import seekable_input
from datastack.formats._table_policy import Block, TableOptions
from datastack.formats.archives import check_zip_directory
from datastack.formats.inputs import RawInput
from datastack.formats.tables import TableFormat, row_blocks

MAX_EXPANDED_BYTES = 1024**3
MAX_RATIO = 200
RATIO_FLOOR = 16 * 1024 * 1024
MAX_MEMBERS = 10_000
#: Cells (padding included) a sheet may yield at least; beyond, one per byte of expanded XML.
MIN_CELL_BUDGET = 1 << 22


@dataclass(frozen=True)
class ExcelOptions(TableOptions):
    """Options of the ``excel:`` block: the table options plus the sheet and its header."""

    sheet: str | int = 0
    header: bool = True
    skip_rows: int = 0


def check_zip_caps(stream: IO[bytes], name: str) -> int:
    """Refuse an ``.xlsx`` whose members would expand beyond the caps (zip bomb); return the
    declared expanded size."""
    check_zip_directory(stream, name, MAX_MEMBERS)
    try:
        with zipfile.ZipFile(stream) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise FormatError(f"{name}: not an .xlsx workbook (not a zip archive: {exc})") from None
    expanded = sum(m.file_size for m in members)
    packed = max(1, sum(m.compress_size for m in members))
    if len(members) > MAX_MEMBERS or expanded > MAX_EXPANDED_BYTES or (
        expanded > RATIO_FLOOR and expanded / packed > MAX_RATIO
    ):
        raise UnsafeArchiveError(
            f"{name}: the workbook expands to {expanded} bytes in {len(members)} members "
            f"(ratio {expanded / packed:.0f}); caps are {MAX_EXPANDED_BYTES} bytes, ratio "
            f"{MAX_RATIO}, {MAX_MEMBERS} members"
        )
    stream.seek(0)
    return expanded


def _sheet(workbook: Any, ref: str | int, name: str) -> Any:
    names = list(workbook.sheetnames)
    if isinstance(ref, int):
        if not 0 <= ref < len(names):
            raise FormatError(f"{name}: excel.sheet index {ref} out of range; sheets: {names}")
        return workbook[names[ref]]
    if ref not in names:
        raise FormatError(f"{name}: excel.sheet {ref!r} not found; sheets: {names}")
    return workbook[ref]


class ExcelFormat(TableFormat):
    """``.xlsx`` workbooks, one sheet (``excel:`` block)."""

    name = "excel"
    options_key = "excel"
    options_class = ExcelOptions
    own_keys = ("sheet", "header", "skip_rows")

    def parse_own(self, raw: Mapping[str, Any], check: Checker) -> dict[str, Any]:
        sheet = raw.get("sheet", 0)
        if isinstance(sheet, bool) or not isinstance(sheet, (str, int)) or (
            isinstance(sheet, int) and sheet < 0
        ):
            raise check.fail("sheet", f"expected a sheet name or index >= 0, got {sheet!r}")
        return {
            "sheet": sheet,
            "header": check.boolean(raw.get("header", True), "header"),
            "skip_rows": check.integer(raw.get("skip_rows", 0), "skip_rows"),
        }

    def blocks(self, raw: RawInput, options: Any) -> Iterator[Block]:
        try:
            import openpyxl
        except ImportError:
            raise MissingDependencyError(
                "format excel needs openpyxl: pip install 'datastack[tables]'"
            ) from None
        with seekable_input(raw) as stream:
            expanded = check_zip_caps(stream, raw.name)
            try:
                workbook = openpyxl.load_workbook(
                    stream, read_only=True, data_only=True, keep_links=False
                )
            except Exception as exc:
                raise FormatError(f"{raw.name}: not a readable .xlsx workbook ({exc})") from None
            try:
                sheet = _sheet(workbook, options.sheet, raw.name)
                # The declared <dimension> (A1:XFD1048576 in a 5 KB file) is not trusted:
                # rows are only as wide as their cells, missing rows are empty.
                sheet.reset_dimensions()
                names: list[str] = []
                cells = _bounded(sheet.iter_rows(values_only=True), raw.name,
                                 max(MIN_CELL_BUDGET, expanded))
                rows = _sheet_rows(cells, raw.name, options, names)
                yield from row_blocks(names, rows)
            finally:
                workbook.close()


def _bounded(
    rows: Iterator[tuple[Any, ...]], name: str, budget: int
) -> Iterator[tuple[Any, ...]]:
    """The rows, refused once they hold more cells (padding included) than ``budget``: one
    cell per byte of XML is far more than any real sheet holds (a cell takes 20+ bytes), so
    only a sparse sheet with cells far to the right pads beyond it."""
    seen = 0
    for number, cells in enumerate(rows, start=1):
        seen += len(cells) + 1
        if seen > budget:
            raise FormatError(
                f"{name}: row {number}: the sheet pads more than {budget} cells (one per "
                "byte of its expanded XML): its cells lie far apart (columns up to "
                f"{len(cells)}); refused. Delete the stray cells far to the right or below "
                "the table, or save it as CSV"
            )
        yield cells


def _sheet_rows(
    rows: Iterator[tuple[Any, ...]], name: str, options: Any, names: list[str]
) -> Iterator[tuple[int, list[Any]]]:
    """Non-empty rows after ``skip_rows``; fills ``names`` from the header row first."""
    for number, cells in enumerate(rows, start=1):
        if number <= options.skip_rows or all(c is None or c == "" for c in cells):
            continue
        values = list(cells)
        if not names:
            width = max(i + 1 for i, c in enumerate(values) if c not in (None, ""))
            if options.header:
                names.extend(str(c).strip() if c is not None else f"column_{i}"
                             for i, c in enumerate(values[:width]))
                continue
            names.extend(f"column_{i}" for i in range(width))
        if any(c not in (None, "") for c in values[len(names):]):
            raise FormatError(f"{name}: row {number}: values beyond the {len(names)} columns "
                              "of the header (ragged row)")
        yield number, (values + [None] * len(names))[: len(names)]


FORMAT = ExcelFormat()

__all__ = ["FORMAT", "MAX_EXPANDED_BYTES", "ExcelFormat", "ExcelOptions", "check_zip_caps"]
