"""Parquet tables (``format: parquet``, pyarrow), read one batch of a row group at a time.

Each batch's columns go to the table policy as Arrow arrays (no Python object per value):
numbers and booleans (nulls -> NaN), strings (nulls -> missing), binary columns that must hold
UTF-8 (an error names the row and column), dictionary columns (pandas categoricals) decoded to
their values, dates and times as their ISO text (categorical); an integer above 2^53 in a
numeric column is an error naming its row. Typing then follows the shared table policy, so
the same table in CSV, Parquet, Excel or a DataFrame gives the same samples.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from datastack.errors import FormatError
from datastack.formats._seekable import seekable_input
from datastack.formats._table_policy import Block
from datastack.formats.inputs import RawInput
from datastack.formats.tables import BLOCK_CELLS, TableFormat


def _pyarrow() -> Any:
    import pyarrow
    import pyarrow.parquet

    return pyarrow


def _column(pa: Any, array: Any, name: str, first_row: int, where: str) -> Any:
    """One Parquet column as the Arrow array the table policy types (binary must be UTF-8)."""
    kind = array.type
    if pa.types.is_dictionary(kind):
        array = array.cast(kind.value_type)
        kind = array.type
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        try:
            return array.cast(pa.large_string() if pa.types.is_large_binary(kind)
                              else pa.string())
        except pa.ArrowInvalid:
            for k, value in enumerate(array.to_pylist()):
                try:
                    None if value is None else value.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise FormatError(f"{where}: row {first_row + k}, column {name!r}: bytes "
                                      f"not valid UTF-8 ({exc.reason})") from None
            raise
    if (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
            or pa.types.is_string(kind) or pa.types.is_large_string(kind)
            or pa.types.is_temporal(kind)):
        return array
    raise FormatError(f"{where}: column {name!r} has type {kind}; tables take numbers, "
                      "booleans, strings and dates")


def _batch_rows(columns: int) -> int:
    """Rows per batch: typed columns cost little per cell (no text to parse), so batches are
    4x the cells of a parsed block (fewer, larger appends), at most 65,536 rows."""
    return max(1, min(1 << 16, 4 * BLOCK_CELLS // max(1, columns)))


class ParquetFormat(TableFormat):
    """Parquet files (``parquet:`` block: the table options)."""

    name = "parquet"
    options_key = "parquet"

    def blocks(self, raw: RawInput, options: Any) -> Iterator[Block]:
        return row_group_blocks(raw)


def row_group_blocks(raw: RawInput, first: int = 0, stop: int | None = None
                     ) -> Iterator[Block]:
    """The blocks of row groups ``first`` .. ``stop - 1`` (all by default: what the format
    reads; a part of the file, ``datastack.formats._parts``), rows numbered in the file."""
    pa = _pyarrow()
    with seekable_input(raw) as stream:
        try:
            file = pa.parquet.ParquetFile(stream)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise FormatError(f"{raw.name}: not a readable Parquet file ({exc})") from None
        names = list(file.schema_arrow.names)
        meta = file.metadata
        groups = list(range(first, meta.num_row_groups if stop is None else stop))
        row = 1 + sum(meta.row_group(g).num_rows for g in range(first))
        try:
            for batch in file.iter_batches(batch_size=_batch_rows(len(names)),
                                           row_groups=groups):
                columns = [_column(pa, batch.column(j), names[j], row, raw.name)
                           for j in range(len(names))]
                yield Block(names, columns, range(row, row + batch.num_rows))
                row += batch.num_rows
        except (pa.ArrowException, OSError) as exc:
            raise FormatError(f"{raw.name}: corrupt Parquet data near row {row} ({exc})"
                              ) from None


class RowGroupsFormat(ParquetFormat):
    """Parquet read from row groups ``first`` .. ``stop - 1`` only: a part of a file
    (``datastack.formats._parts``), rows numbered in the file as the whole file numbers them."""

    def __init__(self, first: int, stop: int) -> None:
        self.first, self.stop = first, stop

    def blocks(self, raw: RawInput, options: Any) -> Iterator[Block]:
        return row_group_blocks(raw, self.first, self.stop)


FORMAT = ParquetFormat()

__all__ = ["FORMAT", "ParquetFormat", "RowGroupsFormat", "row_group_blocks"]
