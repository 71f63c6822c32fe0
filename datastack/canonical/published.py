"""A published version opened for reading: its data file checked against its catalog record,
its layout told from the record's schema, one reader per split.

This is the one place that opens a published file (through :func:`datastack.offline.
open_published`, which picks the verified local copy or the storage).
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

from datastack.canonical.hdf5 import read_h5
from datastack.canonical.layout import (
    FIELDS_LAYOUT,
    LABELS_KIND,
    data_identifier_of,
    is_sharded,
    layout_of,
    shards_of,
)
from datastack.errors import FormatError
from datastack.fields import LABEL

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
    if is_sharded(record):  # a manifest of shards (docs/living.md)
        from datastack.canonical.sharded import ShardedSplit

        layout = layout_of(record.schema)
        fields = version_fields(record)
        return {split: ShardedSplit(store, read, split, entries, fields, layout)
                for split, entries in shards_of(record).items()}
    identifier = data_file(record)
    resource = open_published(store, read, identifier)  # local cache first
    if layout_of(record.schema) == FIELDS_LAYOUT:  # named fields (docs/fields.md)
        from datastack.canonical.records import RecordsDatasetIterator

        return {split: RecordsDatasetIterator(resource, split) for split in record.splits}
    from datastack.canonical.hdf5 import HDF5DatasetIterator

    return {split: HDF5DatasetIterator(resource, group=split) for split in record.splits}


def version_fields(record: VersionRecord) -> dict[str, Any] | None:
    """The fields of a version from its record's schema (category names included), or
    ``None`` when the record does not list them (layout 1: the shards' own)."""
    from datastack.fields import fields_from_schema

    schema = record.schema if isinstance(record.schema, dict) else {}
    entries = schema.get("fields")
    return dict(fields_from_schema(entries)) if entries else None


def known_codes(record: VersionRecord, store: Store) -> dict[str, list[str]]:
    """The category labels of a published version by column (code ``i`` is ``labels[i]``):
    what its next version continues (``docs/living.md``). Its record's encodings and the
    class names of its label fields; a column whose record keeps only its first labels (a
    very long list, ``encodings_truncated``) is read whole from the version's data file."""
    known = {str(column): [str(label) for label in labels]
             for column, labels in (record.encodings or {}).items()
             if isinstance(labels, (list, tuple))}
    schema = record.schema if isinstance(record.schema, dict) else {}
    for field in schema.get("fields") or []:
        if isinstance(field, dict) and field.get("kind") == LABEL and isinstance(
            field.get("names"), (list, tuple)
        ):
            known[str(field["name"])] = [str(name) for name in field["names"]]
    truncated = schema.get("encodings_truncated") or {}
    short = [c for c, n in truncated.items() if len(known.get(str(c), ())) < int(n)]
    if short:
        whole = _file_encodings(record, store)
        for column in short:
            if column not in whole:
                raise FormatError(
                    f"{record.name} v{record.version}: the data file holds no category labels "
                    f"of column {column!r} (the record keeps only the first); the next version "
                    "cannot keep their codes; restore the data file, or start the dataset "
                    "afresh (datastack delete NAME)"
                )
            known[str(column)] = [str(label) for label in whole[column]]
    return known


def _file_encodings(record: VersionRecord, store: Store) -> dict[str, list[Any]]:
    """The ``encodings`` attribute of a version's data file (every label of every column),
    or of a sharded version's labels file."""

    labels = next((r for r in record.resources if r.get("kind") == LABELS_KIND), None)
    if labels is not None:
        return _labels_file(record, store, str(labels["identifier"]))
    if is_sharded(record):
        return {}
    resource = store.storage.get_resource(data_file(record))
    try:
        with read_h5(resource) as f:
            found = json.loads(f.attrs.get("encodings", "{}"))
    except OSError as exc:
        raise FormatError(
            f"{record.name} v{record.version}: its data file's category labels cannot be read "
            f"({exc}); the next version needs them to keep the codes"
        ) from None
    finally:
        resource.close()
    return found if isinstance(found, dict) else {}


def _labels_file(record: VersionRecord, store: Store, identifier: str) -> dict[str, list[Any]]:
    from datastack.errors import DatastackError

    try:
        stream = store.storage.get_resource(identifier)
        try:
            found = json.loads(stream.read())
        finally:
            stream.close()
    except (DatastackError, ValueError) as exc:
        raise FormatError(
            f"{record.name} v{record.version}: its category labels file {identifier} cannot "
            f"be read ({exc}); the next version needs them to keep the codes"
        ) from None
    return found if isinstance(found, dict) else {}


__all__ = ["data_file", "known_codes", "open_version", "version_fields"]
