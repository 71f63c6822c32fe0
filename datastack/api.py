"""Top-level entry points: :func:`load` and :func:`refresh`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from datastack.factory import DatasetFactory
    from datastack.iterators import DatasetIterator
    from datastack.pipeline.sequence import RefreshResult
    from datastack.store import Store


def load(
    name: str,
    split: str = "train",
    *,
    version: int | None = None,
    storage: Store | str | os.PathLike[str] | None = None,
    factory: DatasetFactory | None = None,
) -> DatasetIterator:
    """Return a lazy iterator over one split of a published dataset.

    Parameters
    ----------
    name:
        Dataset name as published in the catalog (``datastack ls``).
    split:
        A split name or a split expression: ``"train"``, ``"train[:10%]"``,
        ``"train[10%:20%]"``, ``"train[:100]"``, ``"train+test"``.
    version:
        Pin a version (an int from ``datastack show NAME``); default: latest published.
    storage:
        Storage URI (or a :class:`~datastack.store.Store`); default ``$DATASTACK_STORAGE`` or
        ``./.datastack``.
    factory:
        The :class:`~datastack.factory.DatasetFactory` that reads the published version into
        iterators; default: the canonical HDF5 layout. (The catalog never makes a reader
        import code: a dataset with a layout of its own is read by passing its factory.)

    The returned iterator supports ``len``, indexing (samples are tuples ``(sample, target)``),
    slicing into views, stacking (``shuffle``, ``map``, ...) and pickling (DataLoader workers
    reopen their own streams). Nothing is read until the first access.

    >>> it = load("iris", split="train[:10%]")     # doctest: +SKIP
    >>> sample, target = it[0]                       # doctest: +SKIP
    """
    from datastack.factory import DatasetFactory, read_split

    reader = factory if factory is not None else DatasetFactory()
    return read_split(reader, name, split, version=version, storage=storage)


def refresh(
    spec: str | os.PathLike[str],
    names: Sequence[str] | None = None,
    *,
    storage: Store | str | os.PathLike[str] | None = None,
    force: bool = False,
    engine: str = "local",
    **options: Any,
) -> list[RefreshResult]:
    """Refresh datasets of a spec file; in this process unless ``engine`` says otherwise.

    The spec is read once; each dataset becomes its factory (one whose ``factory:`` cannot be
    imported is a ``failed`` result, the others still run) and all of them go through
    :func:`datastack.pipeline.engines.run_refresh`. ``options`` go to it (``wait_s``,
    ``quiet``) and on to the engine. See ``datastack refresh``.

    >>> results = refresh("examples/datasets.yaml")   # doctest: +SKIP
    >>> [(r.name, r.status) for r in results]          # doctest: +SKIP
    [('iris', 'published'), ...]
    """
    from datastack.factory import build_factories
    from datastack.pipeline.engines import run_refresh
    from datastack.specs import load_selected
    from datastack.store import Store

    path = Path(spec).resolve()
    datasets = build_factories(load_selected(path, names))  # a failed build fails that dataset
    return run_refresh(
        datasets, Store.open(storage), spec_path=path, engine=engine, force=force, **options
    )
