"""Top-level entry points: :func:`load` and :func:`refresh`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from datastack.errors import ConfigurationError
from datastack.identifiers import validate_dataset_name

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
    from datastack.factory import DatasetFactory
    from datastack.iterators import select
    from datastack.offline import resolve_version
    from datastack.splits import SplitExpression
    from datastack.store import Store

    name = validate_dataset_name(name)
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or not 1 <= version < 2**63
    ):
        raise ConfigurationError(f"version must be a positive int (64 bits), got {version!r:.40}")
    expression = SplitExpression.from_spec(split)  # a malformed split fails before any I/O
    store = Store.open(storage)
    read = resolve_version(store, name, version)  # offline: from the local cache
    reader = factory if factory is not None else DatasetFactory()
    return select(reader.iterators(read.record, store, read=read), expression)


def refresh(
    spec: str | os.PathLike[str],
    names: Sequence[str] | None = None,
    *,
    storage: Store | str | os.PathLike[str] | None = None,
    force: bool = False,
) -> list[RefreshResult]:
    """Refresh datasets of a spec file in this process (no Prefect). See ``datastack refresh``.

    >>> results = refresh("examples/datasets.yaml")   # doctest: +SKIP
    >>> [(r.name, r.status) for r in results]          # doctest: +SKIP
    [('iris', 'published'), ...]
    """
    from datastack.pipeline.sequence import refresh as run

    return run(spec, names, storage, force=force)
