"""Deprecated: the original ``data_stack.repository.repository``.

Use datastack.load(name, split=...) (published datasets in a catalog).
"""

from __future__ import annotations

from data_stack._deprecation import warn_deprecated_module
from data_stack._repository import (
    DatasetRepository,
)

__all__ = [
    "DatasetRepository",
]

warn_deprecated_module(
    __name__,
    "datastack.load(name, split=...) (published datasets in a catalog)",
)
