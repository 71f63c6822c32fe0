"""Retrievers: bring sources (http(s), file) into a StorageConnector, verified by checksum.

- :class:`ResourceDefinition`: identifier, source URL/path, sha256 or md5.
- :class:`Retriever`: the protocol (``retrieve(definitions) -> list[identifier]``).
- :class:`HTTPRetriever`: streamed, resumed (Range/If-Range), retried downloads.
- :class:`FileRetriever`: ``file://`` URLs and local paths.
- :func:`retriever_for`: the right one for a URL (refuses other schemes before any I/O).
- :func:`check_changed`: conditional request, "has this source changed since?".

``requests`` is imported only when an HTTP name is first used.

>>> from datastack.retrieval import ResourceDefinition, retriever_for
>>> retriever_for("ftp://example.org/x", storage=None)  # type: ignore[arg-type]
Traceback (most recent call last):
...
datastack.errors.UnsupportedSchemeError: unsupported URL scheme 'ftp' in ...
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from datastack._retry import Backoff
from datastack.retrieval.base import (
    RETRIEVERS,
    SUPPORTED_SCHEMES,
    ResourceDefinition,
    Retriever,
    SourceInfo,
    check_scheme,
    retriever_for,
    source_scheme,
)

if TYPE_CHECKING:  # pragma: no cover
    from datastack.retrieval.file import FileRetriever
    from datastack.retrieval.http import ChangeCheck, HTTPRetriever, check_changed

_LAZY = {
    "HTTPRetriever": "datastack.retrieval.http",
    "ChangeCheck": "datastack.retrieval.http",
    "check_changed": "datastack.retrieval.http",
    "FileRetriever": "datastack.retrieval.file",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'datastack.retrieval' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


__all__ = [
    "RETRIEVERS",
    "SUPPORTED_SCHEMES",
    "Backoff",
    "ChangeCheck",
    "FileRetriever",
    "HTTPRetriever",
    "ResourceDefinition",
    "Retriever",
    "SourceInfo",
    "check_changed",
    "check_scheme",
    "retriever_for",
    "source_scheme",
]
