"""Round trips: raw files generated with numpy -> preprocess -> HDF5 equals numpy's own parse."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import h5py
import numpy as np
import pytest

from datastack.canonical.writer import SAMPLE_CHUNK_BYTES
from datastack.preprocessing import split_indices, split_sizes
from tests.preprocessing.helpers import make_spec, read_h5, run, write_idx

RNG = np.random.default_rng(1234)


def _csv_text(data: np.ndarray, header: list[str] | None, delimiter: str = ",") -> str:
    buf = io.StringIO()
    np.savetxt(
        buf,
        data,
        delimiter=delimiter,
        fmt="%.17g",
        header=delimiter.join(header) if header else "",
        comments="",
    )
    return buf.getvalue() if header else buf.getvalue().lstrip("\n")


@pytest.mark.parametrize("in_memory", [False, True])
def test_csv_header_numeric_with_splits(tmp_path: Path, in_memory: bool) -> None:
    data = np.column_stack([RNG.normal(size=(103, 3)), RNG.integers(0, 4, 103)])
    (tmp_path / "d.csv").write_text(_csv_text(data, ["a", "b", "c", "y"]))
    spec = make_spec(tmp_path, ["d.csv"], format="csv", splits={"train": 0.7, "test": 0.3}, seed=7)
    prepared = run(spec, tmp_path / "out.h5", in_memory=in_memory)
    expected = np.genfromtxt(tmp_path / "d.csv", delimiter=",", skip_header=1)
    out = read_h5(tmp_path / "out.h5")
    assert prepared.splits == {"train": 72, "test": 31} == split_sizes(103, spec.splits or {})
    parts = split_indices(103, {"train": 0.7, "test": 0.3}, seed=7)
    for split, idx in parts.items():
        np.testing.assert_array_equal(out[split]["samples"], expected[idx, :3].astype("f4"))
        np.testing.assert_array_equal(out[split]["targets"], expected[idx, 3].astype(np.int64))
        assert out[split]["targets"].dtype == np.int64
    assert prepared.schema["features"] == ["a", "b", "c"] and prepared.schema["target"] == "y"
    # float32 features by default (docs/preprocessing.md)
    assert prepared.schema["splits"]["train"]["samples"] == {"shape": [72, 3], "dtype": "f4"}


def test_csv_no_header_gzip_skip_rows_delimiter_target_index(tmp_path: Path) -> None:
    data = np.column_stack([RNG.integers(0, 9, 50), RNG.normal(size=(50, 2))])
    text = "# comment line\n# another\n" + _csv_text(data, None, ";")
    (tmp_path / "d.csv.gz").write_bytes(gzip.compress(text.encode()))
    spec = make_spec(
        tmp_path,
        ["d.csv.gz"],
        format="csv",
        csv={"header": False, "skip_rows": 2, "delimiter": ";", "target": 0},
    )
    prepared = run(spec, tmp_path / "out.h5")
    expected = np.genfromtxt(io.StringIO(text), delimiter=";", skip_header=2)
    out = read_h5(tmp_path / "out.h5")
    assert prepared.splits == {"train": 50}
    np.testing.assert_array_equal(out["train"]["samples"], expected[:, 1:].astype("f4"))
    np.testing.assert_array_equal(out["train"]["targets"], expected[:, 0].astype(np.int64))
    assert prepared.schema["features"] == ["column_1", "column_2"]


def test_csv_categorical_missing_and_stratify(tmp_path: Path) -> None:
    rows = ["size,colour,weight,kind"]
    kinds = ["cat", "dog", "emu"]
    colours = ["red", "blue", "", "green"]
    for i in range(60):
        weight = "NA" if i % 13 == 0 else f"{i * 0.5}"
        rows.append(f"{i},{colours[i % 4]},{weight},{kinds[i % 3]}")
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n\n")  # trailing blank line: not a row
    spec = make_spec(
        tmp_path,
        ["d.csv"],
        format="csv",
        csv={"target": "kind"},
        splits={"train": 0.5, "test": 0.5},
        stratify=True,
    )
    prepared = run(spec, tmp_path / "out.h5")
    assert prepared.encodings == {"colour": ["blue", "green", "red"], "kind": ["cat", "dog", "emu"]}
    out = read_h5(tmp_path / "out.h5")
    assert prepared.splits == {"train": 30, "test": 30}
    labels = np.array([i % 3 for i in range(60)])
    parts = split_indices(60, {"train": 0.5, "test": 0.5}, 0, labels)
    for split, idx in parts.items():
        np.testing.assert_array_equal(out[split]["targets"], labels[idx])
        assert np.bincount(out[split]["targets"]).tolist() == [10, 10, 10]  # stratified
        samples = out[split]["samples"]
        np.testing.assert_array_equal(samples[:, 0], idx.astype(float))
        colour = np.array(
            [{"red": 2, "blue": 0, "": np.nan, "green": 1}[colours[i % 4]] for i in idx]
        )
        np.testing.assert_array_equal(samples[:, 1], colour)  # NaN == NaN under this helper
        weight = np.array([np.nan if i % 13 == 0 else i * 0.5 for i in idx])
        np.testing.assert_array_equal(samples[:, 2], weight)


def test_csv_forced_categorical_numeric_labels_sort_numerically(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("zip,y\n10,1\n9,0\n100,1\n9,0\n")
    spec = make_spec(tmp_path, ["d.csv"], format="csv", csv={"categorical": ["zip"]})
    prepared = run(spec, tmp_path / "o.h5")
    assert prepared.encodings == {"zip": ["9", "10", "100"]}
    np.testing.assert_array_equal(
        read_h5(tmp_path / "o.h5")["train"]["samples"][:, 0], [1, 0, 2, 0]
    )


def test_csv_float_target_stays_float(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("x,y\n1,0.5\n2,1.5\n")
    run(make_spec(tmp_path, ["d.csv"], format="csv"), tmp_path / "o.h5")
    targets = read_h5(tmp_path / "o.h5")["train"]["targets"]
    assert targets.dtype == np.float64 and targets.tolist() == [0.5, 1.5]


@pytest.mark.parametrize("fortran", [False, True])
@pytest.mark.parametrize("in_memory", [False, True])
def test_npy_pair(tmp_path: Path, fortran: bool, in_memory: bool) -> None:
    x = RNG.normal(size=(41, 5, 3)).astype(np.float32)
    y = RNG.integers(0, 3, 41).astype(">i4")  # big-endian on disk: stored native
    np.save(tmp_path / "x.npy", np.asfortranarray(x) if fortran else x)
    np.save(tmp_path / "y.npy", y)
    spec = make_spec(
        tmp_path,
        [{"name": "x.npy", "role": "samples"}, {"name": "y.npy", "role": "targets"}],
        format="npy",
    )
    assert run(spec, tmp_path / "o.h5", in_memory=in_memory).splits == {"train": 41}
    out = read_h5(tmp_path / "o.h5")["train"]
    np.testing.assert_array_equal(out["samples"], np.load(tmp_path / "x.npy"))
    np.testing.assert_array_equal(out["targets"], y)
    assert out["targets"].dtype == np.dtype("<i4")


def test_npy_gzipped_samples_only(tmp_path: Path) -> None:
    x = RNG.integers(0, 255, (30, 4), dtype=np.uint8)
    buf = io.BytesIO()
    np.save(buf, x)
    (tmp_path / "x.npy.gz").write_bytes(gzip.compress(buf.getvalue()))
    spec = make_spec(tmp_path, [{"name": "x.npy.gz", "role": "samples"}], format="npy")
    run(spec, tmp_path / "o.h5")
    out = read_h5(tmp_path / "o.h5")["train"]
    np.testing.assert_array_equal(out["samples"], x)
    assert "targets" not in out


def test_npz(tmp_path: Path) -> None:
    x, y = RNG.normal(size=(20, 2)), RNG.integers(0, 2, 20)
    np.savez_compressed(tmp_path / "d.npz", images=x, labels=y)
    spec = make_spec(
        tmp_path,
        ["d.npz"],
        format="npz",
        npz={"samples": "images", "targets": "labels"},
        splits={"train": 0.5, "test": 0.5},
    )
    assert run(spec, tmp_path / "o.h5").splits == {"train": 10, "test": 10}
    out = read_h5(tmp_path / "o.h5")
    for split, idx in split_indices(20, {"train": 0.5, "test": 0.5}, 0).items():
        np.testing.assert_array_equal(out[split]["samples"], x[idx])
        np.testing.assert_array_equal(out[split]["targets"], y[idx])


@pytest.mark.parametrize("compress", [False, True])
def test_idx_by_role_and_by_dims(tmp_path: Path, compress: bool) -> None:
    suffix = ".gz" if compress else ""
    images = {
        s: RNG.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        for s, n in [("train", 60), ("test", 10)]
    }
    labels = {s: RNG.integers(0, 10, len(a), dtype=np.uint8) for s, a in images.items()}
    files: list[str | dict[str, object]] = []
    for split in ("train", "test"):
        write_idx(tmp_path / f"{split}-images{suffix}", images[split], compress)
        write_idx(tmp_path / f"{split}-labels{suffix}", labels[split], compress)
        files.append({"name": f"{split}-images{suffix}", "split": split})  # role by dims
        files.append({"name": f"{split}-labels{suffix}", "split": split, "role": "targets"})
    spec = make_spec(tmp_path, files, format="idx")
    assert run(spec, tmp_path / "o.h5").splits == {"train": 60, "test": 10}
    out = read_h5(tmp_path / "o.h5")
    for split in ("train", "test"):
        np.testing.assert_array_equal(out[split]["samples"], images[split])
        np.testing.assert_array_equal(out[split]["targets"], labels[split])


def test_idx_wide_dtype(tmp_path: Path) -> None:
    x = RNG.normal(size=(7, 3)).astype(">f8")
    write_idx(tmp_path / "x.idx", x)
    write_idx(tmp_path / "y.idx", np.arange(7, dtype=">i4"))
    run(make_spec(tmp_path, ["x.idx", "y.idx"], format="idx"), tmp_path / "o.h5")
    out = read_h5(tmp_path / "o.h5")["train"]
    np.testing.assert_array_equal(out["samples"], x)
    np.testing.assert_array_equal(out["targets"], np.arange(7))


def test_hdf5_passthrough(tmp_path: Path) -> None:
    x, y = RNG.normal(size=(25, 3, 2)), RNG.integers(0, 5, 25)
    with h5py.File(tmp_path / "in.h5", "w") as f:
        f["grp/images"] = x
        f["labels"] = y
        f["alias"] = h5py.SoftLink("/labels")  # soft links inside the file are fine
    spec = make_spec(
        tmp_path,
        ["in.h5"],
        format="hdf5",
        hdf5={"samples": "grp/images", "targets": "labels"},
        splits={"a": 0.6, "b": 0.4},
        seed=3,
    )
    assert run(spec, tmp_path / "o.h5").splits == {"a": 15, "b": 10}
    out = read_h5(tmp_path / "o.h5")
    for split, idx in split_indices(25, {"a": 0.6, "b": 0.4}, 3).items():
        np.testing.assert_array_equal(out[split]["samples"], x[idx])
        np.testing.assert_array_equal(out[split]["targets"], y[idx])


@pytest.mark.parametrize(
    ("compression", "h5_filter", "opts"),
    [(None, None, None), ("none", None, None), ("lzf", "lzf", None), ("gzip", "gzip", 4)],
)
def test_layout_chunks_compression_attrs(
    tmp_path: Path, compression: str | None, h5_filter: str | None, opts: int | None
) -> None:
    """Default: uncompressed, ~32 KiB chunks along axis 0, no shuffle; the spec picks lzf/gzip."""
    x = RNG.integers(0, 255, (3000, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.arange(3000))
    fields = {} if compression is None else {"compression": compression}
    spec = make_spec(
        tmp_path,
        [{"name": "x.npy", "role": "samples"}, {"name": "y.npy", "role": "targets"}],
        format="npy",
        **fields,
    )
    run(spec, tmp_path / "o.h5")
    with h5py.File(tmp_path / "o.h5") as f:
        assert f.attrs["name"] == "ds" and f.attrs["datastack_format"] == 1
        for role in ("samples", "targets"):
            dset = f[f"train/{role}"]
            assert dset.compression == h5_filter and dset.compression_opts == opts
            assert not dset.shuffle and dset.chunks is not None
        assert f["train/samples"].chunks == (SAMPLE_CHUNK_BYTES // 784, 28, 28) == (41, 28, 28)
        np.testing.assert_array_equal(f["train/samples"][()], x)
        assert f["train"].attrs["length"] == 3000
    # HDF5 1.10 format (superblock v3): compact chunk index, one round trip per remote read
    assert (tmp_path / "o.h5").read_bytes()[8] == 3
    assert not list(tmp_path.glob(".datastack-prep-*")), "work folder left behind"


def test_writer_rejects_unknown_compression(tmp_path: Path) -> None:
    from datastack.canonical.writer import CanonicalWriter, write_arrays
    from datastack.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"'zstd' is not supported; expected one of"):
        write_arrays(
            tmp_path / "o.h5", "ds", {"train": (np.zeros((2, 1)), None)}, compression="zstd"
        )
    assert not list(tmp_path.iterdir()), "nothing left behind"
    with CanonicalWriter(tmp_path / "w.h5", "ds", compression=None) as writer:
        assert writer.compression == "none"


def test_split_rules() -> None:
    # largest remainder: 3.3, 3.3, 3.4 -> the leftover sample goes to c
    assert split_sizes(10, {"a": 0.33, "b": 0.33, "c": 0.34}) == {"a": 3, "b": 3, "c": 4}
    assert split_sizes(0, {"a": 0.5, "b": 0.5}) == {"a": 0, "b": 0}
    one = split_indices(100, {"a": 0.5, "b": 0.5}, seed=1)
    two = split_indices(100, {"a": 0.5, "b": 0.5}, seed=1)
    other = split_indices(100, {"a": 0.5, "b": 0.5}, seed=2)
    assert all(np.array_equal(one[k], two[k]) for k in one)
    assert not np.array_equal(one["a"], other["a"])
    assert np.array_equal(np.sort(np.concatenate(list(one.values()))), np.arange(100))


class _OneWay(io.RawIOBase):
    """A non-seekable stream (like a socket)."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        return self._inner.readinto(buffer)


def test_non_seekable_resources_are_read_correctly(tmp_path: Path) -> None:
    from datastack.preprocessing import preprocess
    from datastack.resources import StreamedResource

    images = RNG.integers(0, 255, (9, 4, 4), dtype=np.uint8)
    write_idx(tmp_path / "x.idx", images)
    write_idx(tmp_path / "y.idx", np.arange(9, dtype=np.uint8))
    spec = make_spec(tmp_path, ["x.idx", "y.idx"], format="idx")  # roles by dims: header read twice
    srcs = [
        (s, StreamedResource(s.filename, lambda p=tmp_path / s.filename: _OneWay(p.read_bytes())))
        for s in spec.sources
    ]
    preprocess(spec, srcs, tmp_path / "o.h5")
    np.testing.assert_array_equal(read_h5(tmp_path / "o.h5")["train"]["samples"], images)
