"""The table-typing policy, once for every tabular format (CSV, JSON Lines, JSON, Parquet,
Excel, DataFrames): typed columns, category codes, missing values, text and feature columns.

Policy (``docs/preprocessing.md``):

* a column is *categorical* when listed in ``categorical`` or when its first non-missing value
  is not a number (a string that parses as a number counts as a number); otherwise it is
  numeric, and a later non-number in it is an error naming the row and column;
* categorical values become codes ``0..k-1`` over the sorted labels (numbers first, in numeric
  order, then text), returned as ``encodings[column]``; codes never depend on row order; a
  later version of a dataset continues the codes of the one before (``known`` in
  :meth:`TablePolicy.finish`, :mod:`datastack._codes`): known labels keep theirs, new labels
  take the next codes, so a code never changes meaning;
* a feature column found categorical by itself (not listed) with many distinct values -- more
  than half the rows (from :data:`MIN_AMBIGUOUS_DISTINCT` values on), or more than
  :data:`MAX_IMPLICIT_CATEGORIES` -- is an error asking
  whether it is ``text`` or ``categorical`` (free text must not silently become codes);
* a value in ``missing`` (and a null: JSON ``null``, Parquet null, an empty Excel cell, NaN) is
  NaN in the features; a missing categorical *target* is an error;
* ``text: [columns]`` are kept as strings (own fields, before the target; missing -> ``""``);
  ``features: [columns]`` keeps only those as the feature vector (default: every other column);
* the feature vector is ``float32`` by default (``dtype: float64`` keeps double precision);
* the target (default: last column) is a label (int64 codes with names) when categorical,
  int64 when every value is an integer and none is missing, float64 otherwise.

:class:`TablePolicy` converts blocks of columns (bounded memory) into staged blocks with
provisional codes; :meth:`TablePolicy.finish` gives the final fields, the transforms that turn
provisional codes into final codes, and the encodings; :meth:`TablePolicy.new_values` the
labels (and their row counts) that the known codes did not have.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from datastack._checks import Checker
from datastack._codes import KnownCodes, continued, known_for, new_labels
from datastack.errors import FormatError
from datastack.fields import ARRAY, LABEL, STRING, Field
from datastack.formats._arrow_columns import (
    FeatureCodes,
    Picked,
    TargetCodes,
    as_column,
    as_int64,
    integers_beyond_float64,
    label_of,
    labels,
    missing_mask,
    numbers,
    suspects,
    text,
)
from datastack.formats._numbers import NumberError, needs_checking, parse_number

DEFAULT_MISSING = ("", "NA", "N/A", "NaN", "nan", "null", "NULL", "?")
FEATURE_DTYPES = ("float32", "float64")
#: Keys every table format accepts in its block (besides its own).
TABLE_KEYS = ("target", "categorical", "missing", "text", "features", "dtype")
#: Keys added after specs were fingerprinted: left out of the fingerprint at their default.
NEW_KEY_DEFAULTS: dict[str, Any] = {"text": (), "features": None, "dtype": "float32"}
FEATURES_FIELD = "features"
#: A feature column not listed in ``categorical`` that holds more distinct strings than this
#: (or than half the rows) is an error: free text or categories? The spec must say.
MAX_IMPLICIT_CATEGORIES = 1000
#: The half-the-rows rule applies from this many distinct strings on: a small table whose few
#: labels repeat (3 rows, "red, blue, red") stays categorical without a word.
MIN_AMBIGUOUS_DISTINCT = 10


@dataclass(frozen=True)
class TableOptions:
    """The options every table format shares (``jsonl:``, ``json:``, ``parquet:`` blocks)."""

    target: str | int | None = None
    categorical: tuple[str | int, ...] = ()
    missing: tuple[str, ...] = DEFAULT_MISSING
    text: tuple[str | int, ...] = ()
    features: tuple[str | int, ...] | None = None
    dtype: str = "float32"


def parse_table_keys(raw: Mapping[str, Any], check: Checker) -> dict[str, Any]:
    """The shared keys of a table block, validated (unknown keys are the caller's check)."""
    target = raw.get("target")
    dtype = check.string(raw.get("dtype", "float32"), "dtype")
    if dtype not in FEATURE_DTYPES:
        raise check.fail("dtype", f"expected one of {', '.join(FEATURE_DTYPES)}, got {dtype!r}")
    features = raw.get("features")
    return {
        "target": None if target is None else check.column(target, "target"),
        "categorical": check.columns(raw.get("categorical", []), "categorical"),
        "missing": check.strings(raw.get("missing", list(DEFAULT_MISSING)), "missing",
                                 "strings that mean 'missing'"),
        "text": check.columns(raw.get("text", []), "text"),
        "features": None if features is None else check.columns(features, "features"),
        "dtype": dtype,
    }


def table_options_dict(options: Any) -> dict[str, Any]:
    """Options as plain data for the fingerprint: keys added later drop out at their default,
    so specs written before them keep their fingerprint."""
    data = dataclasses.asdict(options)
    for key, default in NEW_KEY_DEFAULTS.items():
        if key in data and (data[key] == default or (default == () and data[key] == [])):
            del data[key]
    return data


def label_key(label: str) -> tuple[int, float, str]:
    """Sort key of category labels: numbers first in numeric order, then text."""
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


@dataclass
class ColumnState:
    """What the policy learnt of one column (kind, provisional codes, integrality)."""

    name: str
    categorical: bool | None = None  # None until the first non-missing value
    listed: bool = False  # listed in ``categorical`` by the spec
    codes: dict[str, int] = field(default_factory=dict)  # first-appearance codes
    counts: dict[int, int] = field(default_factory=dict)  # rows per provisional code
    integral: bool = True
    any_missing: bool = False

    def code_of(self, label: str) -> int:
        """The provisional code of ``label`` (the next one when first seen), counted once."""
        code = self.codes.setdefault(label, len(self.codes))
        self.counts[code] = self.counts.get(code, 0) + 1
        return code

    def labels_and_lookup(
        self, known: Sequence[str] | None = None
    ) -> tuple[list[str], NDArray[np.int64]]:
        """Labels in code order (``known`` continued, :func:`~datastack._codes.continued`;
        else sorted) and provisional code -> final code."""
        labels = continued(known, self.codes, key=label_key)
        position = {label: i for i, label in enumerate(labels)}
        lookup = np.empty(len(self.codes), dtype=np.int64)
        for label, code in self.codes.items():
            lookup[code] = position[label]
        return labels, lookup


@dataclass
class Block:
    """Columns of consecutive rows of one input: ``columns[j]`` is a list of cells or an
    already numeric array (NaN for missing); ``rows`` numbers them for error messages."""

    names: list[str]
    columns: list[Any]
    rows: Sequence[int]


class TablePolicy:
    """Type blocks of a table's columns (see the module docstring).

    >>> policy = TablePolicy(TableOptions(target="y"))
    >>> staged = policy.convert(Block(["a", "y"], [["1", "NA"], ["x", "z"]], [2, 3]), "t.csv")
    >>> fields, transforms, encodings = policy.finish()
    >>> staged["features"].tolist(), transforms["y"](staged["y"]).tolist(), encodings
    ([[1.0], [nan]], [0, 1], {'y': ['x', 'z']})
    """

    def __init__(self, options: Any, prefix: str = "",
                 presets: Mapping[str, bool] | None = None) -> None:
        self.options = options
        #: Kinds decided before any row (a parallel preparation's earlier parts decided
        #: them: ``{column: categorical}``), as if this input came after those rows.
        self.presets = dict(presets or {})
        #: Names the options block in errors (``"csv."``: ``csv.target column ...``).
        self.prefix = prefix
        self.missing = frozenset(options.missing)
        self.names: list[str] | None = None
        self.columns: list[ColumnState] = []
        self.target_index = -1
        self.text_indices: list[int] = []
        self.feature_indices: list[int] = []
        self.rows = 0

    # -- columns -----------------------------------------------------------------------------
    def set_names(self, names: list[str], where: str) -> None:
        """Fix the columns from the first input; later inputs must have the same ones."""
        if self.names is not None:
            if names != self.names:
                raise FormatError(f"{where}: columns {names} differ from the first input's "
                                  f"{self.names}")
            return
        if len(set(names)) != len(names):
            raise FormatError(f"{where}: duplicate column names {names}")
        if len(names) < 2:
            raise FormatError(f"{where}: found {len(names)} column; need features and a target")
        self.names = names
        self.columns = [ColumnState(n, self.presets.get(n)) for n in names]
        opts = self.options
        target = self._resolve(where, opts.target, "target")
        self.target_index = len(names) - 1 if target is None else target
        for ref in opts.categorical:
            column = self.columns[self._index(where, ref, "categorical")]
            column.categorical = column.listed = True
        self.text_indices = sorted({self._index(where, r, "text") for r in opts.text})
        if self.target_index in self.text_indices:
            raise FormatError(f"{where}: the target {names[self.target_index]!r} is listed in text")
        rest = [i for i in range(len(names)) if i != self.target_index and i not in
                self.text_indices]
        if opts.features is not None:
            chosen = {self._index(where, r, "features") for r in opts.features}
            rest = [i for i in rest if i in chosen]
        self.feature_indices = rest

    def _resolve(self, where: str, ref: str | int | None, key: str) -> int | None:
        return None if ref is None else self._index(where, ref, key)

    def _index(self, where: str, ref: str | int, key: str) -> int:
        names = self.names or []
        if isinstance(ref, int):
            if not -len(names) <= ref < len(names):
                raise FormatError(f"{where}: {self.prefix}{key} index {ref} out of range for "
                                  f"{len(names)} columns")
            return ref % len(names)
        if ref not in names:
            raise FormatError(f"{where}: {self.prefix}{key} column {ref!r} not in header {names}")
        return names.index(ref)

    # -- blocks ------------------------------------------------------------------------------
    def staged_fields(self) -> list[Field]:
        """Fields of the staged blocks (target as float64 until :meth:`finish`)."""
        names = self.names or []
        out: list[Field] = []
        if self.feature_indices:
            out.append(Field(FEATURES_FIELD, ARRAY, self.options.dtype,
                             (len(self.feature_indices),),
                             columns=tuple(names[i] for i in self.feature_indices)))
        out.extend(Field(names[i], STRING) for i in self.text_indices)
        out.append(Field(names[self.target_index], ARRAY, "float64", ()))
        return out

    def convert(self, block: Block, where: str) -> dict[str, Any]:
        """One block as staged columns (``features`` matrix, text arrays, float64 target)."""
        self.set_names(block.names, where)
        names = self.names or []
        n = len(block.rows)
        self.rows += n
        out: dict[str, Any] = {}
        if self.feature_indices:
            matrix = np.empty((n, len(self.feature_indices)), dtype=self.options.dtype)
            for j, i in enumerate(self.feature_indices):
                matrix[:, j] = self._numeric(i, as_column(block.columns[i]), block.rows, where)
            out[FEATURES_FIELD] = matrix
        for i in self.text_indices:
            out[names[i]] = self._text(i, as_column(block.columns[i]), block.rows, where)
        out[names[self.target_index]] = self._numeric(
            self.target_index, as_column(block.columns[self.target_index]), block.rows, where
        )
        return out

    def _text(self, i: int, column: Any, rows: Sequence[int], where: str) -> Any:
        if isinstance(column, np.ndarray):
            column = _pa().array(column)
        return text(column, self.missing)

    def _numeric(self, i: int, column: Any, rows: Sequence[int], where: str) -> NDArray[Any]:
        state = self.columns[i]
        if isinstance(column, np.ndarray):  # numbers already (a DataFrame's numeric column)
            values = column.astype(np.float64)
            if needs_checking(column, values):
                return self._cells(i, list(column), rows, where)
            self._note_numbers(state, values)
            return values
        found: Any = False  # not computed yet
        if state.categorical is None:
            found = self._decide(i, column, rows, where)
        if state.categorical:
            return self._codes(i, column, rows, where)
        if len(beyond := integers_beyond_float64(column)):  # refused: names the row
            self._cells(i, column.take(beyond).to_pylist(), Picked(rows, beyond), where)
        if found is False:
            found = numbers(column, self.missing)
        if found is None:
            return self._cells(i, column.to_pylist(), rows, where)
        values = np.asarray(found[0], dtype=np.float64)
        odd = suspects(values)
        if len(odd) and _pa().types.is_string(column.type):
            self._cells(i, column.take(odd).to_pylist(), Picked(rows, odd), where)
        self._note_numbers(state, values)
        return values

    def _decide(self, i: int, column: Any, rows: Sequence[int], where: str) -> Any:
        """A column's kind from its first non-missing value (a number: numeric); returns
        what :func:`numbers` gave for the block (reused by the caller)."""
        state = self.columns[i]
        found = numbers(column, self.missing)
        if found is not None:
            if not bool(found[1].all()):
                state.categorical = False
            return found
        _, mask = missing_mask(column, self.missing) if _is_text(column) else (None, None)
        if mask is None or bool(mask.all()):
            return found
        k = int(np.argmin(mask))
        cell = column[k].as_py()
        try:
            state.categorical = parse_number(cell) is None
        except NumberError as exc:
            raise FormatError(f"{where}: row {rows[k]}, column {state.name!r}: {exc}") from None
        return found

    def _codes(self, i: int, column: Any, rows: Sequence[int], where: str) -> NDArray[Any]:
        """Provisional category codes (first appearance); NaN where missing."""
        state = self.columns[i]
        encoded, mask = labels(column, self.missing)
        if mask.any():
            state.any_missing = True
            if i == self.target_index:
                k = int(np.argmax(mask))
                raise FormatError(f"{where}: row {rows[k]}, column {state.name!r}: missing "
                                  "target class")
        dictionary = encoded.dictionary.to_pylist()
        lookup = np.array([state.codes.setdefault(label, len(state.codes))
                           for label in dictionary] or [0], np.int64)
        indices = np.asarray(encoded.indices.fill_null(0).to_numpy(zero_copy_only=False),
                             dtype=np.int64)
        per_label = np.bincount(indices[~mask], minlength=len(dictionary))
        for code, count in zip(lookup[: len(dictionary)].tolist(), per_label.tolist(),
                               strict=True):
            state.counts[code] = state.counts.get(code, 0) + count
        out = lookup[indices].astype(np.float64)
        out[mask] = math.nan
        return out

    def _note_numbers(self, column: ColumnState, values: NDArray[np.float64]) -> None:
        known = values[~np.isnan(values)]
        if len(known) < len(values):
            column.any_missing = True
        if len(known):
            column.categorical = False
            if column.name != (self.names or [""])[self.target_index]:
                return  # integrality decides the target's type only
            finite = bool(np.isfinite(known).all())
            if column.integral and not (
                finite and bool((np.mod(known, 1) == 0).all() and (np.abs(known) < 2**53).all())
            ):
                column.integral = False

    def _cells(self, i: int, cells: list[Any], rows: Sequence[int], where: str) -> NDArray[Any]:
        """Cell by cell: where a block holds a value Arrow's parser or numpy does not settle
        (a non-number, an overflowing literal, an integer above 2^53), to name its row."""
        column = self.columns[i]
        out = np.empty(len(cells), dtype=np.float64)
        for k, cell in enumerate(cells):
            if cell is None or (isinstance(cell, float) and math.isnan(cell)) or (
                isinstance(cell, str) and cell.strip() in self.missing
            ):
                column.any_missing = True
                if column.categorical and i == self.target_index:
                    raise FormatError(f"{where}: row {rows[k]}, column {column.name!r}: "
                                      "missing target class")
                out[k] = math.nan
                continue
            try:
                number = parse_number(cell)
            except NumberError as exc:
                if not column.categorical:  # a listed categorical keeps it as written
                    raise FormatError(f"{where}: row {rows[k]}, column {column.name!r}: {exc}"
                                      ) from None
                number = None
            if column.categorical is None:
                column.categorical = number is None
            if column.categorical:
                label = label_of(cell)
                out[k] = column.code_of(label)
                continue
            if number is None:
                raise FormatError(
                    f"{where}: row {rows[k]}, column {column.name!r} (index {i}): "
                    f"{str(cell)[:40]!r} is not a number in a numeric column; list the column "
                    "in categorical, text or missing"
                )
            if column.integral and not (number.is_integer() and abs(number) < 2**53):
                column.integral = False
            out[k] = number
        return out

    # -- the end -----------------------------------------------------------------------------
    def finish(
        self, known: KnownCodes | None = None, *, check: bool = True
    ) -> tuple[list[Field], dict[str, Callable[[Any], Any]], dict[str, list[str]]]:
        """``(fields, transforms, encodings)``: the final fields, the maps from staged blocks to
        final values (final codes, typed target), and the category labels per column.

        ``known``: the labels of the dataset's last published version by column; their codes
        are kept and new labels take the next ones (default: codes over the sorted labels).
        ``check=False`` skips the free-text check (a part of a table: the whole decides)."""
        if self.names is None:
            raise FormatError("the table has no columns")
        if check:
            self._check_implicit_categories()
        encodings: dict[str, list[str]] = {}
        lookups: dict[int, NDArray[np.int64]] = {}
        for i, column in enumerate(self.columns):
            if column.categorical:
                encodings[column.name], lookups[i] = column.labels_and_lookup(
                    known_for(known, column.name))
        fields, transforms = self.final_fields(lookups, encodings)
        return fields, transforms, encodings

    def final_fields(
        self, lookups: Mapping[int, NDArray[np.int64]], encodings: Mapping[str, list[str]]
    ) -> tuple[list[Field], dict[str, Callable[[Any], Any]]]:
        """The final fields and the maps from staged blocks to final values, given each
        categorical column's provisional code -> final code ``lookups`` (by column index)."""
        fields = self.staged_fields()
        transforms: dict[str, Callable[[Any], Any]] = {}
        feature_lookups = {j: lookups[i] for j, i in enumerate(self.feature_indices)
                           if i in lookups}
        if feature_lookups:
            transforms[FEATURES_FIELD] = FeatureCodes(feature_lookups)
        target = self.columns[self.target_index]
        if target.categorical:
            fields[-1] = Field(target.name, LABEL, "int64", (),
                               names=tuple(encodings[target.name]))
            transforms[target.name] = TargetCodes(lookups[self.target_index])
        elif target.integral and not target.any_missing:
            fields[-1] = Field(target.name, ARRAY, "int64", ())
            transforms[target.name] = as_int64
        return fields, transforms

    def new_values(self, known: KnownCodes | None) -> dict[str, dict[str, int]]:
        """``{column: {label: rows}}``: the labels of the categorical columns that ``known``
        had (as categories) and that are new here, in code order, with their row counts."""
        out: dict[str, dict[str, int]] = {}
        for column in self.columns:
            before = known_for(known, column.name)
            if not column.categorical or before is None:
                continue
            fresh = new_labels(before, continued(before, column.codes, key=label_key))
            if fresh:
                out[column.name] = {label: column.counts.get(column.codes[label], 0)
                                    for label in fresh}
        return out

    def _check_implicit_categories(self) -> None:
        """Free text must not silently become category codes in the feature vector."""
        for i in self.feature_indices:
            column = self.columns[i]
            distinct = len(column.codes)
            if not column.categorical or column.listed:
                continue
            if distinct > MAX_IMPLICIT_CATEGORIES or (
                distinct >= MIN_AMBIGUOUS_DISTINCT and 2 * distinct > self.rows
            ):
                p = self.prefix
                raise FormatError(
                    f"column {column.name!r} holds {distinct} distinct strings in {self.rows} "
                    f"rows: is it free text or categories? List it under {p}text: to keep the "
                    f"strings as a text field, or under {p}categorical: to encode them as "
                    "category codes in the feature vector"
                )


def _pa() -> Any:
    import pyarrow

    return pyarrow


def _is_text(column: Any) -> bool:
    pa = _pa()
    return bool(pa.types.is_string(column.type) or pa.types.is_large_string(column.type))


__all__ = [
    "DEFAULT_MISSING",
    "FEATURES_FIELD",
    "TABLE_KEYS",
    "Block",
    "ColumnState",
    "TableOptions",
    "TablePolicy",
    "label_key",
    "parse_table_keys",
    "table_options_dict",
]
