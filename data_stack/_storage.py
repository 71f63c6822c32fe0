"""The original storage connectors, as datastack storage connectors.

- :class:`StorageConnector` is a :class:`datastack.storage.StorageConnector` whose abstract
  methods are the original's three (``get_resource``, ``set_resource``, ``has_resource``); the
  datastack primitives default to them, so a 0.0.13-style subclass still instantiates.
- :class:`FileStorageConnector` is a :class:`datastack.storage.filesystem.FileStorageConnector`
  with the original constructor (``root_path``); it stores ``root_path/identifier`` as before.
"""

from __future__ import annotations

import abc
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from data_stack._errors import MaliciousFilePathError
from data_stack._resources import ResourceFactory, StreamedResource, StreamedTextResource, as_binary
from datastack.errors import InvalidIdentifierError
from datastack.resources import StreamedResource as _DSResource
from datastack.storage import StorageConnector as _DSStorageConnector
from datastack.storage.filesystem import FileStorageConnector as _DSFileStorageConnector

_Types = ResourceFactory.SupportedStreamedResourceTypes
_BINARY = _Types.STREAMED_BINARY_RESOURCE


@contextlib.contextmanager
def _checked_identifier() -> Iterator[None]:
    """Raise the original :class:`MaliciousFilePathError` for identifiers datastack refuses."""
    try:
        yield
    except MaliciousFilePathError:
        raise
    except InvalidIdentifierError as exc:
        raise MaliciousFilePathError(str(exc)) from exc


class StorageConnector(_DSStorageConnector):
    """The original abstract connector: implement ``get_resource``, ``set_resource`` and
    ``has_resource``. Listing and deleting are not part of the original interface."""

    @abc.abstractmethod
    def get_resource(  # type: ignore[override]
        self, identifier: str, resource_type: _Types = _BINARY
    ) -> StreamedResource | StreamedTextResource:
        """The resource stored under ``identifier`` (raises ResourceNotFoundError)."""

    @abc.abstractmethod
    def set_resource(self, identifier: str, resource: Any) -> Any:  # type: ignore[override]
        """Store ``resource`` (a stream) under ``identifier``."""

    @abc.abstractmethod
    def has_resource(self, identifier: str) -> bool:
        """Whether something is stored under ``identifier``."""

    # -- datastack primitives, routed to the original methods ---------------------------------
    def _uri(self) -> str:
        return f"compat:{type(self).__name__}"

    def _open(self, identifier: str) -> _DSResource:
        return self.get_resource(identifier)  # type: ignore[return-value]

    def _write(self, identifier: str, reader: Any, verify: Any) -> None:
        with tempfile.SpooledTemporaryFile(max_size=16 << 20) as spool:
            shutil.copyfileobj(reader, spool)
            verify()
            spool.seek(0)
            self.set_resource(identifier, StreamedResource(identifier, spool))

    def _exists(self, identifier: str) -> bool:
        return self.has_resource(identifier)

    def _delete(self, identifier: str) -> bool:
        raise NotImplementedError(f"{type(self).__name__} does not implement deleting")

    def _list(self, prefix: str) -> list[str]:
        raise NotImplementedError(f"{type(self).__name__} does not implement listing")


class FileStorageConnector(_DSFileStorageConnector, StorageConnector):
    """Files under ``root_path`` (the original constructor); a datastack FileStorageConnector.

    ``get_resource`` returns the original :class:`StreamedResource` (chunked iteration from
    the start) or, for ``STREAMED_TEXT_RESOURCE``, a :class:`StreamedTextResource`. Writes are
    atomic and can be verified (``sha256=`` / ``md5=``) as in datastack. (The public verbs
    call datastack's explicitly: the next class in the MRO holds the original's abstract ones.)
    """

    def __init__(self, root_path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        super().__init__(root_path, fsync=fsync)

    @property
    def root_path(self) -> str:
        """The absolute storage folder."""
        return str(self.root)

    def get_resource(  # type: ignore[override]
        self, identifier: str, resource_type: _Types = _BINARY
    ) -> StreamedResource | StreamedTextResource:
        with _checked_identifier():
            resource = StreamedResource.of(_DSStorageConnector.get_resource(self, identifier))
        if resource_type == _Types.STREAMED_TEXT_RESOURCE:
            return StreamedTextResource(identifier, resource, resource.chunk_size)
        return resource

    def set_resource(  # type: ignore[override]
        self,
        identifier: str,
        resource: Any,
        *,
        sha256: str | None = None,
        md5: str | None = None,
    ) -> Any:
        """Store ``resource`` (a resource is stored from its start) atomically."""
        with _checked_identifier():
            return _DSStorageConnector.set_resource(
                self, identifier, as_binary(resource), sha256=sha256, md5=md5
            )

    def has_resource(self, identifier: str) -> bool:
        with _checked_identifier():
            return _DSStorageConnector.has_resource(self, identifier)


class StorageConnectorFactory:
    """The original factory of storage connectors."""

    @classmethod
    def get_file_storage_connector(cls, folder_path: str) -> FileStorageConnector:
        return FileStorageConnector(folder_path)


__all__ = ["FileStorageConnector", "StorageConnector", "StorageConnectorFactory"]
