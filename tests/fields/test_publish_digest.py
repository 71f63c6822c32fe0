"""The content digest of ``datastack.publish`` covers everything a reader gets back (#26.4,
#26.5): category labels, ragged shapes, dtypes, field names, string boundaries, text/target
options. Two inputs a reader can tell apart never share a digest (so never "identical
content"); the same input always gives the same digest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import datastack
from datastack.publish import _columns_of
from datastack.store import Store


def _digest(data: Any, target: str | None = None, text: tuple[str, ...] = ()) -> str:
    return _columns_of(data, target, text).digest()


def _pairs() -> list[tuple[str, Any, Any, dict[str, Any]]]:
    f32 = np.arange(12, dtype=np.float32)
    ragged_a = [f32[:4].reshape(2, 2), f32[4:8].reshape(2, 2)]
    ragged_b = [f32[:4].reshape(1, 4), f32[4:8].reshape(1, 4)]
    return [
        ("ragged shape (2,2)->(1,4)", {"r": ragged_a, "y": np.arange(2)},
         {"r": ragged_b, "y": np.arange(2)}, {}),
        ("ragged shape (3,)->(1,3) rows", {"r": [f32[:3], f32[3:6]], "y": np.arange(2)},
         {"r": [f32[:3].reshape(3, 1), f32[3:6].reshape(3, 1)], "y": np.arange(2)}, {}),
        ("ragged row split", {"r": [f32[:3], f32[3:5]], "y": np.arange(2)},
         {"r": [f32[:2], f32[2:5]], "y": np.arange(2)}, {}),
        ("ragged dtype, same bytes", {"r": [f32[:2], f32[2:4]], "y": np.arange(2)},
         {"r": [f32[:2].view(np.int32), f32[2:4].view(np.int32)], "y": np.arange(2)}, {}),
        ("array dtype, same bytes", {"x": np.arange(6, dtype=np.int32), "y": [0, 1] * 3},
         {"x": np.arange(6, dtype=np.uint32), "y": [0, 1] * 3}, {}),
        ("array shape, same bytes", {"x": f32.reshape(6, 2), "y": np.arange(6)},
         {"x": f32.reshape(6, 1, 2), "y": np.arange(6)}, {}),
        ("same content twice", {"x": f32.reshape(6, 2), "y": np.arange(6)},
         {"x": f32.copy().reshape(6, 2), "y": np.arange(6)}, {"same": True}),
        ("field renamed", {"a": f32, "y": np.arange(12)}, {"b": f32, "y": np.arange(12)}, {}),
        ("target labels", {"x": f32[:4], "y": ["red", "blue", "red", "blue"]},
         {"x": f32[:4], "y": ["green", "yellow", "green", "yellow"]}, {"target": "y"}),
        ("target labels, another alphabet",
         {"x": f32[:3], "y": ["\u00e9t\u00e9", "hiver", "\u00e9t\u00e9"]},
         {"x": f32[:3], "y": ["\u00e9t\u00e8", "hiver", "\u00e9t\u00e8"]}, {"target": "y"}),
        ("string boundaries", {"s": ["ab", "c"], "y": np.arange(2)},
         {"s": ["a", "bc"], "y": np.arange(2)}, {}),
        ("string vs bytes", {"s": ["ab", "c"], "y": np.arange(2)},
         {"s": [b"ab", b"c"], "y": np.arange(2)}, {}),
        ("target choice", {"a": np.arange(4), "b": np.arange(4) % 2},
         {"a": np.arange(4), "b": np.arange(4) % 2}, {"target": ("a", "b")}),
    ]


@pytest.mark.parametrize("case", _pairs(), ids=lambda c: c[0])
def test_digest_tells_apart_what_a_reader_tells_apart(case: tuple[str, Any, Any, dict[str, Any]]
                                                      ) -> None:
    _name, a, b, opts = case
    targets = opts.get("target")
    ta, tb = targets if isinstance(targets, tuple) else (targets, targets)
    assert _digest(a, ta) == _digest(a, ta)  # stable
    if opts.get("same"):
        assert _digest(a, ta) == _digest(b, tb)
    else:
        assert _digest(a, ta) != _digest(b, tb)


pd = pytest.importorskip("pandas")


def _frames() -> list[tuple[str, Any, Any, dict[str, Any]]]:
    n = 7
    nums = np.linspace(0, 1, n)
    pattern = [i % 3 % 2 for i in range(n)]
    colours_a = [("red", "blue")[p] for p in pattern]
    colours_b = [("green", "yellow")[p] for p in pattern]
    colours_c = [("blue", "red")[p] for p in pattern]  # same labels, swapped pattern
    return [
        ("feature labels red/blue -> green/yellow",
         pd.DataFrame({"x": nums, "c": colours_a, "y": pattern}),
         pd.DataFrame({"x": nums, "c": colours_b, "y": pattern}), {"target": "y"}),
        ("feature labels swapped",
         pd.DataFrame({"x": nums, "c": colours_a, "y": pattern}),
         pd.DataFrame({"x": nums, "c": colours_c, "y": pattern}), {"target": "y"}),
        ("target labels red/blue -> green/yellow",
         pd.DataFrame({"x": nums, "c": colours_a}),
         pd.DataFrame({"x": nums, "c": colours_b}), {"target": "c"}),
        ("first-seen order of labels",
         pd.DataFrame({"x": nums[:2], "c": ["b", "a"]}),
         pd.DataFrame({"x": nums[:2], "c": ["a", "b"]}), {"target": "c"}),
        ("text option",
         pd.DataFrame({"x": nums, "c": colours_a, "y": pattern}),
         pd.DataFrame({"x": nums, "c": colours_a, "y": pattern}),
         {"target": "y", "text": ((), ("c",))}),
        ("column renamed",
         pd.DataFrame({"x": nums, "c": colours_a, "y": pattern}),
         pd.DataFrame({"x": nums, "k": colours_a, "y": pattern}), {"target": "y"}),
    ]


@pytest.mark.parametrize("case", _frames(), ids=lambda c: c[0])
def test_frame_digest_covers_labels_and_options(case: tuple[str, Any, Any, dict[str, Any]]
                                                ) -> None:
    _name, a, b, opts = case
    text_a, text_b = opts.get("text", ((), ()))
    assert _digest(a, opts["target"], text_a) == _digest(a, opts["target"], text_a)
    assert _digest(a, opts["target"], text_a) != _digest(b, opts["target"], text_b)


def test_datastack_publish_stays_callable_after_importing_its_module() -> None:
    import datastack.publish as module

    assert callable(datastack.publish) and callable(module)
    assert module.publish is not None


def test_publish_relabelled_categories_and_reshaped_rows_publish_new_versions(
    tmp_path: Path,
) -> None:
    storage = str(tmp_path / "store")
    frame = pd.DataFrame({"x": [0.5, 1.5, 2.5, 3.5], "colour": ["red", "blue", "red", "blue"],
                          "y": [0, 1, 0, 1]})
    assert datastack.publish("colours", frame, target="y", storage=storage).version == 1
    assert datastack.publish("colours", frame, target="y", storage=storage).version == 1
    relabelled = frame.assign(colour=["green", "yellow", "green", "yellow"])
    record = datastack.publish("colours", relabelled, target="y", storage=storage)
    assert record.version == 2
    # codes never move (#24.5): blue and red keep 0 and 1 (reserved), the new ones follow
    assert record.encodings["colour"] == ["blue", "red", "green", "yellow"]

    rows = np.arange(8, dtype=np.float32)
    square = {"r": [rows[:4].reshape(2, 2), rows[4:].reshape(2, 2)], "y": np.arange(2)}
    flat = {"r": [rows[:4].reshape(1, 4), rows[4:].reshape(1, 4)], "y": np.arange(2)}
    assert datastack.publish("rows", square, target="y", storage=storage).version == 1
    assert datastack.publish("rows", flat, target="y", storage=storage).version == 2
    got = datastack.load("rows", storage=storage).as_dict()[0]["r"]
    assert np.asarray(got).shape == (1, 4)
    assert len(Store.open(storage).catalog.versions("rows")) == 2


def test_plain_lists_of_numbers_are_columns(tmp_path) -> None:
    """A column given as a Python list of numbers is a column of numbers (it failed with
    "Can't broadcast (2, 0) -> (2, 1)"); an integer target list becomes int64 targets."""
    import numpy as np

    import datastack

    store = str(tmp_path / "store")
    datastack.publish("plain", {"x": [0.5, 1.5, 2.5], "flag": [True, False, True],
                                "y": [0, 1, 1]}, target="y", storage=store)
    it = datastack.load("plain", "train", storage=store)
    rows = sorted(it[i] for i in range(len(it)))
    assert [(float(x), bool(f), int(y)) for x, f, y in rows] == [
        (0.5, True, 0), (1.5, False, 1), (2.5, True, 1)]
    assert it.fields["y"].dtype == "int64" and np.asarray(rows[0][0]).shape == ()
