"""Arrow, pandas, Polars and Hugging Face in and out (#23.4): ``datastack.publish`` takes them,
a loaded split gives ``to_arrow``/``to_pandas``/``to_hf``, and the round trips are equal."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import datastack
from datastack.errors import ConfigurationError, FormatError
from tests.fields.realdata import image_files, tar_folder, write_spec

pa = pytest.importorskip("pyarrow")


def _table() -> pa.Table:
    return pa.table({
        "x": pa.array(np.arange(12, dtype=np.float32)),
        "v": pa.FixedSizeListArray.from_arrays(pa.array(np.arange(36, dtype=np.float64)), 3),
        "m": pa.FixedSizeListArray.from_arrays(pa.FixedSizeListArray.from_arrays(
            pa.array(np.arange(48, dtype=np.int16)), 2), 2),
        "r": pa.array([[1, 2], [3], [], [4, 5, 6]] * 3, pa.list_(pa.int32())),
        "s": pa.array([f"héllo {i} ✓" for i in range(11)] + [""]),
        "b": pa.array([bytes([i]) * i for i in range(12)], pa.binary()),
        "flag": pa.array([i % 2 == 0 for i in range(12)]),
        "y": pa.DictionaryArray.from_arrays(pa.array([0, 1, 2] * 4, pa.int8()),
                                            pa.array(["zebra", "ant", "moth"])),
    })


def _plain(table: pa.Table) -> dict[str, list[object]]:
    return table.to_pydict()


def test_arrow_table_round_trip(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    table = _table()
    record = datastack.publish("arrow", table, target="y", storage=store)
    split = datastack.load("arrow", storage=store)
    kinds = {name: f.kind for name, f in split.fields.items()}
    assert kinds == {"x": "array", "v": "array", "m": "array", "r": "ragged", "s": "string",
                     "b": "bytes", "flag": "array", "y": "label"}
    assert split.fields["y"].names == ("zebra", "ant", "moth")  # the dictionary, in order
    assert split.fields["m"].shape == (2, 2)
    out = split.to_arrow()
    assert out.column_names == table.column_names
    assert _plain(out) == _plain(table)
    for name in ("x", "v", "m", "r", "s", "b", "flag"):
        assert out.schema.field(name).type == table.schema.field(name).type, name
    assert pa.types.is_dictionary(out.schema.field("y").type)
    # the same content again publishes nothing; publishing the output publishes nothing too
    assert datastack.publish("arrow", table, target="y", storage=store).version == record.version
    assert datastack.publish("arrow", out, target="y", storage=store).version == record.version


def test_views_shuffles_and_batches_give_the_same_rows(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    datastack.publish("arrow", _table(), target="y", storage=store)
    split = datastack.load("arrow", storage=store)
    whole = split.to_arrow()
    shuffled = split.shuffle(seed=3)
    order = [int(i) for i in shuffled.permutation]
    from datastack.iterators.arrow import to_arrow

    batched = to_arrow(shuffled, batch_rows=5)  # three chunks, the batch path
    assert batched.column("s").num_chunks == 3
    assert order != sorted(order)
    assert _plain(batched) == _plain(whole.take(order))
    assert _plain(split.as_dict().to_arrow()) == _plain(whole)
    reader = split.to_arrow_reader(batch_rows=5)  # streamed: three batches of at most 5 rows
    assert [b.num_rows for b in reader] == [5, 5, 2]
    streamed = pa.Table.from_batches(list(split.to_arrow_reader(batch_rows=5)))
    assert _plain(streamed) == _plain(whole) and streamed.schema.types == whole.schema.types
    # a reader in, a reader out: the same content, the same version
    again = datastack.publish("arrow", split.to_arrow_reader(batch_rows=4), target="y",
                              storage=store)
    assert again.version == 1
    view = datastack.load("arrow", split="train[2:7]", storage=store).to_arrow()
    assert _plain(view) == _plain(whole.slice(2, 5))
    assert view.schema.types == whole.schema.types


def test_whole_split_wraps_stored_buffers_without_copying() -> None:
    """Strings from stored values + offsets: the Arrow values buffer *is* the numpy array."""
    from datastack.fields import STRING, Field
    from datastack.iterators.arrow import _fixed_array, _from_buffers

    values = np.frombuffer(b"abcdefg", np.uint8).copy()
    offsets = np.array([0, 3, 3, 7], np.int64)
    array = _from_buffers(pa, Field("s", STRING), values, offsets, None)
    assert array.to_pylist() == ["abc", "", "defg"]
    assert array.buffers()[2].address == values.ctypes.data
    matrix = np.arange(12, dtype=np.float32).reshape(4, 3)
    fixed = _fixed_array(pa, Field("v", "array", "float32", (3,)), matrix)
    assert fixed.values.buffers()[1].address == matrix.ctypes.data
    bad = np.frombuffer(b"\xff\xfe", np.uint8).copy()
    with pytest.raises(FormatError, match="field 's': stored text is not UTF-8"):
        _from_buffers(pa, Field("s", STRING), bad, np.array([0, 2], np.int64), None)


def test_record_batch_reader_is_consumed_batch_by_batch(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    table = _table()
    pulled: list[int] = []

    def batches():
        for k, batch in enumerate(table.to_batches(max_chunksize=4)):
            pulled.append(k)
            yield batch

    reader = pa.RecordBatchReader.from_batches(table.schema, batches())
    assert pulled == []
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "datastack-publish-*")))
    record = datastack.publish("streamed", reader, target="y", storage=store)
    assert pulled == [0, 1, 2]
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "datastack-publish-*"))) == before
    assert _plain(datastack.load("streamed", storage=store).to_arrow()) == _plain(table)
    # the same rows as one table: the same content, the same fingerprint
    same = datastack.publish("streamed", table, target="y", storage=store)
    assert same.version == record.version


def test_arrow_errors_name_the_column(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    with pytest.raises(FormatError, match=r"column 'n' has 1 missing values \(first at row 1\)"):
        datastack.publish("bad", pa.table({"n": pa.array([1, None, 3])}), storage=store)
    with pytest.raises(FormatError, match=r"column 't' has Arrow type timestamp"):
        datastack.publish("bad", pa.table({"t": pa.array([0, 1], pa.timestamp("s"))}),
                          storage=store)
    with pytest.raises(FormatError, match="column 's' has 1 missing values"):
        datastack.publish("bad", pa.table({"s": pa.array(["a", None])}), storage=store)
    with pytest.raises(ConfigurationError, match="column 'nope' is not one of"):
        datastack.publish("bad", pa.table({"a": [1.0]}), target="nope", storage=store)
    with pytest.raises(FormatError, match="no rows"):
        datastack.publish("bad", pa.table({"a": pa.array([], pa.float32())}), storage=store)
    floats = pa.table({"f": pa.array([1.0, None])})  # NaN is a float's missing value
    datastack.publish("nan", floats, storage=store)
    assert np.isnan(datastack.load("nan", storage=store)[1][0])


def test_pandas_round_trip(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    store = str(tmp_path / "store")
    frame = pd.DataFrame({"a": [1.5, 2.5, 3.5, 4.5], "b": [0.0, -1.0, 2.0, 8.0],
                          "species": ["gentoo", "adelie", "gentoo", "chinstrap"]})
    datastack.publish("frame", frame, target="species", storage=store)
    back = datastack.load("frame", storage=store).to_pandas()
    assert list(back.columns) == ["a", "b", "species"]  # the feature vector spread back
    np.testing.assert_array_equal(back[["a", "b"]].to_numpy(), frame[["a", "b"]].to_numpy())
    assert back["species"].astype(str).tolist() == frame["species"].tolist()
    assert list(back["species"].cat.categories) == ["adelie", "chinstrap", "gentoo"]
    kept = datastack.load("frame", storage=store).to_pandas(flatten=False)
    assert list(kept.columns) == ["features", "species"]


def test_polars_round_trip(tmp_path: Path) -> None:
    pl = pytest.importorskip("polars")
    store = str(tmp_path / "store")
    frame = pl.DataFrame({"x": [1.0, 2.0, 3.0], "n": [1, 2, 3], "text": ["a", "bb", "ccc"],
                          "tags": [[1, 2], [], [3]]})
    datastack.publish("polars", frame, storage=store)
    back = pl.from_arrow(datastack.load("polars", storage=store).to_arrow())
    assert back.equals(frame)
    assert back.schema == frame.schema
    kinds = pl.DataFrame({"x": [1.0, 2.0, 3.0],
                          "kind": pl.Series(["b", "a", "b"], dtype=pl.Categorical)})
    datastack.publish("kinds", kinds.lazy(), target="kind", storage=store)  # a LazyFrame
    split = datastack.load("kinds", storage=store)
    assert split.fields["kind"].kind == "label" and set(split.fields["kind"].names) == {"a", "b"}
    back = pl.from_arrow(split.to_arrow())
    assert back["kind"].dtype == pl.Categorical
    assert back["kind"].cast(pl.String).to_list() == ["b", "a", "b"]


def test_hugging_face_round_trip(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    store = str(tmp_path / "store")
    features = datasets.Features({"text": datasets.Value("string"),
                                  "score": datasets.Value("float32"),
                                  "label": datasets.ClassLabel(names=["neg", "pos", "mixed"])})
    ds = datasets.Dataset.from_dict({"text": ["bad", "good", "so-so", "great"],
                                     "score": [0.1, 0.9, 0.5, 1.0], "label": [0, 1, 2, 1]},
                                    features=features)
    datastack.publish("hf", ds, target="label", storage=store)
    split = datastack.load("hf", storage=store)
    assert split.fields["label"].names == ("neg", "pos", "mixed")
    back = split.to_hf()
    assert back.features == ds.features
    assert back.to_dict() == ds.to_dict()
    picked = ds.select([3, 0])  # a dataset with an indices mapping
    datastack.publish("hf_picked", picked, storage=store)
    assert datastack.load("hf_picked", storage=store).to_hf().to_dict() == picked.to_dict()
    with pytest.raises(ConfigurationError, match="DatasetDict"):
        datastack.publish("hf", datasets.DatasetDict({"train": ds}), storage=store)


def test_images_come_out_encoded(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "photos"
    image_files(folder)
    archive = tar_folder(folder, tmp_path / "photos.tar.gz")
    spec = write_spec(tmp_path / "s.yaml", "photos", [archive], "    format: imagefolder\n")
    store = str(tmp_path / "store")
    [result] = datastack.refresh(spec, storage=store)
    assert result.status == "published", result.reason
    split = datastack.load("photos", storage=store)
    table = split.to_arrow()
    raw = split.with_image_options(decode=False)
    assert table.column("image").to_pylist() == [bytes(image) for image, _ in raw]
    hf = split.to_hf()
    assert isinstance(hf.features["image"], datasets.Image)
    assert hf.features["label"].names == list(split.fields["label"].names)
    np.testing.assert_array_equal(np.asarray(hf[0]["image"]), split[0][0])
    # and back in: from the Arrow table (field metadata) and from the HF dataset (Image)
    for name, data in (("from_arrow", table), ("from_hf", hf)):
        datastack.publish(name, data, target="label", storage=store)
        again = datastack.load(name, storage=store)
        assert again.fields == split.fields, name
        assert again.to_arrow().column("image").to_pylist() == table.column("image").to_pylist()
    broken = hf.cast_column("image", datasets.Image(decode=False)).map(
        lambda row, i: {"image": {"bytes": b"not an image" if i == 2 else row["image"]["bytes"],
                                  "path": None}}, with_indices=True)
    with pytest.raises(FormatError, match="column 'image' row 2: not a readable image"):
        datastack.publish("broken", broken, storage=store)


def test_classic_layout_to_arrow(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    x = np.arange(20, dtype=np.float64).reshape(5, 2, 2)
    datastack.publish("pair", (x, np.arange(5)), storage=store)
    table = datastack.load("pair", storage=store).to_arrow()
    assert table.column_names == ["samples", "targets"]
    np.testing.assert_array_equal(
        np.array(table.column("samples").to_pylist()), x)
    assert table.column("targets").to_pylist() == list(range(5))


def test_optional_dependencies_name_their_extra() -> None:
    code = ("import sys; sys.modules['datasets'] = None\n"
            "from datastack.iterators import SequenceDatasetIterator\n"
            "from datastack.errors import MissingDependencyError\n"
            "try:\n    SequenceDatasetIterator([1.0], [2]).to_hf()\n"
            "except MissingDependencyError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert "pip install 'datastack[hf]'" in out.stdout, out.stderr
    light = subprocess.run([sys.executable, "-c", "import sys, datastack; datastack.publish; "
                            "print(sorted({'pyarrow', 'polars', 'datasets'} & set(sys.modules)))"],
                           capture_output=True, text=True, timeout=120,
                           cwd=Path(__file__).resolve().parents[2])
    assert light.stdout.strip() == "[]", light.stderr


def test_arrow_rows_are_cut_into_splits(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    table = _table()
    datastack.publish("cut", table, target="y", splits={"train": 0.5, "test": 0.5},
                      seed=1, storage=store)
    parts = [datastack.load("cut", split=s, storage=store).to_arrow() for s in ("train", "test")]
    assert [p.num_rows for p in parts] == [6, 6]
    rows = sorted(map(repr, pa.concat_tables(parts).to_pylist()))
    assert rows == sorted(map(repr, table.to_pylist()))
    assert parts[0].column("s").to_pylist() != table.column("s").to_pylist()[:6]  # shuffled


def test_a_many_batch_reader_is_not_gathered_in_the_heap() -> None:
    """Numbers of a spooled reader go chunk by chunk into a memory-mapped scratch file,
    strings stay in their chunks (#23.4: streamed, bounded memory)."""
    from datastack._arrow_in import ArrowRows, arrow_columns

    table = _table()
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=4))
    _, columns, _ = arrow_columns(reader, "y")
    assert isinstance(columns["x"], np.memmap) and isinstance(columns["flag"], np.memmap)
    assert isinstance(columns["s"], ArrowRows) and columns["s"].array.num_chunks == 3
    np.testing.assert_array_equal(columns["x"], table["x"].to_numpy())
    assert columns["s"].take(np.array([0, 5, 11])) == [table["s"][i].as_py() for i in (0, 5, 11)]
