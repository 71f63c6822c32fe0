"""Compatibility layer: the import paths of the original ``datastack`` 0.0.13 (``data_stack``).

Code written for 0.0.13 keeps running on the new :mod:`datastack`: every public module of the
original (``data_stack.dataset.iterator``, ``data_stack.io.storage_connectors``, ...) exists
here and maps its names onto datastack's classes. Importing one of them emits a single
``DeprecationWarning`` that names the new import; ``docs/migrating.md`` gives the mapping.

``import data_stack`` itself is light and does not warn (the original package was empty).
"""

from __future__ import annotations

__version__ = "0.0.13.post1"
"""The original API level this package reproduces."""

__all__ = ["__version__"]
