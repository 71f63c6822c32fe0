"""Inputs that used to raise raw exceptions get a DatastackError saying what, expected vs
actual and what to do (#26.20)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import datastack
from datastack.errors import (
    ConfigurationError,
    DatastackError,
    FormatError,
    SpecError,
    StorageError,
)
from tests.fields.realdata import write_spec

pd = pytest.importorskip("pandas")

ARRAYS = {"x": np.arange(4, dtype=np.float32), "y": np.array([0, 1, 0, 1])}


def _publish(tmp_path: Path, data: Any, **kwargs: Any) -> Any:
    return datastack.publish("t", data, storage=str(tmp_path / "store"), **kwargs)


@pytest.mark.parametrize("columns", [["a", "a", "y"], ["a", 1, "1"], [0, 0, 1]])
def test_publish_duplicate_column_names(columns: list[Any], tmp_path: Path) -> None:
    frame = pd.DataFrame([[1, 2, 0], [3, 4, 1]], columns=columns)
    with pytest.raises(ConfigurationError, match=r"appears more than once.*expected unique"):
        _publish(tmp_path, frame)


@pytest.mark.parametrize("key", [1, ("a",), 2.5, None, b"x"])
def test_publish_dict_with_a_non_string_key(key: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="column names must be strings; got"):
        _publish(tmp_path, {key: np.arange(4), "y": np.arange(4)})


SURROGATES = {
    "value": ({"t": ["ok", "a\ud800b"], "y": np.arange(2)}, {}, "column 't', row 1"),
    "label": ({"x": np.arange(2), "y": ["a", "\udc80"]}, {"target": "y"}, "column 'y', row 1"),
    "name": ({"x\udfff": np.arange(2), "y": np.arange(2)}, {}, "column names, row 0"),
    "frame": (None, {"text": ["t"]}, "column 't', row 2"),
}


@pytest.mark.parametrize("case", sorted(SURROGATES))
def test_publish_lone_surrogate(case: str, tmp_path: Path) -> None:
    data, kwargs, where = SURROGATES[case]
    if data is None:
        data = pd.DataFrame({"t": pd.Series(["a", "b", "c\ud834"], dtype=object),
                             "y": [0, 1, 0]})
    with pytest.raises(FormatError, match="lone surrogate") as info:
        _publish(tmp_path, data, **kwargs)
    assert where in str(info.value) and "errors='replace'" in str(info.value)
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").rglob("*.h5"))


@pytest.mark.parametrize("seed", [pytest.param(10**5000, id="5000-digits"), -1, 2**64, 1.5,
                                  "7", True])
def test_publish_seed_out_of_range(seed: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="seed must be an integer from 0 to 2\\^64 - 1"
                       ) as info:
        _publish(tmp_path, ARRAYS, splits={"a": 0.5, "b": 0.5}, seed=seed)
    assert len(str(info.value)) < 300


def _csv_spec(tmp_path: Path, extra: str) -> Path:
    table = tmp_path / "t.csv"
    table.write_text("a,y\n1,0\n2,1\n3,0\n4,1\n")
    return write_spec(tmp_path / "s.yaml", "t", [table], "    format: csv\n" + extra)


@pytest.mark.parametrize("digits", [4301, 5000, 20000])
def test_spec_seed_with_thousands_of_digits(digits: int, tmp_path: Path) -> None:
    spec = _csv_spec(tmp_path, f"    seed: {'9' * digits}\n    splits: {{a: 0.5, b: 0.5}}\n")
    with pytest.raises(SpecError, match=f"line 5: an integer of {digits} characters") as info:
        datastack.refresh(spec, storage=str(tmp_path / "store"))
    assert len(str(info.value)) < 400


@pytest.mark.parametrize("expression", [
    "train[:" + "9" * 5000 + "%]", "train[" + "9" * 5000 + ":]", "train[-" + "1" * 4400 + ":]",
    "train[:" + "9" * 19 + "]",
], ids=["percent-5000-digits", "start-5000-digits", "negative-4400-digits", "count-19-digits"])
def test_split_expression_with_huge_numbers(expression: str, tmp_path: Path) -> None:
    [result] = datastack.refresh(_csv_spec(tmp_path, ""), storage=str(tmp_path / "store"))
    assert result.status == "published"
    with pytest.raises(ConfigurationError, match="digits; expected a sample count") as info:
        datastack.load("t", expression, storage=str(tmp_path / "store"))
    assert len(str(info.value)) < 400


@pytest.mark.parametrize("option", ["tlsCAFile", "tlsCertificateKeyFile", "tlsCRLFile"])
@pytest.mark.parametrize("problem", ["missing", "folder"])
def test_mongodb_uri_naming_a_missing_tls_file(option: str, problem: str, tmp_path: Path) -> None:
    path = tmp_path / ("absent.pem" if problem == "missing" else "")
    uri = f"mongodb://127.0.0.1:9/db?tls=true&{option}={path}"
    with pytest.raises(ConfigurationError) as info:
        datastack.load("t", storage=uri)
    message = str(info.value)
    assert option in message and str(path) in message and "readable PEM file" in message
    assert ("does not exist" if problem == "missing" else "not a regular file") in message


def test_max_columns_setting_that_is_not_a_number(monkeypatch: pytest.MonkeyPatch) -> None:
    from datastack._env import env_int

    monkeypatch.setenv("DATASTACK_MAX_COLUMNS", "lots")
    with pytest.raises(ConfigurationError, match="DATASTACK_MAX_COLUMNS='lots' is not valid"):
        env_int("DATASTACK_MAX_COLUMNS", 100_000, minimum=1)


def test_cache_stamp_that_is_a_folder(tmp_path: Path) -> None:
    from datastack.storage.diskcache import DiskCache

    cache = DiskCache(tmp_path / "cache", 1 << 20)
    data = b"cached bytes"
    digest = hashlib.sha256(data).hexdigest()
    obj = tmp_path / "cache" / "objects" / digest[:2] / digest
    obj.parent.mkdir(parents=True)
    obj.write_bytes(data)
    (obj.parent / f"{digest}.ok").mkdir()
    with pytest.raises(StorageError, match=r"stamp .*\.ok .*it is a folder.*Remove it"):
        cache.path(digest)


def test_every_new_error_is_a_datastack_error() -> None:
    for cls in (ConfigurationError, FormatError, SpecError, StorageError):
        assert issubclass(cls, DatastackError)
