"""Deprecated: the original ``data_stack.exception``; use :mod:`datastack.errors`."""

from __future__ import annotations

from data_stack._deprecation import warn_deprecated_module
from data_stack._errors import (
    DatasetFileCorruptError,
    DatasetNotFoundError,
    DatasetOutOfBoundsError,
    MalformedIdentifierError,
    MaliciousFilePathError,
    ModelNotTrainedError,
    ResourceNotFoundError,
)

__all__ = [
    "DatasetFileCorruptError",
    "DatasetNotFoundError",
    "DatasetOutOfBoundsError",
    "MalformedIdentifierError",
    "MaliciousFilePathError",
    "ModelNotTrainedError",
    "ResourceNotFoundError",
]

warn_deprecated_module(
    __name__,
    "datastack.errors (every error derives from datastack.errors.DatastackError; "
    "DatasetFileCorruptError: ChecksumError, MaliciousFilePathError: InvalidIdentifierError)",
)
