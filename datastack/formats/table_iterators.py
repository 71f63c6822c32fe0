"""Table format iterators: a table file parsed once per process (tables cannot be seeked by row).

The blocks and the typing policy are those preprocessing uses (:mod:`datastack.formats.tables`),
so a table read as a raw stream gives exactly the samples of the same table once published:
numeric features as float32 (NaN for missing values; ``dtype: float64`` keeps doubles),
categorical columns as integer codes over the sorted labels, text columns as strings, the
target as class codes when categorical (labels in :attr:`TableDatasetIterator.encodings`).

>>> from datastack.resources import StreamedResource
>>> it = CSVDatasetIterator(StreamedResource.from_bytes("t.csv", b"a,b,label\\n1,2,x\\n3,4.5,y\\n"))
>>> it[1][0].tolist(), int(it[1][1]), it.encodings, it.column_names
([3.0, 4.5], 1, {'label': ['x', 'y']}, ['a', 'b', 'label'])
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from datastack.errors import FormatError
from datastack.fields import Field
from datastack.formats.csv import CsvOptions
from datastack.formats.inputs import RawInput
from datastack.formats.tables import TableData, TableFormat, read_table
from datastack.iterators._process import ProcessLocalIterator
from datastack.iterators.base import Batch, Indices, Sample
from datastack.resources import StreamedResource


class TableDatasetIterator(ProcessLocalIterator[TableData]):
    """A table file read directly (parsed once per process with the format's blocks and the
    shared policy): samples ``(features, text..., target)``."""

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


class CSVDatasetIterator(TableDatasetIterator):
    """Samples ``(features, text..., target)`` of a CSV resource, parsed once per process.

    Pass ``options`` (a :class:`~datastack.formats.csv.CsvOptions`, the spec's ``csv:``
    block), or the same options as keywords.
    """

    def __init__(
        self,
        resource: StreamedResource,
        *,
        options: CsvOptions | None = None,
        **keywords: Any,
    ) -> None:
        if options is not None and keywords:
            raise TypeError("pass either options= or CSV option keywords, not both")
        for key in ("categorical", "missing", "text", "features"):
            if keywords.get(key) is not None:
                keywords[key] = tuple(keywords[key])
        super().__init__(resource, "csv", options or CsvOptions(**keywords))


__all__ = ["CSVDatasetIterator", "TableDatasetIterator"]
