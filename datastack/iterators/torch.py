"""PyTorch adapter: any iterator as a map-style ``torch.utils.data.Dataset``.

This is the only datastack module that imports torch. The dataset holds the iterator, which
holds only recipes for its streams (resource, URI, file id), so it pickles to spawned workers;
forked workers notice the new process id and open their own streams, h5py files and MongoDB
clients on first access (``datastack._mongo.get_client`` caches clients per process).
:func:`worker_init_fn` makes that explicit by dropping anything inherited.

``__getitems__`` (used by ``DataLoader`` since torch 2.1) reads a whole batch with one
``get_batch`` call, so HDF5 batches are sorted, coalesced and prefetched in one round trip.

Fields of every kind (:mod:`datastack.fields`): numeric and image fields become tensors,
strings and bytes stay as they are. ``TorchDataset.collate`` (pass it as ``collate_fn``)
stacks same-shape tensors and collates ragged ones (images of different sizes too) as a list,
or with ``ragged="pad"`` as ``(padded tensor, bool mask)``; strings become a list.

>>> from torch.utils.data import DataLoader                          # doctest: +SKIP
>>> loader = DataLoader(as_torch_dataset(it), batch_size=64, num_workers=2,
...                     worker_init_fn=worker_init_fn)               # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import Dataset

from datastack.errors import MissingDependencyError
from datastack.iterators._ipc import Unpacking, pack
from datastack.iterators.base import DatasetIterator, Sample
from datastack.iterators.sampler import DatasetSampler as DatasetSampler  # re-export
from datastack.iterators.sampler import ReadPlan, batch_position

RAGGED_MODES = ("list", "pad")
#: numpy scalars a batch hands to ``collate`` as Python scalars: default_collate makes them
#: one tensor of the same dtype (int64, float64, bool), much cheaper than a 0-d tensor each.
_COLLATED_SCALARS = (np.int64, np.float64, np.bool_)


def _tensor(array: NDArray[Any]) -> torch.Tensor:
    """A tensor over ``array``'s memory. A read-only array (a decoded image: Pillow hands its
    pixels over as immutable bytes) is copied once instead: torch cannot keep it read-only
    and warns "The given NumPy array is not writable" at every such conversion."""
    if not array.flags.writeable:
        return torch.from_numpy(np.array(array, order="C"))
    return torch.from_numpy(np.ascontiguousarray(array))


def _convert(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biufc":
            return _tensor(value)
        return value
    if isinstance(value, np.generic) and value.dtype.kind in "biufc":
        return torch.from_numpy(np.asarray(value))  # a 0-d tensor of the value's dtype
    return value


def _convert_scalar(value: Any) -> Any:
    """:func:`_convert`, with int64/float64/bool scalars as Python scalars (collated once)."""
    return value.item() if isinstance(value, _COLLATED_SCALARS) else _convert(value)


#: Types :func:`_convert_scalar` returns unchanged.
_KEPT = (torch.Tensor, str, bytes, int, float, bool, type(None))


def _samples_column(column: tuple[Any, ...]) -> Sequence[Any]:
    """One field of mapped samples converted as :func:`_convert_scalar` does value by value,
    in one step when every value has the same type (a mapped stack's usual case)."""
    kind = type(column[0])
    if all(type(v) is kind for v in column):
        if kind in _COLLATED_SCALARS:
            return np.array(column).tolist()  # type: ignore[no-any-return]
        if kind in _KEPT:
            return column
    return [_convert_scalar(v) for v in column]


def _column_values(column: Any) -> Sequence[Any]:
    """The values of one batch column as ``__getitems__`` hands them to ``collate``: the same
    types :func:`_convert` gives value by value (int64/float64/bool scalars as Python
    scalars, other numeric values as tensors of their dtype, the rest as they are)."""
    if isinstance(column, np.ndarray) and column.dtype.kind in "biufc":
        if column.ndim == 1 and column.dtype.type in _COLLATED_SCALARS:
            return column.tolist()  # type: ignore[no-any-return]
        return _tensor(column).unbind(0)
    return [_convert(v) for v in column]


def _batch_column(column: Any, ragged: str) -> Any:
    """One column of :meth:`TorchDataset.batch`."""
    if isinstance(column, np.ndarray) and column.dtype.kind in "biufc":
        return _tensor(column)
    return _collate_column(list(column), ragged)


def pad_tensors(values: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(padded, mask)``: tensors of one rank padded with zeros to the largest size in every
    dimension; ``mask`` is True where ``padded`` holds real values.

    >>> padded, mask = pad_tensors([torch.ones(2), torch.ones(3)])
    >>> padded.tolist(), mask.sum().item()
    ([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]], 5)
    """
    ranks = {v.dim() for v in values}
    if len(ranks) != 1:
        raise ValueError(f"cannot pad tensors of different ranks {sorted(ranks)}")
    size = [max(v.shape[d] for v in values) for d in range(ranks.pop())]
    padded = values[0].new_zeros((len(values), *size))
    mask = torch.zeros((len(values), *size), dtype=torch.bool)
    for i, v in enumerate(values):
        where: tuple[Any, ...] = (i, *(slice(0, n) for n in v.shape))
        padded[where] = v
        mask[where] = True
    return padded, mask


def collate_fields(samples: list[Any], ragged: str = "list") -> Any:
    """Collate a list of sample tuples (or dicts) field by field (see module docstring)."""
    if ragged not in RAGGED_MODES:
        raise ValueError(f"ragged must be one of {RAGGED_MODES}, got {ragged!r}")
    first = samples[0]
    if isinstance(first, dict):
        return {k: _collate_column([s[k] for s in samples], ragged) for k in first}
    return tuple(_collate_column([s[k] for s in samples], ragged) for k in range(len(first)))


def _collate_column(values: list[Any], ragged: str) -> Any:
    if _same_numeric_arrays(values):  # one copy into the batch (as torch.stack would make)
        return torch.from_numpy(np.stack(values))
    values = [_convert(v) for v in values]
    if all(isinstance(v, torch.Tensor) for v in values):
        if len({tuple(v.shape) for v in values}) == 1:
            return torch.stack(values)
        return pad_tensors(values) if ragged == "pad" else values
    if all(isinstance(v, (int, float, bool)) for v in values):
        # as default_collate: Python floats become float64 (the stored dtype), ints int64
        floats = any(isinstance(v, float) for v in values)
        return torch.as_tensor(values, dtype=torch.float64 if floats else None)
    return list(values)


def _same_numeric_arrays(values: list[Any]) -> bool:
    """Whether ``values`` are numeric numpy arrays of one shape and dtype (stackable)."""
    first = values[0] if values else None
    if not isinstance(first, np.ndarray) or first.dtype.kind not in "biufc":
        return False
    return all(
        isinstance(v, np.ndarray) and v.shape == first.shape and v.dtype == first.dtype
        for v in values
    )


class TorchDataset(Dataset[Sample]):
    """A map-style dataset over a :class:`~datastack.iterators.DatasetIterator`.

    Parameters
    ----------
    iterator:
        Any datastack iterator (format iterator or a stack of wrappers), or its ``as_dict()``
        view: samples and batches are then dicts keyed by field name.
    to_tensor:
        Convert numeric numpy arrays and scalars (and images) to tensors; strings and bytes
        pass through.
    ragged:
        How :meth:`collate` joins samples of different shapes: ``"list"`` (a list of tensors)
        or ``"pad"`` (``(padded tensor, bool mask)``).
    """

    def __init__(
        self,
        iterator: DatasetIterator,
        to_tensor: bool = True,
        ragged: str = "list",
        read_plan: ReadPlan | None = None,
    ) -> None:
        from datastack.iterators.named import DictView

        #: field names when samples are dicts (the iterator's ``as_dict()`` view was given)
        self.names: list[str] | None = None
        if isinstance(iterator, DictView):
            self.names, iterator = iterator.names, iterator.iterator
        if not isinstance(iterator, DatasetIterator):
            raise TypeError(f"expected a DatasetIterator, got {type(iterator).__name__}")
        if ragged not in RAGGED_MODES:
            raise ValueError(f"ragged must be one of {RAGGED_MODES}, got {ragged!r}")
        self.iterator = iterator
        self.to_tensor = to_tensor
        self.ragged = ragged
        #: A sampler's read plan (:meth:`DatasetSampler.read_plan`): told of each batch drawn
        #: from that sampler before it is read, it prefetches the next batches' blocks.
        self.read_plan = read_plan

    def with_read_plan(self, plan: ReadPlan | None) -> TorchDataset:
        """This dataset reading with ``plan`` (a copy: ``self`` is left as it is).

        >>> data = data.with_read_plan(sampler.read_plan())          # doctest: +SKIP
        """
        out = copy.copy(self)
        out.read_plan = plan
        return out

    def _before(self, indices: Any) -> None:
        """Tell the read plan which batch of its order is about to be read."""
        plan = self.read_plan
        where = batch_position(indices) if plan is not None else None
        if plan is not None and where is not None:
            plan.before_batch(self.iterator, np.asarray(indices, dtype=np.int64), *where)

    def collate(self, samples: list[Any]) -> Any:
        """A ``collate_fn`` for every field kind (``DataLoader(ds, collate_fn=ds.collate)``)."""
        return collate_fields(samples, self.ragged)

    def __len__(self) -> int:
        return len(self.iterator)

    @property
    def _columnar(self) -> bool:
        """Whether batches are read as columns (``get_batch``): tensors wanted, and the
        iterator's samples are its batch's rows (no stack overrides ``get_samples``)."""
        return self.to_tensor and type(self.iterator).get_samples is DatasetIterator.get_samples

    def _out(self, sample: Sample) -> Any:
        out = tuple(_convert(v) for v in sample) if self.to_tensor else sample
        return out if self.names is None else dict(zip(self.names, out, strict=True))

    def __getitem__(self, index: Any) -> Any:
        """One sample; a list (or 1-D array) of indices gives the collated batch
        (:meth:`batch`), as ``DataLoader(..., batch_size=None)`` asks for it."""
        if isinstance(index, (list, np.ndarray, range)):
            return self.batch(index)
        return self._out(self.iterator[index])

    def batch(self, indices: Sequence[int] | NDArray[np.int64]) -> Any:
        """The samples ``indices`` collated: what ``collate_fn=dataset.collate`` makes of
        ``__getitems__(indices)``, read and converted as columns (a numeric column is one
        tensor of its dtype, never cut into rows and stacked again)."""
        self._before(indices)
        if not self._columnar:
            samples = self._named(self._getitems(list(indices)))
            return self.collate(samples) if self.to_tensor else samples
        columns = self.iterator.get_batch(indices)
        out = tuple(_batch_column(column, self.ragged) for column in columns)
        return out if self.names is None else dict(zip(self.names, out, strict=True))

    def __getitems__(self, indices: list[int]) -> list[Any]:
        self._before(indices)
        return self._named(self._getitems(indices))

    def _named(self, samples: list[Sample]) -> list[Any]:
        if self.names is None:
            return samples
        return [dict(zip(self.names, sample, strict=True)) for sample in samples]

    def _getitems(self, indices: list[int]) -> list[Sample]:
        if self._columnar:
            # a batch read as columns: each numeric column becomes one tensor, cut into row
            # views (one conversion per column, not one per value)
            batch = self.iterator.get_batch(indices)
            columns = [_column_values(column) for column in batch]
            return list(zip(*columns, strict=True))
        samples = self.iterator.get_samples(indices)
        if not self.to_tensor or not samples:
            return samples
        width = len(samples[0])
        if any(len(s) != width for s in samples):
            return [tuple(_convert_scalar(v) for v in s) for s in samples]
        columns = [_samples_column(column) for column in zip(*samples, strict=True)]
        return list(zip(*columns, strict=True))

    def __repr__(self) -> str:
        return f"TorchDataset({self.iterator!r})"


def as_torch_dataset(
    iterator: DatasetIterator, to_tensor: bool = True, ragged: str = "list"
) -> TorchDataset:
    """Wrap ``iterator`` as a map-style PyTorch dataset (see :class:`TorchDataset`)."""
    return TorchDataset(iterator, to_tensor=to_tensor, ragged=ragged)


def _as_is(batch: Any) -> Any:
    """The ``collate_fn`` of :func:`data_loader`: batches arrive collated."""
    return batch


def data_loader(
    dataset: Any,
    *,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
    num_replicas: int | None = None,
    rank: int | None = None,
    block_aware: bool | None = None,
    stateful: bool = False,
    ragged: str = "list",
    **loader_kwargs: Any,
) -> Any:
    """A ``DataLoader`` over a datastack iterator (or its :class:`TorchDataset`) that reads
    whole batches: a :class:`DatasetSampler` yields lists of indices (``batches=True``) and the
    dataset collates each as columns (:meth:`TorchDataset.batch`), so no batch is cut into
    samples and stacked again. The sampler is ``loader.sampler``: call
    ``loader.sampler.set_epoch(e)`` every epoch. ``stateful=True`` gives torchdata's
    ``StatefulDataLoader`` (``state_dict()`` resumes mid-epoch). ``drop_last`` drops the short
    last batch and the rank tail (no repeated samples). Other keywords go to the loader.
    With workers, tensors of up to 256 KiB come back by value in the pickled batch instead of
    one shared-memory segment each (:mod:`datastack.iterators._ipc`: 3x cheaper for
    small batches), unless ``pin_memory=True`` or a ``collate_fn`` is given.

    >>> loader = data_loader(it, batch_size=256, num_workers=2)         # doctest: +SKIP
    >>> for epoch in range(3):                                            # doctest: +SKIP
    ...     loader.sampler.set_epoch(epoch)
    ...     for images, labels in loader: ...
    """
    data = dataset if isinstance(dataset, TorchDataset) else TorchDataset(dataset, ragged=ragged)
    workers = int(num_workers)
    sampler = DatasetSampler(
        data, shuffle=shuffle, seed=seed, num_replicas=num_replicas, rank=rank,
        drop_last=drop_last, block_aware=block_aware, batch_size=batch_size,
        num_workers=workers, batches=True,
    )
    data = data.with_read_plan(sampler.read_plan())  # handed over, not set by the sampler
    # Workers send small tensors by value (datastack.iterators._ipc); not with pinned
    # memory, whose thread pins only tensors, nor with the caller's own collate_fn.
    inline = workers > 0 and not loader_kwargs.get("pin_memory")
    inline = inline and "collate_fn" not in loader_kwargs
    options: dict[str, Any] = {"num_workers": workers, "collate_fn": pack if inline else _as_is}
    if workers:
        options["worker_init_fn"] = worker_init_fn
    options.update(loader_kwargs)
    return _loader_class(stateful, inline)(data, sampler=sampler, batch_size=None, **options)


_LOADERS: dict[tuple[bool, bool], type] = {}


def _loader_class(stateful: bool, inline: bool) -> Any:
    """``DataLoader`` or torchdata's ``StatefulDataLoader``; with ``inline``, a subclass whose
    iterator unpacks the batches its workers packed."""
    cls = _LOADERS.get((stateful, inline))
    if cls is None:
        if stateful:
            try:
                from torchdata.stateful_dataloader import (  # type: ignore[import-untyped]
                    StatefulDataLoader as base,
                )
            except ImportError:
                raise MissingDependencyError(
                    "data_loader(stateful=True) needs torchdata: pip install 'datastack[torch]'"
                ) from None
        else:
            from torch.utils.data import DataLoader as base
        name = f"Batch{base.__name__}"
        cls = type(name, (Unpacking, base), {"__module__": __name__}) if inline else base
        _LOADERS[(stateful, inline)] = cls
    return cls


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: drop streams and MongoDB clients inherited over fork.

    Format iterators already reopen per process id; this also closes nothing of the parent's
    (inherited handles are forgotten, not closed) and is safe to pass always.
    """
    from datastack import _mongo

    _mongo._forget_inherited_clients()
    info = torch.utils.data.get_worker_info()
    if info is not None and isinstance(info.dataset, TorchDataset):
        _forget(info.dataset.iterator)


def _forget(it: DatasetIterator) -> None:
    if hasattr(it, "_slot"):
        it._slot = None
    for child in it.underlying_iterators:
        _forget(child)


__all__ = [
    "TorchDataset",
    "as_torch_dataset",
    "collate_fields",
    "data_loader",
    "pad_tensors",
    "worker_init_fn",
]
