"""Tabular formats: one base class over the one typing policy (:mod:`._table_policy`).

A table format only turns its files into :class:`~datastack.formats._table_policy.Block` s
of columns (``TableFormat.blocks``: CSV records, JSON objects, Parquet row groups, Excel rows),
in bounded pieces. Everything else is shared here:

- **preprocessing** streams the blocks through the policy into a staging file (resizable
  datasets, :mod:`datastack.canonical.columns`), so peak memory does not grow with the
  input; the canonical writer then copies the rows of each split with the final category codes;
- **raw streams** (:class:`TableDatasetIterator`) read the same
  blocks into memory with the same policy, so a table read raw and once published give the
  same samples;
- the spec block: ``target``, ``categorical``, ``missing``, ``text``, ``features``, ``dtype``
  plus the format's own keys.

Fields: ``features`` (the numeric feature vector, float32 unless ``dtype: float64``), one
``string`` field per ``text`` column, and the target named after its column (a ``label`` with
class names when categorical). Without text columns the file keeps the classic layout
(``samples``/``targets`` datasets, version 1).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from datastack._checks import Checker
from datastack._codes import KnownCodes, new_values_schema
from datastack._env import env_int
from datastack.errors import FormatError
from datastack.fields import Field, object_column
from datastack.formats._table_policy import (
    TABLE_KEYS,
    Block,
    TableOptions,
    TablePolicy,
    parse_table_keys,
    table_options_dict,
)
from datastack.formats.archives import ArchiveLimits
from datastack.formats.base import Decoded, Format, group_by_split
from datastack.formats.inputs import RawInput
from datastack.iterators._process import ProcessLocalIterator
from datastack.iterators.base import Batch, Indices, Sample

if TYPE_CHECKING:  # pragma: no cover
    from datastack.iterators.base import DatasetIterator
    from datastack.resources import StreamedResource
    from datastack.specs import DatasetSpec

#: Rows per block read from a table (bounded memory whatever the file size).
BLOCK_ROWS = 16384
#: Cells per block at most: a wide table gets fewer rows per block (memory per block stays
#: ~100 MB of parsed cells whatever the width).
BLOCK_CELLS = 1 << 20
#: Columns (fields per row) a table may have; a wider header or record is refused, naming
#: the row, before it is parsed (``DATASTACK_MAX_COLUMNS`` overrides).
MAX_COLUMNS = env_int("DATASTACK_MAX_COLUMNS", 100_000, minimum=1)


class TooManyColumns(ValueError):
    """A record with more fields than :data:`MAX_COLUMNS` (args: the row or the key count);
    each format turns it into a FormatError naming its row."""


class TableFormat(Format):
    """Base of the table formats: subclasses implement :meth:`blocks` (and their own keys)."""

    options_class: ClassVar[type] = TableOptions
    #: Keys of the format's block besides the shared table keys.
    own_keys: ClassVar[tuple[str, ...]] = ()

    def default_options(self) -> Any:
        return self.options_class()

    def parse_options(self, raw: Mapping[str, Any], check: Checker) -> Any:
        check.keys(raw, (*self.own_keys, *TABLE_KEYS))
        return self.options_class(**self.parse_own(raw, check), **parse_table_keys(raw, check))

    def parse_own(self, raw: Mapping[str, Any], check: Checker) -> dict[str, Any]:
        """The format's own keys of its block, validated."""
        return {}

    def options_dict(self, options: Any) -> dict[str, Any] | None:
        return None if options is None else table_options_dict(options)

    @abc.abstractmethod
    def blocks(self, raw: RawInput, options: Any) -> Iterator[Block]:
        """The input's rows as blocks of at most :data:`BLOCK_ROWS` rows (column names set)."""

    def decode(
        self,
        spec: DatasetSpec,
        inputs: list[RawInput],
        workdir: Path,
        limits: ArchiveLimits,
        *,
        probe: bool = True,
    ) -> Decoded:
        return self.decode_continuing(spec, inputs, workdir, limits, None, probe=probe)

    def decode_continuing(
        self,
        spec: DatasetSpec,
        inputs: list[RawInput],
        workdir: Path,
        limits: ArchiveLimits,
        known: KnownCodes | None,
        *,
        probe: bool = True,
    ) -> Decoded:
        options = spec.options if spec.options is not None else self.default_options()
        return stage_table(self, options, inputs, workdir, known)

    def iterator(
        self, resources: Sequence[StreamedResource], options: Any = None
    ) -> DatasetIterator:
        return TableDatasetIterator(resources[0], self.name, options)


class RowsOnDemand(Sequence[int]):
    """The row numbers of ``size`` records from record ``first`` on, each found only when an
    error names it, by ``locate(record index)`` (which reads the input again up to it)."""

    def __init__(self, locate: Callable[[int], int], first: int, size: int) -> None:
        self.locate = locate
        self.first = first
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, k: Any) -> Any:
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(self.size))]
        if not -self.size <= int(k) < self.size:
            raise IndexError(k)
        return self.locate(self.first + int(k) % self.size)


def row_blocks(names: list[str], rows: Iterable[tuple[int, Sequence[Any]]]) -> Iterator[Block]:
    """Rows ``(row number, cells)`` gathered into column blocks of :data:`BLOCK_ROWS` rows.

    ``names`` may be filled by the row iterator itself (from a header) before its first row.

    >>> names = ["a", "y"]
    >>> [b.columns for b in row_blocks(names, [(2, ["1", "x"]), (3, ["2", "y"])])]
    [[('1', '2'), ('x', 'y')]]
    """
    block: list[Sequence[Any]] = []
    numbers: list[int] = []
    for number, cells in rows:
        block.append(cells)
        numbers.append(number)
        if len(block) >= max(1, min(BLOCK_ROWS, BLOCK_CELLS // max(1, len(cells)))):
            yield Block(list(names), list(zip(*block, strict=True)), numbers)
            block, numbers = [], []
    if block:
        yield Block(list(names), list(zip(*block, strict=True)), numbers)


def classic_names(fields: list[Field]) -> list[Field]:
    """Store a table without text columns as the classic ``samples``/``targets`` pair."""
    if len(fields) != 2 or any(f.variable for f in fields):
        return fields
    return [f if f.dataset else Field(**{**_plain(f), "dataset": d})
            for f, d in zip(fields, ("samples", "targets"), strict=True)]


def _plain(fld: Field) -> dict[str, Any]:
    return {k: getattr(fld, k) for k in Field.__dataclass_fields__}


def _rows_of_inputs(
    fmt: TableFormat, options: Any, inputs: Sequence[RawInput], policy: TablePolicy
) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """``(split, staged block)`` for every block of every input, in order."""
    for split, members in group_by_split(inputs).items():
        for raw in members:
            count = 0
            for block in fmt.blocks(raw, options):
                count += len(block.rows)
                yield split, policy.convert(block, raw.name)
            if not count:
                raise FormatError(f"{raw.name}: no data rows (the file is empty or only a header)")


def stage_table(
    fmt: TableFormat, options: Any, inputs: Sequence[RawInput], workdir: Path,
    known: KnownCodes | None = None,
) -> Decoded:
    """Stream every input through the policy into a staging file; the rows per split come
    back as ``Decoded.columns`` over it (see the module docstring). ``known``: the category
    codes to continue (:mod:`datastack._codes`); the new labels go into ``schema_extra``."""
    import h5py

    from datastack.canonical.columns import FieldAppender, StagedRows

    policy = TablePolicy(options, f"{fmt.options_key}.")
    stage = h5py.File(workdir / f"table-stage-{len(list(workdir.iterdir()))}.h5", "w")
    try:
        appenders: dict[str | None, FieldAppender] = {}
        for split, staged in _rows_of_inputs(fmt, options, inputs, policy):
            if split not in appenders:
                group = stage.create_group(f"part{len(appenders)}")
                appenders[split] = FieldAppender(group, classic_names(policy.staged_fields()))
            appenders[split].append(staged)
        fields, transforms, encodings = policy.finish(known)
        fields = classic_names(fields)
        columns = {
            split: {
                f.name: StagedRows(out.group[f.stored_name], f) if f.variable
                else out.group[f.stored_name]
                for f in fields
            }
            for split, out in appenders.items()
        }
    except BaseException:
        stage.close()
        raise
    features = fields[0].columns if fields[0].columns is not None else ()
    return Decoded({}, list(features), fields[-1].name, encodings, [stage], fields, columns,
                   transforms, new_values_schema(policy.new_values(known)))


@dataclass
class TableData:
    """A whole table in memory (raw streams): fields and one column per field."""

    fields: list[Field]
    columns: list[Any]
    encodings: dict[str, list[str]]
    names: list[str]


def read_table(fmt: TableFormat, raw: RawInput, options: Any) -> TableData:
    """Read one input fully with the published-dataset policy (raw-stream iterators)."""
    policy = TablePolicy(options, f"{fmt.options_key}.")
    parts = [staged for _, staged in _rows_of_inputs(fmt, options, [raw], policy)]
    fields, transforms, encodings = policy.finish()
    columns: list[Any] = []
    for fld in fields:
        pieces = [p[fld.name] for p in parts]
        if fld.variable:
            columns.append(object_column([v for piece in pieces for v in _values(piece)]))
            continue
        joined = np.concatenate(pieces)
        fn = transforms.get(fld.name)
        columns.append(fn(joined) if fn is not None else joined)
    return TableData(fields, columns, encodings, list(policy.names or []))


def _values(piece: Any) -> list[Any]:
    return list(piece.to_pylist()) if hasattr(piece, "to_pylist") else list(piece)


class TableDatasetIterator(ProcessLocalIterator[TableData]):
    """A table file read directly (parsed once per process: tables cannot be seeked by row)
    with the format's blocks and the shared policy, so a table read as a raw stream gives
    exactly the samples of the same table once published: numeric features as float32 (NaN
    for missing values; ``dtype: float64`` keeps doubles), categorical columns as integer codes
    over the sorted labels, text columns as strings, the target as class codes when
    categorical (labels in :attr:`encodings`). Samples ``(features, text..., target)``."""

    def __init__(self, resource: StreamedResource, format_name: str, options: Any = None) -> None:
        self.resource = resource
        self.format_name = format_name
        self.options = options

    def _open(self) -> TableData:
        from datastack.formats import get_format

        fmt = get_format(self.format_name)
        if not isinstance(fmt, TableFormat):
            raise FormatError(f"format {self.format_name!r} is not a table format")
        options = self.options if self.options is not None else fmt.default_options()
        return read_table(fmt, RawInput.from_resource(self.resource), options)

    def __len__(self) -> int:
        return len(self._state().columns[0])

    def _get(self, index: int) -> Sample:
        return tuple(column[index] for column in self._state().columns)

    def _get_batch(self, indices: Indices) -> Batch:
        return tuple(column[indices] for column in self._state().columns)

    def _get_targets(self, target_pos: int) -> NDArray[Any]:
        return np.asarray(self._state().columns[target_pos])

    @property
    def fields(self) -> dict[str, Field]:
        return {f.name: f for f in self._state().fields}

    @property
    def encodings(self) -> dict[str, list[str]]:
        """Column -> category labels (code ``i`` is ``labels[i]``)."""
        return dict(self._state().encodings)

    @property
    def column_names(self) -> list[str]:
        """Every column in file order."""
        return list(self._state().names)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.format_name} {self.resource.identifier}>"


__all__ = [
    "BLOCK_ROWS",
    "RowsOnDemand",
    "TableData",
    "TableDatasetIterator",
    "TableFormat",
    "read_table",
    "row_blocks",
    "stage_table",
]
