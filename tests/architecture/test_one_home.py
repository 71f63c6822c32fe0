"""One home per concept: a CSV read raw equals it published; one split arithmetic everywhere;
code-defined datasets through ``DatasetFactory``."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import datastack
from datastack.errors import ConfigurationError, SpecError
from datastack.factory import DatasetFactory
from datastack.formats import get_format, open_iterator
from datastack.iterators import CSVDatasetIterator, SequenceDatasetIterator, random_split, select
from datastack.preprocessing import write_arrays
from datastack.resources import StreamedResource
from datastack.specs import SourceSpec, load_spec
from datastack.splits import SplitExpression, split_sizes
from datastack.store import Store

TABLE = (
    "sepal,colour,petal,species\n"
    "5.1,red,1.4,setosa\n"
    "4.9,,1.3,setosa\n"
    "6.3,blue,NA,virginica\n"
    "5.8,red,4.1,versicolor\n"
    ",green,5.0,virginica\n"
    "6.7,blue,4.4,versicolor\n"
)


def _spec(tmp_path: Path, text: str, extra: str = "") -> Path:
    data = tmp_path / "t.csv"
    data.write_text(text)
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "datasets:\n  flowers:\n"
        f"    sources: [{{url: {data.as_uri()}, sha256: {digest}}}]\n"
        "    format: csv\n"
        "    csv: {target: species, categorical: [colour]}\n" + extra
    )
    return spec


def test_raw_csv_iterator_equals_the_published_dataset(tmp_path: Path) -> None:
    spec = _spec(tmp_path, TABLE)
    storage = tmp_path / "store"
    [result] = datastack.refresh(spec, storage=storage)
    assert result.status == "published", result.reason
    published = datastack.load("flowers", storage=storage)
    options = load_spec(spec)["flowers"].csv
    raw = CSVDatasetIterator(StreamedResource.from_bytes("t.csv", TABLE.encode()), options=options)
    assert len(raw) == len(published) == 6
    x_raw, y_raw = raw.get_batch(range(6))
    x_pub, y_pub = published.get_batch(range(6))
    np.testing.assert_array_equal(x_raw, x_pub)  # NaN where missing, codes for colour
    np.testing.assert_array_equal(y_raw, y_pub)  # class codes of the string target
    assert np.isnan(x_raw[1, 1]) and np.isnan(x_raw[2, 2]) and np.isnan(x_raw[4, 0])
    record = Store.open(storage).catalog.latest("flowers")
    assert record.encodings == raw.encodings == {
        "colour": ["blue", "green", "red"],
        "species": ["setosa", "versicolor", "virginica"],
    }
    # The format registry gives the same iterator for the raw stream.
    same = open_iterator("csv", [StreamedResource.from_bytes("t.csv", TABLE.encode())], options)
    np.testing.assert_array_equal(same.get_batch(range(6))[0], x_pub)


def test_one_split_arithmetic_for_specs_splitters_and_expressions(tmp_path: Path) -> None:
    ratios = {"train": 0.2, "val": 0.4, "test": 0.4}
    assert split_sizes(7, ratios) == {"train": 1, "val": 3, "test": 3}
    rows = "a,y\n" + "".join(f"{i},{i % 2}\n" for i in range(7))
    spec = _spec(tmp_path, rows.replace("a,y", "sepal,colour,petal,species").replace(
        ",", ",red,1,", 1), "")
    # a 7-row table published with the same ratios
    text = "sepal,colour,petal,species\n" + "".join(f"{i},red,{i},s{i % 2}\n" for i in range(7))
    spec = _spec(tmp_path, text, "    splits: {train: 0.2, val: 0.4, test: 0.4}\n")
    [result] = datastack.refresh(spec, storage=tmp_path / "store")
    assert result.splits == {"train": 1, "val": 3, "test": 3}
    views = random_split(SequenceDatasetIterator(list(range(7))), ratios)
    assert {k: len(v) for k, v in views.items()} == {"train": 1, "val": 3, "test": 3}
    expression = SplitExpression.from_spec("train[:50%]+train[50%:]")
    assert [(s.start, s.stop) for s in expression.to_absolute({"train": 7})] == [(0, 4), (4, 7)]


def test_a_slice_that_starts_after_it_stops_is_an_error() -> None:
    splits = {"train": SequenceDatasetIterator(list(range(10)))}
    with pytest.raises(ConfigurationError, match="must not lie after the stop"):
        select(splits, "train[50%:10%]")
    assert len(select(splits, "train[5:5]")) == 0  # empty, but not reversed: allowed


def test_split_expression_round_trip_and_bounds() -> None:
    text = "train[10%:-5]+test+valid[:20]"
    expression = SplitExpression.from_spec(text)
    assert SplitExpression.from_spec(expression.to_spec()) == expression
    assert expression.splits == ["train", "test", "valid"]
    with pytest.raises(ConfigurationError, match="terms"):
        SplitExpression.from_spec("+".join(["train"] * 5000))


class Squares(DatasetFactory):
    """A dataset defined in Python: x and x**2 from a list of integers (one per line)."""

    name = "squares"
    description = "x -> x**2"

    def prepare(self, sources: Any, out_path: Path) -> Any:
        (_, resource), = sources
        x = np.array([int(line) for line in resource.read().split()], dtype=np.float32)
        return write_arrays(out_path, self.spec.name, {"train": (x[:, None], x**2)})


def _numbers(tmp_path: Path) -> SourceSpec:
    path = tmp_path / "n.txt"
    path.write_text("\n".join(str(i) for i in range(12)))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return SourceSpec(path.as_uri(), sha256=digest, filename="n.txt")


def test_dataset_defined_in_python(tmp_path: Path) -> None:
    source = _numbers(tmp_path)
    factory = type("Local", (Squares,), {"sources": (source,), "__module__": __name__})()
    storage = tmp_path / "store"
    first = factory.refresh(storage=storage)
    assert (first.status, first.version) == ("published", 1)
    assert factory.refresh(storage=storage).status == "unchanged"
    it = factory.load("train[:50%]", storage=storage)
    assert len(it) == 6 and float(it[3][1]) == 9.0
    assert datastack.load("squares", storage=storage)[11][1] == 121.0  # the default reader


def test_spec_names_a_factory_by_import_path(tmp_path: Path) -> None:
    source = _numbers(tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "datasets:\n  squares:\n"
        f"    sources: [{{url: {source.url}, sha256: {source.sha256}}}]\n"
        "    factory: tests.architecture.test_one_home:Squares\n"
    )
    [result] = datastack.refresh(spec, storage=tmp_path / "store")
    assert result.status == "published", result.reason
    assert datastack.load("squares", storage=tmp_path / "store")[2][1] == 4.0
    spec.write_text(spec.read_text().replace("test_one_home:Squares", "test_one_home:_numbers"))
    [bad] = datastack.refresh(spec, storage=tmp_path / "store")
    assert bad.status == "failed" and "not a datastack.DatasetFactory subclass" in bad.reason
    # the CLI checks it before any engine starts: a bad input, exit 2
    from datastack.cli import main

    assert main(["refresh", "--spec", str(spec), "--storage", str(tmp_path / "s2")]) == 2


def test_every_format_parses_its_own_block() -> None:
    with pytest.raises(SpecError, match=r"key 'csv.delimiter'"):
        load_spec(
            "datasets: {x: {sources: [{url: 'https://h/x.csv', md5: '" + "0" * 32 + "'}], "
            "format: csv, csv: {delimiter: ab}}}"
        )
    with pytest.raises(SpecError, match="this block is for format 'hdf5'"):
        load_spec(
            "datasets: {x: {sources: [{url: 'https://h/x.csv', md5: '" + "0" * 32 + "'}], "
            "format: csv, hdf5: {samples: a}}}"
        )
    assert get_format("hdf5").default_options().samples == "samples"
