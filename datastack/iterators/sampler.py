"""``DatasetSampler``: the order of an epoch -- shuffled, sharded over ranks, resumable.

Parameters are named as PyTorch's ``DistributedSampler`` (``shuffle``, ``seed``,
``num_replicas``, ``rank``, ``drop_last``; ``set_epoch``), and ``state_dict`` /
``load_state_dict`` follow torchdata's ``StatefulDataLoader`` protocol, so a loader resumes
mid-epoch exactly where it stopped (each sample once), also with workers. Importing this
module does not import torch (only reading ranks from ``torch.distributed`` does).

The order of epoch ``e`` depends only on ``(seed, e)``, the dataset's length and its block
structure (numpy's PCG64 from ``SeedSequence([seed, e])``: the same on every machine). Ranks
get contiguous, disjoint slices of equal length of that order (padded by repeating its start,
or cut with ``drop_last``), together covering the dataset.

**Block-aware shuffling** (``block_aware=None``: on when the dataset reports storage blocks,
i.e. it is read from remote storage such as GridFS; off for local files and memory): the
blocks are shuffled, then samples within windows that fit the block cache
(:func:`~datastack.iterators.blocks.block_aware_order`), so each storage block is fetched
about once per epoch. ``block_aware=False`` gives a full per-sample shuffle. The sampler also
gives a read plan (:meth:`DatasetSampler.read_plan`) for the dataset to hold: before each
batch, the reader is told which blocks the next batches of this process need and fetches
them in the background. Batches carry their epoch and position, so a plan (in a DataLoader
worker too) never guesses where it is.

>>> from datastack.iterators import SequenceDatasetIterator
>>> it = SequenceDatasetIterator(list(range(10)))
>>> rank0 = DatasetSampler(it, num_replicas=2, rank=0, seed=1)
>>> rank1 = DatasetSampler(it, num_replicas=2, rank=1, seed=1)
>>> sorted(list(rank0) + list(rank1)) == list(range(10)), len(rank0)
(True, 5)
>>> rank0.set_epoch(1); list(rank0) != list(DatasetSampler(it, num_replicas=2, rank=0, seed=1))
True
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.typing import NDArray

from datastack.errors import ConfigurationError
from datastack.iterators.base import DatasetIterator, Indices
from datastack.iterators.blocks import StorageBlocks, block_aware_order, worker_parts_order

#: A shuffle window holds at most 1 / this of the block cache (the window being read, the
#: blocks prefetched for the next batches, which may be of the next window, must fit together).
WINDOW_CACHE_FRACTION = 3
#: Shuffle units are runs of ``window / UNITS_PER_WINDOW`` consecutive blocks (see
#: :func:`~datastack.iterators.blocks.block_aware_order`: fewer double fetches at unit edges).
UNITS_PER_WINDOW = 2
#: Batches of this process whose blocks are requested ahead of time: at least the first,
#: up to the second when they span less than one shuffle window (a window's blocks must
#: arrive before its first batch, and hints beyond a window would crowd the cache).
LOOKAHEAD_BATCHES = 4
MAX_LOOKAHEAD_BATCHES = 16


def _iterator_of(dataset: Any) -> DatasetIterator:
    """The datastack iterator of ``dataset`` (itself, or the one a torch adapter wraps)."""
    inner = getattr(dataset, "iterator", None)
    if isinstance(dataset, DatasetIterator):
        return dataset
    if isinstance(inner, DatasetIterator):
        return inner
    raise ConfigurationError(
        f"dataset should be a datastack iterator or its torch adapter (as_torch_dataset), "
        f"but got {type(dataset).__name__}"
    )


def _distributed() -> tuple[int, int] | None:
    """(world size, rank) from torch.distributed when it is initialised, else None."""
    if "torch" not in sys.modules:
        return None  # torch never imported: no process group can exist
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return None


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigurationError(f"{name} should be an int >= {minimum}, but got {value!r}")
    return int(value)


class _Order:
    """What decides an epoch's order (picklable; shared by the sampler and its read plan)."""

    def __init__(
        self,
        length: int,
        shuffle: bool,
        seed: int,
        num_replicas: int,
        rank: int,
        drop_last: bool,
        block_aware: bool | None,
        window_blocks: int | None,
        loader: tuple[int, int] | None = None,
    ) -> None:
        self.length, self.shuffle, self.seed = length, shuffle, seed
        self.num_replicas, self.rank, self.drop_last = num_replicas, rank, drop_last
        self.block_aware, self.window_blocks = block_aware, window_blocks
        self.loader = loader  # (batch_size, num_workers) of the DataLoader, when told
        self.window_samples = 0  # samples per block-aware window (set with the order)
        self.epoch = 0
        self._blocks: tuple[int, StorageBlocks | None] | None = None  # per process
        #: (pid, epoch) -> this rank's indices; two entries (a persistent worker's look at
        #: the next epoch must not evict the current one)
        self._cached: dict[tuple[int, int], Indices] = {}

    @property
    def num_samples(self) -> int:
        n, r = self.length, self.num_replicas
        if self.drop_last and n % r:
            return n // r
        return -(-n // r)

    def blocks(self, iterator: DatasetIterator) -> StorageBlocks | None:
        if self.block_aware is False or not self.shuffle:
            return None
        if self._blocks is None or self._blocks[0] != os.getpid():
            self._blocks = (os.getpid(), iterator.storage_blocks())
        return self._blocks[1]

    def _window(self, blocks: StorageBlocks) -> int:
        if self.window_blocks is not None:
            return self.window_blocks
        from datastack.storage.cache import default_cache

        budget = default_cache().max_bytes // (WINDOW_CACHE_FRACTION * blocks.block_bytes)
        return max(1, int(budget))

    def indices(self, iterator: DatasetIterator, epoch: int | None = None) -> Indices:
        """This rank's indices for ``epoch`` (default: the current one; computed once per
        process and epoch)."""
        epoch = self.epoch if epoch is None else epoch
        key = (os.getpid(), epoch)
        if key in self._cached:
            return self._cached[key]
        n = self.length
        if not self.shuffle:
            order = np.arange(n, dtype=np.int64)
        else:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch]))
            blocks = self.blocks(iterator)
            if blocks is None:
                order = rng.permutation(n).astype(np.int64)
            else:
                window = self._window(blocks)
                unit = max(1, window // UNITS_PER_WINDOW)
                order = block_aware_order(blocks.ids, window, rng, unit)
                self.window_samples = window * n // max(1, len(np.unique(blocks.ids)))
        total = self.num_samples * self.num_replicas
        if total > n:  # pad by repeating the start of the order
            order = np.resize(order, total)
        start = self.rank * self.num_samples
        mine = order[:total][start : start + self.num_samples]
        if self.loader is not None and self.shuffle and self.blocks(iterator) is not None:
            mine = worker_parts_order(mine, *self.loader)
        _keep_two(self._cached)[key] = mine
        return mine

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_blocks"], state["_cached"] = None, {}
        return state


class SampledBatch(list):  # type: ignore[type-arg]
    """A batch as :class:`DatasetSampler` yields it: its indices, and where it starts in this
    rank's order of which epoch (``epoch``, ``start``). It travels to DataLoader workers with
    the batch, so a read plan knows the epoch instead of guessing it."""

    epoch: int
    start: int

    def __init__(self, indices: Any = (), epoch: int = 0, start: int = 0) -> None:
        super().__init__(indices)
        self.epoch, self.start = epoch, start


class SampledIndex(int):
    """An index that starts a batch of :class:`DatasetSampler`'s order (per-sample loaders):
    ``epoch`` and ``start`` (its position in this rank's order), as :class:`SampledBatch`."""

    epoch: int
    start: int

    def __new__(cls, value: int, epoch: int, start: int) -> SampledIndex:
        self = super().__new__(cls, value)
        self.epoch, self.start = epoch, start
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (SampledIndex, (int(self), self.epoch, self.start))


def batch_position(indices: Any) -> tuple[int, int] | None:
    """``(epoch, start)`` of a batch drawn from a :class:`DatasetSampler` (a
    :class:`SampledBatch`, or indices whose first is a :class:`SampledIndex`), else None."""
    if isinstance(indices, SampledBatch):
        return indices.epoch, indices.start
    first = indices[0] if len(indices) else None
    return (first.epoch, first.start) if isinstance(first, SampledIndex) else None


class ReadPlan:
    """A sampler's read plan (:meth:`DatasetSampler.read_plan`): before a batch is read, hint
    the reader with the samples of this process's next batches (their blocks are fetched
    meanwhile). Its own copy of the order: the sampler's later ``set_epoch`` does not touch
    it; each batch says its epoch and position (:func:`batch_position`)."""

    def __init__(self, order: _Order) -> None:
        self.order = order
        self._hinted: tuple[tuple[int, int], NDArray[np.bool_]] | None = None

    def _hinted_positions(self, epoch: int, count: int) -> NDArray[np.bool_]:
        key = (os.getpid(), epoch)
        if self._hinted is None or self._hinted[0] != key:
            self._hinted = (key, np.zeros(count, dtype=bool))
        return self._hinted[1]

    def before_batch(
        self, iterator: DatasetIterator, indices: Indices, epoch: int, start: int
    ) -> None:
        """Hint the batches after the one at ``start`` of ``epoch``'s order (nothing when
        ``indices`` are not that batch: another order, a debugging read)."""
        order = self.order
        blocks = order.blocks(iterator)
        if blocks is None or blocks.prefetch is None or len(iterator) != order.length:
            return
        mine, size = order.indices(iterator, epoch), len(indices)
        if start < 0 or not np.array_equal(mine[start : start + size], indices):
            return  # not reading in this plan's order: no hint
        stride = size * _workers()  # with n workers, this process reads every n-th batch
        # samples whose blocks this process holds per batch ahead: its own batch when the
        # order is dealt to the workers (its own part), all of them in between otherwise
        spread = size if order.loader is not None else stride
        ahead = min(MAX_LOOKAHEAD_BATCHES, max(LOOKAHEAD_BATCHES, order.window_samples // spread))
        steps = range(1, ahead + 1)
        spans = [np.arange(start + k * stride, min(len(mine), start + k * stride + size))
                 for k in steps]
        positions = np.concatenate(spans)
        hinted = self._hinted_positions(epoch, len(mine))
        positions = positions[~hinted[positions]]  # each position is hinted once
        if len(positions):
            hinted[positions] = True
            blocks.prefetch(mine[positions])  # the reader skips blocks present or in flight


def _keep_two(cache: dict[Any, Any]) -> dict[Any, Any]:
    """``cache`` with room for one more entry: at most the newest two are kept."""
    while len(cache) >= 2:
        del cache[next(iter(cache))]
    return cache


def _workers() -> int:
    """DataLoader workers sharing this epoch (each reads every ``n``-th batch); 1 outside."""
    if "torch" not in sys.modules:
        return 1
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    return 1 if info is None else int(info.num_workers)


class DatasetSampler:
    """The sample order of each epoch for one rank, resumable mid-epoch.

    Parameters
    ----------
    dataset:
        A datastack iterator, or its torch adapter (``as_torch_dataset(it)``).
    shuffle:
        Shuffle (per epoch, from ``seed`` and the epoch); ``False`` keeps the stored order.
    seed:
        Same seed and epoch, same order on every machine and rank.
    num_replicas, rank:
        Number of ranks and this one; default: from ``torch.distributed`` when it is
        initialised, else 1 and 0.
    drop_last:
        Cut the tail so that every rank gets ``len(dataset) // num_replicas`` samples instead of
        padding to ``ceil(len / num_replicas)`` by repeating samples.
    block_aware:
        ``None``: block-aware shuffling when the dataset is read in remote storage blocks;
        ``False``: full per-sample shuffle; ``True``: block-aware whenever blocks are known.
    window_blocks:
        Storage blocks per shuffle window (default: a third of the block cache).
    batch_size, num_workers:
        The DataLoader's, when it has workers: with a block-aware order each worker reads
        its own contiguous part of the order (batch ``j`` comes from part ``j %
        num_workers``, as the DataLoader deals batches out), so every block is fetched by
        one worker instead of by all of them (``num_workers`` times the bytes otherwise).
        Only block-aware orders are dealt: a sequential pass already reads ahead per worker,
        and parts of unequal cost (images of different sizes) would leave a worker idle.
    batches:
        Yield lists of ``batch_size`` indices instead of single indices, for
        ``DataLoader(dataset, sampler=sampler, batch_size=None)``: the dataset reads and
        collates each batch as columns in one step (``TorchDataset.__getitem__`` of a list;
        what :func:`~datastack.iterators.torch.data_loader` builds). The last batch is short
        unless ``drop_last``, which then also drops it. ``len()`` counts batches.
    """

    def __init__(
        self,
        dataset: Any,
        *,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
        block_aware: bool | None = None,
        window_blocks: int | None = None,
        batch_size: int | None = None,
        num_workers: int = 0,
        batches: bool = False,
    ) -> None:
        iterator = _iterator_of(dataset)
        world = _distributed() if num_replicas is None or rank is None else None
        replicas = num_replicas if num_replicas is not None else (world[0] if world else 1)
        replicas = _check_int("num_replicas", replicas, 1)
        rank = rank if rank is not None else (world[1] if world else 0)
        rank = _check_int("rank", rank, 0)
        if rank >= replicas:
            raise ConfigurationError(
                f"rank should be in [0, {replicas - 1}] (num_replicas={replicas}), but got {rank}"
            )
        if window_blocks is not None:
            window_blocks = _check_int("window_blocks", window_blocks, 1)
        workers = _check_int("num_workers", num_workers, 0)
        batch = None if batch_size is None else _check_int("batch_size", batch_size, 1)
        if batches and batch is None:
            raise ConfigurationError("DatasetSampler(batches=True) needs a batch_size")
        self.batch_size = batch
        self.batches = bool(batches)
        loader = (batch, workers) if batch is not None and workers > 1 else None
        self.dataset = dataset
        self._order = _Order(
            len(iterator), bool(shuffle), _check_int("seed", seed, 0), replicas, rank,
            bool(drop_last), block_aware, window_blocks, loader,
        )
        self._iterator = iterator
        self.yielded = 0
        self._resume_at: int | None = None

    def read_plan(self) -> ReadPlan | None:
        """The plan that prefetches the blocks of the next batches of this sampler's order
        (None when it would not help: no shuffle, or ``block_aware=False``). Hand it to the
        dataset that reads the batches: ``TorchDataset.with_read_plan(plan)`` (what
        :func:`~datastack.iterators.torch.data_loader` does)."""
        if not self._order.shuffle or self._order.block_aware is False:
            return None
        return ReadPlan(copy.copy(self._order))

    # -- DistributedSampler surface ------------------------------------------------------------
    @property
    def shuffle(self) -> bool:
        return self._order.shuffle

    @property
    def seed(self) -> int:
        return self._order.seed

    @property
    def epoch(self) -> int:
        return self._order.epoch

    @property
    def num_replicas(self) -> int:
        return self._order.num_replicas

    @property
    def rank(self) -> int:
        return self._order.rank

    @property
    def drop_last(self) -> bool:
        return self._order.drop_last

    @property
    def num_samples(self) -> int:
        """Samples per rank and epoch."""
        return self._order.num_samples

    @property
    def block_aware_active(self) -> bool:
        """Whether this epoch's order is block-aware (the dataset reports storage blocks)."""
        return self._order.blocks(self._iterator) is not None

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` from the next iteration on (call it every epoch)."""
        epoch = _check_int("epoch", epoch, 0)
        if epoch != self._order.epoch:
            self._resume_at = None  # a resumed position belongs to the epoch it was saved in
        self._order.epoch = epoch

    def __len__(self) -> int:
        """Samples per rank and epoch; with ``batches``, the batches."""
        if self.batches and self.batch_size:
            whole, short = divmod(self._order.num_samples, self.batch_size)
            return whole + (1 if short and not self._order.drop_last else 0)
        return self._order.num_samples

    def indices(self) -> Indices:
        """This rank's indices of the current epoch, in order."""
        return self._order.indices(self._iterator).copy()

    def __iter__(self) -> Iterator[Any]:
        mine, epoch = self._order.indices(self._iterator), self._order.epoch
        start, self._resume_at = (self._resume_at or 0), None
        self.yielded = start
        if self.batches and self.batch_size:
            step = self.batch_size
            stop = len(mine) - (len(mine) - start) % step if self._order.drop_last else len(mine)
            for at in range(start, stop, step):
                batch = SampledBatch(mine[at : min(at + step, stop)].tolist(), epoch, at)
                self.yielded += len(batch)
                yield batch
            return
        # Where batches start (every batch_size-th index, or every index when the batch
        # size is not known) carries its epoch and position, for a read plan; plain ints
        # otherwise and when no plan can use them (no storage blocks).
        mark = self._order.shuffle and self._order.blocks(self._iterator) is not None
        every = self.batch_size or 1
        for at, index in enumerate(mine[start:].tolist(), start):
            self.yielded += 1
            yield SampledIndex(index, epoch, at) if mark and (at - start) % every == 0 else index

    # -- StatefulDataLoader protocol -----------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Epoch and position: ``load_state_dict`` resumes right after the last index drawn."""
        order = self._order
        return {
            "epoch": order.epoch,
            "yielded": self.yielded,
            "seed": order.seed,
            "length": order.length,
            "num_replicas": order.num_replicas,
            "rank": order.rank,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state``: the next iteration continues the saved epoch where it was."""
        if not isinstance(state, dict) or "yielded" not in state or "epoch" not in state:
            raise ConfigurationError(
                "a DatasetSampler state should be the dict from state_dict(), but got "
                f"{state!r:.80}"
            )
        order = self._order
        for key in ("seed", "length", "num_replicas", "rank"):
            if key in state and state[key] != getattr(order, key):
                raise ConfigurationError(
                    f"cannot resume: the saved sampler had {key}={state[key]!r}, this one has "
                    f"{getattr(order, key)!r}; build the sampler as before to resume"
                )
        yielded = _check_int("yielded", state["yielded"], 0)
        order.epoch = _check_int("epoch", state["epoch"], 0)
        self._resume_at = min(yielded, order.num_samples)
        self.yielded = self._resume_at

    def __repr__(self) -> str:
        o = self._order
        return (
            f"DatasetSampler(len={o.length}, shuffle={o.shuffle}, seed={o.seed}, epoch={o.epoch}, "
            f"rank={o.rank}/{o.num_replicas}, drop_last={o.drop_last})"
        )


__all__ = ["DatasetSampler", "ReadPlan", "SampledBatch", "SampledIndex", "batch_position"]
