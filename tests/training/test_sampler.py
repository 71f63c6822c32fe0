"""DatasetSampler: ranks, epochs, resumable state (StatefulDataLoader), block-aware orders."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from datastack.errors import ConfigurationError, UnpicklableError
from datastack.iterators import SequenceDatasetIterator
from datastack.iterators.blocks import StorageBlocks
from datastack.iterators.sampler import DatasetSampler
from tests.training.helpers import double, first_of


def _ids(n: int) -> SequenceDatasetIterator:
    return SequenceDatasetIterator(np.arange(n), np.arange(n) % 3)


@pytest.mark.parametrize("n, replicas", [(10, 2), (11, 3), (7, 4), (100, 1)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_are_disjoint_equal_and_cover(n: int, replicas: int, drop_last: bool) -> None:
    shards = [
        list(DatasetSampler(_ids(n), num_replicas=replicas, rank=r, seed=3, drop_last=drop_last))
        for r in range(replicas)
    ]
    lengths = {len(s) for s in shards}
    assert len(lengths) == 1
    flat = [i for s in shards for i in s]
    if drop_last:
        assert len(flat) == n - n % replicas and len(set(flat)) == len(flat)
    else:
        assert set(flat) == set(range(n)) and len(flat) == -(-n // replicas) * replicas
        if n % replicas == 0:
            assert len(set(flat)) == n  # no padding: disjoint


def test_same_seed_and_epoch_same_order_everywhere() -> None:
    a, b = DatasetSampler(_ids(50), seed=7), DatasetSampler(_ids(50), seed=7)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b) == list(pickle.loads(pickle.dumps(a)))
    b.set_epoch(4)
    assert list(a) != list(b) and sorted(b) == list(range(50))
    assert list(DatasetSampler(_ids(50), seed=8)) != list(DatasetSampler(_ids(50), seed=7))
    assert list(DatasetSampler(_ids(5), shuffle=False)) == [0, 1, 2, 3, 4]
    # pinned: numpy's PCG64 gives the same stream on every platform
    assert list(DatasetSampler(_ids(6), seed=0)) == list(DatasetSampler(_ids(6), seed=0))


def test_bad_arguments_say_what_was_expected() -> None:
    with pytest.raises(ConfigurationError, match="rank should be in \\[0, 1\\].*but got 2"):
        DatasetSampler(_ids(4), num_replicas=2, rank=2)
    with pytest.raises(ConfigurationError, match="num_replicas should be an int >= 1"):
        DatasetSampler(_ids(4), num_replicas=0, rank=0)
    with pytest.raises(ConfigurationError, match="should be a datastack iterator"):
        DatasetSampler([1, 2, 3])
    with pytest.raises(ConfigurationError, match="saved sampler had length=4"):
        DatasetSampler(_ids(5)).load_state_dict(DatasetSampler(_ids(4)).state_dict())


def test_state_dict_resumes_mid_epoch_exactly() -> None:
    sampler = DatasetSampler(_ids(40), seed=1)
    sampler.set_epoch(2)
    full = list(sampler)
    it = iter(sampler)
    head = [next(it) for _ in range(13)]
    state = sampler.state_dict()
    resumed = DatasetSampler(_ids(40), seed=1)
    resumed.load_state_dict(state)
    assert resumed.epoch == 2
    assert head + list(resumed) == full
    assert list(resumed) == full  # the next iteration is a whole epoch again


def _blocky(n: int, per_block: int) -> Any:
    class Blocky(SequenceDatasetIterator):
        hints: list[np.ndarray] = []

        def storage_blocks(self) -> StorageBlocks:
            return StorageBlocks(np.arange(n) // per_block, 4096, self.hints.append)

    return Blocky(np.arange(n))


def test_block_aware_order_statistics() -> None:
    n, per_block, window = 20000, 50, 8
    it = _blocky(n, per_block)
    sampler = DatasetSampler(it, seed=0, window_blocks=window)
    assert sampler.block_aware_active
    order = np.asarray(list(sampler))
    assert sorted(order.tolist()) == list(range(n))  # a full permutation
    steps = np.abs(np.diff(order))
    assert np.mean(steps == 1) < 0.02  # far from sequential
    correlations = [  # position vs index: ~0 for a shuffle, 1 for the stored order
        abs(np.corrcoef(list(DatasetSampler(it, seed=s, window_blocks=window)), np.arange(n))[0, 1])
        for s in range(5)
    ]
    assert np.mean(correlations) < 0.2
    assert np.median(steps) > per_block  # consecutive samples mostly from other blocks
    blocks = order // per_block
    # every block is read within one window span: its samples never come back later
    first, last = {}, {}
    for pos, b in enumerate(blocks.tolist()):
        first.setdefault(b, pos)
        last[b] = pos
    span = window * per_block
    assert max(last[b] - first[b] for b in first) < 2 * span
    # a window holds at most ~window + 1 distinct blocks
    assert max(len(set(blocks[w : w + span].tolist())) for w in range(0, n, span)) <= window + 2
    full = DatasetSampler(it, seed=0, block_aware=False)
    assert not full.block_aware_active
    scattered = np.asarray(list(full)) // per_block
    assert len(set(scattered[:span].tolist())) > 5 * window  # per-sample: all over the file


@pytest.mark.parametrize("n, workers", [(20000, 2), (20000, 3), (19999, 2), (64 * 300, 4)])
def test_each_worker_reads_its_own_blocks(n: int, workers: int) -> None:
    """Told the DataLoader's batch_size and num_workers, the block-aware order deals each
    worker (batch j -> worker j % workers) a contiguous part of the order: the blocks two
    workers both read are the few at part edges, against nearly all of them otherwise."""
    per_block, batch = 50, 64
    it = _blocky(n, per_block)

    def shared_blocks(order: np.ndarray) -> int:
        batches = [order[lo : lo + batch] // per_block for lo in range(0, n, batch)]
        seen = [set(np.concatenate(batches[w::workers]).tolist()) for w in range(workers)]
        return sum(len(a & b) for i, a in enumerate(seen) for b in seen[i + 1 :])

    dealt = DatasetSampler(it, seed=3, window_blocks=8, batch_size=batch, num_workers=workers)
    plain = DatasetSampler(it, seed=3, window_blocks=8)
    order, plain_order = np.asarray(list(dealt)), np.asarray(list(plain))
    assert sorted(order.tolist()) == list(range(n))  # still a full permutation
    assert sorted(order[: n - n % batch].tolist()) != order[: n - n % batch].tolist()
    if n % batch:  # the short batch (the order's tail) stays last
        assert np.array_equal(order[-(n % batch) :], plain_order[-(n % batch) :])
    # shared: the blocks of the window each part boundary cuts through (8 blocks, +2 edges)
    assert shared_blocks(order) <= (workers - 1) * 2 * (8 + 2)
    assert shared_blocks(plain_order) > 5 * shared_blocks(order) + 10
    # without workers, or with a per-sample shuffle, the order is the plain one
    one = DatasetSampler(it, seed=3, window_blocks=8, batch_size=batch, num_workers=1)
    assert np.array_equal(np.asarray(list(one)), plain_order)
    full = DatasetSampler(it, seed=3, block_aware=False, batch_size=batch, num_workers=workers)
    assert np.array_equal(full.indices(), DatasetSampler(it, seed=3, block_aware=False).indices())
    with pytest.raises(ConfigurationError, match="batch_size"):
        DatasetSampler(it, batch_size=0, num_workers=2)


def test_read_plan_hints_the_next_batches() -> None:
    it = _blocky(1000, 10)
    sampler = DatasetSampler(it, seed=0, window_blocks=4)
    plan = sampler.read_plan()
    assert plan is not None
    order = np.asarray(list(sampler))
    plan.before_batch(it, order[:32], 0, 0)  # hints the next LOOKAHEAD_BATCHES batches
    assert len(it.hints) == 1 and np.array_equal(it.hints[0], order[32 : 32 * 5])
    plan.before_batch(it, order[32:64], 0, 32)  # only the batch not hinted yet
    assert len(it.hints) == 2 and np.array_equal(it.hints[1], order[32 * 5 : 32 * 6])
    plan.before_batch(it, np.arange(32), 0, 64)  # not the sampler's order: no hint
    assert len(it.hints) == 2
    it.get_batch(order[64:96])  # reading alone calls nothing back (#22.4)
    assert len(it.hints) == 2
    assert DatasetSampler(it, shuffle=False).read_plan() is None
    assert DatasetSampler(it, block_aware=False).read_plan() is None


def test_batches_carry_their_epoch_and_position_through_pickling() -> None:
    it = _blocky(100, 10)
    sampler = DatasetSampler(it, seed=0, batch_size=8, batches=True)
    sampler.set_epoch(3)
    batches = [pickle.loads(pickle.dumps(b)) for b in sampler]  # as DataLoader workers get them
    assert [(b.epoch, b.start) for b in batches[:3]] == [(3, 0), (3, 8), (3, 16)]
    assert np.array_equal(np.concatenate(batches), sampler.indices())
    per_sample = list(DatasetSampler(it, seed=0, batch_size=8))
    marks = [pickle.loads(pickle.dumps(i)) for i in per_sample[::8]]
    assert [(m.epoch, m.start) for m in marks[:2]] == [(0, 0), (0, 8)]
    assert all(type(i) is int for k, i in enumerate(per_sample) if k % 8)
    assert per_sample == DatasetSampler(it, seed=0).indices().tolist()
    local = list(DatasetSampler(SequenceDatasetIterator(np.arange(10)), seed=0))
    assert all(type(i) is int for i in local)  # no blocks, no plan: plain indices


def test_a_persistent_worker_follows_the_next_epoch() -> None:
    """A persistent DataLoader worker keeps the copy of the dataset (and of its read plan) it
    started with; the main process moves the sampler on with set_epoch. Each batch carries
    its epoch and position, so the worker's hints are right without guessing (#22.4)."""
    from datastack.iterators.torch import TorchDataset

    it = _blocky(1000, 10)
    sampler = DatasetSampler(it, seed=0, window_blocks=4, batch_size=32, batches=True)
    data = TorchDataset(it).with_read_plan(sampler.read_plan())
    worker = copy.deepcopy(data)  # what a worker holds, at epoch 0 (as pickled to it)
    worker.iterator.hints = []
    sampler.set_epoch(5)  # more than one epoch ahead: no guessing involved
    batches = list(sampler)
    worker[batches[0]]
    order = np.concatenate(batches)
    assert len(worker.iterator.hints) == 1
    assert np.array_equal(worker.iterator.hints[0], order[32 : 32 * 5])
    worker[list(range(32))]  # not a batch of the sampler: no hint
    assert len(worker.iterator.hints) == 1


def test_a_lambda_in_a_stack_fails_at_pickling_with_a_clear_error() -> None:
    stack = _ids(4).map(lambda s: s)
    with pytest.raises(UnpicklableError, match="<lambda>.*module level"):
        pickle.dumps(stack)
    with pytest.raises(pickle.PicklingError):
        pickle.dumps(_ids(4).shuffle(0).map_targets(lambda t: t))

    def local(sample: Any) -> Any:
        return sample

    with pytest.raises(UnpicklableError, match="local.*def local"):
        pickle.dumps(_ids(4).map(local)[1:])
    assert pickle.loads(pickle.dumps(_ids(4).map(double)))[1][0] == 2


torch = pytest.importorskip("torch")


@pytest.mark.torch
@pytest.mark.parametrize("workers, dealt", [(0, False), (2, False), (2, True)])
def test_stateful_dataloader_resumes_every_sample_once(workers: int, dealt: bool) -> None:
    """Also with a block-aware order dealt to the workers (batch_size/num_workers given)."""
    pytest.importorskip("torchdata")
    from torchdata.stateful_dataloader import StatefulDataLoader

    from datastack.iterators.torch import DatasetSampler as Reexported
    from datastack.iterators.torch import as_torch_dataset

    assert Reexported is DatasetSampler
    dataset = as_torch_dataset(_blocky(103, 10) if dealt else _ids(103), to_tensor=False)
    dealing = {"batch_size": 8, "num_workers": workers, "window_blocks": 2} if dealt else {}

    def loader() -> tuple[Any, Any]:
        sampler = DatasetSampler(dataset, seed=5, **dealing)
        assert sampler.block_aware_active == dealt
        return sampler, StatefulDataLoader(
            dataset, batch_size=8, sampler=sampler, num_workers=workers, collate_fn=first_of
        )

    sampler, dl = loader()
    sampler.set_epoch(1)
    seen: list[int] = []
    for step, batch in enumerate(dl):
        seen += batch
        if step == 4:
            state = dl.state_dict()
            break
    sampler2, dl2 = loader()
    dl2.load_state_dict(state)
    sampler2.set_epoch(1)
    rest = [i for batch in dl2 for i in batch]
    assert sorted(seen + rest) == list(range(103))  # every sample exactly once
    sampler.set_epoch(1)
    assert seen + rest == list(sampler)  # and in the epoch's order
    sampler2.set_epoch(2)
    assert sorted(i for batch in dl2 for i in batch) == list(range(103))  # next epoch: whole


@pytest.mark.torch
def test_plain_dataloader_with_two_ranks() -> None:
    from torch.utils.data import DataLoader

    from datastack.iterators.torch import as_torch_dataset

    dataset = as_torch_dataset(_ids(30), to_tensor=False)
    seen = []
    for rank in (0, 1):
        sampler = DatasetSampler(dataset, num_replicas=2, rank=rank, seed=0)
        sampler.set_epoch(0)
        loader = DataLoader(dataset, batch_size=4, sampler=sampler, collate_fn=first_of)
        seen.append([i for batch in loader for i in batch])
    assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == list(range(30))


@pytest.mark.torch
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_datasets_and_stacks_under_spawn_and_forkserver(
    method: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from torch.utils.data import DataLoader

    import datastack
    from datastack.iterators.torch import as_torch_dataset, data_loader
    from tests.training.conftest import publish

    backend = request.getfixturevalue("mongo_uri") if method == "spawn" else str(tmp_path / "s")
    x = publish(backend, "digits", tmp_path / "v1", 64, 4, seed=2)
    stack = datastack.load("digits", storage=backend).map(double)[8:40].shuffle(1)
    dataset = as_torch_dataset(stack)
    sampler = DatasetSampler(dataset, seed=0)
    loader = DataLoader(dataset, batch_size=8, sampler=sampler, num_workers=2,
                        multiprocessing_context=method)
    got = torch.cat([batch[0] for batch in loader]).numpy()
    want = np.stack([np.asarray(stack[i][0]) for i in sampler])
    assert np.allclose(got, want) and np.allclose(np.sort(got.sum(1)), np.sort((2 * x[8:40]).sum(1)))
    batched = data_loader(stack, batch_size=8, seed=0, num_workers=2,
                          multiprocessing_context=method)  # workers pack, main unpacks
    got = torch.cat([batch[0] for batch in batched]).numpy()  # block-aware order on GridFS
    assert np.allclose(np.sort(got.sum(1)), np.sort(want.sum(1))) and got.dtype == want.dtype
