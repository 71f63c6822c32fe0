"""The refresh pipeline: the sequence and its steps, the quality gates, the engines.

- :mod:`~datastack.pipeline.sequence`: the refresh sequence, once (lease -> check -> retrieve
  -> prepare -> validate -> publish), every status decision, :class:`RefreshResult`;
- :mod:`~datastack.pipeline.retrieve`: has anything changed upstream; bring the sources in;
- :mod:`~datastack.pipeline.prepare`: a spec's raw sources -> the canonical file (formats ->
  writer), the spec-driven preparation of :class:`~datastack.factory.SpecDatasetFactory`;
- :mod:`~datastack.pipeline.build`: prepare (in a child process), validate, publish or drop a
  version;
- :mod:`~datastack.pipeline.gates`: the quality gates a version passes before it is published;
- :mod:`~datastack.pipeline.engines`: who runs the sequence (``local``, or ``prefect``);
- ``_tail``, ``_parallel``, ``_part_tasks``, ``_pools``: an append prepared from its new
  rows; one dataset prepared in parts on local processes or a Dask cluster.

The names of :mod:`datastack.pipeline.sequence` are also reachable here, as before
(``from datastack.pipeline import refresh_dataset, RefreshResult``); they load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

#: The names ``datastack.pipeline`` had when it was one module, and where each lives now.
_MOVED = {
    "DEFAULT_LEASE_TTL": "sequence",
    "RefreshResult": "sequence",
    "StepRunner": "sequence",
    "acquire_lease": "sequence",
    "refresh_dataset": "sequence",
    "release_lease": "sequence",
    "run_here": "sequence",
    "SourcesCheck": "retrieve",
    "check_sources": "retrieve",
    "retrieve_sources": "retrieve",
    "PreparedVersion": "build",
    "default_producer": "build",
    "prepare_version": "build",
    "publish_version": "build",
    "validate_version": "build",
    "refresh": "datastack.api",  # refresh(spec, names, storage=..., force=...)
    "as_factory": "datastack.factory",
    "data_identifier": "datastack.canonical.layout",
    "raw_identifier": "datastack.canonical.layout",
    "DASK_ENV": "_parallel",  # one dataset's parts on a Dask scheduler (docs/scale.md)
    "WORKERS_ENV": "_parallel",
}


def __getattr__(name: str) -> Any:
    home = _MOVED.get(name)
    if home is None:
        raise AttributeError(f"module 'datastack.pipeline' has no attribute {name!r}")
    module = importlib.import_module(home if "." in home else f"{__name__}.{home}")
    return getattr(module, name)
