"""A published version described as MLCommons Croissant 1.0 JSON-LD (``datastack show NAME
--croissant``, and ``/datasets/NAME/croissant.json`` of ``datastack web``).

Built from the catalog record alone (nothing is downloaded): the name, description, license
(the spec's ``license:`` key), version and publication date; a ``distribution`` listing each
source as a ``cr:FileObject`` with its URL (credentials and secret query parameters redacted)
and checksum, and the published HDF5 file; the record sets: ``splits`` (a ``cr:Split``
record set with its split names inline), one record set per label field with its class names
(``<field>_classes``), and ``records``: one ``cr:Field`` per datastack field, plus ``split``
referring to the split names. A field's source is the HDF5 dataset ``/<split>/<field>`` of
the published file (``docs/fields.md`` gives the layout).

>>> from datastack.catalog.record import VersionRecord
>>> record = VersionRecord(name="toy", version=2, splits={"train": 3}, schema={"fields": [
...     {"name": "x", "kind": "array", "dtype": "float32", "shape": [2]}]})
>>> doc = croissant(record, url="https://example.org/toy")
>>> doc["version"], [r["@id"] for r in doc["recordSet"]]
('2.0.0', ['splits', 'records'])
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datastack._uri import redact
from datastack.canonical.layout import is_sharded, shards_of
from datastack.catalog.record import data_identifier_of

if TYPE_CHECKING:  # pragma: no cover
    from datastack.catalog.record import VersionRecord

CONFORMS_TO = "http://mlcommons.org/croissant/1.0"

_CR_TERMS = (
    "citeAs", "column", "conformsTo:dct", "extract", "field", "fileProperty", "fileObject",
    "fileSet", "format", "includes", "isLiveDataset", "jsonPath", "key", "md5",
    "parentField", "path", "recordSet", "references", "regex", "repeated", "replace",
    "samplingRate", "separator", "source", "subField", "transform", "equivalentProperty",
)

#: Media types of the source formats (a folder source is stored as one tar stream).
MEDIA_TYPES = {
    "csv": "text/csv",
    "jsonl": "application/jsonlines",
    "json": "application/json",
    "parquet": "application/x-parquet",
    "excel": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "imagefolder": "application/x-tar",
    "hdf5": "application/x-hdf5",
    "npy": "application/octet-stream",
    "npz": "application/zip",
    "idx": "application/octet-stream",
}
HDF5 = "application/x-hdf5"


def context() -> dict[str, Any]:
    """The JSON-LD ``@context`` of Croissant 1.0."""
    out: dict[str, Any] = {
        "@language": "en",
        "@vocab": "https://schema.org/",
        "cr": "http://mlcommons.org/croissant/",
        "rai": "http://mlcommons.org/croissant/RAI/",
        "dct": "http://purl.org/dc/terms/",
        "sc": "https://schema.org/",
        "data": {"@id": "cr:data", "@type": "@json"},
        "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
        "examples": {"@id": "cr:examples", "@type": "@json"},
    }
    for term in _CR_TERMS:
        name, _, prefix = term.partition(":")
        out[name] = f"{prefix or 'cr'}:{name}"
    return out


def _data_type(field: Mapping[str, Any]) -> str:
    kind, dtype = field.get("kind"), str(field.get("dtype", ""))
    if kind == "image":
        return "sc:ImageObject"
    if kind in ("string", "bytes"):
        return "sc:Text"
    if kind == "label" or dtype.startswith(("int", "uint")):
        return "sc:Integer"
    if dtype == "bool":
        return "sc:Boolean"
    return "sc:Float"


def _file_url(storage: str | None, identifier: str) -> str:
    if not storage:
        return identifier
    base = redact(storage)
    if "://" not in base:
        base = Path(os.path.abspath(base)).as_uri()
    parts = urllib.parse.urlsplit(base)  # a query (?authSource=...) stays after the path
    path = f"{parts.path.rstrip('/')}/{identifier}"
    return urllib.parse.urlunsplit(parts._replace(path=path))


def _distribution(record: VersionRecord, storage: str | None) -> list[dict[str, Any]]:
    out = []
    media = MEDIA_TYPES.get(record.format, "application/octet-stream")
    for i, source in enumerate(record.sources):
        url = redact(str(source.get("url", "")))
        item: dict[str, Any] = {
            "@type": "cr:FileObject", "@id": f"source-{i}",
            "name": url.rstrip("/").rsplit("/", 1)[-1].split("?")[0] or f"source-{i}",
            "contentUrl": url, "encodingFormat": media,
        }
        digest = source.get("sha256") or source.get("sha256_computed")
        if digest:
            item["sha256"] = str(digest)
        elif source.get("md5"):
            item["md5"] = str(source["md5"])
        if source.get("size") is not None:
            item["contentSize"] = f"{int(source['size'])} B"
        out.append(item)
    if is_sharded(record):  # the version's shards, one split's run of rows each
        shards = [str(r["identifier"]) for rs in shards_of(record).values() for r in rs]
        out.append({"@type": "cr:FileSet", "@id": "published-data", "name": "shards",
                    "description": "the published version: its shards, each an HDF5 file "
                                   "with one group (a split) and one dataset per field",
                    "includes": shards, "encodingFormat": HDF5})
        return out
    data = data_identifier_of(record)
    resource = next((r for r in record.resources if r.get("identifier") == data), {})
    item = {"@type": "cr:FileObject", "@id": "published-data", "name": data.rsplit("/", 1)[-1],
            "description": "the published version: one HDF5 group per split, one dataset "
                           "per field", "contentUrl": _file_url(storage, data),
            "encodingFormat": HDF5}
    if resource.get("sha256"):
        item["sha256"] = str(resource["sha256"])
    if resource.get("size") is not None:
        item["contentSize"] = f"{int(resource['size'])} B"
    out.append(item)  # the stored raw copies of the sources are the sources above
    return out


def _source(column: str, sharded: bool) -> dict[str, Any]:
    return {"fileSet" if sharded else "fileObject": {"@id": "published-data"},
            "extract": {"column": column}}


def _record_sets(record: VersionRecord) -> list[dict[str, Any]]:
    fields = record.schema.get("fields") if isinstance(record.schema, dict) else None
    sharded = is_sharded(record)
    splits = {
        "@type": "cr:RecordSet", "@id": "splits", "name": "splits", "dataType": "cr:Split",
        "key": {"@id": "splits/name"},
        "field": [{"@type": "cr:Field", "@id": "splits/name", "name": "name",
                   "dataType": "sc:Text"}],
        "data": [{"splits/name": name} for name in record.splits],
    }
    out = [splits]
    described = [{"@type": "cr:Field", "@id": "records/split", "name": "split",
                  "description": "the split of the record: its HDF5 group",
                  "dataType": "sc:Text", "references": {"field": {"@id": "splits/name"}},
                  "source": _source("split", sharded)}]
    for field in fields or []:
        name = str(field.get("name"))
        item: dict[str, Any] = {
            "@type": "cr:Field", "@id": f"records/{name}", "name": name,
            "description": f"datastack {field.get('kind')} field, dtype {field.get('dtype')}, "
                           f"shape {field.get('shape')}",
            "dataType": _data_type(field),
            "source": _source(str(field.get("dataset") or name), sharded),
        }
        if field.get("kind") in ("array", "ragged") and field.get("shape") != []:
            item["repeated"] = True
        if field.get("kind") == "label" and field.get("names"):
            out.append(_classes(name, list(field["names"])))
            item["references"] = {"field": {"@id": f"{name}_classes/index"}}
        described.append(item)
    out.append({"@type": "cr:RecordSet", "@id": "records", "name": "records",
                "description": "one record per sample", "field": described})
    return out


def _classes(name: str, names: list[str]) -> dict[str, Any]:
    rs = f"{name}_classes"
    return {
        "@type": "cr:RecordSet", "@id": rs, "name": rs, "key": {"@id": f"{rs}/index"},
        "description": f"the classes of {name}: code -> name",
        "field": [
            {"@type": "cr:Field", "@id": f"{rs}/index", "name": "index",
             "dataType": "sc:Integer"},
            {"@type": "cr:Field", "@id": f"{rs}/name", "name": "name", "dataType": "sc:Text"},
        ],
        "data": [{f"{rs}/index": i, f"{rs}/name": str(n)} for i, n in enumerate(names)],
    }


def croissant(record: VersionRecord, *, url: str | None = None,
              storage: str | None = None) -> dict[str, Any]:
    """The Croissant 1.0 JSON-LD (a dict) of a published version.

    ``url`` is the dataset's page (``datastack web``), else the storage URI is used (redacted);
    ``storage`` is the storage URI the published file's ``contentUrl`` starts with.
    """
    license_ = str((record.extra or {}).get("license") or "")
    doc: dict[str, Any] = {
        "@context": context(),
        "@type": "sc:Dataset",
        "name": record.name,
        "description": record.description or f"{record.name}, published with datastack",
        "conformsTo": CONFORMS_TO,
        "version": f"{record.version}.0.0",
        "citeAs": f"{record.name} v{record.version}",
    }
    link = url or (_file_url(storage, "") if storage else "")
    if link:
        doc["url"] = link
    if license_:
        doc["license"] = license_
    if record.published_at is not None:
        doc["datePublished"] = record.published_at.isoformat()
    doc["distribution"] = _distribution(record, storage)
    doc["recordSet"] = _record_sets(record)
    return doc


__all__ = ["CONFORMS_TO", "croissant"]
