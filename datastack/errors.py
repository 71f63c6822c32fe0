"""The datastack exception tree.

Every error raised on purpose by datastack derives from :class:`DatastackError` and also from
the matching built-in (``FileNotFoundError``, ``ValueError``, ``ConnectionError``...), so callers
can catch either. Messages say what went wrong, expected vs actual, and what to do next.

Example
-------
>>> from datastack.errors import ChecksumError, DatastackError
>>> try:
...     raise ChecksumError("mnist: checksum mismatch")
... except ValueError as exc:
...     isinstance(exc, DatastackError)
True
"""

from __future__ import annotations

import pickle


class DatastackError(Exception):
    """Root of every error datastack raises on purpose."""

    def __init__(self, message: str = "", *args: object) -> None:
        super().__init__(message, *args)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        # Keep errors picklable (DataLoader workers, Prefect, multiprocessing).
        return (type(self), (self.message,))


# -- lookups -----------------------------------------------------------------------------------
class NotFoundError(DatastackError, FileNotFoundError):
    """Something asked for does not exist."""


class ResourceNotFoundError(NotFoundError):
    """No resource is stored under this identifier."""


class DatasetNotFoundError(NotFoundError):
    """The catalog has no (published) dataset of this name."""


class VersionNotFoundError(NotFoundError):
    """The dataset exists but not in the requested version."""


class SplitNotFoundError(NotFoundError):
    """The dataset version has no split of this name."""


class NotCachedError(NotFoundError):
    """Offline (or the storage unreachable) and the version asked for is not in the local
    cache: ``datastack pull`` it while online."""


# -- bad input ---------------------------------------------------------------------------------
class InvalidIdentifierError(DatastackError, ValueError):
    """An identifier or dataset name failed validation (traversal, absolute, NUL, length...)."""


class SpecError(DatastackError, ValueError):
    """A dataset spec (YAML) is invalid: names the dataset, the key and the reason."""


class ConfigurationError(DatastackError, ValueError):
    """A setting (storage URI, option, argument) is invalid."""


class MissingDependencyError(DatastackError, ImportError):
    """An optional dependency is needed for this feature: the message names the extra."""


class UnpicklableError(ConfigurationError, pickle.PicklingError):
    """A stack holds something that cannot be sent to another process (a lambda, a local
    function): needed by the spawn and forkserver start methods."""


# -- data --------------------------------------------------------------------------------------
class ChecksumError(DatastackError, ValueError):
    """Content does not match its expected checksum. Nothing was stored."""


class FormatError(DatastackError, ValueError):
    """A file is malformed for its declared format (corrupt, truncated, ragged, hostile)."""


class UnsafeArchiveError(FormatError):
    """An archive member would escape the extraction folder, is a link/device, or is a bomb."""


class GateError(DatastackError, ValueError):
    """New content failed a validation gate (format, schema, ``expect:``); not published."""


# -- I/O ---------------------------------------------------------------------------------------
class RetrievalError(DatastackError, OSError):
    """A source could not be downloaded or read (after the allowed retries)."""


class UnsupportedSchemeError(RetrievalError, ValueError):
    """A URL scheme datastack refuses (only http, https and file are allowed)."""


class StorageError(DatastackError, OSError):
    """A storage backend failed to read or write."""


class StorageUnavailableError(StorageError, ConnectionError):
    """The storage backend (e.g. MongoDB) could not be reached within the time limit."""


# -- catalog / coordination -------------------------------------------------------------------
class CatalogError(DatastackError, RuntimeError):
    """The catalog is inconsistent or an operation on it failed."""


class LockHeldError(CatalogError):
    """Another process holds the refresh lease of this dataset."""


class PublishError(CatalogError):
    """A version could not be published; the previous version is unchanged."""


__all__ = [
    "CatalogError",
    "ChecksumError",
    "ConfigurationError",
    "DatasetNotFoundError",
    "DatastackError",
    "FormatError",
    "GateError",
    "InvalidIdentifierError",
    "LockHeldError",
    "MissingDependencyError",
    "NotCachedError",
    "NotFoundError",
    "PublishError",
    "ResourceNotFoundError",
    "RetrievalError",
    "SpecError",
    "SplitNotFoundError",
    "StorageError",
    "StorageUnavailableError",
    "UnpicklableError",
    "UnsafeArchiveError",
    "UnsupportedSchemeError",
    "VersionNotFoundError",
]
