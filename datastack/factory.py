"""``DatasetFactory``: the object that defines a dataset and turns it into iterators.

A factory answers three questions, one per stage of a dataset's life:

1. **retrieve** -- which sources make the dataset (:attr:`DatasetFactory.spec`: URLs and
   checksums, splits, schedule...);
2. **prepare** -- how the raw sources become the canonical HDF5 file of a version
   (:meth:`DatasetFactory.prepare`);
3. **iterators** -- how a published version becomes one iterator per split
   (:meth:`DatasetFactory.iterators`; ``datastack.load`` calls it).

Two kinds ship: :class:`SpecDatasetFactory`, the spec-driven path (a YAML spec's formats and
``preprocessor:`` hook), and the base class itself, which a user subclasses to define a dataset
in Python (``docs/factories.md`` has a worked example). A spec names a subclass with
``factory: mypkg.module:MyFactory``: it is built with that spec and prepares the data in code.

>>> import tempfile, numpy as np
>>> from datastack.preprocessing import write_arrays
>>> from datastack.specs import SourceSpec
>>> class Squares(DatasetFactory):
...     name = "squares"
...     sources = (SourceSpec("file:///dev/null", md5="d41d8cd98f00b204e9800998ecf8427e",
...                           filename="empty"),)
...     def prepare(self, sources, out_path):
...         x = np.arange(10, dtype=np.float32)[:, None]
...         return write_arrays(out_path, self.name, {"train": (x, (x ** 2).ravel())})
>>> storage = tempfile.mkdtemp()
>>> Squares().refresh(storage=storage).status
'published'
>>> Squares().load("train", storage=storage)[3][1]
np.float32(9.0)
"""

from __future__ import annotations

import os
import pkgutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from datastack.canonical.layout import DEFAULT_COMPRESSION, data_identifier
from datastack.errors import ConfigurationError, SpecError
from datastack.identifiers import validate_dataset_name
from datastack.specs.model import DatasetSpec, SourceSpec

if TYPE_CHECKING:  # pragma: no cover
    from datastack._codes import KnownCodes
    from datastack.canonical.writer import PreparedData
    from datastack.catalog.record import VersionRecord
    from datastack.iterators.base import DatasetIterator
    from datastack.offline import ReadDecision
    from datastack.pipeline.sequence import NotBuilt, RefreshResult
    from datastack.resources import StreamedResource
    from datastack.store import Store

#: The raw sources handed to :meth:`DatasetFactory.prepare`: each spec source with a lazy
#: stream over its stored (checksum-verified) bytes.
Sources = Sequence[tuple[SourceSpec, "StreamedResource"]]


class DatasetFactory:
    """Defines a dataset (sources, preparation) and reads its published versions.

    Subclass it to define a dataset in Python: set :attr:`name` and :attr:`sources` (and
    optionally :attr:`description`, :attr:`splits`, :attr:`seed`, :attr:`schedule`), and
    implement :meth:`prepare`. ``refresh()`` then runs the same pipeline as a YAML spec
    (lease, checksum-verified retrieval, atomic publish, no new version for unchanged input);
    ``load()`` reads it back. Override :meth:`iterators` to read a layout of your own.

    The base class with no subclass reads any published dataset (``datastack.load`` uses it).
    """

    #: Dataset name (``[a-z0-9][a-z0-9._-]*``).
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: The raw sources (URL + sha256/md5 each); retrieved and verified before :meth:`prepare`.
    sources: ClassVar[Sequence[SourceSpec]] = ()
    #: Split ratios applied by :meth:`prepare` implementations that want them (optional).
    splits: ClassVar[Mapping[str, float] | None] = None
    seed: ClassVar[int] = 0
    #: Cron schedule for the refresh deployment (optional).
    schedule: ClassVar[str | None] = None
    compression: ClassVar[str] = DEFAULT_COMPRESSION

    def __init__(self, spec: DatasetSpec | None = None) -> None:
        self._spec = spec

    # -- 1. retrieve -------------------------------------------------------------------------
    @property
    def spec(self) -> DatasetSpec:
        """The dataset's definition: from a YAML spec, or built from the class attributes."""
        if self._spec is None:
            cls = type(self)
            if not cls.name or not cls.sources:
                raise ConfigurationError(
                    f"{cls.__qualname__} defines no dataset: set the class attributes `name` "
                    "and `sources` (or build it from a spec)"
                )
            self._spec = DatasetSpec(
                name=cls.name,
                sources=tuple(cls.sources),
                description=cls.description,
                splits=dict(cls.splits) if cls.splits else None,
                seed=cls.seed,
                schedule=cls.schedule,
                factory=f"{cls.__module__}:{cls.__qualname__}",
                origin=f"<{cls.__module__}.{cls.__qualname__}>",
                compression=cls.compression,
            )
        return self._spec

    @property
    def dataset_name(self) -> str:
        return self.spec.name

    # -- 2. prepare --------------------------------------------------------------------------
    def prepare(self, sources: Sources, out_path: Path) -> PreparedData:
        """Write the canonical HDF5 file of a new version at ``out_path`` from the raw sources.

        ``sources`` pairs each of :attr:`spec` ``.sources`` with a stream of its verified bytes.
        The easy way is :func:`datastack.preprocessing.write_arrays`; return its
        :class:`~datastack.preprocessing.PreparedData`. Runs in a child process (a crash of
        the HDF5 library cannot take the caller down).
        """
        raise NotImplementedError(
            f"{type(self).__qualname__} must implement prepare(sources, out_path) to publish "
            "a dataset (it only reads published ones otherwise)"
        )

    def prepare_continuing(
        self, sources: Sources, out_path: Path, known: KnownCodes
    ) -> PreparedData:
        """:meth:`prepare` for a dataset that has a published version: ``known`` holds that
        version's category labels by column (code ``i`` of a column is ``known[column][i]``).
        The refresh calls this one; spec-driven datasets keep those codes and give new labels
        the next ones (``docs/living.md``). By default it calls :meth:`prepare`: a factory of
        your own that makes categories keeps its codes by overriding this method."""
        return self.prepare(sources, out_path)

    # -- 3. iterators ------------------------------------------------------------------------
    def iterators(
        self, record: VersionRecord, store: Store, *, read: ReadDecision | None = None
    ) -> dict[str, DatasetIterator]:
        """One lazy iterator per split of a published version (nothing is read yet).

        ``read`` says how (``datastack.load`` resolved it: online or offline, fill the local
        cache or not); default: online, filling the cache."""
        from datastack.canonical.published import open_version

        return open_version(record, store, read=read)

    # -- conveniences ------------------------------------------------------------------------
    def refresh(
        self, *, storage: Store | str | os.PathLike[str] | None = None, force: bool = False
    ) -> RefreshResult:
        """Retrieve, prepare and publish this dataset in this process (``datastack refresh``)."""
        from datastack.pipeline.engines import run_refresh
        from datastack.store import Store

        [result] = run_refresh([self], Store.open(storage), force=force)
        return result

    def load(
        self,
        split: str = "train",
        *,
        version: int | None = None,
        storage: Store | str | os.PathLike[str] | None = None,
    ) -> DatasetIterator:
        """The iterator of one split (or split expression) of this dataset's published data."""
        return read_split(self, self.spec.name, split, version=version, storage=storage)

    def __repr__(self) -> str:
        name = self._spec.name if self._spec is not None else type(self).name
        return f"<{type(self).__qualname__} {name or '(any dataset)'}>"


class SpecDatasetFactory(DatasetFactory):
    """The spec-driven factory: a YAML spec's format (or its ``preprocessor:``) prepares it."""

    #: Its preparation of a line-based format can read only the rows appended upstream
    #: (``docs/living.md``); a factory of its own prepares every row unless it says so.
    tail_appends: ClassVar[bool] = True

    def __init__(self, spec: DatasetSpec) -> None:
        super().__init__(spec)
        if spec.preprocessor is not None:  # a bad import path is a spec error, before any I/O
            from datastack.pipeline.prepare import load_preprocessor

            load_preprocessor(spec.preprocessor, spec.name)

    def prepare(self, sources: Sources, out_path: Path) -> PreparedData:
        from datastack.pipeline.prepare import preprocess

        return preprocess(self.spec, sources, out_path)

    def prepare_continuing(
        self, sources: Sources, out_path: Path, known: KnownCodes
    ) -> PreparedData:
        from datastack.pipeline.prepare import preprocess

        return preprocess(self.spec, sources, out_path, known=known)


def read_split(
    reader: DatasetFactory,
    name: str,
    split: str = "train",
    *,
    version: int | None = None,
    storage: Store | str | os.PathLike[str] | None = None,
) -> DatasetIterator:
    """What ``datastack.load`` and :meth:`DatasetFactory.load` do: the split (expression) of
    the published version of ``name`` (the latest, or ``version``), read by ``reader``."""
    from datastack.iterators.selection import select
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
    return select(reader.iterators(read.record, store, read=read), expression)


def load_factory_class(reference: str, dataset: str = "?") -> type[DatasetFactory]:
    """Import ``"module.path:Class"`` and check it is a :class:`DatasetFactory` subclass."""
    try:
        obj: Any = pkgutil.resolve_name(reference)
    except (ImportError, AttributeError, ValueError) as exc:
        raise SpecError(
            f"dataset {dataset!r}: key 'factory': cannot import {reference!r} ({exc}); is the "
            "module installed and on sys.path?"
        ) from None
    if not (isinstance(obj, type) and issubclass(obj, DatasetFactory)):
        raise SpecError(
            f"dataset {dataset!r}: key 'factory': {reference!r} is "
            f"{type(obj).__name__} {obj!r:.60}, not a datastack.DatasetFactory subclass"
        )
    return obj


def as_factory(dataset: DatasetFactory | DatasetSpec) -> DatasetFactory:
    """A factory for ``dataset`` (a spec gets the factory its ``factory:`` key names)."""
    return dataset if isinstance(dataset, DatasetFactory) else factory_for(dataset)


def factory_for(spec: DatasetSpec) -> DatasetFactory:
    """The factory of a spec: the class its ``factory:`` names (built with the spec), else
    the spec-driven :class:`SpecDatasetFactory`."""
    if spec.factory is None:
        return SpecDatasetFactory(spec)
    cls = load_factory_class(spec.factory, spec.name)
    return cls(spec)


def build_factories(
    specs: Sequence[DatasetSpec], *, strict: bool = False
) -> list[DatasetFactory | NotBuilt]:
    """Each spec's factory, built once at the edge of a refresh. A spec whose factory cannot
    be built becomes :class:`~datastack.pipeline.sequence.NotBuilt`: that dataset's failure,
    recorded by :func:`~datastack.pipeline.engines.run_refresh`; the others still run. With
    ``strict``, a ``factory:`` or ``preprocessor:`` that cannot be loaded (a
    :class:`~datastack.errors.DatastackError`) raises: a bad spec, before anything runs."""
    from datastack.errors import DatastackError
    from datastack.pipeline.sequence import NotBuilt

    built: list[DatasetFactory | NotBuilt] = []
    for spec in specs:
        try:
            built.append(factory_for(spec))
        except DatastackError as exc:
            if strict:
                raise
            built.append(NotBuilt(spec, exc))
        except Exception as exc:  # a constructor that fails is that dataset's failure
            built.append(NotBuilt(spec, exc))
    return built


__all__ = [
    "DatasetFactory",
    "Sources",
    "SpecDatasetFactory",
    "as_factory",
    "build_factories",
    "data_identifier",
    "factory_for",
    "load_factory_class",
    "read_split",
]
