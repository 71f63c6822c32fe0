"""Where a dataset's files live in a storage, and what a version's files are: the one place
that builds a storage path.

Resource layout in a storage::

    datasets/<name>/raw/<algo>-<digest>/<filename>   a pinned raw source, content-addressed
                                                      (shared by every version that uses it)
    datasets/<name>/raw/fetched-<id>/<filename>      one download of a tracked source stored
                                                      whole (versions written before chunks)
    datasets/<name>/raw/chunks/<sha256>              one chunk of the raw copy of a tracked
                                                      source, cut where its content says
                                                      (RAW_CHUNK_BYTES, 4 MiB, on average),
                                                      stored once per content and shared by
                                                      every download (and version) that
                                                      holds it
    datasets/<name>/v<version>-<attempt>/data.h5     the canonical HDF5 file of one version,
                                                      in the folder of the attempt that wrote it
    datasets/<name>/v<version>/data.h5               the same, for versions written before
                                                      attempts had ids
    datasets/<name>/shards/<sha256>.h5               one shard: an immutable canonical file
                                                      holding a run of one split's samples,
                                                      named by the sha256 of its bytes and
                                                      shared by every version that lists it

A version published since shards exist (``docs/living.md``) is a *manifest*: its catalog
record lists its shards in order, split by split (``resources`` entries with ``kind:
"shard"``, their ``split`` and ``rows``); a version published before is one data file.

A tracked source's download keeps ``raw/fetched-<id>/<filename>`` as its identity in the
catalog record (``identifier``), but its bytes are the chunks the record lists in order
(``chunks: [[sha256, size], ...]``, :func:`raw_chunk_identifiers`): an append upstream stores
only its new chunks, an edit or an insertion the chunks around it (``docs/living.md``).

The canonical file has two layouts (``docs/fields.md``): layout 1 (``samples``/``targets`` per
split) and layout 2 (named fields, values + offsets), told apart by the ``format_version`` of
the schema its catalog record carries. This module is imported by the catalog and the specs,
so it imports nothing of the library but identifier checks.

>>> data_identifier("iris", 3)
'datasets/iris/v3/data.h5'
>>> version_prefix("iris", 3)
'datasets/iris/v3/'
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from datastack.errors import DatastackError
from datastack.identifiers import validate_dataset_name, validate_identifier

if TYPE_CHECKING:  # pragma: no cover
    from datastack.catalog.record import VersionRecord
    from datastack.specs.model import DatasetSpec, SourceSpec

#: The folder of every dataset's resources: ``datasets/<name>/...``.
RESOURCE_ROOT = "datasets"
#: The identifier prefix of every dataset's resources.
DATASETS_PREFIX = f"{RESOURCE_ROOT}/"
#: The name of a version's canonical HDF5 file.
DATA_FILE = "data.h5"
#: Storage compression of the canonical HDF5 file (spec key ``compression:``); ``none`` by default.
COMPRESSIONS = ("none", "lzf", "gzip")
DEFAULT_COMPRESSION = "none"
#: The layout whose catalog schema says ``format_version: 2`` (named fields); else layout 1.
FIELDS_LAYOUT = 2
_FETCHED = "fetched-"
#: Average size of a chunk of a tracked source's raw copy: chunks are cut where the content
#: says, between a quarter and four times this (``storage._boundaries``); records written
#: before list chunks of exactly this size, which read the same way.
RAW_CHUNK_BYTES = 4 * 1024 * 1024
_CHUNKS = "chunks"
#: The folder of a dataset's shards, and the ``kind`` of a shard's entry in a record.
SHARDS = "shards"
SHARD_KIND = "shard"
#: The ``kind`` of the entry of a version's whole category labels (kept beside the shards
#: when the record holds only the first of a very long list).
LABELS_KIND = "labels"


def dataset_prefix(name: str) -> str:
    """The identifier prefix of every resource of dataset ``name``."""
    return f"{DATASETS_PREFIX}{name}/"


def version_prefix(name: str, version: int) -> str:
    """The identifier prefix under which version ``version`` of ``name`` stores its resources.

    >>> version_prefix("iris", 3)
    'datasets/iris/v3/'
    """
    return f"{RESOURCE_ROOT}/{validate_dataset_name(name)}/v{int(version)}/"


def new_attempt_id() -> str:
    """A fresh attempt id: 12 random hex digits (an attempt is one try at a version)."""
    import secrets

    return secrets.token_hex(6)


def attempt_prefix(name: str, version: int, attempt: str) -> str:
    """The identifier prefix of one attempt at version ``version``: its resources are staged
    (and stay, once published) there, so a failed attempt never shares a path with another.

    >>> attempt_prefix("iris", 3, "0123456789ab")
    'datasets/iris/v3-0123456789ab/'
    """
    if not attempt or not all(c in "0123456789abcdef" for c in attempt):
        raise DatastackError(f"invalid attempt id {attempt!r}: expected lower-case hex digits")
    return f"{RESOURCE_ROOT}/{validate_dataset_name(name)}/v{int(version)}-{attempt}/"


def data_identifier(name: str, version: int) -> str:
    """Identifier of the canonical HDF5 file of ``name`` version ``version`` as written before
    attempts had ids (a record's own file: :func:`data_identifier_of`)."""
    return f"{RESOURCE_ROOT}/{name}/v{version}/{DATA_FILE}"


def resource_prefix(record: VersionRecord) -> str:
    """Where the resources of ``record`` live: its attempt's prefix, or ``v<N>/`` for records
    written before attempts had ids.

    >>> from datastack.catalog.record import VersionRecord
    >>> resource_prefix(VersionRecord(name="iris", version=2))
    'datasets/iris/v2/'
    """
    if record.attempt:
        return attempt_prefix(record.name, record.version, record.attempt)
    return version_prefix(record.name, record.version)


def data_identifier_of(record: VersionRecord) -> str:
    """The identifier of the canonical HDF5 file of a version."""
    return resource_prefix(record) + DATA_FILE


def shard_identifier(name: str, sha256: str) -> str:
    """The identifier of the shard whose bytes have digest ``sha256``.

    >>> shard_identifier("iris", "ab" * 32)[:30]
    'datasets/iris/shards/ababababab'
    """
    digest = str(sha256).lower()
    if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
        raise DatastackError(f"invalid shard digest {sha256!r}: expected 64 hex digits")
    return f"{RESOURCE_ROOT}/{validate_dataset_name(name)}/{SHARDS}/{digest}.h5"


def labels_identifier(name: str, sha256: str) -> str:
    """The identifier of a version's whole category labels (JSON), by their digest."""
    return shard_identifier(name, sha256)[: -len(".h5")] + ".labels.json"


def is_sharded(record: VersionRecord) -> bool:
    """Whether ``record`` is a manifest of shards (else one data file)."""
    return any(r.get("kind") == SHARD_KIND for r in record.resources)


def shards_of(record: VersionRecord) -> dict[str, list[dict[str, Any]]]:
    """The shard entries of a sharded version by split, in order (every split of the
    record, an empty list when it has none)."""
    out: dict[str, list[dict[str, Any]]] = {str(s): [] for s in record.splits}
    for entry in record.resources:
        if entry.get("kind") == SHARD_KIND:
            out.setdefault(str(entry.get("split")), []).append(dict(entry))
    return out


def _filename(source: SourceSpec) -> str:
    name = source.filename or unquote(urlsplit(source.url).path).rsplit("/", 1)[-1] or "source"
    try:
        return validate_identifier(name)
    except DatastackError:
        return "source"


def raw_identifier(spec: DatasetSpec, source: SourceSpec) -> str:
    """Content-addressed identifier of a pinned raw source (by its expected checksum)."""
    algo, digest = source.checksum
    return f"{RESOURCE_ROOT}/{spec.name}/raw/{algo}-{digest.lower()}/{_filename(source)}"


def fetched_identifier(spec: DatasetSpec, source: SourceSpec) -> str:
    """A fresh identifier for one download of a tracked source."""
    fresh = f"{_FETCHED}{uuid.uuid4().hex[:16]}"
    return f"{RESOURCE_ROOT}/{spec.name}/raw/{fresh}/{_filename(source)}"


def is_fetched(identifier: object) -> bool:
    """Whether ``identifier`` is one download of a tracked source (not content-addressed)."""
    return f"/raw/{_FETCHED}" in str(identifier)


def raw_chunk_identifier(name: str, sha256: str) -> str:
    """Identifier of the raw chunk of dataset ``name`` whose content has digest ``sha256``.

    >>> raw_chunk_identifier("iris", "AB" * 32)[:36]
    'datasets/iris/raw/chunks/abababababa'
    """
    digest = str(sha256).lower()
    if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
        raise DatastackError(
            f"invalid raw chunk digest {sha256!r}: expected 64 hexadecimal characters"
        )
    return f"{RESOURCE_ROOT}/{validate_dataset_name(name)}/raw/{_CHUNKS}/{digest}"


def raw_chunk_identifiers(source: Mapping[str, Any]) -> list[tuple[str, int]]:
    """``(identifier, size)`` of each chunk of a source record's raw copy, in order; ``[]`` for
    a raw copy stored whole (at ``source["identifier"]``).

    The dataset is the one of the download's identity (``datasets/<name>/raw/...``).

    >>> raw_chunk_identifiers({"identifier": "datasets/iris/raw/fetched-1/a.csv",
    ...                        "chunks": [["ab" * 32, 3]]})[0][1]
    3
    """
    chunks = source.get("chunks")
    if not chunks:
        return []
    identifier = str(source.get("identifier") or "")
    parts = identifier.split("/")
    if len(parts) < 4 or parts[0] != RESOURCE_ROOT or parts[2] != "raw":
        raise DatastackError(
            f"source record {identifier!r} lists raw chunks but its identifier is not under "
            f"{RESOURCE_ROOT}/<name>/raw/: the catalog record is damaged"
        )
    out = []
    for entry in chunks:
        try:
            digest, size = entry
            out.append((raw_chunk_identifier(parts[1], str(digest)), int(size)))
        except (TypeError, ValueError) as exc:
            raise DatastackError(
                f"source record {identifier!r}: raw chunk entry {entry!r} is not "
                f"[sha256, size] ({exc}): the catalog record is damaged"
            ) from None
    return out


def layout_of(schema: Mapping[str, Any] | Any) -> int:
    """The layout (1 or 2) of a version, from the schema its catalog record carries."""
    if isinstance(schema, Mapping) and schema.get("format_version") == FIELDS_LAYOUT:
        return FIELDS_LAYOUT
    return 1


__all__ = [
    "COMPRESSIONS",
    "DATASETS_PREFIX",
    "DATA_FILE",
    "DEFAULT_COMPRESSION",
    "FIELDS_LAYOUT",
    "LABELS_KIND",
    "RAW_CHUNK_BYTES",
    "RESOURCE_ROOT",
    "SHARDS",
    "SHARD_KIND",
    "attempt_prefix",
    "data_identifier",
    "data_identifier_of",
    "dataset_prefix",
    "fetched_identifier",
    "is_fetched",
    "is_sharded",
    "labels_identifier",
    "layout_of",
    "new_attempt_id",
    "raw_chunk_identifier",
    "raw_chunk_identifiers",
    "raw_identifier",
    "resource_prefix",
    "shard_identifier",
    "shards_of",
    "version_prefix",
]
