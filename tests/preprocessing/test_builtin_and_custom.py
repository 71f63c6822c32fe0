"""Built-in specs parse and preprocess look-alike files; the preprocessor: extension point works."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from datastack.builtin import builtin_spec_path, load_builtin_specs
from datastack.errors import FormatError, SpecError
from datastack.preprocessing import PreparedData, preprocess, write_arrays
from datastack.resources import StreamedResource
from datastack.specs import DatasetSpec, SourceSpec, load_spec
from tests.preprocessing.helpers import make_spec, read_h5, resources, write_idx

RNG = np.random.default_rng(5)


def _local(spec: DatasetSpec, folder: Path) -> DatasetSpec:
    """The same spec with each source pointing at ``folder/<filename>`` (md5 recomputed)."""
    sources = tuple(
        dataclasses.replace(
            s,
            url=(folder / s.filename).as_uri(),
            md5=hashlib.md5((folder / s.filename).read_bytes()).hexdigest(),
        )
        for s in spec.sources
    )
    return dataclasses.replace(spec, sources=sources)


def test_builtin_specs_parse_with_real_urls_and_checksums() -> None:
    specs = load_builtin_specs()
    assert set(specs) == {"mnist", "fashion-mnist", "kmnist", "cifar10"}
    assert builtin_spec_path().is_file()
    for spec in specs.values():
        assert spec.schedule is None
        for source in spec.sources:
            assert source.url.startswith(("https://", "http://"))
            assert source.md5 is not None and len(source.md5) == 32
    assert specs["mnist"].sources[0].md5 == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert [s.split for s in specs["mnist"].sources] == ["train", "train", "test", "test"]
    assert specs["cifar10"].preprocessor == "datastack.builtin.cifar:Cifar10Binary"


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "kmnist"])
def test_builtin_idx_datasets_on_look_alike_files(tmp_path: Path, name: str) -> None:
    spec = load_builtin_specs()[name]
    arrays = {}
    for source in spec.sources:
        n = 60 if source.split == "train" else 10
        array = (
            RNG.integers(0, 255, (n, 28, 28), dtype=np.uint8)
            if source.role == "samples"
            else RNG.integers(0, 10, n, dtype=np.uint8)
        )
        write_idx(tmp_path / source.filename, array, compress=True)
        arrays[(source.split, source.role)] = array
    local = _local(spec, tmp_path)
    prepared = preprocess(local, resources(local), tmp_path / "o.h5")
    assert prepared.splits == {"train": 60, "test": 10}
    out = read_h5(tmp_path / "o.h5")
    for split in ("train", "test"):
        np.testing.assert_array_equal(out[split]["samples"], arrays[(split, "samples")])
        np.testing.assert_array_equal(out[split]["targets"], arrays[(split, "targets")])


def _cifar_tarball(path: Path, per_batch: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    data: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"train": [], "test": []}
    with tarfile.open(path, "w:gz") as tf:
        names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
        for name in names:
            labels = RNG.integers(0, 10, per_batch, dtype=np.uint8)
            images = RNG.integers(0, 255, (per_batch, 3, 32, 32), dtype=np.uint8)
            payload = np.concatenate([labels[:, None], images.reshape(per_batch, -1)], 1).tobytes()
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
            data["test" if name.startswith("test") else "train"].append((images, labels))
        meta = b"airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n"
        info = tarfile.TarInfo("cifar-10-batches-bin/batches.meta.txt")
        info.size = len(meta)
        tf.addfile(info, io.BytesIO(meta))
    return {
        k: (np.concatenate([p[0] for p in v]), np.concatenate([p[1] for p in v]))
        for k, v in data.items()
    }


def test_builtin_cifar10_on_a_look_alike_tarball(tmp_path: Path) -> None:
    spec = load_builtin_specs()["cifar10"]
    expected = _cifar_tarball(tmp_path / spec.sources[0].filename, per_batch=7)
    local = _local(spec, tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    prepared = preprocess(local, resources(local), out_dir / "o.h5")
    assert prepared.splits == {"train": 35, "test": 7}
    assert prepared.encodings["label"][:2] == ["airplane", "automobile"]
    out = read_h5(out_dir / "o.h5")
    for split in ("train", "test"):
        np.testing.assert_array_equal(out[split]["samples"], expected[split][0])
        np.testing.assert_array_equal(out[split]["targets"], expected[split][1])
    assert sorted(p.name for p in out_dir.iterdir()) == ["o.h5"]


def test_builtin_cifar10_rejects_bad_records(tmp_path: Path) -> None:
    spec = load_builtin_specs()["cifar10"]
    with tarfile.open(tmp_path / spec.sources[0].filename, "w:gz") as tf:
        info = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
        info.size = 100
        tf.addfile(info, io.BytesIO(b"\x00" * 100))
    local = _local(spec, tmp_path)
    with pytest.raises(FormatError, match="not a positive multiple of 3073"):
        preprocess(local, resources(local), tmp_path / "o.h5")


# -- the extension point: a Preprocessor class referenced by import path -----------------------
class SquaresPreprocessor:
    """Example custom preprocessor: reads one integer per line, stores (x, x**2) pairs."""

    def __call__(
        self,
        spec: DatasetSpec,
        sources: Sequence[tuple[SourceSpec, StreamedResource]],
        out_path: Path,
    ) -> PreparedData:
        values = np.array([int(v) for v in sources[0][1].read().split()], dtype=np.int64)
        power = int(spec.extra.get("power", 2))
        return write_arrays(
            out_path,
            spec.name,
            {"train": (values[:, None], values**power)},
            features=["x"],
            target="x_squared",
        )


class LyingPreprocessor:
    def __call__(self, spec: DatasetSpec, sources: object, out_path: Path) -> PreparedData:
        write_arrays(out_path, spec.name, {"train": (np.zeros((2, 1)), None)})
        return PreparedData({"train": 5})


def test_custom_preprocessor_by_import_path(tmp_path: Path) -> None:
    (tmp_path / "n.txt").write_text("1\n2\n3\n")
    spec = make_spec(
        tmp_path,
        ["n.txt"],
        preprocessor="tests.preprocessing.test_builtin_and_custom:SquaresPreprocessor",
        extra={"power": 3},
    )
    prepared = preprocess(spec, resources(spec), tmp_path / "o.h5")
    assert prepared.splits == {"train": 3} and prepared.schema["target"] == "x_squared"
    out = read_h5(tmp_path / "o.h5")["train"]
    np.testing.assert_array_equal(out["targets"], [1, 8, 27])


class ExplicitGzipPreprocessor:
    """Passes compression explicitly: that wins over the spec's setting."""

    def __call__(self, spec: DatasetSpec, sources: object, out_path: Path) -> PreparedData:
        return write_arrays(
            out_path, spec.name, {"train": (np.zeros((4, 3)), None)}, compression="gzip"
        )


@pytest.mark.parametrize(
    ("reference", "compression", "expected"),
    [
        ("SquaresPreprocessor", None, None),
        ("SquaresPreprocessor", "lzf", "lzf"),
        ("ExplicitGzipPreprocessor", "lzf", "gzip"),
    ],
)
def test_custom_preprocessor_follows_spec_compression(
    tmp_path: Path, reference: str, compression: str | None, expected: str | None
) -> None:
    """write_arrays without compression= in a custom preprocessor uses the spec's key."""
    import h5py

    from datastack.canonical.writer import current_default_compression

    (tmp_path / "n.txt").write_text("1\n2\n3\n")
    fields = {} if compression is None else {"compression": compression}
    spec = make_spec(
        tmp_path,
        ["n.txt"],
        preprocessor=f"tests.preprocessing.test_builtin_and_custom:{reference}",
        **fields,
    )
    preprocess(spec, resources(spec), tmp_path / "o.h5")
    with h5py.File(tmp_path / "o.h5") as f:
        assert f["train/samples"].compression == expected
    assert current_default_compression() == "none"  # reset after the call


def test_custom_preprocessor_errors(tmp_path: Path) -> None:
    (tmp_path / "n.txt").write_text("1\n")
    missing = make_spec(tmp_path, ["n.txt"], preprocessor="no_such_module_x:Thing")
    with pytest.raises(SpecError, match=r"dataset 'ds': key 'preprocessor': cannot import"):
        preprocess(missing, resources(missing), tmp_path / "o.h5")
    lying = make_spec(
        tmp_path,
        ["n.txt"],
        preprocessor="tests.preprocessing.test_builtin_and_custom:LyingPreprocessor",
    )
    with pytest.raises(FormatError, match=r"reported splits \{'train': 5\}.*holds \{'train': 2\}"):
        preprocess(lying, resources(lying), tmp_path / "o.h5")


def test_examples_spec_preprocesses(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2] / "examples"
    specs = load_spec(root / "datasets.yaml")
    assert set(specs) == {"iris", "wine", "digits"}
    sizes = sum(p.stat().st_size for p in (root / "data").iterdir())
    assert sizes < 100_000
    iris = preprocess(specs["iris"], resources(specs["iris"]), tmp_path / "iris.h5")
    assert iris.splits == {"train": 120, "test": 30}
    assert iris.encodings == {"species": ["setosa", "versicolor", "virginica"]}
    expected = np.genfromtxt(
        root / "data" / "iris.csv", delimiter=",", skip_header=1, usecols=range(4)
    )
    out = read_h5(tmp_path / "iris.h5")
    both = np.concatenate([out["train"]["samples"], out["test"]["samples"]])
    # features are float32 by default (csv.dtype: float64 keeps doubles)
    np.testing.assert_array_equal(
        np.sort(both, axis=0), np.sort(expected.astype(np.float32), axis=0)
    )
    wine = preprocess(specs["wine"], resources(specs["wine"]), tmp_path / "wine.h5")
    # 178 x (0.7, 0.15, 0.15) = 124.6, 26.7, 26.7: largest remainders get the 2 left over
    assert wine.splits == {"train": 124, "validation": 27, "test": 27}
    digits = preprocess(specs["digits"], resources(specs["digits"]), tmp_path / "digits.h5")
    assert digits.splits == {"train": 300}
