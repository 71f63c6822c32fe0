"""CSV to arrays, deliberately: typed columns, categorical codes, NaN for missing values.

Policy (also in ``docs/preprocessing.md``):

* a column is *categorical* when listed in ``csv.categorical`` or when its first non-missing
  value is not a number; otherwise it is numeric, and a later non-number in it is an error
  naming the row and column (never a silent NaN);
* categorical values become integer codes ``0..k-1`` over the sorted labels (numbers first, in
  numeric order, then text); the labels are returned as ``encodings[column]``;
* a value in ``csv.missing`` (default: empty, NA, N/A, NaN, nan, null, NULL, ?) is NaN in the
  float64 samples (a missing categorical value too); a missing *categorical target* is an error;
* the target (``csv.target``, default: last column) is int64 class codes when categorical,
  int64 when every value is an integer, float64 otherwise;
* completely empty lines are not rows and are skipped; every other line must have exactly the
  header's number of fields. Ragged rows, NUL bytes, fields over 128 KiB, undecodable bytes and
  files with no data rows raise :class:`FormatError` naming the row (1-based line) and column.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from datastack._checks import Checker
from datastack.errors import FormatError
from datastack.formats.archives import ArchiveLimits
from datastack.formats.base import Decoded, Format, SplitArrays
from datastack.formats.inputs import RawInput

if TYPE_CHECKING:  # pragma: no cover
    from datastack.iterators.base import DatasetIterator
    from datastack.resources import StreamedResource
    from datastack.specs import DatasetSpec

MAX_FIELD = 128 * 1024
MAX_LINE = 64 * 1024 * 1024
_BLOCK_ROWS = 8192
DEFAULT_MISSING = ("", "NA", "N/A", "NaN", "nan", "null", "NULL", "?")
_OPTION_KEYS = ("header", "skip_rows", "target", "delimiter", "categorical", "missing", "encoding")


@dataclass(frozen=True)
class CsvOptions:
    """Options of the ``csv:`` block (all optional)."""

    header: bool = True
    skip_rows: int = 0
    target: str | int | None = None
    delimiter: str = ","
    categorical: tuple[str | int, ...] = ()
    missing: tuple[str, ...] = DEFAULT_MISSING
    encoding: str = "utf-8"


def parse_csv_options(raw: Mapping[str, Any], check: Checker) -> CsvOptions:
    """Validate a ``csv:`` block (see ``docs/specs.md``)."""
    check.keys(raw, _OPTION_KEYS)
    header = check.boolean(raw.get("header", True), "header")
    skip_rows = check.integer(raw.get("skip_rows", 0), "skip_rows")
    target = raw.get("target")
    if target is not None:
        target = check.column(target, "target")
    if isinstance(target, str) and not header:
        raise check.fail("target", f"target {target!r} is a name but header is false; use an index")
    delimiter = check.string(raw.get("delimiter", ","), "delimiter")
    if len(delimiter) != 1 or delimiter in "\r\n\"" or delimiter.isalnum():
        raise check.fail("delimiter", f"expected one separator character, got {delimiter!r}")
    categorical = check.columns(raw.get("categorical", []), "categorical")
    missing = check.strings(raw.get("missing", list(DEFAULT_MISSING)), "missing",
                            "strings that mean 'missing'")
    encoding = check.string(raw.get("encoding", "utf-8"), "encoding")
    try:
        "".encode(encoding)
    except LookupError:
        raise check.fail("encoding", f"unknown text encoding {encoding!r}") from None
    return CsvOptions(header, skip_rows, target, delimiter, categorical, missing, encoding)


def _label_key(label: str) -> tuple[int, float, str]:
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


@dataclass
class _ColumnState:
    """What the parser learnt of one column so far (kind, category codes, missing values)."""

    name: str
    categorical: bool | None = None  # None until the first non-missing value
    codes: dict[str, int] = field(default_factory=dict)  # first-appearance codes
    integral: bool = True
    any_missing: bool = False

    def remap(self) -> tuple[list[str], NDArray[np.float64]]:
        """Sorted labels and a lookup: first-appearance code -> sorted code."""
        labels = sorted(self.codes, key=_label_key)
        lookup = np.empty(len(self.codes), dtype=np.float64)
        position = {label: i for i, label in enumerate(labels)}
        for label, code in self.codes.items():
            lookup[code] = position[label]
        return labels, lookup


class CsvParser:
    """Parse one or more CSV inputs sharing columns and encodings.

    >>> raw = RawInput(None, "x.csv", lambda: io.BytesIO(b"a,b,cls\\n1,2,x\\n3,,y\\n"))
    >>> parser = CsvParser(CsvOptions(target="cls"))
    >>> [(samples, targets)] = parser.finish([parser.parse(raw)])
    >>> samples.tolist(), targets.tolist(), parser.encodings()
    ([[1.0, 2.0], [3.0, nan]], [0, 1], {'cls': ['x', 'y']})
    """

    def __init__(self, options: CsvOptions) -> None:
        self.options = options
        self.missing = frozenset(options.missing)
        self.columns: list[_ColumnState] | None = None
        self.target_index = -1
        self._raw_targets: list[NDArray[np.float64]] = []

    # -- public ----------------------------------------------------------------------------
    @property
    def features(self) -> list[str]:
        """Feature (sample column) names in order."""
        cols = self.columns or []
        return [c.name for i, c in enumerate(cols) if i != self.target_index]

    @property
    def target_name(self) -> str | None:
        return None if not self.columns else self.columns[self.target_index].name

    def parse(self, raw: RawInput) -> tuple[NDArray[np.float64], NDArray[Any]]:
        """Parse one input into ``(samples float64 (N, F), targets (N,))``.

        Codes of categorical columns are final only after :meth:`finish`; call it once all
        inputs are parsed (``parse`` returns provisional first-appearance codes).
        """
        blocks: list[NDArray[np.float64]] = []
        rows: list[list[float]] = []
        count = 0
        first = True
        for line, fields in self._records(raw):
            if first and self.options.header:
                first = False
                if self.columns is None:
                    self._set_header(raw.name, line, fields)
                elif [f.strip() for f in fields] != [c.name for c in self.columns]:
                    raise FormatError(
                        f"{raw.name}: row {line}: header {fields} differs from the first file's"
                    )
                continue
            if self.columns is None:
                self._make_columns(raw.name, line, [f"column_{i}" for i in range(len(fields))])
            first = False
            rows.append(self._convert(raw.name, line, fields))
            count += 1
            if len(rows) >= _BLOCK_ROWS:
                blocks.append(np.array(rows, dtype=np.float64))
                rows = []
        if rows:
            blocks.append(np.array(rows, dtype=np.float64))
        if not count:
            raise FormatError(f"{raw.name}: no data rows (the file is empty or only a header)")
        table = np.concatenate(blocks)
        return np.delete(table, self.target_index, axis=1), table[:, self.target_index]

    def finish(
        self, parts: Sequence[tuple[NDArray[np.float64], NDArray[Any]]]
    ) -> list[tuple[NDArray[np.float64], NDArray[Any]]]:
        """Remap provisional codes to sorted codes and type the targets."""
        if not self.columns:
            return []
        lookups = {i: c.remap()[1] for i, c in enumerate(self.columns) if c.categorical}
        target_col = self.columns[self.target_index]
        out = []
        for samples, targets in parts:
            samples = samples.copy()
            for col_index, lookup in lookups.items():
                if col_index == self.target_index:
                    continue
                j = col_index if col_index < self.target_index else col_index - 1
                known = ~np.isnan(samples[:, j])
                samples[known, j] = lookup[samples[known, j].astype(np.int64)]
            typed: NDArray[Any]
            if target_col.categorical:
                typed = lookups[self.target_index][targets.astype(np.int64)].astype(np.int64)
            elif target_col.integral and not target_col.any_missing:
                typed = targets.astype(np.int64)
            else:
                typed = targets
            out.append((samples, typed))
        return out

    def encodings(self) -> dict[str, list[str]]:
        """Column name -> labels (code ``i`` is ``labels[i]``) for categorical columns."""
        return {c.name: c.remap()[0] for c in self.columns or [] if c.categorical}

    # -- internals -------------------------------------------------------------------------
    def _records(self, raw: RawInput) -> Iterator[tuple[int, list[str]]]:
        csv.field_size_limit(MAX_FIELD)
        with raw.open() as binary:
            lines = _DecodedLines(binary, self.options.encoding)
            reader = csv.reader(lines, delimiter=self.options.delimiter, strict=True)
            skipped = 0
            while True:
                try:
                    fields = next(reader)
                except StopIteration:
                    return
                except UnicodeDecodeError as exc:
                    raise FormatError(
                        f"{raw.name}: row {lines.count}: bytes not valid "
                        f"{self.options.encoding} ({exc.reason}); set csv.encoding"
                    ) from None
                except csv.Error as exc:
                    raise FormatError(
                        f"{raw.name}: row {reader.line_num}: malformed CSV ({exc}); fields are "
                        f"limited to {MAX_FIELD} bytes"
                    ) from None
                if skipped < self.options.skip_rows:
                    skipped += 1
                    continue
                if not fields or fields == [""]:
                    continue
                for col, value in enumerate(fields):
                    if "\x00" in value:
                        raise FormatError(
                            f"{raw.name}: row {reader.line_num}, column {col}: NUL byte in field"
                        )
                yield reader.line_num, fields

    def _set_header(self, name: str, line: int, fields: list[str]) -> None:
        names = [f.strip() or f"column_{i}" for i, f in enumerate(fields)]
        if len(set(names)) != len(names):
            raise FormatError(f"{name}: row {line}: duplicate column names in header {names}")
        self._make_columns(name, line, names)

    def _make_columns(self, name: str, line: int, names: list[str]) -> None:
        if len(names) < 2:
            raise FormatError(
                f"{name}: row {line}: found {len(names)} column; need features and a target "
                f"(is the delimiter {self.options.delimiter!r} right?)"
            )
        self.columns = [_ColumnState(n) for n in names]
        self.target_index = self._resolve(name, self.options.target, names, "target")
        if self.target_index < 0:
            self.target_index = len(names) - 1
        for ref in self.options.categorical:
            self.columns[self._resolve(name, ref, names, "categorical")].categorical = True

    @staticmethod
    def _resolve(name: str, ref: str | int | None, names: list[str], key: str) -> int:
        if ref is None:
            return -1
        if isinstance(ref, int):
            if not -len(names) <= ref < len(names):
                raise FormatError(
                    f"{name}: csv.{key} index {ref} out of range for {len(names)} columns"
                )
            return ref % len(names)
        if ref not in names:
            raise FormatError(f"{name}: csv.{key} column {ref!r} not in header {names}")
        return names.index(ref)

    def _convert(self, name: str, line: int, fields: list[str]) -> list[float]:
        columns = self.columns or []
        if len(fields) != len(columns):
            raise FormatError(
                f"{name}: row {line}: expected {len(columns)} fields, got {len(fields)} "
                "(ragged row); fix the file, rows are never dropped"
            )
        values: list[float] = []
        for col_index, (column, text) in enumerate(zip(columns, fields, strict=True)):
            value = text.strip()
            if value in self.missing:
                column.any_missing = True
                if column.categorical and col_index == self.target_index:
                    raise FormatError(
                        f"{name}: row {line}, column {column.name!r}: missing target class"
                    )
                values.append(math.nan)
                continue
            if column.categorical is None:
                column.categorical = _number(value) is None
            if column.categorical:
                values.append(float(column.codes.setdefault(value, len(column.codes))))
                continue
            number = _number(value)
            if number is None:
                raise FormatError(
                    f"{name}: row {line}, column {column.name!r} (index {col_index}): "
                    f"{value[:40]!r} is not a number in a numeric column; list the column "
                    "in csv.categorical or csv.missing"
                )
            if column.integral and not (number.is_integer() and abs(number) < 2**53):
                column.integral = False
            values.append(number)
        return values


class _DecodedLines:
    """Decode a binary stream line by line, counting physical lines (for error messages)."""

    def __init__(self, binary: Any, encoding: str) -> None:
        self._reader = io.BufferedReader(binary, 1024 * 1024)
        self._decoder = codecs.getincrementaldecoder(encoding)("strict")
        self.count = 0

    def __iter__(self) -> _DecodedLines:
        return self

    def __next__(self) -> str:
        self.count += 1
        line = self._reader.readline(MAX_LINE + 1)
        if not line:
            tail = self._decoder.decode(b"", final=True)
            if tail:
                return tail
            raise StopIteration
        if len(line) > MAX_LINE:
            raise csv.Error(f"line {self.count} is longer than {MAX_LINE} bytes")
        return self._decoder.decode(line)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


@dataclass
class CsvTable:
    """A parsed CSV: float64 feature matrix, typed targets, column names and encodings."""

    samples: NDArray[np.float64]
    targets: NDArray[Any]
    features: list[str]
    target: str | None
    encodings: dict[str, list[str]]
    #: How many feature columns stand before the target column in the file.
    features_before_target: int = 0


def read_csv(raw: RawInput, options: CsvOptions = CsvOptions()) -> CsvTable:
    """Parse one CSV input with the published-dataset policy (module docstring).

    >>> table = read_csv(RawInput(None, "t.csv", lambda: io.BytesIO(b"a,b,y\\n1,,s\\n2,3,t\\n")))
    >>> table.samples.tolist(), table.targets.tolist(), table.encodings
    ([[1.0, nan], [2.0, 3.0]], [0, 1], {'y': ['s', 't']})
    """
    parser = CsvParser(options)
    [(samples, targets)] = parser.finish([parser.parse(raw)])
    return CsvTable(
        samples,
        targets,
        parser.features,
        parser.target_name,
        parser.encodings(),
        parser.target_index,
    )


class CsvFormat(Format):
    """Delimited text tables (``csv:`` block): numeric features, categorical codes, NaN."""

    name = "csv"
    options_key = "csv"

    def default_options(self) -> CsvOptions:
        return CsvOptions()

    def parse_options(self, raw: Mapping[str, Any], check: Checker) -> CsvOptions:
        return parse_csv_options(raw, check)

    def decode(
        self,
        spec: DatasetSpec,
        inputs: list[RawInput],
        workdir: Path,
        limits: ArchiveLimits,
        *,
        probe: bool = True,
    ) -> Decoded:
        parser = CsvParser(spec.options or CsvOptions())
        parsed = [parser.parse(raw) for raw in inputs]
        grouped: dict[str | None, list[tuple[Any, Any]]] = {}
        for raw, part in zip(inputs, parser.finish(parsed), strict=True):
            grouped.setdefault(raw.split, []).append(part)
        parts: SplitArrays = {
            split: (
                np.concatenate([p[0] for p in group]),
                np.concatenate([p[1] for p in group]),
            )
            for split, group in grouped.items()
        }
        return Decoded(parts, parser.features, parser.target_name, parser.encodings())

    def iterator(
        self, resources: Sequence[StreamedResource], options: Any = None
    ) -> DatasetIterator:
        from datastack.iterators.csv import CSVDatasetIterator

        return CSVDatasetIterator(resources[0], options=options or CsvOptions())


FORMAT = CsvFormat()

__all__ = [
    "DEFAULT_MISSING",
    "FORMAT",
    "MAX_FIELD",
    "CsvFormat",
    "CsvOptions",
    "CsvParser",
    "CsvTable",
    "parse_csv_options",
    "read_csv",
]
