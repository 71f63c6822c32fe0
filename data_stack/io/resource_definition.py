"""Deprecated: the original ``data_stack.io.resource_definition``.

Use datastack.retrieval.ResourceDefinition (md5_sum=... is now md5=...; sha256=... preferred).
"""

from __future__ import annotations

from data_stack._deprecation import warn_deprecated_module
from data_stack._retrieval import (
    ResourceDefinition,
)

__all__ = [
    "ResourceDefinition",
]

warn_deprecated_module(
    __name__,
    "datastack.retrieval.ResourceDefinition (md5_sum=... is now md5=...; sha256=... "
    "preferred)",
)
