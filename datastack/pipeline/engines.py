"""Refresh engines: who runs the refresh sequence of :mod:`datastack.pipeline.sequence`.

- ``local``: this process, one dataset after the other (no orchestrator; always available);
- ``prefect``: the Prefect flows of the ``flows`` package (retries, logs, artifacts,
  schedules, work pools, Dask). The library never imports it: ``flows`` registers it in the
  ``datastack.engines`` entry-point group (see ``pyproject.toml``) and it is imported only
  when that engine runs.

``auto`` (the CLI default) means Prefect when an engine named ``prefect`` is registered and
Prefect is installed, else local.

>>> "local" in ENGINES
True
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from datastack._registry import Registry
from datastack.errors import ConfigurationError, DatastackError, MissingDependencyError
from datastack.factory import factory_for
from datastack.pipeline.sequence import RefreshResult, refresh_dataset
from datastack.specs import load_selected
from datastack.store import Store


class Engine(Protocol):
    """Runs the refresh of some datasets of a spec file into a store."""

    def refresh(
        self,
        spec_path: Path,
        names: Sequence[str],
        store: Store,
        *,
        force: bool = False,
        **options: Any,
    ) -> list[RefreshResult]: ...


class LocalEngine:
    """The refresh sequence in this process, dataset after dataset."""

    name = "local"

    def refresh(
        self,
        spec_path: Path,
        names: Sequence[str],
        store: Store,
        *,
        force: bool = False,
        **options: Any,
    ) -> list[RefreshResult]:
        specs = load_selected(spec_path, names)
        return [refresh_dataset(spec, store, force=force, **options) for spec in specs]


#: Engine name -> engine object (``flows`` adds ``prefect`` through an entry point).
ENGINES: Registry[Engine] = Registry("refresh engine", entry_points="datastack.engines")
ENGINES.register("local", LocalEngine())


def resolve_engine(engine: str = "auto") -> str:
    """The engine ``auto`` stands for here, or ``engine`` itself after checking it exists."""
    if engine != "auto":
        if engine not in ENGINES:
            raise ConfigurationError(
                f"unknown refresh engine {engine!r}; known: auto, {', '.join(ENGINES.names())}"
                + ("" if engine != "prefect" else
                   " (the prefect engine needs the flows extra: pip install 'datastack[flows]')")
            )
        return engine
    if "prefect" in ENGINES and importlib.util.find_spec("prefect") is not None:
        return "prefect"
    return "local"


def run_refresh(
    spec_path: str | os.PathLike[str],
    names: Sequence[str] | None = None,
    storage: Store | str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
    engine: str = "auto",
    wait_s: float = 0.0,
    quiet: bool = False,
    **options: Any,
) -> list[RefreshResult]:
    """What ``datastack refresh`` runs: validate the spec, open the store, run the engine.

    The spec is validated (and the requested names checked) and the storage checked
    reachable (a few seconds at most) before any engine starts. ``wait_s`` waits for a lease
    another refresh holds; ``quiet`` asks the engine not to print its own run logs.
    """
    path = Path(spec_path).resolve()
    specs = load_selected(path, names)
    for spec in specs:  # a factory: or preprocessor: that cannot be loaded is a bad spec,
        try:  # before any engine starts
            factory_for(spec)
        except DatastackError:
            raise
        except Exception:  # noqa: S110 - a constructor that fails is that dataset's failure,
            pass  # recorded by its refresh
    selected = [spec.name for spec in specs]
    store = Store.open(storage)
    store.ping()
    chosen = resolve_engine(engine)
    try:
        runner = ENGINES.get(chosen)
    except MissingDependencyError as exc:
        raise MissingDependencyError(
            f"{exc}; or run without Prefect: --engine local"
        ) from None
    if chosen != "local":
        options["quiet"] = quiet
    return runner.refresh(path, selected, store, force=force, wait_s=wait_s, **options)


__all__ = ["ENGINES", "Engine", "LocalEngine", "resolve_engine", "run_refresh"]
