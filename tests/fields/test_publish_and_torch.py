"""publish() from Python (versioned, identical content publishes nothing, lineage), the field
model on stacked iterators, a 2-worker DataLoader over a mixed-field dataset, the preview."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import datastack
from datastack.errors import ConfigurationError, FormatError
from datastack.iterators import stratified_split
from datastack.store import Store
from tests.fields.realdata import Image, descr_texts, image_files, tar_folder, write_spec


def _mixed(n: int = 40) -> dict[str, object]:
    rng = np.random.default_rng(0)
    texts = sorted(descr_texts().values())
    return {
        "x": rng.normal(size=(n, 3)).astype(np.float32),
        "tokens": [rng.integers(0, 100, size=int(k)) for k in rng.integers(1, 9, n)],
        "text": [texts[i % len(texts)][: 50 + i] for i in range(n)],
        "blob": [bytes([i]) * i for i in range(n)],
        "label": ["even" if i % 2 == 0 else "odd" for i in range(n)],
    }


def test_publish_versions_identical_content_and_lineage(tmp_path: Path) -> None:
    storage = str(tmp_path / "store")
    data = _mixed()
    first = datastack.publish("mixed", data, target="label", storage=storage,
                              splits={"train": 0.75, "test": 0.25}, description="from python")
    again = datastack.publish("mixed", data, target="label", storage=storage,
                              splits={"train": 0.75, "test": 0.25}, description="from python")
    assert first.version == again.version == 1
    assert [v.version for v in Store.open(storage).catalog.versions("mixed")] == [1]
    assert first.producer["engine"] == "python" and first.producer["user"]
    assert first.producer["caller"].rsplit(":", 1)[0] == __file__  # this file (and line)
    changed = dict(data, x=np.asarray(data["x"]) + 1)
    assert datastack.publish("mixed", changed, target="label", storage=storage).version == 2
    assert [(f["name"], f["kind"]) for f in first.schema["fields"]] == [
        ("x", "array"), ("tokens", "ragged"), ("text", "string"), ("blob", "bytes"),
        ("label", "label")]


def test_published_fields_round_trip_through_every_wrapper(tmp_path: Path) -> None:
    storage = str(tmp_path / "store")
    data = _mixed()
    datastack.publish("mixed", data, target="label", storage=storage)
    it = datastack.load("mixed", storage=storage)
    assert it.fields["label"].names == ("even", "odd")
    assert it.fields["tokens"].shape == (None,)
    stack = (it[:10] + it[30:]).shuffle(1).map(tuple)
    for i in range(len(stack)):
        x, tokens, text, blob, label = stack[i]
        j = int(np.flatnonzero((np.asarray(data["x"]) == x).all(axis=1))[0])
        np.testing.assert_array_equal(tokens, data["tokens"][j])
        assert text == data["text"][j] and blob == data["blob"][j]
        assert it.fields["label"].names[int(label)] == data["label"][j]
    batch = stack.get_batch(range(len(stack)))
    assert batch[0].dtype == np.float32 and batch[1].dtype == object and batch[2].dtype == object
    in_memory = stack.in_memory(progress=False)
    assert in_memory[3][2] == stack[3][2]
    parts = stratified_split(it, {"a": 0.5, "b": 0.5}, seed=0)  # stratifies on the label field
    assert sorted(np.bincount(parts["a"].get_targets(4)).tolist()) == [10, 10]


def test_publish_pairs_and_errors(tmp_path: Path) -> None:
    storage = str(tmp_path / "store")
    x = np.arange(12, dtype=np.float64).reshape(6, 2)
    record = datastack.publish("pair", (x, np.arange(6)), storage=storage)
    assert record.schema["format_version"] == 1  # the classic layout
    np.testing.assert_array_equal(datastack.load("pair", storage=storage)[5][0], x[5])
    with pytest.raises(ConfigurationError, match="expected a pandas DataFrame"):
        datastack.publish("bad", [1, 2, 3], storage=storage)
    with pytest.raises(FormatError, match="different lengths"):
        datastack.publish("bad", {"a": np.zeros(3), "b": np.zeros(4)}, storage=storage)
    with pytest.raises(ConfigurationError, match="target 'nope'"):
        datastack.publish("bad", {"a": np.zeros(3)}, target="nope", storage=storage)
    assert "bad" not in Store.open(storage).catalog.datasets()


@pytest.mark.torch
def test_dataloader_two_workers_mixed_fields(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    from datastack.iterators.torch import TorchDataset, worker_init_fn

    storage = str(tmp_path / "store")
    data = _mixed()
    datastack.publish("mixed", data, target="label", storage=storage)
    it = datastack.load("mixed", storage=storage)
    for ragged in ("list", "pad"):
        dataset = TorchDataset(it, ragged=ragged)
        loader = DataLoader(dataset, batch_size=8, num_workers=2, collate_fn=dataset.collate,
                            worker_init_fn=worker_init_fn, multiprocessing_context="fork")
        seen = 0
        for x, tokens, text, blob, label in loader:
            assert isinstance(x, torch.Tensor) and x.shape == (8, 3) and x.dtype == torch.float32
            assert isinstance(text, list) and isinstance(text[0], str)
            assert isinstance(blob, list) and isinstance(label, torch.Tensor)
            if ragged == "pad":
                padded, mask = tokens
                assert padded.shape[0] == 8 and mask.sum().item() == sum(
                    len(data["tokens"][seen + k]) for k in range(8))
            else:
                assert [len(t) for t in tokens] == [len(data["tokens"][seen + k])
                                                   for k in range(8)]
            assert text == data["text"][seen : seen + 8]
            seen += 8
        assert seen == 40


@pytest.mark.torch
def test_dataloader_two_workers_images(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    from datastack.iterators.torch import TorchDataset

    files = image_files(tmp_path / "photos")
    archive = tar_folder(tmp_path / "photos", tmp_path / "p.tar.gz")
    spec = write_spec(tmp_path / "s.yaml", "photos", [archive], "    format: imagefolder\n")
    storage = str(tmp_path / "store")
    datastack.refresh(spec, storage=storage)
    it = datastack.load("photos", storage=storage).with_image_options(mode="RGB")
    dataset = TorchDataset(it)
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=dataset.collate)
    images = [img for batch, _ in loader for img in batch]
    assert len(images) == len(files)
    assert all(isinstance(i, torch.Tensor) and i.dtype == torch.uint8 and i.shape[2] == 3
               for i in images)


def test_preview_images_and_table(tmp_path: Path) -> None:
    storage = str(tmp_path / "store")
    image_files(tmp_path / "photos")
    archive = tar_folder(tmp_path / "photos", tmp_path / "p.tar.gz")
    datastack.refresh(write_spec(tmp_path / "s.yaml", "photos", [archive],
                                 "    format: imagefolder\n"), storage=storage)
    datastack.publish("mixed", _mixed(), target="label", storage=storage)
    for name in ("photos", "mixed"):
        out = tmp_path / f"{name}.png"
        done = subprocess.run(
            [sys.executable, "-m", "datastack.cli", "show", name, "--storage", storage,
             "--preview", str(out)], capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 0, done.stderr
        with Image.open(out) as picture:
            assert picture.format == "PNG" and picture.width >= 480
            colours = picture.convert("RGB").getcolors(1 << 20)
            assert colours is not None and len(colours) > (100 if name == "photos" else 2)
