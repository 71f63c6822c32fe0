"""The canonical layout of each field kind, and what importing the new modules costs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

import datastack
from datastack.fields import IMAGE, RAGGED, STRING, Field
from datastack.preprocessing import read_prepared


def test_variable_fields_are_values_plus_offsets(tmp_path: Path) -> None:
    storage = tmp_path / "store"
    texts = ["", "a", "ünïcödé ✓", "x" * 1000]
    ragged = [np.arange(k * 2, dtype=np.int32).reshape(k, 2) for k in (0, 1, 3, 2)]
    datastack.publish("kinds", {"text": texts, "ragged": ragged, "y": np.arange(4)},
                      target="y", storage=storage)
    [path] = list(storage.rglob("shards/*.h5"))  # one shard: the version's only split
    with h5py.File(path, "r") as f:
        assert f.attrs["datastack_format"] == 2
        group = f["train"]
        assert group["text/offsets"][()].tolist() == np.cumsum(
            [0] + [len(t.encode()) for t in texts]).tolist()
        assert group["text/values"].dtype == np.uint8 and group["text/values"].chunks
        assert group["text/offsets"].chunks
        assert group["ragged/shapes"][()].tolist() == [[0, 2], [1, 2], [3, 2], [2, 2]]
        assert group["ragged/values"].dtype == np.int32
        assert group["text/values"].id.get_create_plist().get_nfilters() == 0
        for name in ("text", "ragged"):  # no HDF5 variable-length types, no global heap
            for dset in group[name].values():
                assert h5py.check_vlen_dtype(dset.dtype) is None
    prepared = read_prepared(path)
    assert prepared.schema["fields"][0] == {"name": "text", "kind": "string", "dtype": "str",
                                            "shape": []}
    it = datastack.load("kinds", storage=storage)
    assert [it[i][0] for i in range(4)] == texts
    for i in range(4):
        np.testing.assert_array_equal(it[i][1], ragged[i])


def test_field_descriptions() -> None:
    image = Field("image", IMAGE, modes=("RGB",))
    assert image.shape == (None, None, 3) and image["kind"] == "image"
    assert Field("t", STRING).variable and not Field("x", "array").variable
    assert Field.from_dict(Field("r", RAGGED, "float32", (None, 3)).to_dict()).shape == (None, 3)
    with pytest.raises(datastack.DatastackError, match="unknown kind 'tensor'"):
        Field("x", "tensor")


def test_new_modules_import_no_optional_heavy_dependency() -> None:
    code = (
        "import sys, datastack, datastack.fields, datastack.formats, datastack.publish, "
        "datastack.preview, datastack.canonical.records\n"
        "from datastack.formats import FORMATS\n"
        "for n in FORMATS.names(): FORMATS.get(n)\n"
        "print(sorted(m for m in ('pandas', 'pyarrow', 'PIL', 'openpyxl', 'torch') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.mongo
def test_one_random_text_over_gridfs_costs_at_most_two_block_reads(
    tmp_path: Path, mongo_uri: str
) -> None:
    from datastack.canonical.records import RecordsDatasetIterator
    from datastack.storage.cache import default_cache
    from datastack.storage.gridfs import GridFSStorageConnector
    from tests.fields.realdata import descr_texts

    corpus = "\n".join(sorted(descr_texts().values()))
    rng = np.random.default_rng(0)
    starts = rng.integers(0, len(corpus) - 3000, 3000)
    texts = [corpus[s : s + int(n)] for s, n in zip(starts, rng.integers(20, 3000, 3000),
                                                    strict=True)]
    datastack.publish("texts", {"text": texts, "y": np.arange(3000) % 3}, target="y",
                      storage=tmp_path / "s")
    [path] = list((tmp_path / "s").rglob("shards/*.h5"))
    store = GridFSStorageConnector(mongo_uri, chunk_size=64 * 1024, readahead_bytes=0)
    store.set_resource("t/data.h5", path)
    it = RecordsDatasetIterator(store.get_resource("t/data.h5"), "train")
    it[0]  # open: metadata, offsets and labels
    reader = it._state().resource.stream
    worst = 0
    for i in rng.choice(3000, size=40, replace=False).tolist():
        default_cache().clear()
        reader._local = {}
        before = reader.fetch_calls
        text, label = it[i]
        assert text == texts[i] and int(label) == i % 3
        worst = max(worst, reader.fetch_calls - before)
    assert 1 <= worst <= 2
    default_cache().clear()
    reader._local = {}
    before = reader.fetch_calls
    batch = it.get_batch(rng.choice(3000, size=64, replace=False))
    assert reader.fetch_calls - before == 1 and len(batch[0]) == 64
    store.close()


def test_stored_text_that_is_not_utf8_names_the_sample(tmp_path: Path) -> None:
    """A byte flipped in stored text: a batch read (the one-bytes-per-run path) still says
    which sample and field, as a single read does; the other samples read fine."""
    from datastack.canonical.records import RecordsDatasetIterator
    from datastack.errors import FormatError
    from datastack.resources import StreamedResource

    texts = [f"sample number {i:04d} " * 3 for i in range(50)]
    datastack.publish("texts", {"text": texts, "y": np.arange(50) % 2}, target="y",
                      storage=tmp_path / "s")
    [path] = list((tmp_path / "s").rglob("shards/*.h5"))
    raw = bytearray(path.read_bytes())
    at = raw.index(b"sample number 0017 ")
    raw[at] = 0xFF
    it = RecordsDatasetIterator(StreamedResource.from_bytes("t.h5", bytes(raw)), "train")
    good, bad = 0, 0
    for i in range(len(it)):  # samples one by one: only the flipped one fails
        try:
            good += it[i][0] in texts
        except FormatError as exc:
            bad += 1
            assert "field 'text'" in str(exc) and "not UTF-8" in str(exc)
    assert (good, bad) == (49, 1)
    with pytest.raises(FormatError, match=r"sample \d+ field 'text'.*not UTF-8"):
        it.get_batch(np.arange(len(it)))
