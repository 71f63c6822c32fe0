"""The one deprecation warning each public ``data_stack.*`` module emits when imported."""

from __future__ import annotations

import os
import sys
import warnings

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _skipped_by_warnings(filename: str) -> bool:
    """Frames ``warnings.warn`` itself skips when counting ``stacklevel`` (import bootstrap)."""
    return "importlib" in filename and "_bootstrap" in filename


def _outside(filename: str) -> bool:
    """Whether a frame's file is user code (not the import system, not this package)."""
    if _skipped_by_warnings(filename) or "importlib" in filename.split(os.sep)[-2:]:
        return False
    return not os.path.abspath(filename).startswith(_PACKAGE_DIR + os.sep)


def warn_deprecated_module(module: str, replacement: str) -> None:
    """Warn that ``module`` is deprecated, naming ``replacement``, attributed to the importer.

    The warning points at the first frame outside the import machinery and ``data_stack``, so
    Python's default filters show it when ``__main__`` imports a deprecated module.
    """
    level = 2  # the module body that called us
    frame = sys._getframe(1)
    while frame.f_back is not None and not _outside(frame.f_code.co_filename):
        frame = frame.f_back
        if not _skipped_by_warnings(frame.f_code.co_filename):
            level += 1
    warnings.warn(
        f"{module} is deprecated; use {replacement}. See docs/migrating.md of datastack.",
        DeprecationWarning,
        stacklevel=level,
    )
