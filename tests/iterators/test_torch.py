"""The PyTorch adapter: DataLoader workers over a GridFS-backed HDF5 dataset."""

from __future__ import annotations

import os
import pickle
from typing import Any

import numpy as np
import pytest

from datastack.iterators import split_iterators

pytestmark = pytest.mark.torch


def with_pid(sample: tuple[Any, ...]) -> tuple[Any, ...]:
    return (*sample, np.int64(os.getpid()))


@pytest.mark.mongo
def test_dataloader_two_workers_equals_single_process(
    mongo_uri: str, dataset: dict[str, Any]
) -> None:
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    from datastack.iterators.torch import TorchDataset, as_torch_dataset, worker_init_fn
    from datastack.storage import connect

    store = connect(mongo_uri)
    store.set_resource("demo/v1/data.h5", dataset["path"])
    train = split_iterators(store.get_resource("demo/v1/data.h5"))["train"]
    stack = train.shuffle(seed=11)[::2].map(with_pid)
    assert len(stack) == 300 and stack[0][0].shape == (4, 3)  # parent opened its own handles
    ds = as_torch_dataset(stack)
    assert isinstance(pickle.loads(pickle.dumps(ds)), TorchDataset)

    def batches(workers: int) -> list[tuple[Any, ...]]:
        loader = DataLoader(
            ds,
            batch_size=32,
            num_workers=workers,
            worker_init_fn=worker_init_fn if workers else None,
        )
        return list(loader)

    single, multi = batches(0), batches(2)
    assert len(single) == len(multi) == 10
    for a, b in zip(single, multi, strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert isinstance(single[0][0], torch.Tensor) and single[0][0].shape == (32, 4, 3)
    worker_pids = {int(p) for batch in multi for p in batch[2]}
    assert len(worker_pids) == 2 and os.getpid() not in worker_pids
    view = stack.iterator
    expected = dataset["x"][:600][view.iterator.permutation[view.indices]]
    got = torch.cat([b[0] for b in multi]).numpy()
    assert np.array_equal(got, expected)


def test_batch_items_match_item_by_item_for_every_dtype() -> None:
    """``__getitems__`` converts whole columns; what collate receives must be what the value
    by value path gives (same types and dtypes), so batches do not change with the path."""
    from torch.utils.data import default_collate

    from datastack.iterators.base import DatasetIterator
    from datastack.iterators.torch import TorchDataset

    class Columns(DatasetIterator):
        def __init__(self, *cols: np.ndarray) -> None:
            self.cols = cols

        def __len__(self) -> int:
            return len(self.cols[0])

        def _get(self, index: int) -> tuple[Any, ...]:
            return tuple(c[index] for c in self.cols)

        def _get_batch(self, indices: Any) -> tuple[Any, ...]:
            return tuple(c[indices] for c in self.cols)

    n = 12
    columns = (
        np.arange(n * 6, dtype=np.float32).reshape(n, 2, 3),
        np.arange(n, dtype=np.int64),
        np.arange(n, dtype=np.float32) / 3,
        np.arange(n, dtype=np.int32),
        np.arange(n) % 2 == 0,
    )
    ds = TorchDataset(Columns(*columns))
    idx = [5, 0, 11, 5]
    fast = default_collate(ds.__getitems__(idx))
    slow = default_collate([ds[i] for i in idx])
    for a, b, col in zip(fast, slow, columns, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and bool((a == b).all())
        assert np.array_equal(a.numpy(), col[idx])


def _mixed(sample: tuple[Any, ...]) -> tuple[Any, ...]:
    """A mapped sample of every kind a user function returns."""
    x, y = sample
    i = int(y)
    return (x, np.int64(i), np.float32(i / 3), float(i), f"t{i}", np.bool_(i % 2),
            i if i % 3 else np.int64(i))  # the last field mixes types


def test_mapped_samples_convert_as_value_by_value() -> None:
    """Mapped stacks go through get_samples: each field is converted in one step when its
    values share a type, and the result equals the value-by-value conversion."""
    from torch.utils.data import default_collate

    from datastack.iterators import SequenceDatasetIterator
    from datastack.iterators.torch import TorchDataset, _convert_scalar

    n = 9
    stack = SequenceDatasetIterator(np.arange(n * 4, dtype=np.float32).reshape(n, 4),
                                    np.arange(n)).map(_mixed)
    ds = TorchDataset(stack)
    idx = [4, 0, 8, 4, 2]
    got = ds.__getitems__(idx)
    want = [tuple(_convert_scalar(v) for v in stack[i]) for i in idx]
    for g, w in zip(got, want, strict=True):
        assert [type(v) for v in g] == [type(v) for v in w]
    batch, slow = default_collate(got), default_collate([ds[i] for i in idx])
    for a, b in zip(batch, slow, strict=True):
        if isinstance(a, (list, tuple)):  # strings: collated as the sequence they came in
            assert list(a) == list(b)
        else:
            assert a.dtype == b.dtype and bool((a == b).all())


def test_decoded_images_become_tensors_without_the_not_writable_warning() -> None:
    """#27.11: decoded images are read-only arrays (Pillow's bytes); every TorchDataset read
    of them warned "The given NumPy array is not writable". Run in a fresh process: torch
    warns once per process, so an earlier test could hide it here."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import io, warnings
        import numpy as np
        from PIL import Image
        from datastack.fields import decode_image
        from datastack.iterators import SequenceDatasetIterator
        from datastack.iterators.torch import TorchDataset

        def png(h, w):
            buf = io.BytesIO()
            Image.fromarray(np.full((h, w, 3), h, np.uint8)).save(buf, "PNG")
            return decode_image(buf.getvalue())

        same = [png(4, 5) for _ in range(3)]
        assert not same[0].flags.writeable  # what Pillow hands over
        warnings.simplefilter("error")
        data = TorchDataset(SequenceDatasetIterator(same, [0, 1, 2]))
        one = data[0][0]
        batch = data.batch([0, 2])[0]
        collated = data.collate(data.__getitems__([1, 2]))[0]
        ragged = TorchDataset(SequenceDatasetIterator([png(4, 5), png(6, 2)], [0, 1]))
        listed = ragged.batch([0, 1])[0]
        one[0, 0, 0] = 7  # a tensor of its own: writing it is fine
        assert tuple(batch.shape) == (2, 4, 5, 3) and tuple(collated.shape) == (2, 4, 5, 3)
        assert [tuple(t.shape) for t in listed] == [(4, 5, 3), (6, 2, 3)]
        assert int(same[0][0, 0, 0]) == 4  # the decoded array was not written through
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "not writable" not in done.stderr, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"
