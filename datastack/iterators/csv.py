"""CSV format iterator: the file is parsed once into arrays (CSV cannot be seeked by row).

:func:`read_csv_arrays` is the parser (the preprocessing step may reuse it): feature columns
must be numeric (float64 samples); the target column is int64 when every value is an integer,
float64 when numeric, and kept as strings otherwise (relabel with ``map_targets``). Empty lines
are skipped; ragged rows, non-numeric features, NUL bytes, oversized fields and undecodable
bytes raise :class:`~datastack.errors.FormatError` naming the line and the column.

>>> import io
>>> x, y, names = read_csv_arrays(io.BytesIO(b"a,b,label\\n1,2,0\\n3,4.5,1\\n"))
>>> x.tolist(), y.tolist(), names
([[1.0, 2.0], [3.0, 4.5]], [0, 1], ['a', 'b', 'label'])
"""

from __future__ import annotations

import codecs
import csv
import io
from typing import IO, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from datastack.errors import ConfigurationError, FormatError
from datastack.iterators._process import ProcessLocalIterator, private_copy
from datastack.iterators.base import Batch, Indices, Sample
from datastack.resources import StreamedResource

MAX_FIELD = 128 * 1024


class Readable(Protocol):
    """Anything with ``read(n) -> bytes`` (or ``str``)."""

    def read(self, size: int = -1, /) -> Any: ...


def _text(stream: Readable, encoding: str) -> IO[str]:
    if isinstance(stream, io.TextIOBase):
        return stream  # type: ignore[return-value]
    reader: Any = codecs.getreader(encoding)
    return reader(stream, "strict")  # type: ignore[no-any-return]


def _target_index(target: str | int | None, names: list[str], width: int, where: str) -> int:
    if target is None:
        return width - 1
    if isinstance(target, str):
        if target not in names:
            raise ConfigurationError(
                f"{where}: target column {target!r} not found; columns: {', '.join(names)}"
            )
        return names.index(target)
    index = target + width if target < 0 else target
    if not 0 <= index < width:
        raise ConfigurationError(f"{where}: target column {target} out of range ({width} columns)")
    return index


def read_csv_arrays(
    stream: Readable,
    *,
    header: bool = True,
    skip_rows: int = 0,
    delimiter: str = ",",
    target: str | int | None = None,
    encoding: str = "utf-8",
    name: str = "csv",
) -> tuple[NDArray[np.float64], NDArray[Any], list[str]]:
    """Parse a CSV stream into ``(samples (N, F) float64, targets (N,), column_names)``.

    ``target`` is a column name (needs ``header``) or index (negative counts from the end);
    default: the last column. Without a header, columns are named ``"0"``, ``"1"``, ...
    """
    if skip_rows < 0:
        raise ConfigurationError(f"{name}: skip_rows must be >= 0, got {skip_rows}")
    if isinstance(target, str) and not header:
        raise ConfigurationError(f"{name}: target {target!r} given by name but header=false")
    old_limit = csv.field_size_limit()
    csv.field_size_limit(MAX_FIELD)
    rows: list[list[str]] = []
    names: list[str] = []
    line = 0
    try:
        reader = csv.reader(_text(stream, encoding), delimiter=delimiter)
        for record in reader:
            line = reader.line_num
            if line <= skip_rows:
                continue
            if not record or record == [""]:
                continue
            if any("\0" in f for f in record):
                raise FormatError(f"{name}: line {line}: NUL byte in a field; not a text CSV")
            if header and not names:
                names = [c.strip() for c in record]
                continue
            rows.append(record)
    except csv.Error as exc:
        raise FormatError(f"{name}: line {line + 1}: malformed CSV ({exc})") from None
    except UnicodeDecodeError as exc:
        raise FormatError(
            f"{name}: after line {line}: bytes not valid {encoding} ({exc.reason})"
        ) from None
    finally:
        csv.field_size_limit(old_limit)
    if not rows:
        raise FormatError(f"{name}: no data rows (expected at least one)")
    width = len(names) if names else len(rows[0])
    names = names or [str(i) for i in range(width)]
    t = _target_index(target, names, width, name)
    return _convert(rows, names, t, name, header, skip_rows)


def _convert(
    rows: list[list[str]], names: list[str], t: int, name: str, header: bool, skip_rows: int
) -> tuple[NDArray[np.float64], NDArray[Any], list[str]]:
    width = len(names)
    samples = np.empty((len(rows), width - 1), dtype=np.float64)
    raw_targets: list[str] = []
    first_line = skip_rows + (2 if header else 1)
    features = [c for c in range(width) if c != t]
    for r, record in enumerate(rows):
        if len(record) != width:
            raise FormatError(
                f"{name}: data row {r + 1} (near line {first_line + r}) has {len(record)} "
                f"fields, expected {width} ({', '.join(names)})"
            )
        for j, c in enumerate(features):
            try:
                samples[r, j] = float(record[c])
            except ValueError:
                raise FormatError(
                    f"{name}: data row {r + 1} (near line {first_line + r}), column "
                    f"{names[c]!r}: {record[c][:50]!r} is not a number"
                ) from None
        raw_targets.append(record[t].strip())
    return samples, _targets(raw_targets), names


def _targets(values: list[str]) -> NDArray[Any]:
    try:
        as_int = [int(v) for v in values]
        return np.asarray(as_int, dtype=np.int64)
    except ValueError:
        pass
    try:
        return np.asarray([float(v) for v in values], dtype=np.float64)
    except ValueError:
        return np.asarray(values, dtype=str)


class CSVDatasetIterator(ProcessLocalIterator[tuple[NDArray[np.float64], NDArray[Any]]]):
    """Samples ``(features, target)`` of a CSV resource, parsed once on first access.

    Options as in :func:`read_csv_arrays`.
    """

    def __init__(
        self,
        resource: StreamedResource,
        *,
        header: bool = True,
        skip_rows: int = 0,
        delimiter: str = ",",
        target: str | int | None = None,
        encoding: str = "utf-8",
    ) -> None:
        self.resource = resource
        self.options: dict[str, Any] = {
            "header": header,
            "skip_rows": skip_rows,
            "delimiter": delimiter,
            "target": target,
            "encoding": encoding,
        }
        self.column_names: list[str] | None = None

    def _open(self) -> tuple[NDArray[np.float64], NDArray[Any]]:
        stream = private_copy(self.resource)
        try:
            x, y, self.column_names = read_csv_arrays(
                stream, name=self.resource.identifier, **self.options
            )
        finally:
            stream.close()
        return x, y

    def __len__(self) -> int:
        return len(self._state()[0])

    def _get(self, index: int) -> Sample:
        x, y = self._state()
        return (x[index], y[index])

    def _get_batch(self, indices: Indices) -> Batch:
        x, y = self._state()
        return (x[indices], y[indices])

    def _get_targets(self, target_pos: int) -> NDArray[Any]:
        return self._state()[1] if target_pos == 1 else super()._get_targets(target_pos)

    def __repr__(self) -> str:
        return f"<CSVDatasetIterator {self.resource.identifier}>"
