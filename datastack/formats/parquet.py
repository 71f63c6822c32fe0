"""Parquet tables (``format: parquet``, pyarrow), read one batch of a row group at a time.

Numeric and boolean columns arrive as float arrays (nulls -> NaN), strings as Python strings
(nulls -> missing), binary columns must hold UTF-8 (an error names the row and column),
dictionary columns (pandas categoricals) are decoded to their values, dates and times become
their ISO text (categorical). Typing then follows the shared table policy, so the same table
in CSV, Parquet, Excel or a DataFrame gives the same samples. Needs the ``tables`` extra.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from datastack.errors import FormatError, MissingDependencyError
from datastack.formats._numbers import EXACT_INTEGER
from datastack.formats._seekable import seekable_input
from datastack.formats._table_policy import Block
from datastack.formats.inputs import RawInput
from datastack.formats.tables import BLOCK_ROWS, TableFormat


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise MissingDependencyError(
            "format parquet needs pyarrow: pip install 'datastack[tables]'"
        ) from None
    return pyarrow


def _beyond_float64(pa: Any, array: Any) -> bool:
    """Whether an integer column holds a value float64 cannot hold exactly (beyond 2^53)."""
    import pyarrow.compute as pc

    if array.type.bit_width < 54 or array.null_count == len(array):
        return False
    low, high = pc.min_max(array).values()
    return bool(high.as_py() > EXACT_INTEGER or low.as_py() < -EXACT_INTEGER)


def _column(pa: Any, array: Any, name: str, first_row: int, where: str) -> Any:
    kind = array.type
    if pa.types.is_dictionary(kind):
        array = array.cast(kind.value_type)
        kind = array.type
    if pa.types.is_integer(kind) and _beyond_float64(pa, array):
        # as the digits a CSV would hold: the table policy names the row, column and value
        # (or keeps the column as written when it is listed in text / categorical)
        return [None if v is None else str(v) for v in array.to_pylist()]
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        values = array.cast(pa.float64()).to_numpy(zero_copy_only=False)
        return np.asarray(values, dtype=np.float64)
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        out = []
        for k, value in enumerate(array.to_pylist()):
            try:
                out.append(None if value is None else value.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise FormatError(f"{where}: row {first_row + k}, column {name!r}: bytes not "
                                  f"valid UTF-8 ({exc.reason})") from None
        return out
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return array.to_pylist()
    if pa.types.is_temporal(kind):
        return [None if v is None else v.isoformat() for v in array.to_pylist()]
    raise FormatError(f"{where}: column {name!r} has type {kind}; tables take numbers, "
                      "booleans, strings and dates")


class ParquetFormat(TableFormat):
    """Parquet files (``parquet:`` block: the table options)."""

    name = "parquet"
    options_key = "parquet"

    def blocks(self, raw: RawInput, options: Any) -> Iterator[Block]:
        pa = _pyarrow()
        with seekable_input(raw) as stream:
            try:
                file = pa.parquet.ParquetFile(stream)
            except (pa.ArrowException, OSError, ValueError) as exc:
                raise FormatError(f"{raw.name}: not a readable Parquet file ({exc})") from None
            names = list(file.schema_arrow.names)
            row = 1
            try:
                for batch in file.iter_batches(batch_size=BLOCK_ROWS):
                    columns = [_column(pa, batch.column(j), names[j], row, raw.name)
                               for j in range(len(names))]
                    yield Block(names, columns, range(row, row + batch.num_rows))
                    row += batch.num_rows
            except (pa.ArrowException, OSError) as exc:
                raise FormatError(f"{raw.name}: corrupt Parquet data near row {row} ({exc})"
                                  ) from None


FORMAT = ParquetFormat()

__all__ = ["FORMAT", "ParquetFormat"]
