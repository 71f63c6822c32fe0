"""A published version opened for reading: its data file checked against its catalog record,
its layout told from the record's schema, one reader per split.

This is the one place that opens a published file (through :func:`datastack.offline.
open_published`, which picks the verified local copy or the storage).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from datastack.canonical.layout import FIELDS_LAYOUT, data_identifier_of, layout_of
from datastack.errors import FormatError

if TYPE_CHECKING:  # pragma: no cover
    from datastack.catalog.record import VersionRecord
    from datastack.iterators.base import DatasetIterator
    from datastack.offline import ReadDecision
    from datastack.store import Store


def data_file(record: VersionRecord) -> str:
    """The identifier of the version's canonical file, checked to be listed by its record."""
    identifier = data_identifier_of(record)
    if not any(r.get("identifier") == identifier for r in record.resources):
        raise FormatError(
            f"{record.name} v{record.version}: the catalog record lists no data file "
            f"{identifier!r}; it was not published by this datastack version"
        )
    return identifier


def open_version(
    record: VersionRecord, store: Store, *, read: ReadDecision | None = None
) -> dict[str, DatasetIterator]:
    """One lazy iterator per split of a published version (nothing is read yet), read as
    ``read`` says (online or offline, fill the local cache or not; default: online, fill)."""
    from datastack.offline import ReadDecision, open_published

    read = ReadDecision(record) if read is None else dataclasses.replace(read, record=record)
    identifier = data_file(record)
    resource = open_published(store, read, identifier)  # local cache first
    if layout_of(record.schema) == FIELDS_LAYOUT:  # named fields (docs/fields.md)
        from datastack.canonical.records import RecordsDatasetIterator

        return {split: RecordsDatasetIterator(resource, split) for split in record.splits}
    from datastack.canonical.hdf5 import HDF5DatasetIterator

    return {split: HDF5DatasetIterator(resource, group=split) for split in record.splits}


__all__ = ["data_file", "open_version"]
