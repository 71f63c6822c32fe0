"""CSV format iterator: the file is parsed once into arrays (CSV cannot be seeked by row).

The parser is the one preprocessing uses (:mod:`datastack.formats.csv`), so a CSV read as a
raw stream gives exactly the samples of the same CSV once published: numeric features as
float64 (NaN for missing values), categorical columns as integer codes over the sorted labels,
the target as class codes when categorical (labels in :attr:`CSVDatasetIterator.encodings`).

>>> from datastack.resources import StreamedResource
>>> it = CSVDatasetIterator(StreamedResource.from_bytes("t.csv", b"a,b,label\\n1,2,x\\n3,4.5,y\\n"))
>>> it[1][0].tolist(), int(it[1][1]), it.encodings, it.column_names
([3.0, 4.5], 1, {'label': ['x', 'y']}, ['a', 'b', 'label'])
"""

from __future__ import annotations

from typing import Any

from numpy.typing import NDArray

from datastack.formats.csv import CsvOptions, CsvTable, read_csv
from datastack.formats.inputs import RawInput
from datastack.iterators._process import ProcessLocalIterator
from datastack.iterators.base import Batch, Indices, Sample
from datastack.resources import StreamedResource


class CSVDatasetIterator(ProcessLocalIterator[CsvTable]):
    """Samples ``(features, target)`` of a CSV resource, parsed once per process.

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
        if "categorical" in keywords:
            keywords["categorical"] = tuple(keywords["categorical"])
        if "missing" in keywords:
            keywords["missing"] = tuple(keywords["missing"])
        self.resource = resource
        self.options = options or CsvOptions(**keywords)

    def _open(self) -> CsvTable:
        return read_csv(RawInput.from_resource(self.resource), self.options)

    @property
    def column_names(self) -> list[str]:
        """Every column in file order (features and the target)."""
        table = self._state()
        names = list(table.features)
        if table.target is not None:
            names.insert(table.features_before_target, table.target)
        return names

    @property
    def encodings(self) -> dict[str, list[str]]:
        """Column -> category labels (code ``i`` is ``labels[i]``)."""
        return dict(self._state().encodings)

    def __len__(self) -> int:
        return len(self._state().samples)

    def _get(self, index: int) -> Sample:
        table = self._state()
        return (table.samples[index], table.targets[index])

    def _get_batch(self, indices: Indices) -> Batch:
        table = self._state()
        return (table.samples[indices], table.targets[indices])

    def _get_targets(self, target_pos: int) -> NDArray[Any]:
        if target_pos == 1:
            return self._state().targets
        return super()._get_targets(target_pos)

    def __repr__(self) -> str:
        return f"<CSVDatasetIterator {self.resource.identifier}>"


__all__ = ["CSVDatasetIterator"]
