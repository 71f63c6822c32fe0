"""The original exceptions as members of the datastack error tree.

``ResourceNotFoundError`` and ``DatasetNotFoundError`` *are* datastack's classes (same names,
same meaning), so ``except`` clauses written for 0.0.13 also catch what datastack raises. The
other original names are subclasses of the closest datastack error; the compatibility adapters
raise them where the original did.
"""

from __future__ import annotations

from datastack.errors import (
    ChecksumError,
    DatasetNotFoundError,
    DatastackError,
    InvalidIdentifierError,
    ResourceNotFoundError,
)


class DatasetOutOfBoundsError(DatastackError, IndexError):
    """Exception raised when an index >= len(Dataset) is used."""


class ModelNotTrainedError(DatastackError, RuntimeError):
    """Exception raised when model state is requested that is training dependent."""


class DatasetFileCorruptError(ChecksumError):
    """Thrown when integrity checks indicate that a given file is corrupt (checksum mismatch)."""


class MaliciousFilePathError(InvalidIdentifierError):
    """Thrown when a file path is possibly malicious, e.g. due to directory hopping."""


class MalformedIdentifierError(InvalidIdentifierError):
    """Thrown when an identifier string is malformed."""


__all__ = [
    "DatasetFileCorruptError",
    "DatasetNotFoundError",
    "DatasetOutOfBoundsError",
    "MalformedIdentifierError",
    "MaliciousFilePathError",
    "ModelNotTrainedError",
    "ResourceNotFoundError",
]
