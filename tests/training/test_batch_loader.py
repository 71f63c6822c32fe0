"""``data_loader``: the sampler yields whole batches and the dataset collates them as columns.
The batches equal what the per-sample path (``DatasetSampler`` + ``collate_fn``) gives, in the
same order; resumable with StatefulDataLoader; sharded over ranks; ``drop_last``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import datastack
from datastack.errors import ConfigurationError
from datastack.iterators import SequenceDatasetIterator
from datastack.iterators.sampler import DatasetSampler
from tests.training.helpers import double

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from datastack.iterators.torch import TorchDataset, data_loader  # noqa: E402


def _same(a: Any, b: Any) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            _same(a[key], b[key])
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    else:
        assert a == b


def _per_sample_batches(it: Any, batch: int, seed: int, epoch: int) -> list[Any]:
    from torch.utils.data import DataLoader

    ds = TorchDataset(it)
    sampler = DatasetSampler(ds, seed=seed)
    sampler.set_epoch(epoch)
    return list(DataLoader(ds, batch_size=batch, sampler=sampler, collate_fn=ds.collate))


def _datasets(tmp_path: Path) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    store = str(tmp_path / "store")
    images = rng.random((203, 6, 5), dtype=np.float32)
    datastack.publish("arr", {"x": images, "y": rng.integers(0, 4, 203)}, target="y",
                      storage=store)
    texts = [f"sample {i} " + "ü" * (i % 7) for i in range(97)]
    ragged = [rng.random(i % 5 + 1) for i in range(97)]
    datastack.publish("rec", {"text": texts, "seq": ragged, "w": rng.random(97),
                              "label": np.arange(97) % 3}, target="label", storage=store)
    return {
        "arrays": datastack.load("arr", storage=store),
        "records": datastack.load("rec", storage=store),
        "records as dicts": datastack.load("rec", storage=store).as_dict(),
        "mapped stack": SequenceDatasetIterator(np.arange(50.0), np.arange(50) % 2).map(double),
        "in memory": SequenceDatasetIterator(images, np.arange(203)),
    }


def test_batches_equal_the_per_sample_path(tmp_path: Path) -> None:
    for name, it in _datasets(tmp_path).items():
        expected = _per_sample_batches(it, 16, seed=3, epoch=1)
        loader = data_loader(it, batch_size=16, seed=3)
        loader.sampler.set_epoch(1)
        got = list(loader)
        assert len(got) == len(expected) == len(loader), name
        for a, b in zip(expected, got, strict=True):
            _same(a, b)


def test_two_workers_and_drop_last(tmp_path: Path) -> None:
    it = _datasets(tmp_path)["records"]
    loader = data_loader(it, batch_size=10, num_workers=2, drop_last=True)
    batches = list(loader)
    assert len(batches) == len(loader) == 9 and {len(b[0]) for b in batches} == {10}
    texts = [t for b in batches for t in b[0]]
    assert len(set(texts)) == 90 and all(isinstance(t, str) for t in texts)
    assert isinstance(batches[0][1], list) and batches[0][3].dtype == torch.int64


def test_ranks_get_disjoint_batches() -> None:
    it = SequenceDatasetIterator(np.arange(30), np.arange(30))
    seen = [[int(i) for b in data_loader(it, batch_size=4, num_replicas=2, rank=r)
             for i in b[0]] for r in (0, 1)]
    assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == list(range(30))


@pytest.mark.parametrize("workers", [0, 2])
def test_stateful_batch_loader_resumes_every_sample_once(workers: int) -> None:
    pytest.importorskip("torchdata")
    it = SequenceDatasetIterator(np.arange(103), np.arange(103))

    def make() -> Any:
        return data_loader(it, batch_size=8, seed=5, num_workers=workers, stateful=True)

    dl = make()
    dl.sampler.set_epoch(1)
    seen: list[int] = []
    for step, batch in enumerate(dl):
        seen += batch[0].tolist()
        if step == 4:
            state = dl.state_dict()
            break
    dl2 = make()
    dl2.load_state_dict(state)
    dl2.sampler.set_epoch(1)
    rest = [i for batch in dl2 for i in batch[0].tolist()]
    assert sorted(seen + rest) == list(range(103))
    order = DatasetSampler(it, seed=5)
    order.set_epoch(1)
    assert seen + rest == list(order)


def test_batches_need_a_batch_size() -> None:
    with pytest.raises(ConfigurationError, match="batch_size"):
        DatasetSampler(SequenceDatasetIterator([1, 2]), batches=True)
    sampler = DatasetSampler(SequenceDatasetIterator(list(range(10))), batch_size=4,
                             batches=True, shuffle=False)
    assert list(sampler) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]] and len(sampler) == 3


def test_workers_send_small_tensors_by_value_and_large_ones_shared(tmp_path: Path) -> None:
    """What two workers hand over equals what the main process reads (values, dtypes, field
    structure, ragged lists, strings); small tensors come by value (not shared memory), large
    ones (a batch above INLINE_BYTES) through shared memory as before."""
    from datastack.iterators._ipc import INLINE_BYTES

    for name, it in _datasets(tmp_path).items():
        expected = list(data_loader(it, batch_size=16, seed=2))
        got = list(data_loader(it, batch_size=16, seed=2, num_workers=2))
        assert len(got) == len(expected), name
        for a, b in zip(expected, got, strict=True):
            _same(a, b)
        first = got[0] if isinstance(got[0], tuple) else tuple(got[0].values())
        tensors = [t for t in first if isinstance(t, torch.Tensor)]
        assert tensors and not any(t.is_shared() for t in tensors), name
    rows = INLINE_BYTES // (6 * 5 * 4) + 1  # float32 6x5 rows: one batch just over the limit
    big = SequenceDatasetIterator(np.ones((2 * rows, 6, 5), np.float32), np.arange(2 * rows))
    [(x, y), _] = list(data_loader(big, batch_size=rows, shuffle=False, num_workers=2))
    assert x.nbytes > INLINE_BYTES and x.is_shared() and not y.is_shared()
    assert x.shape == (rows, 6, 5) and y.tolist() == list(range(rows))


def test_pack_keeps_what_cannot_go_by_value() -> None:
    from datastack.iterators._ipc import INLINE_BYTES, InlineArray, pack, unpack

    small = torch.arange(6, dtype=torch.int16).reshape(2, 3).t()  # not contiguous
    kept = [torch.ones(2, dtype=torch.bfloat16), torch.ones(2, requires_grad=True),
            torch.zeros(INLINE_BYTES + 1, dtype=torch.uint8), torch.ones(3).to_sparse()]
    batch = {"a": (small, "text", [torch.tensor([1.5]), b"raw"]), "kept": kept}
    packed = pack(batch)
    assert type(packed["a"][0]) is InlineArray and type(packed["a"][2][0]) is InlineArray
    assert all(p is k for p, k in zip(packed["kept"], kept, strict=True))
    back = unpack(packed)
    _same(back["a"], batch["a"])
    assert back["a"][0].shape == (3, 2) and back["kept"][0] is kept[0]


def test_persistent_workers_unpack_every_epoch() -> None:
    it = SequenceDatasetIterator(np.arange(40), np.arange(40) % 3)
    loader = data_loader(it, batch_size=8, seed=1, num_workers=2, persistent_workers=True)
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        batches = iter(loader)
        assert len(batches) == 5
        got = [b for b in batches]
        assert all(isinstance(x, torch.Tensor) and not x.is_shared() for b in got for x in b)
        assert sorted(int(i) for b in got for i in b[0]) == list(range(40))
