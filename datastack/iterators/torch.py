"""PyTorch adapter: any iterator as a map-style ``torch.utils.data.Dataset``.

This is the only datastack module that imports torch. The dataset holds the iterator, which
holds only recipes for its streams (resource, URI, file id), so it pickles to spawned workers;
forked workers notice the new process id and open their own streams, h5py files and MongoDB
clients on first access (``datastack._mongo.get_client`` caches clients per process).
:func:`worker_init_fn` makes that explicit by dropping anything inherited.

``__getitems__`` (used by ``DataLoader`` since torch 2.1) reads a whole batch with one
``get_batch`` call, so HDF5 batches are sorted, coalesced and prefetched in one round trip.

>>> from torch.utils.data import DataLoader                          # doctest: +SKIP
>>> loader = DataLoader(as_torch_dataset(it), batch_size=64, num_workers=2,
...                     worker_init_fn=worker_init_fn)               # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from datastack.iterators.base import DatasetIterator, Sample
from datastack.iterators.sampler import DatasetSampler as DatasetSampler  # re-export


def _convert(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biufc":
            return torch.from_numpy(np.ascontiguousarray(value))
        return value
    if isinstance(value, np.generic) and value.dtype.kind in "biufc":
        return torch.as_tensor(value.item())
    return value


class TorchDataset(Dataset[Sample]):
    """A map-style dataset over a :class:`~datastack.iterators.DatasetIterator`.

    Parameters
    ----------
    iterator:
        Any datastack iterator (format iterator or a stack of wrappers).
    to_tensor:
        Convert numeric numpy arrays and scalars to tensors (others pass through).
    """

    def __init__(self, iterator: DatasetIterator, to_tensor: bool = True) -> None:
        if not isinstance(iterator, DatasetIterator):
            raise TypeError(f"expected a DatasetIterator, got {type(iterator).__name__}")
        self.iterator = iterator
        self.to_tensor = to_tensor

    def __len__(self) -> int:
        return len(self.iterator)

    def _out(self, sample: Sample) -> Sample:
        return tuple(_convert(v) for v in sample) if self.to_tensor else sample

    def __getitem__(self, index: int) -> Sample:
        return self._out(self.iterator[index])

    def __getitems__(self, indices: list[int]) -> list[Sample]:
        batch = self.iterator.get_batch(indices)
        return [self._out(tuple(column[i] for column in batch)) for i in range(len(indices))]

    def __repr__(self) -> str:
        return f"TorchDataset({self.iterator!r})"


def as_torch_dataset(iterator: DatasetIterator, to_tensor: bool = True) -> TorchDataset:
    """Wrap ``iterator`` as a map-style PyTorch dataset (see :class:`TorchDataset`)."""
    return TorchDataset(iterator, to_tensor=to_tensor)


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


__all__ = ["TorchDataset", "as_torch_dataset", "worker_init_fn"]
