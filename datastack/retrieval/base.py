"""What a retriever is given and what it reports: definitions, source info, the protocol.

A :class:`ResourceDefinition` names one source (URL or local path), the identifier it is stored
under, and the checksum it must match. A :class:`Retriever` turns definitions into verified
resources in a :class:`~datastack.storage.base.StorageConnector`. :func:`retriever_for` picks the
built-in retriever for a URL scheme and refuses every scheme other than http, https and file
before any I/O.

>>> d = ResourceDefinition("iris/raw/iris.csv", "https://example.org/iris.csv", sha256="0" * 64)
>>> d.checksum
('sha256', '0000000000000000000000000000000000000000000000000000000000000000')
>>> source_scheme("ftp://example.org/x")
'ftp'
>>> check_scheme("gopher://example.org/x")
Traceback (most recent call last):
...
datastack.errors.UnsupportedSchemeError: unsupported URL scheme 'gopher' in ...
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

from datastack._registry import Registry
from datastack._uri import redact
from datastack.errors import ConfigurationError, UnsupportedSchemeError
from datastack.identifiers import validate_identifier

if TYPE_CHECKING:  # pragma: no cover
    from datastack.storage.base import StorageConnector

SUPPORTED_SCHEMES = ("http", "https", "file")
_HEX = re.compile(r"[0-9a-f]+\Z")


def _check_hex(name: str, value: object, length: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a hex string, got {type(value).__name__}")
    lowered = value.strip().lower()
    if len(lowered) != length or not _HEX.match(lowered):
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise ConfigurationError(
            f"{name} must be {length} hexadecimal characters, got {shown!r} "
            f"({len(value)} characters); copy the digest printed by `{name}sum FILE`"
        )
    return lowered


#: Default largest source (bytes) of any scheme: 1 TiB.
DEFAULT_MAX_SOURCE_BYTES = 1 << 40


def max_source_bytes() -> int:
    """The largest source of any scheme (file, folder, http download), in bytes:
    ``DATASTACK_MAX_SOURCE_BYTES`` (read at each call, validated), else 1 TiB.

    >>> os.environ["DATASTACK_MAX_SOURCE_BYTES"] = "1000000"; max_source_bytes()
    1000000
    >>> del os.environ["DATASTACK_MAX_SOURCE_BYTES"]; max_source_bytes() == 1 << 40
    True
    """
    from datastack._env import env_int

    return env_int("DATASTACK_MAX_SOURCE_BYTES", DEFAULT_MAX_SOURCE_BYTES, minimum=1)


@dataclass(frozen=True)
class ResourceDefinition:
    """One source to retrieve: where from, where to store it, and its expected checksum.

    Parameters
    ----------
    identifier:
        Storage identifier (validated with :func:`~datastack.identifiers.validate_identifier`).
    source:
        ``http(s)://`` URL, ``file:///abs/path`` or a local path.
    sha256, md5:
        Expected hex digest; at least one is required (sha256 preferred) unless ``tracked``.
    tracked:
        A source that follows upstream: stored as downloaded, with no checksum to verify
        (its sha256 is computed and reported in :class:`SourceInfo`).

    >>> ResourceDefinition("x/a.bin", "/tmp/a.bin", md5="d41d8cd98f00b204e9800998ecf8427e").md5
    'd41d8cd98f00b204e9800998ecf8427e'
    """

    identifier: str
    source: str
    sha256: str | None = None
    md5: str | None = None
    tracked: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "identifier", validate_identifier(self.identifier))
        source: Any = self.source
        if isinstance(source, os.PathLike):
            source = os.fspath(source)
        if not isinstance(source, str) or not source.strip():
            raise ConfigurationError(
                f"resource {self.identifier!r}: source must be a non-empty URL or path, "
                f"got {redact(str(source))!r}"
            )
        object.__setattr__(self, "source", source)
        sha256 = _check_hex("sha256", self.sha256, 64)
        md5 = _check_hex("md5", self.md5, 32)
        if self.tracked:
            if sha256 is not None or md5 is not None:
                raise ConfigurationError(
                    f"resource {self.identifier!r}: a tracked source has no checksum to "
                    "verify; give either tracked=True or sha256=/md5="
                )
        elif sha256 is None and md5 is None:
            raise ConfigurationError(
                f"resource {self.identifier!r} from {redact(source)!r} has no checksum: give "
                "sha256=<64 hex> (preferred) or md5=<32 hex>"
            )
        object.__setattr__(self, "sha256", sha256)
        object.__setattr__(self, "md5", md5)

    @property
    def checksum(self) -> tuple[str, str]:
        """The strongest checksum given, as ``(algorithm, hexdigest)`` (empty when tracked)."""
        if self.tracked:
            return ("sha256", "")
        if self.sha256 is not None:
            return ("sha256", self.sha256)
        return ("md5", str(self.md5))

    @property
    def scheme(self) -> str:
        """``"http"``, ``"https"``, ``"file"`` (also for plain paths), or another scheme."""
        return source_scheme(self.source)

    def __repr__(self) -> str:
        algo, digest = self.checksum
        pin = "tracked" if self.tracked else f"{algo}={digest[:12]}..."
        return f"ResourceDefinition({self.identifier!r}, {redact(self.source)!r}, {pin})"


@dataclass(frozen=True)
class SourceInfo:
    """What a source said about the object when it was retrieved (for later refresh checks).

    ``url`` never holds credentials; ``last_modified`` is the HTTP-date string as sent by the
    server (or derived from a file's mtime); ``sha256``/``md5`` are digests of the stored bytes.
    """

    url: str
    size: int
    etag: str | None
    last_modified: str | None
    sha256: str
    md5: str | None
    retrieved_at: datetime
    identifier: str | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (``retrieved_at`` as ISO 8601)."""
        data = asdict(self)
        data["retrieved_at"] = self.retrieved_at.isoformat()
        return data


@runtime_checkable
class Retriever(Protocol):
    """Anything that stores verified resources from definitions (HTTP, file, S3, a database).

    ``retrieve_with_info`` (what the refresh pipeline calls) stores each definition under its
    identifier, verified against its checksum, and returns what the source said of each
    (:class:`SourceInfo`: size, ETag, Last-Modified, digests), in order; ``retrieve`` is the
    same returning only the identifiers. Both raise from the ``DatastackError`` tree.
    """

    def retrieve_with_info(self, definitions: Iterable[ResourceDefinition]) -> list[SourceInfo]:
        ...

    def retrieve(self, definitions: Iterable[ResourceDefinition]) -> list[str]: ...


def source_scheme(source: str) -> str:
    """The lower-case URL scheme of ``source``; ``"file"`` for plain (incl. Windows) paths."""
    scheme = urlsplit(source).scheme.lower() if "://" in source or ":" in source else ""
    if scheme == "" or (len(scheme) == 1 and source[1:2] == ":"):  # C:\data\x.csv
        return "file"
    return scheme


def check_scheme(source: str) -> str:
    """Return the scheme of ``source`` or raise :class:`UnsupportedSchemeError` (no I/O)."""
    scheme = source_scheme(source)
    if scheme not in SUPPORTED_SCHEMES:
        raise UnsupportedSchemeError(
            f"unsupported URL scheme {scheme!r} in {redact(source)!r}: datastack retrieves "
            "only http://, https:// and file:// (or local paths); download the file yourself "
            "and use a file:// URL, or register your own Retriever"
        )
    return scheme


class _SchemeDispatcher:
    """Retriever over definitions of mixed schemes: delegates each to the matching retriever."""

    def __init__(self, retrievers: dict[str, Retriever]) -> None:
        self._retrievers = retrievers

    def retrieve(self, definitions: Iterable[ResourceDefinition]) -> list[str]:
        return [info.identifier or "" for info in self.retrieve_with_info(definitions)]

    def retrieve_with_info(self, definitions: Iterable[ResourceDefinition]) -> list[SourceInfo]:
        defs = list(definitions)
        for d in defs:
            check_scheme(d.source)
        out: list[SourceInfo] = []
        for d in defs:
            out.extend(self._retrievers[d.scheme].retrieve_with_info([d]))
        return out


#: URL scheme -> ``make_retriever(storage, options) -> Retriever`` of the module serving it.
RETRIEVERS: Registry[Callable[[StorageConnector, dict[str, Any]], Retriever]] = Registry(
    "URL scheme"
)
RETRIEVERS.register("http", "datastack.retrieval.http:make_retriever")
RETRIEVERS.register("https", "datastack.retrieval.http:make_retriever")
RETRIEVERS.register("file", "datastack.retrieval.file:make_retriever")


def retriever_for(
    url_or_definitions: str | Sequence[ResourceDefinition] | ResourceDefinition,
    storage: StorageConnector,
    **options: Any,
) -> Retriever:
    """The built-in retriever for a URL or for definitions (checked before any I/O).

    ``options`` go to the retriever of each scheme (:class:`~datastack.retrieval.http.
    HTTPRetriever`: timeouts, retries, deadline, progress...; file: deadline). Definitions of
    mixed schemes get a retriever that dispatches per definition.

    >>> from datastack.storage.base import StorageConnector
    >>> retriever_for("ftp://example.org/x.csv", storage=None)  # type: ignore[arg-type]
    Traceback (most recent call last):
    ...
    datastack.errors.UnsupportedSchemeError: unsupported URL scheme 'ftp' in ...
    """
    if isinstance(url_or_definitions, str):
        sources = [url_or_definitions]
    elif isinstance(url_or_definitions, ResourceDefinition):
        sources = [url_or_definitions.source]
    else:
        sources = [d.source for d in url_or_definitions]
    schemes = sorted({check_scheme(s) for s in sources}) or ["file"]
    retrievers = {scheme: RETRIEVERS.get(scheme)(storage, dict(options)) for scheme in schemes}
    if len(retrievers) == 1:
        return next(iter(retrievers.values()))
    return _SchemeDispatcher(retrievers)
