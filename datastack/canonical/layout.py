"""Where a dataset's files live in a storage, and what a version's files are: the one place
that builds a storage path.

Resource layout in a storage::

    datasets/<name>/raw/<algo>-<digest>/<filename>   a pinned raw source, content-addressed
                                                      (shared by every version that uses it)
    datasets/<name>/raw/fetched-<id>/<filename>      one download of a tracked source
    datasets/<name>/v<version>-<attempt>/data.h5     the canonical HDF5 file of one version,
                                                      in the folder of the attempt that wrote it
    datasets/<name>/v<version>/data.h5               the same, for versions written before
                                                      attempts had ids

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
    from datastack.specs.model import DatasetSpec, SourceSpec

#: The folder of every dataset's resources: ``datasets/<name>/...``.
RESOURCE_ROOT = "datasets"
#: The name of a version's canonical HDF5 file.
DATA_FILE = "data.h5"
#: Storage compression of the canonical HDF5 file (spec key ``compression:``); ``none`` by default.
COMPRESSIONS = ("none", "lzf", "gzip")
DEFAULT_COMPRESSION = "none"
#: The layout whose catalog schema says ``format_version: 2`` (named fields); else layout 1.
FIELDS_LAYOUT = 2
_FETCHED = "fetched-"


def dataset_prefix(name: str) -> str:
    """The identifier prefix of every resource of dataset ``name``."""
    return f"{RESOURCE_ROOT}/{name}/"


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
    """Identifier of the canonical HDF5 file of ``name`` version ``version``."""
    return f"{RESOURCE_ROOT}/{name}/v{version}/{DATA_FILE}"


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


def layout_of(schema: Mapping[str, Any] | Any) -> int:
    """The layout (1 or 2) of a version, from the schema its catalog record carries."""
    if isinstance(schema, Mapping) and schema.get("format_version") == FIELDS_LAYOUT:
        return FIELDS_LAYOUT
    return 1


__all__ = [
    "COMPRESSIONS",
    "DATA_FILE",
    "DEFAULT_COMPRESSION",
    "FIELDS_LAYOUT",
    "RESOURCE_ROOT",
    "attempt_prefix",
    "data_identifier",
    "dataset_prefix",
    "fetched_identifier",
    "is_fetched",
    "layout_of",
    "new_attempt_id",
    "raw_identifier",
    "version_prefix",
]
