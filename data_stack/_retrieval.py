"""The original resource definitions and retrievers, on :mod:`datastack.retrieval`.

Downloads and copies are datastack's (streamed, retried, verified *before* the resource
becomes visible). A checksum mismatch raises the original :class:`DatasetFileCorruptError`
(a :class:`datastack.errors.ChecksumError`). A connector whose ``set_resource`` does not take
checksums (a 0.0.13-style custom connector) is filled the original way: retrieve into a
temporary folder, verify, then ``set_resource(identifier, resource)``.
"""

from __future__ import annotations

import abc
import functools
import inspect
import tempfile
from collections.abc import Callable, Iterable, Sequence
from types import SimpleNamespace
from typing import Any

from data_stack._errors import DatasetFileCorruptError
from data_stack._resources import StreamedResource
from datastack.errors import ChecksumError, ConfigurationError
from datastack.retrieval import FileRetriever as _DSFileRetriever
from datastack.retrieval import HTTPRetriever as _DSHTTPRetriever
from datastack.retrieval import ResourceDefinition as _DSResourceDefinition
from datastack.retrieval import retriever_for
from datastack.storage.filesystem import FileStorageConnector as _DSFileStorageConnector


class ResourceDefinition(_DSResourceDefinition):
    """``ResourceDefinition(identifier, source, md5_sum)``: a datastack ResourceDefinition.

    ``sha256=`` may be given as well (or instead). The original field is the ``md5_sum``
    property (datastack's ``md5``).
    """

    def __init__(
        self,
        identifier: str,
        source: str,
        md5_sum: str | None = None,
        *,
        sha256: str | None = None,
        md5: str | None = None,
        tracked: bool = False,
    ) -> None:
        if md5_sum is not None and md5 is not None and md5_sum.lower() != md5.lower():
            raise ConfigurationError(
                f"resource {identifier!r}: md5_sum={md5_sum!r} and md5={md5!r} differ; give one"
            )
        super().__init__(
            identifier, source, sha256=sha256, md5=md5 if md5 is not None else md5_sum,
            tracked=tracked,
        )

    @property
    def md5_sum(self) -> str | None:
        """The expected md5 hex digest (the original's field name)."""
        return self.md5


def accepts_checksums(storage: Any) -> bool:
    """Whether ``storage.set_resource`` verifies ``sha256=``/``md5=`` (datastack connectors)."""
    try:
        params = inspect.signature(storage.set_resource).parameters
    except (TypeError, ValueError, AttributeError):
        return False
    return "sha256" in params and "md5" in params


def _copy_into(storage: Any, staging: _DSFileStorageConnector, identifiers: list[str]) -> None:
    for identifier in identifiers:
        with staging.get_resource(identifier) as resource:
            storage.set_resource(identifier, StreamedResource.of(resource))


def retrieve_into(
    storage: Any,
    definitions: Iterable[_DSResourceDefinition],
    make_retriever: Callable[[Any], Any],
) -> list[str]:
    """Retrieve ``definitions`` into ``storage`` with ``make_retriever(store).retrieve``.

    Checksum mismatches become :class:`DatasetFileCorruptError`; connectors that cannot verify
    are filled from a verified temporary copy.
    """
    defs = list(definitions)
    try:
        if accepts_checksums(storage):
            return list(make_retriever(storage).retrieve(defs))
        with tempfile.TemporaryDirectory(prefix="data_stack-") as folder:
            staging = _DSFileStorageConnector(folder, fsync=False)
            identifiers = list(make_retriever(staging).retrieve(defs))
            _copy_into(storage, staging, identifiers)
            return identifiers
    except DatasetFileCorruptError:
        raise
    except ChecksumError as exc:
        raise DatasetFileCorruptError(str(exc)) from exc


def retriever_for_definitions(
    definitions: Sequence[_DSResourceDefinition],
) -> Callable[[Any], Any]:
    """A ``make_retriever`` picking datastack's retriever by the definitions' URL schemes."""
    return lambda store: retriever_for(definitions, store)


class RetrieverImplIF(abc.ABC):
    """The original retriever implementation interface (``retrieve(jobs) -> identifiers``)."""

    storage: Any

    def __init__(self, storage_connector: Any) -> None:
        self.storage = storage_connector

    @property
    def storage_connector(self) -> Any:
        """The connector resources are stored in (datastack's ``storage``)."""
        return self.storage

    @storage_connector.setter
    def storage_connector(self, value: Any) -> None:
        self.storage = value

    @abc.abstractmethod
    def retrieve(self, retrieval_jobs: list[_DSResourceDefinition]) -> list[str]:
        """Store every job under its identifier; return the identifiers."""


class HTTPRetrieverImpl(_DSHTTPRetriever, RetrieverImplIF):
    """Downloads http(s) sources: a :class:`datastack.retrieval.HTTPRetriever`.

    Keyword ``options`` (timeout, max_retries, progress...) go to datastack's retriever.
    """

    def __init__(self, storage_connector: Any, **options: Any) -> None:
        _DSHTTPRetriever.__init__(self, storage_connector, **options)

    def retrieve(self, retrieval_jobs: Iterable[_DSResourceDefinition]) -> list[str]:
        return retrieve_into(self.storage, retrieval_jobs, self._retriever_for)

    def _retriever_for(self, store: Any) -> Any:
        if store is self.storage:
            return SimpleNamespace(retrieve=functools.partial(_DSHTTPRetriever.retrieve, self))
        return _DSHTTPRetriever(
            store,
            timeout=self.timeout,
            deadline=self.deadline,
            max_retries=self.max_retries,
            backoff=self.backoff,
            max_redirects=self.max_redirects,
            progress=self.progress,
            session=self.session,
        )


class FileRetrieverImpl(_DSFileRetriever, RetrieverImplIF):
    """Copies local files (paths or ``file://`` URLs): a :class:`datastack.retrieval.FileRetriever`.

    The copy is verified against the checksum before it becomes visible in the storage.
    """

    def __init__(self, storage_connector: Any) -> None:
        _DSFileRetriever.__init__(self, storage_connector)

    def retrieve(self, retrieval_jobs: Iterable[_DSResourceDefinition]) -> list[str]:
        return retrieve_into(self.storage, retrieval_jobs, self._retriever_for)

    def _retriever_for(self, store: Any) -> Any:
        if store is self.storage:
            return SimpleNamespace(retrieve=functools.partial(_DSFileRetriever.retrieve, self))
        return _DSFileRetriever(store)


class Retriever:
    """The original facade: ``Retriever(retriever_impl).retrieve(jobs)``."""

    def __init__(self, retriever_impl: RetrieverImplIF) -> None:
        self.retriever_impl = retriever_impl

    def retrieve(self, retrieval_jobs: list[_DSResourceDefinition]) -> list[str]:
        return self.retriever_impl.retrieve(retrieval_jobs)


class RetrieverFactory:
    """The original factory of retrievers."""

    @classmethod
    def get_http_retriever(cls, storage_connector: Any) -> Retriever:
        return Retriever(HTTPRetrieverImpl(storage_connector))

    @classmethod
    def get_file_retriever(cls, storage_connector: Any) -> Retriever:
        return Retriever(FileRetrieverImpl(storage_connector))


__all__ = [
    "FileRetrieverImpl",
    "HTTPRetrieverImpl",
    "ResourceDefinition",
    "Retriever",
    "RetrieverFactory",
    "RetrieverImplIF",
]
