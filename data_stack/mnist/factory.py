"""The original ``data_stack.mnist.factory`` (the package ``data_stack.mnist`` warns once)."""

from __future__ import annotations

from data_stack._mnist import MNISTFactory

__all__ = ["MNISTFactory"]
