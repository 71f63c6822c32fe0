"""How :func:`~datastack.iterators.torch.data_loader` batches cross from a worker process.

A ``DataLoader`` worker hands each tensor of a batch over as a shared-memory segment: one
``shm`` file, ``mmap`` and file-descriptor transfer per tensor, about a millisecond per batch
of two tensors measured on 2 cores. For small batches (labels, token ids, tabular rows, ragged
values) that costs more than reading the batch, and the main process, which receives every
batch, becomes the bottleneck of the whole pass. So the workers of ``data_loader`` send CPU
tensors of up to :data:`INLINE_BYTES` by value inside the pickled batch (:func:`pack`, the
loader's ``collate_fn``), and the loader turns them back into tensors in the main process
(:func:`unpack`, applied by the loader's iterator). Larger tensors (image batches) keep the
shared-memory path, which is faster for them. The caller gets the same batches either way:
tensors of the same dtype, shape and values (see ``benchmarks/records.py`` and
docs/sampling.md for the measurements).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

#: Largest tensor (bytes) a worker sends by value; measured crossover near 512 KiB.
INLINE_BYTES = 256 * 1024


class InlineArray:
    """A small tensor's values on their way from a worker, pickled by value."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray[Any, Any]) -> None:
        self.array = array

    def __reduce__(self) -> tuple[type[InlineArray], tuple[np.ndarray[Any, Any]]]:
        return (InlineArray, (self.array,))


def _map_leaves(value: Any, leaf: Any) -> Any:
    """``value`` with ``leaf`` applied to everything below its tuples, lists and dicts."""
    if type(value) in (tuple, list):
        return type(value)(_map_leaves(v, leaf) for v in value)
    if type(value) is dict:
        return {k: _map_leaves(v, leaf) for k, v in value.items()}
    return leaf(value)


def _pack_leaf(value: Any) -> Any:
    if type(value) is not torch.Tensor:  # exact type: subclasses keep their own pickling
        return value
    if value.layout is not torch.strided or value.device.type != "cpu":
        return value
    if value.nbytes > INLINE_BYTES:
        return value
    try:
        return InlineArray(value.numpy())
    except (TypeError, RuntimeError):  # bfloat16, requires_grad, conjugate views
        return value


def _unpack_leaf(value: Any) -> Any:
    return torch.from_numpy(value.array) if type(value) is InlineArray else value


def pack(value: Any) -> Any:
    """``collate_fn`` of the workers: CPU tensors of up to :data:`INLINE_BYTES` become
    :class:`InlineArray`; everything else (and tensor subclasses) is left as it is."""
    return _map_leaves(value, _pack_leaf)


def unpack(value: Any) -> Any:
    """The inverse of :func:`pack`, in the main process (``torch.from_numpy``: no copy)."""
    return _map_leaves(value, _unpack_leaf)


class UnpackedBatches:
    """A loader's batch iterator whose batches are :func:`unpack`-ed."""

    def __init__(self, batches: Iterator[Any]) -> None:
        self.batches = batches

    def __iter__(self) -> UnpackedBatches:
        return self

    def __next__(self) -> Any:
        return unpack(next(self.batches))

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]


class Unpacking:
    """Mixin for a ``DataLoader`` class whose workers :func:`pack` their batches."""

    def __iter__(self) -> UnpackedBatches:
        return UnpackedBatches(super().__iter__())  # type: ignore[misc]
