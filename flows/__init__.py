"""Prefect orchestration of datastack (the ``flows`` extra): refresh flows and their tasks.

The flows are thin: every step is a plain function of :mod:`datastack.pipeline.sequence`. Names are
imported lazily so that ``import flows`` does not import Prefect.

>>> from flows import run_refresh, refresh_all_flow            # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# The library logs through the ``datastack`` loggers; Prefect ships them to its API (run logs
# in the UI) only for loggers it is told about, and reads this setting once, at import.
_extra = os.environ.get("PREFECT_LOGGING_EXTRA_LOGGERS", "")
if "datastack" not in {n.strip() for n in _extra.split(",")}:
    os.environ["PREFECT_LOGGING_EXTRA_LOGGERS"] = ",".join(filter(None, [_extra, "datastack"]))

_EXPORTS = {
    "DatasetRefreshFailed",
    "is_transient",
    "refresh_all_flow",
    "refresh_dataset_flow",
    "resolve_storage",
    "run_refresh",
    "summary_markdown",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'flows' has no attribute {name!r}")
    module = "flows.tasks" if name == "is_transient" else "flows.refresh"
    return getattr(importlib.import_module(module), name)


__all__ = sorted(_EXPORTS)
