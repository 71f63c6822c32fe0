"""Turn each dataset ``schedule`` (cron) of a spec into a scheduled Prefect deployment.

A dataset with a schedule becomes ``refresh-<name>``: the ``refresh_dataset_flow`` with
parameters ``{name, spec_path, storage_env[, storage_secret]}`` and a UTC cron schedule. The
storage URI is never a parameter: workers read it from ``storage_env`` (an environment variable
name) or ``storage_secret`` (a Prefect Secret block name).

>>> from deployments.build import build_deployments           # doctest: +SKIP
>>> [d.name for d in build_deployments("datasets.yaml")]      # doctest: +SKIP
['refresh-iris', 'refresh-mnist']
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from datastack._uri import STORAGE_ENV

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = "flows/refresh.py:refresh_dataset_flow"
TAGS = ("datastack", "refresh")


@contextmanager
def _in_project_root() -> Iterator[None]:
    """Entrypoints are computed relative to the working directory: anchor them at the root."""
    old = os.getcwd()
    os.chdir(PROJECT_ROOT)
    try:
        yield
    finally:
        os.chdir(old)


def spec_parameter(spec_path: str | os.PathLike[str]) -> str:
    """The ``spec_path`` parameter: relative to the project root when inside it, else absolute.

    Flow runs start in the project root (serve chdirs there; deploy's pull step sets it).
    """
    path = Path(spec_path).resolve()
    try:
        return path.relative_to(PROJECT_ROOT).as_posix()
    except ValueError:
        return str(path)


def deployment_parameters(
    name: str, spec_path: str | os.PathLike[str], storage_env: str, storage_secret: str | None
) -> dict[str, Any]:
    """Parameters of ``refresh-<name>``: names only, never the storage URI."""
    parameters: dict[str, Any] = {
        "name": name,
        "spec_path": spec_parameter(spec_path),
        "storage_env": storage_env,
    }
    if storage_secret:
        parameters["storage_secret"] = storage_secret
    return parameters


def scheduled_specs(spec_path: str | os.PathLike[str]) -> list[Any]:
    """The datasets of a spec that have a ``schedule``, in spec order."""
    from datastack.specs import load_spec

    return [spec for spec in load_spec(Path(spec_path)).values() if spec.schedule]


def build_deployments(
    spec_path: str | os.PathLike[str],
    storage_env: str = STORAGE_ENV,
    work_pool: str | None = None,
    *,
    storage_secret: str | None = None,
) -> list[Any]:
    """One ``RunnerDeployment`` per scheduled dataset of ``spec_path`` (no API call).

    Without ``work_pool`` the deployments are for :func:`prefect.serve`; with one they run on
    that work pool's workers, which load the flow from the project folder
    (``flow.from_source(PROJECT_ROOT, ENTRYPOINT)``). Apply them with ``d.apply()`` or
    ``prefect.deploy(*ds, build=False, push=False)``.
    """
    from prefect.schedules import Cron

    from flows.refresh import refresh_dataset_flow

    deployments: list[Any] = []
    with _in_project_root():
        flow: Any = refresh_dataset_flow
        if work_pool:
            flow = refresh_dataset_flow.from_source(source=str(PROJECT_ROOT), entrypoint=ENTRYPOINT)
        for spec in scheduled_specs(spec_path):
            deployments.append(
                flow.to_deployment(
                    name=f"refresh-{spec.name}",
                    parameters=deployment_parameters(
                        spec.name, spec_path, storage_env, storage_secret
                    ),
                    schedules=[Cron(spec.schedule, timezone="UTC")],
                    description=f"Refresh dataset {spec.name!r} on cron {spec.schedule!r} (UTC)",
                    tags=list(TAGS),
                    work_pool_name=work_pool,
                )
            )
    return deployments


__all__ = [
    "ENTRYPOINT",
    "PROJECT_ROOT",
    "TAGS",
    "build_deployments",
    "deployment_parameters",
    "scheduled_specs",
]
