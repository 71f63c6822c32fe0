"""The original streamed resources, built on :mod:`datastack.resources`.

The original ``StreamedResource(identifier, buffer, chunk_size)`` wrapped an open file-like
object; iterating it yielded ``chunk_size`` chunks *from the start* every time, and closing it
closed the buffer. Here it is a :class:`datastack.resources.StreamedResource` (so datastack's
connectors and iterators accept it) that keeps those semantics.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable, Iterator
from enum import Enum
from typing import IO, Any, cast

from datastack.resources import StreamedResource as _DSResource
from datastack.resources import StreamedTextResource as _DSTextResource

DEFAULT_CHUNK_SIZE = 1024


class _GivenStream:
    """Opener handing out an already open stream (the original's ``buffer`` argument)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def __call__(self) -> IO[bytes]:
        return self.stream  # type: ignore[no-any-return]


class _Reopen:
    """Picklable opener returning a fresh, unopened copy of a datastack resource."""

    def __init__(self, resource: _DSResource) -> None:
        self.resource = resource

    def __call__(self) -> IO[bytes]:
        return cast("IO[bytes]", copy.copy(self.resource))


class StreamedResource(_DSResource):
    """A binary resource over an open file-like object (the original's constructor).

    Iteration yields ``chunk_size`` chunks from the beginning (re-entrant); after ``close()``
    iterating raises ``ValueError``, as in the original.
    """

    def __init__(
        self, identifier: str, buffer: Any, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> None:
        super().__init__(identifier, _GivenStream(buffer))
        self._chunk_size = chunk_size
        self._borrowed: Any = buffer  # the caller's stream: closed by close(), not by GC

    def __del__(self) -> None:
        # io objects close themselves when collected; a borrowed buffer stays open (as in
        # the original): only close() / the context manager close it.
        if getattr(self, "_borrowed", None) is None:
            super().__del__()

    def close(self) -> None:
        borrowed = getattr(self, "_borrowed", None)
        if borrowed is not None:
            borrowed.close()  # even when never read (the stream is opened lazily)
        super().close()

    @classmethod
    def _from_opener(
        cls,
        identifier: str,
        opener: Callable[[], IO[bytes]],
        size: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> StreamedResource:
        """A lazily opened resource (used by the storage connector adapter)."""
        resource = cls.__new__(cls)
        _DSResource.__init__(resource, identifier, opener, size)
        resource._chunk_size = chunk_size
        resource._borrowed = None
        return resource

    @classmethod
    def of(cls, resource: _DSResource, chunk_size: int = DEFAULT_CHUNK_SIZE) -> StreamedResource:
        """The original semantics over a datastack resource (reopened lazily, picklable)."""
        if isinstance(resource, StreamedResource):
            return resource
        return cls._from_opener(resource.identifier, _Reopen(resource), None, chunk_size)

    @property
    def chunk_size(self) -> int:
        """Size of the chunks iteration yields."""
        return self._chunk_size

    def __iter__(self) -> Iterator[bytes]:  # type: ignore[override]
        return self._chunks()

    def _chunks(self) -> Iterator[bytes]:
        self.seek(0)
        yield from self.iter_chunks(self._chunk_size)

    def fileno(self) -> int:
        return int(self.stream.fileno())

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["chunk_size"] = self._chunk_size
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        _DSResource.__init__(self, state["identifier"], state["opener"], state["size"])
        self._chunk_size = state.get("chunk_size", DEFAULT_CHUNK_SIZE)
        opener = state["opener"]
        self._borrowed = opener.stream if isinstance(opener, _GivenStream) else None
        if state.get("pos"):
            self.seek(state["pos"])


class StreamedTextResource(_DSTextResource):
    """A text resource: a :class:`datastack.resources.StreamedTextResource` built the original
    way, ``StreamedTextResource(identifier, buffer, chunk_size, encoding)``.

    Iteration yields ``chunk_size``-character chunks from the beginning, as in the original.
    """

    def __init__(
        self,
        identifier: str,
        buffer: Any,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        encoding: str = "utf-8",
    ) -> None:
        if isinstance(buffer, _DSResource):
            resource = buffer
        else:
            resource = StreamedResource(identifier, buffer, chunk_size)
        super().__init__(resource, encoding=encoding)
        self.identifier = identifier
        self._chunk_size = chunk_size

    @property
    def chunk_size(self) -> int:
        """Size (in characters) of the chunks iteration yields."""
        return self._chunk_size

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]
        return self._chunks()

    def _chunks(self) -> Iterator[str]:
        self.seek(0)
        while chunk := self.read(self._chunk_size):
            yield chunk

    @staticmethod
    def from_streamed_resouce(
        resource: _DSResource, encoding: str = "utf-8"
    ) -> StreamedTextResource:
        """A text view of ``resource`` (the original's spelling)."""
        chunk_size = getattr(resource, "chunk_size", DEFAULT_CHUNK_SIZE)
        return StreamedTextResource(resource.identifier, resource, chunk_size, encoding)

    from_streamed_resource = from_streamed_resouce


class ResourceFactory:
    """The original factory of streamed resources."""

    class SupportedStreamedResourceTypes(Enum):
        STREAMED_BINARY_RESOURCE = "STREAMED_BINARY_RESOURCE"
        STREAMED_TEXT_RESOURCE = "STREAMED_TEXT_RESOURCE"

    @staticmethod
    def get_resource(
        identifier: str,
        file_like_object: Any,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        resource_type: SupportedStreamedResourceTypes = (
            SupportedStreamedResourceTypes.STREAMED_BINARY_RESOURCE
        ),
    ) -> StreamedResource | StreamedTextResource:
        """A binary (default) or text resource over ``file_like_object``."""
        if resource_type == ResourceFactory.SupportedStreamedResourceTypes.STREAMED_TEXT_RESOURCE:
            return StreamedTextResource(identifier, file_like_object, chunk_size)
        return StreamedResource(identifier, file_like_object, chunk_size)


def as_binary(data: Any) -> Any:
    """``data`` positioned at its start when it is a resource (the original stored whole ones)."""
    if isinstance(data, _DSResource) and not data.closed and data.tell() != 0:
        data.seek(0)
    elif isinstance(data, io.TextIOBase):
        raise TypeError("store binary resources; text resources cannot be stored")
    return data


__all__ = ["ResourceFactory", "StreamedResource", "StreamedTextResource"]
