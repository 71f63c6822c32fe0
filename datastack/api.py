"""Top-level entry points: :func:`load` and :func:`refresh`."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from datastack._uri import default_storage_uri
from datastack.errors import ConfigurationError, FormatError
from datastack.identifiers import validate_dataset_name
from datastack.pipeline import RefreshResult, data_identifier
from datastack.pipeline import refresh as _refresh

if TYPE_CHECKING:  # pragma: no cover
    from datastack.iterators import DatasetIterator


def load(
    name: str,
    split: str = "train",
    *,
    version: int | None = None,
    storage: str | os.PathLike[str] | None = None,
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
        Storage URI; default ``$DATASTACK_STORAGE`` or ``./.datastack``.

    The returned iterator supports ``len``, indexing (samples are tuples ``(sample, target)``),
    slicing into views, stacking (``shuffle``, ``map``, ...) and pickling (DataLoader workers
    reopen their own streams). Nothing is read until the first access.

    >>> it = load("iris", split="train[:10%]")     # doctest: +SKIP
    >>> sample, target = it[0]                       # doctest: +SKIP
    """
    from datastack.catalog import open_catalog
    from datastack.iterators import HDF5DatasetIterator, select
    from datastack.storage import connect

    name = validate_dataset_name(name)
    if version is not None and (not isinstance(version, int) or version < 1):
        raise ConfigurationError(f"version must be a positive int, got {version!r}")
    uri = default_storage_uri(storage)
    catalog = open_catalog(uri)
    record = catalog.get(name, version) if version is not None else catalog.latest(name)
    identifier = data_identifier(record.name, record.version)
    if not any(r.get("identifier") == identifier for r in record.resources):
        raise FormatError(
            f"{name} v{record.version}: the catalog record lists no data file {identifier!r}; "
            "it was not published by this datastack version"
        )
    store = connect(uri)
    splits: dict[str, Any] = {
        split_name: HDF5DatasetIterator(store.get_resource(identifier), group=split_name)
        for split_name in record.splits
    }
    return select(splits, split)  # type: ignore[no-any-return]


def refresh(
    spec: str | os.PathLike[str],
    names: list[str] | None = None,
    *,
    storage: str | None = None,
    force: bool = False,
) -> list[RefreshResult]:
    """Refresh datasets of a spec file in this process (no Prefect). See ``datastack refresh``.

    >>> results = refresh("examples/datasets.yaml")   # doctest: +SKIP
    >>> [(r.name, r.status) for r in results]          # doctest: +SKIP
    [('iris', 'published'), ...]
    """
    return _refresh(spec, names, storage, force=force)
