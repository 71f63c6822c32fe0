"""Parquet integers float64 cannot hold exactly are named (column, row, value), never
"corrupt" (#26.23); listed as text or categorical they are kept as written."""

from __future__ import annotations

from pathlib import Path

import pytest

import datastack
from tests.fields.realdata import write_spec

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

CASES = {
    "uint64-above-2^63": (pa.uint64(), 2**63 + 5),
    "uint64-just-above-2^53": (pa.uint64(), 2**53 + 1),
    "int64-above-2^53": (pa.int64(), 2**60 + 3),
    "int64-below-minus-2^53": (pa.int64(), -(2**53) - 7),
}


def _table(path: Path, kind: object, value: int) -> Path:
    table = pa.table({
        "a": pa.array([1.0, 2.0, 3.0, 4.0]),
        "id": pa.array([1, None, value, 7], type=kind),
        "y": pa.array([0, 1, 0, 1]),
    })
    pq.write_table(table, path)
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_integer_beyond_float64_names_column_row_and_value(case: str, tmp_path: Path) -> None:
    kind, value = CASES[case]
    path = _table(tmp_path / "t.parquet", kind, value)
    spec = write_spec(tmp_path / "s.yaml", "ids", [path], "    format: parquet\n")
    [result] = datastack.refresh(spec, storage=str(tmp_path / "store"))
    assert result.status == "failed"
    assert f"row 3, column 'id': {value} is an integer above 2^53" in result.reason, result.reason
    assert "corrupt" not in result.reason


@pytest.mark.parametrize("how", ["text", "categorical"])
def test_integer_beyond_float64_kept_as_written_when_listed(how: str, tmp_path: Path) -> None:
    path = _table(tmp_path / "t.parquet", pa.uint64(), 2**63 + 5)
    spec = write_spec(tmp_path / "s.yaml", "ids", [path],
                      f"    format: parquet\n    parquet: {{{how}: [id]}}\n")
    [result] = datastack.refresh(spec, storage=str(tmp_path / "store"))
    assert result.status == "published", result.reason
    it = datastack.load("ids", storage=str(tmp_path / "store"))
    if how == "text":
        assert [it[i][1] for i in range(4)] == ["1", "", str(2**63 + 5), "7"]
    else:
        features = it.get_batch(range(4))[0]
        assert features.shape == (4, 2)


def test_integers_within_2_53_stay_numbers(tmp_path: Path) -> None:
    path = _table(tmp_path / "t.parquet", pa.int64(), 2**53)
    spec = write_spec(tmp_path / "s.yaml", "ids", [path], "    format: parquet\n")
    [result] = datastack.refresh(spec, storage=str(tmp_path / "store"))
    assert result.status == "published", result.reason
    features = datastack.load("ids", storage=str(tmp_path / "store")).get_batch(range(4))[0]
    assert features[2, 1] == 2.0**53
