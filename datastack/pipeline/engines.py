"""The one way a refresh runs, and who runs it: :func:`run_refresh` and the engines.

:func:`run_refresh` takes built factories and a :class:`~datastack.store.Store`: it checks the
storage is reachable, picks the engine and hands it the datasets. ``datastack.refresh``,
``DatasetFactory.refresh``, ``datastack refresh`` and the Prefect flows' Python entry all come
through it (each converts its input into factories once, at its edge). Engines:

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
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from datastack._registry import Registry
from datastack._uri import redact
from datastack.errors import ConfigurationError, DatastackError, MissingDependencyError
from datastack.pipeline.sequence import NotBuilt, RefreshResult, fail_not_built, refresh_dataset

if TYPE_CHECKING:  # pragma: no cover
    from datastack.factory import DatasetFactory
    from datastack.store import Store


class Engine(Protocol):
    """Runs the refresh of some datasets into a store.

    ``spec_path`` names the spec file the factories were built from (``None`` for a dataset
    defined in Python): an engine that runs elsewhere (Prefect workers) reads it there.
    """

    def refresh(
        self,
        factories: Sequence[DatasetFactory],
        store: Store,
        *,
        spec_path: Path | None = None,
        force: bool = False,
        **options: Any,
    ) -> list[RefreshResult]: ...


class LocalEngine:
    """The refresh sequence in this process, dataset after dataset."""

    name = "local"

    def refresh(
        self,
        factories: Sequence[DatasetFactory],
        store: Store,
        *,
        spec_path: Path | None = None,
        force: bool = False,
        **options: Any,
    ) -> list[RefreshResult]:
        return [refresh_dataset(factory, store, force=force, **options) for factory in factories]


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
    datasets: Sequence[DatasetFactory | NotBuilt],
    store: Store,
    *,
    spec_path: Path | None = None,
    engine: str = "local",
    force: bool = False,
    wait_s: float = 0.0,
    quiet: bool = False,
    **options: Any,
) -> list[RefreshResult]:
    """Refresh ``datasets`` into ``store`` with ``engine``: one :class:`RefreshResult` each, in
    their order. A dataset whose factory could not be built (:class:`NotBuilt`) is not run:
    its failure is recorded in its status and returned in its place.

    The storage is checked reachable (a few seconds at most) before any engine starts: when it
    is not, every dataset is ``failed`` with the reason (nothing raises for a dataset-level
    failure; a command that wants to stop at once pings first). ``wait_s`` waits for a lease
    another refresh holds; ``quiet`` asks the engine not to print its own run logs; ``options``
    go to the engine (``refresh_dataset``'s for ``local``).
    """
    chosen = resolve_engine(engine)
    try:
        store.ping()
    except DatastackError as exc:
        reason = redact(f"{type(exc).__name__}: {exc}")
        return [RefreshResult(d.spec.name, "failed", None, reason) for d in datasets]
    factories = [d for d in datasets if not isinstance(d, NotBuilt)]
    done = iter(_run_engine(
        chosen, factories, store, spec_path=spec_path, force=force, wait_s=wait_s, quiet=quiet,
        **options,
    ) if factories else [])
    producer = options.get("producer")
    return [
        fail_not_built(d, store, producer) if isinstance(d, NotBuilt) else next(done)
        for d in datasets
    ]


def _run_engine(
    chosen: str,
    factories: Sequence[DatasetFactory],
    store: Store,
    *,
    spec_path: Path | None,
    force: bool,
    wait_s: float,
    quiet: bool,
    **options: Any,
) -> list[RefreshResult]:
    try:
        runner = ENGINES.get(chosen)
    except MissingDependencyError as exc:
        raise MissingDependencyError(
            f"{exc}; or run without Prefect: --engine local"
        ) from None
    if chosen != "local":
        options["quiet"] = quiet
    return runner.refresh(
        factories, store, spec_path=spec_path, force=force, wait_s=wait_s, **options
    )


__all__ = ["ENGINES", "Engine", "LocalEngine", "resolve_engine", "run_refresh"]
