"""(#27.9) A free-text column not listed under `text:` or `categorical:` is an error asking
which it is; low-cardinality strings still become categories; missing text is ``""``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

import datastack
from datastack.errors import FormatError
from datastack.formats._table_policy import (
    MAX_IMPLICIT_CATEGORIES,
    Block,
    TableOptions,
    TablePolicy,
)
from datastack.store import Store


def _finish(names: list[str], columns: list[list[object]], **options: object) -> object:
    policy = TablePolicy(TableOptions(**options), prefix="csv.")  # type: ignore[arg-type]
    rows = range(2, 2 + len(columns[0]))
    staged = policy.convert(Block(names, columns, rows), "t.csv")
    return staged, policy.finish()


def test_many_distinct_strings_ask_text_or_categorical() -> None:
    reviews = [f"review number {i}, quite good" for i in range(10)]
    labels = ["pos", "neg"] * 5
    with pytest.raises(FormatError) as info:
        _finish(["x", "review", "label"], [list(range(10)), reviews, labels], target="label")
    message = str(info.value)
    assert "'review'" in message and "10 distinct strings in 10 rows" in message
    assert "csv.text:" in message and "csv.categorical:" in message
    # either answer is accepted
    staged, (_fields, _, encodings) = _finish(  # type: ignore[misc]
        ["x", "review", "label"], [list(range(10)), reviews, labels], target="label",
        text=("review",))
    assert staged["review"].to_pylist() == reviews and "review" not in encodings
    _, (_, _, encodings) = _finish(  # type: ignore[misc]
        ["x", "review", "label"], [list(range(10)), reviews, labels], target="label",
        categorical=("review",))
    assert len(encodings["review"]) == 10


def test_more_than_a_thousand_distinct_values_even_in_a_long_table() -> None:
    n = 3 * (MAX_IMPLICIT_CATEGORIES + 1)
    ids = [f"user-{i % (MAX_IMPLICIT_CATEGORIES + 1)}" for i in range(n)]  # < half the rows
    with pytest.raises(FormatError, match=r"'user' holds 1001 distinct strings in 3003 rows"):
        _finish(["user", "y"], [ids, [1.0] * n])


def test_low_cardinality_strings_still_become_categories() -> None:
    colours = ["red", "green", "blue", "red", "green", "red"]
    staged, (_, transforms, encodings) = _finish(  # type: ignore[misc]
        ["colour", "y"], [colours, [1, 2, 3, 4, 5, 6]])
    assert encodings["colour"] == ["blue", "green", "red"]
    codes = transforms["features"](staged["features"])[:, 0]
    assert codes.tolist() == [2, 1, 0, 2, 1, 2]
    # the target is the label, whatever its number of classes
    _, (fields, _, encodings) = _finish(  # type: ignore[misc]
        ["x", "name"], [[1, 2, 3], ["a", "b", "c"]])
    assert encodings["name"] == ["a", "b", "c"] and fields[-1].kind == "label"


def test_refresh_of_free_text_fails_with_the_question_and_publishes_nothing(
    tmp_path: Path,
) -> None:
    rows = ["x,comment,label"] + [f"{i},comment {i} is unique,{'ab'[i % 2]}" for i in range(40)]
    rows[5] = "3,,b"  # a missing comment
    data = tmp_path / "t.csv"
    data.write_text("\n".join(rows) + "\n")
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    storage = str(tmp_path / "store")
    spec = tmp_path / "s.yaml"
    body = ("datasets:\n  notes:\n    sources: [{url: %s, sha256: %s}]\n    format: csv\n"
            "    csv: {header: true, target: label%s}\n")
    spec.write_text(body % (data.as_uri(), digest, ""))
    [result] = datastack.refresh(spec, storage=storage)
    assert result.status == "failed"
    assert "'comment'" in result.reason and "csv.text" in result.reason
    assert Store.open(storage).catalog.datasets() == []
    spec.write_text(body % (data.as_uri(), digest, ", text: [comment]"))
    [result] = datastack.refresh(spec, storage=storage)
    assert result.status == "published", result.reason
    it = datastack.load("notes", storage=storage)
    comments = [it[i][1] for i in range(len(it))]
    assert "" in comments  # a missing text is "" (docs/fields.md: missing and "" merge)
    assert sorted(c for c in comments if c) == sorted(
        f"comment {i} is unique" for i in range(40) if i != 4)
    assert np.asarray(it[0][0]).dtype == np.float32


def test_a_small_table_with_repeating_labels_stays_categorical() -> None:
    """3 rows, 2 colours: more than half the rows, but too few values to be free text."""
    _, (_, _, encodings) = _finish(  # type: ignore[misc]
        ["a", "color", "label"], [[1, 2, 3], ["red", "blue", "red"], ["x", "y", "x"]],
        target="label")
    assert encodings["color"] == ["blue", "red"]
