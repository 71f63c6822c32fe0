"""The original ``data_stack.mnist.iterator`` (the package ``data_stack.mnist`` warns once)."""

from __future__ import annotations

from data_stack._mnist import MNISTIterator

__all__ = ["MNISTIterator"]
