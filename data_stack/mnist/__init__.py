"""Deprecated: the original ``data_stack.mnist`` (``.factory.MNISTFactory``, ``.iterator``).

MNIST is a built-in dataset of datastack: ``datastack refresh mnist`` with the built-in spec,
then ``datastack.load("mnist", split="train")``. The submodules do not warn again.
"""

from __future__ import annotations

import importlib
from typing import Any

from data_stack._deprecation import warn_deprecated_module

__all__ = ["MNISTFactory", "MNISTIterator"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("data_stack._mnist"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


warn_deprecated_module(
    __name__,
    'datastack.load("mnist", split=...) after `datastack refresh mnist` with the built-in '
    "spec (datastack.builtin); MNIST IDX files: datastack.iterators.IDXDatasetIterator",
)
