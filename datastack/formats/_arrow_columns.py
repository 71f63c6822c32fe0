"""The table policy's vectorised steps: one block column as an Arrow array, converted with
Arrow compute and numpy (never a Python object per cell on the way that succeeds).

Every table format hands :class:`~datastack.formats._table_policy.TablePolicy` its columns as
Arrow arrays (CSV and JSON Lines from pyarrow's streaming readers, Parquet batches as they
are) or as numpy numbers (DataFrames); cells gathered in Python (Excel rows, JSON arrays) are
turned into one Arrow array per column here (:func:`as_column`). The policy then asks for:

* :func:`numbers` -- a string or numeric column as float64 (NaN for missing), or ``None``
  when some value is not a number (the caller then looks at the cells one by one, which
  either makes the column categorical or names the row and column of the bad value);
* :func:`labels` -- the category label of every row (stripped text; numbers as written
  by :func:`label_of`) as a dictionary-encoded array plus the missing mask;
* :func:`text` -- the strings of a text column, missing values as ``""``.

:class:`FeatureCodes` and :class:`TargetCodes` map provisional category codes (first
appearance) to the final ones on copy.

A value that Arrow's parser takes but the numbers policy refuses (a literal that overflows
float64, an integer above 2^53) is found by a vectorised test on the parsed values, and only
those rows are looked at again with :func:`~datastack.formats._numbers.parse_number`.

>>> import pyarrow as pa
>>> values, missing = numbers(pa.array(["1", " 2.5", "NA", None]), frozenset({"NA"}))
>>> values.tolist(), missing.tolist()
([1.0, 2.5, nan, nan], [False, False, True, True])
>>> numbers(pa.array(["1", "x"]), frozenset()) is None
True
>>> labels_, missing = labels(pa.array([" b", "a", "", "b"]), frozenset({""}))
>>> labels_.dictionary.to_pylist(), labels_.indices.to_pylist(), missing.tolist()
(['b', 'a'], [0, 1, None, 0], [False, False, True, False])
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from datastack.formats._numbers import (
    EXACT_INTEGER,
    NumberError,
    OverflowNumber,
    parse_number,
)

_Mask = NDArray[np.bool_]


def _pa() -> Any:
    import pyarrow

    return pyarrow


def label_of(value: Any) -> str:
    """A category label as written: text stripped; a whole float without its ``.0`` (below
    2^53, where it is exact; ``-0`` keeps its sign), else as Python writes it."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, float):
        return _float_text(value)
    return str(value)


def _float_text(cell: float) -> str:
    if cell.is_integer() and abs(cell) < EXACT_INTEGER:
        return "-0" if math.copysign(1.0, cell) < 0 and cell == 0 else str(int(cell))
    return repr(cell)  # 1e+20 stays a float


def _cell_text(cell: Any) -> str | None:
    """A Python cell of a mixed column as text (``None``: missing)."""
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return None
    if isinstance(cell, str):
        return cell
    if isinstance(cell, OverflowNumber):
        return cell.literal
    if isinstance(cell, bool):
        return "1" if cell else "0"
    if isinstance(cell, float):
        return _float_text(cell)  # as label_of writes it
    if hasattr(cell, "isoformat"):
        return str(cell.isoformat())
    if isinstance(cell, bytes):
        return cell.decode("utf-8", "surrogateescape")
    return str(cell)


def as_column(cells: Any) -> Any:
    """A block column as an Arrow array, or a numpy numeric array as it is.

    A list of Python cells becomes an Arrow array of its one type (strings, numbers,
    booleans; ``None``/NaN missing); a mixed list (numbers and strings in one Excel column)
    becomes strings, numbers written as their exact text (a whole float below 2^53 as its
    label, ``1`` for ``1.0``, so that its label does not depend on the other cells of its
    block), so the policy reads them back exactly. A column of nulls (an all-missing block of
    a sparse JSON key) is a null string column. Dictionary arrays are decoded; temporal
    arrays become ISO text."""
    pa = _pa()
    if isinstance(cells, np.ndarray) and cells.dtype.kind in "biuf":
        return cells
    if isinstance(cells, pa.ChunkedArray):
        cells = cells.combine_chunks()
    if not isinstance(cells, pa.Array):
        values = list(cells)
        kinds = {type(v) for v in values if v is not None}
        if not kinds:  # every cell missing: a column of nulls (as text, like Arrow's)
            return pa.nulls(len(values), pa.string())
        if kinds <= {str} or kinds <= {bool} or (
            kinds <= {int, float} and not _has_overflow(values)
        ):
            try:
                return pa.array(values, from_pandas=True)
            except (pa.ArrowException, OverflowError):  # an int beyond int64
                pass
        return pa.array([_cell_text(v) for v in values], pa.string())
    kind = cells.type
    if pa.types.is_null(kind):
        return pa.nulls(len(cells), pa.string())
    if pa.types.is_dictionary(kind):
        return as_column(cells.cast(kind.value_type))
    if pa.types.is_date32(kind) or pa.types.is_date64(kind):  # ISO dates, as isoformat()
        return cells.cast(pa.date32()).cast(pa.string())
    if pa.types.is_temporal(kind):
        return pa.array([None if v is None else v.isoformat() for v in cells.to_pylist()],
                        pa.string())
    return cells


def _has_overflow(values: Sequence[Any]) -> bool:
    return any(isinstance(v, OverflowNumber) for v in values)


def missing_mask(array: Any, missing: frozenset[str]) -> tuple[Any, _Mask]:
    """``(stripped array, missing mask)`` of a string array: null, or a missing marker once
    stripped of whitespace."""
    import pyarrow.compute as pc

    pa = _pa()
    stripped = pc.utf8_trim_whitespace(array)
    marks = pc.is_in(stripped, value_set=pa.array(sorted(missing), pa.string()))
    mask = pc.or_kleene(marks, array.is_null()).fill_null(True)
    return stripped, np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)


def _cast_float(array: Any) -> Any:
    import pyarrow.compute as pc

    pa = _pa()
    try:
        return pc.cast(array, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def numbers(array: Any, missing: frozenset[str]) -> tuple[NDArray[np.float64], _Mask] | None:
    """A column as float64 (NaN where missing) and its missing mask; ``None`` when a value is
    not a number by Arrow's parser (the caller looks at the cells)."""
    import pyarrow.compute as pc

    pa = _pa()
    if pa.types.is_boolean(array.type) or pa.types.is_integer(array.type) or (
        pa.types.is_floating(array.type)
    ):
        mask = np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        values = np.asarray(array.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False),
                            dtype=np.float64)
        return values, mask | np.isnan(values)
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        return None
    # most numeric columns hold no marker: one cast (unless a marker is itself a number)
    parsed = None if _numeric_markers(missing) else _cast_float(array)
    if parsed is None:
        marks = pc.is_in(array, value_set=pa.array(sorted(missing), pa.string()))
        parsed = _cast_float(pc.if_else(marks, pa.scalar(None, array.type), array))
    if parsed is None:  # whitespace around numbers or markers, or not numbers at all
        stripped, mask = missing_mask(array, missing)
        parsed = _cast_float(pc.if_else(pa.array(mask), pa.scalar(None, array.type), stripped))
        if parsed is None:
            return None
    values = np.asarray(parsed.to_numpy(zero_copy_only=False), dtype=np.float64)
    return values, np.isnan(values)


@functools.lru_cache(maxsize=64)
def _numeric_markers(missing: frozenset[str]) -> bool:
    """Whether a missing marker reads as a number other than NaN (``-999``)."""
    for marker in missing:
        try:
            number = parse_number(marker)
        except NumberError:
            continue
        if number is not None and not math.isnan(number):
            return True
    return False


def suspects(values: NDArray[np.float64]) -> NDArray[np.int64]:
    """Rows whose parsed value the numbers policy may refuse: infinities (a literal that
    overflows, or ``inf`` spelled out) and magnitudes from 2^53 up (an integer float64 cannot
    hold, or a float written with an exponent): checked again one by one."""
    with np.errstate(invalid="ignore"):
        return np.flatnonzero(np.abs(values) >= EXACT_INTEGER).astype(np.int64)


def integers_beyond_float64(array: Any) -> NDArray[np.int64]:
    """Rows of an Arrow integer array that float64 cannot hold exactly."""
    import pyarrow.compute as pc

    pa = _pa()
    if not pa.types.is_integer(array.type) or array.type.bit_width < 54:
        return np.empty(0, np.int64)
    big = pc.greater(pc.abs_checked(array.cast(pa.decimal128(20, 0))), EXACT_INTEGER)
    return np.flatnonzero(np.asarray(big.fill_null(False).to_numpy(zero_copy_only=False)))


def labels(array: Any, missing: frozenset[str]) -> tuple[Any, _Mask]:
    """``(dictionary array of labels, missing mask)``: labels are stripped text, or numbers as
    :func:`label_of` writes them; missing rows are null in the dictionary array."""
    pa = _pa()
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        stripped, mask = missing_mask(array, missing)
    else:
        found = numbers(array, missing)
        mask = found[1] if found is not None else np.zeros(len(array), bool)
        stripped = array
    kept = stripped.filter(pa.array(~mask)) if mask.any() else stripped
    encoded = kept.dictionary_encode()
    if not (pa.types.is_string(encoded.dictionary.type)):
        names = pa.array([label_of(v) for v in encoded.dictionary.to_pylist()], pa.string())
        encoded = pa.DictionaryArray.from_arrays(encoded.indices, names)
    if mask.any():
        positions = np.full(len(array), -1, np.int64)
        positions[~mask] = np.asarray(encoded.indices.to_numpy(zero_copy_only=False))
        indices = pa.array(positions, mask=mask).cast(pa.int32())
        encoded = pa.DictionaryArray.from_arrays(indices, encoded.dictionary)
    return encoded, mask


def text(array: Any, missing: frozenset[str]) -> Any:
    """The strings of a text column (as written), ``""`` where missing; numbers as labels."""
    import pyarrow.compute as pc

    pa = _pa()
    if pa.types.is_integer(array.type):  # the same digits as str(int), in C
        return pc.if_else(array.is_null(), "", array.cast(pa.string()))
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        found = numbers(array, missing)  # floats and booleans: as label_of writes them
        gone = found[1] if found is not None else np.zeros(len(array), bool)
        values = array.to_pylist()
        return pa.array(["" if gone[k] else label_of(v) for k, v in enumerate(values)],
                        pa.string())
    _, mask = missing_mask(array, missing)
    if not mask.any():
        return array
    return pc.if_else(pa.array(mask), pa.scalar("", array.type), array)


class FeatureCodes:
    """Provisional -> final category codes in the categorical columns of a feature block."""

    def __init__(self, lookups: Mapping[int, NDArray[np.int64]]) -> None:
        self.lookups = dict(lookups)

    def __call__(self, block: NDArray[Any]) -> NDArray[Any]:
        block = np.array(block, copy=True)
        for j, lookup in self.lookups.items():
            known = ~np.isnan(block[:, j])
            block[known, j] = lookup[block[known, j].astype(np.int64)]
        return block


class TargetCodes:
    """Provisional -> final class codes of a target block."""

    def __init__(self, lookup: NDArray[np.int64]) -> None:
        self.lookup = lookup

    def __call__(self, block: NDArray[Any]) -> NDArray[np.int64]:
        return self.lookup[np.asarray(block).astype(np.int64)]


def as_int64(block: NDArray[Any]) -> NDArray[np.int64]:
    return np.asarray(block).astype(np.int64)


class Picked(Sequence[int]):
    """The row numbers of some rows of a block, looked up only when an error names one."""

    def __init__(self, rows: Sequence[int], picked: NDArray[np.int64]) -> None:
        self.rows = rows
        self.picked = picked

    def __len__(self) -> int:
        return len(self.picked)

    def __getitem__(self, k: Any) -> Any:
        return self.rows[int(self.picked[k])]


__all__ = [
    "FeatureCodes",
    "Picked",
    "TargetCodes",
    "as_column",
    "as_int64",
    "integers_beyond_float64",
    "label_of",
    "labels",
    "missing_mask",
    "numbers",
    "suspects",
    "text",
]
