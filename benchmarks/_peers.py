"""The same arrays written for peer loaders, and one shuffled DataLoader epoch with each.

Peers (``pip install -e '.[bench,torch]'`` in a separate venv, see docs/performance.md):
Hugging Face ``datasets`` (Arrow on disk, ``with_format("numpy")``), MosaicML ``streaming``
(local MDS shards), LitData (``litdata.optimize`` chunks) and torchdata's
``StatefulDataLoader`` over a numpy memory map. Every epoch: batch size 256, shuffled,
``num_workers=0`` (the loaders' own best single-process path; 2 shared cores), every batch
collated to tensors.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

BATCH = 256


def write_peers(images: Any, labels: Any, work: Path) -> dict[str, str]:
    """MDS shards, LitData chunks and a .npy pair of the arrays; their folders."""
    import numpy as np

    out = {"mds": str(work / "mds"), "litdata": str(work / "litdata"), "npy": str(work / "npy")}
    Path(out["npy"]).mkdir()
    np.save(Path(out["npy"]) / "images.npy", images)
    np.save(Path(out["npy"]) / "labels.npy", labels)
    from streaming import MDSWriter

    columns = {"image": "ndarray:float32:28,28", "label": "int64"}
    with MDSWriter(out=out["mds"], columns=columns, size_limit=1 << 26) as writer:
        for image, label in zip(images, labels, strict=True):
            writer.write({"image": image, "label": np.int64(label)})
    import litdata

    litdata.optimize(
        fn=_litdata_item, inputs=list(range(len(labels))), output_dir=out["litdata"],
        chunk_bytes="64MB", num_workers=1, verbose=False,
        reader=None, start_method="fork", mode="overwrite",
    )
    return out


_ARRAYS: dict[str, Any] = {}


def _litdata_item(i: int) -> Any:
    import numpy as np

    if "images" not in _ARRAYS:  # inside litdata's worker: read the memmap once
        import os

        folder = os.environ["BENCH_NPY_DIR"]
        _ARRAYS["images"] = np.load(f"{folder}/images.npy", mmap_mode="r")
        _ARRAYS["labels"] = np.load(f"{folder}/labels.npy", mmap_mode="r")
    return {"image": np.array(_ARRAYS["images"][i]), "label": int(_ARRAYS["labels"][i])}


class MemmapDataset:
    """A map-style dataset over the .npy pair (memory-mapped), with batched reads."""

    def __init__(self, folder: str) -> None:
        import numpy as np

        self.images = np.load(f"{folder}/images.npy", mmap_mode="r")
        self.labels = np.load(f"{folder}/labels.npy", mmap_mode="r")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Any:
        return self.images[i], self.labels[i]

    def __getitems__(self, indices: list[int]) -> list[Any]:
        import numpy as np

        order = np.asarray(indices)
        images, labels = self.images[order], self.labels[order]
        return [(images[k], labels[k]) for k in range(len(order))]


def _epoch(loader: Any) -> tuple[float, int]:
    t0, count = time.perf_counter(), 0
    for batch in loader:
        first = batch[0] if isinstance(batch, (list, tuple)) else batch["image"]
        count += len(first)
    return time.perf_counter() - t0, count


def peer_epochs(dirs: dict[str, str], hf_dir: str, repeat: int) -> dict[str, Any]:
    """Seconds per shuffled epoch (median of ``repeat``) for each peer."""
    import datasets
    import litdata
    import streaming
    from torch.utils.data import DataLoader
    from torchdata.stateful_dataloader import StatefulDataLoader

    datasets.disable_progress_bars()
    hf = datasets.load_from_disk(hf_dir).with_format("numpy")
    streaming.base.util.clean_stale_shared_memory()
    mds = streaming.StreamingDataset(local=dirs["mds"], shuffle=True, batch_size=BATCH)
    lit = litdata.StreamingDataset(dirs["litdata"], shuffle=True)
    loaders = {
        "hf_datasets": lambda: DataLoader(hf, batch_size=BATCH, shuffle=True),
        "mosaicml_streaming": lambda: DataLoader(mds, batch_size=BATCH),
        "litdata": lambda: litdata.StreamingDataLoader(lit, batch_size=BATCH),
        "torchdata": lambda: StatefulDataLoader(
            MemmapDataset(dirs["npy"]), batch_size=BATCH, shuffle=True
        ),
    }
    out: dict[str, Any] = {}
    for name, make in loaders.items():
        runs = []
        for _ in range(repeat + 1):  # the first epoch warms the page cache, not measured
            took, count = _epoch(make())
            runs.append(took)
        out[name] = {"s": sorted(runs[1:])[len(runs[1:]) // 2], "samples": count, "all": runs}
    return out
