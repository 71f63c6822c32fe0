"""Deprecated: the original ``data_stack.io.retriever``; use datastack.retrieval."""

from __future__ import annotations

from data_stack._deprecation import warn_deprecated_module
from data_stack._retrieval import (
    FileRetrieverImpl,
    HTTPRetrieverImpl,
    Retriever,
    RetrieverFactory,
    RetrieverImplIF,
)

__all__ = [
    "FileRetrieverImpl",
    "HTTPRetrieverImpl",
    "Retriever",
    "RetrieverFactory",
    "RetrieverImplIF",
]

warn_deprecated_module(
    __name__,
    "datastack.retrieval (HTTPRetriever, FileRetriever, retriever_for)",
)
