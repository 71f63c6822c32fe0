"""Deprecated: the original ``data_stack.io.resources``; use datastack.resources."""

from __future__ import annotations

from data_stack._deprecation import warn_deprecated_module
from data_stack._resources import (
    ResourceFactory,
    StreamedResource,
    StreamedTextResource,
)

__all__ = [
    "ResourceFactory",
    "StreamedResource",
    "StreamedTextResource",
]

warn_deprecated_module(
    __name__,
    "datastack.resources (StreamedResource, StreamedTextResource)",
)
