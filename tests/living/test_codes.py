"""Category codes never move (#24.5): a value keeps the code it got when first seen, a new
value takes the next code, a new class is published (not a schema change) and reported in the
version's changes; ``expect: {new_classes: false}`` and ``classes:`` refuse one; a dropped
column is still a schema change. Real local files: a tracked CSV, the Palmer penguins table,
a folder of real photographs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import datastack
from datastack.catalog.record import VersionRecord
from datastack.cli import main
from datastack.errors import GateError, SpecError
from datastack.pipeline import gates
from datastack.specs import load_spec
from datastack.store import Store
from datastack.web.views import version_changes
from tests.fields.realdata import image_files, penguins_csv


def _write(path: Path, data: str) -> None:
    """Rewrite a tracked file; its mtime moves on by a second each time (change detection)."""
    before = path.stat().st_mtime_ns if path.exists() else 1_700_000_000 * 10**9
    path.write_text(data)
    os.utime(path, ns=(before + 10**9, before + 10**9))


def _spec(path: Path, source: Path, name: str, fmt: str = "csv", body: str = "") -> Path:
    path.write_text(f"datasets:\n  {name}:\n    sources: [{{url: {source.as_uri()!r}, "
                    f"track: true}}]\n    format: {fmt}\n{body}")
    return path


def _refresh(spec: Path, storage: str) -> Any:
    [result] = datastack.refresh(spec, storage=storage)
    return result


def _features(name: str, version: int, storage: str) -> np.ndarray:
    return np.array([np.asarray(sample[0]) for sample in
                     datastack.load(name, version=version, storage=storage)])


def _cities(rows: list[tuple[float, str, str]], fmt: str) -> str:
    if fmt == "jsonl":
        return "".join(f'{{"x": {x}, "city": "{c}", "label": "{y}"}}\n' for x, c, y in rows)
    return "x,city,label\n" + "".join(f"{x},{c},{y}\n" for x, c, y in rows)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_new_value_that_sorts_first_moves_no_code(
    tmp_path: Path, storage: str, fmt: str
) -> None:
    rows = [(float(i), ("Berlin", "Oslo")[i % 2], "ny"[i % 2]) for i in range(20)]
    source = tmp_path / f"live.{fmt}"
    _write(source, _cities(rows, fmt))
    target = f"    {fmt}: {{target: label}}\n"
    spec = _spec(tmp_path / "spec.yaml", source, "cities", fmt, target)
    first = _refresh(spec, storage)
    assert (first.status, first.version) == ("published", 1), first.reason
    catalog = Store.open(storage).catalog
    v1 = catalog.latest("cities")
    assert v1.encodings["city"] == ["Berlin", "Oslo"]  # a first version: sorted, as before
    assert "new_values" not in v1.schema

    grown = [*rows, (20.0, "Amsterdam", "y"), (21.0, "Amsterdam", "n"), (22.0, "Oslo", "y")]
    _write(source, _cities(grown, fmt))
    second = _refresh(spec, storage)
    assert (second.status, second.version) == ("published", 2), second.reason
    v2 = catalog.latest("cities")
    assert v2.encodings["city"] == ["Berlin", "Oslo", "Amsterdam"]  # the next code, not 0
    before, after = _features("cities", 1, storage), _features("cities", 2, storage)
    assert np.array_equal(after[:20], before)  # 0 codes changed in the rows v1 had
    assert after[20:, 1].tolist() == [2.0, 2.0, 1.0]
    assert v2.schema["new_values"] == {"city": {"count": 1, "labels": {"Amsterdam": 2}}}
    [summary] = [s for s in catalog.version_summaries("cities") if s.version == 2]
    changes = version_changes(catalog.version_summaries("cities")[0], summary)
    assert "new value Amsterdam in city: 2 samples" in changes, changes


def test_a_new_class_is_published_and_reported(
    tmp_path: Path, storage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Penguins rows 1-200 hold no Chinstrap; the whole table adds 68 of them: published,
    Adelie and Gentoo keep their codes, the changes name the new class and its count."""
    lines = penguins_csv().read_text().splitlines(keepends=True)
    source = tmp_path / "penguins.csv"
    _write(source, "".join(lines[:201]))
    spec = _spec(tmp_path / "spec.yaml", source, "penguins", body="    csv: {target: species}\n")
    assert _refresh(spec, storage).status == "published"
    catalog = Store.open(storage).catalog
    assert catalog.latest("penguins").encodings["species"] == ["Adelie", "Gentoo"]
    v1 = datastack.load("penguins", version=1, storage=storage)

    _write(source, "".join(lines))
    grown = _refresh(spec, storage)
    assert (grown.status, grown.version) == ("published", 2), grown.reason
    record = catalog.latest("penguins")
    assert record.encodings["species"] == ["Adelie", "Gentoo", "Chinstrap"]
    v2 = datastack.load("penguins", version=2, storage=storage)
    assert [int(v2[i][1]) for i in range(200)] == [int(v1[i][1]) for i in range(200)]
    assert np.bincount([int(s[1]) for s in v2]).tolist() == [152, 124, 68]
    assert record.schema["new_values"] == {"species": {"count": 1, "labels": {"Chinstrap": 68}}}
    summaries = catalog.version_summaries("penguins")
    assert "new class Chinstrap: 68 samples" in version_changes(summaries[0], summaries[1])
    capsys.readouterr()
    assert main(["show", "penguins", "--storage", storage]) == 0
    assert "v2: new class Chinstrap: 68 samples" in capsys.readouterr().out

    _write(source, "".join(lines[:201]))  # the class disappears: its code stays reserved
    assert _refresh(spec, storage).version == 3
    assert catalog.latest("penguins").encodings["species"] == ["Adelie", "Gentoo", "Chinstrap"]
    assert "new_values" not in catalog.latest("penguins").schema
    _write(source, "".join(lines))  # and comes back with the same code, not as a new class
    assert _refresh(spec, storage).version == 4
    assert catalog.latest("penguins").encodings["species"] == ["Adelie", "Gentoo", "Chinstrap"]
    assert "new_values" not in catalog.latest("penguins").schema
    assert int(datastack.load("penguins", version=4, storage=storage)[343][1]) == 2


@pytest.mark.parametrize(
    ("expect", "gate"),
    [("{new_classes: false}", "gate new_classes"), ("{classes: [Adelie, Gentoo]}", "gate classes")],
    ids=["new_classes", "classes"],
)
def test_expect_refuses_a_new_class(tmp_path: Path, expect: str, gate: str) -> None:
    lines = penguins_csv().read_text().splitlines(keepends=True)
    source = tmp_path / "penguins.csv"
    _write(source, "".join(lines[:201]))
    spec = _spec(tmp_path / "spec.yaml", source, "penguins",
                 body=f"    csv: {{target: species}}\n    expect: {expect}\n")
    storage = str(tmp_path / "store")
    assert _refresh(spec, storage).status == "published"
    _write(source, "".join(lines))
    refused = _refresh(spec, storage)
    assert refused.status == "failed" and gate in refused.reason, refused.reason
    assert "Chinstrap" in refused.reason
    if gate == "gate new_classes":
        assert "1 new class(es): Chinstrap (68 samples)" in refused.reason
    catalog = Store.open(storage).catalog
    assert [v.version for v in catalog.versions("penguins")] == [1]
    assert len(datastack.load("penguins", storage=storage)) == 200  # the last good version
    status = catalog.status("penguins")
    assert status is not None and status.state() == "failing"


def test_new_classes_is_a_checked_spec_key(tmp_path: Path) -> None:
    text = ("datasets:\n  p:\n    sources: [{url: 'file:///x.csv', track: true}]\n"
            "    format: csv\n    expect: {new_classes: %s}\n")
    assert load_spec(text % "false")["p"].expect.new_classes is False  # type: ignore[union-attr]
    assert load_spec(text % "true")["p"].expect.new_classes is True  # type: ignore[union-attr]
    with pytest.raises(SpecError, match="new_classes"):
        load_spec(text % "maybe")


def test_an_image_folder_gains_a_class_that_sorts_first(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    files = image_files(folder)
    spec = _spec(tmp_path / "spec.yaml", folder, "photos", "imagefolder")
    storage = str(tmp_path / "store")
    assert _refresh(spec, storage).status == "published"
    catalog = Store.open(storage).catalog
    classes = catalog.latest("photos").encodings["label"]
    assert classes == sorted(classes) and "aardvark" not in classes

    first = sorted(files)[0]
    (folder / "aardvark").mkdir()
    shutil.copy(files[first], folder / "aardvark" / Path(first).name)
    grown = _refresh(spec, storage)
    assert grown.status == "published", grown.reason
    record = catalog.latest("photos")
    assert record.encodings["label"] == [*classes, "aardvark"]
    names = dict(enumerate(record.encodings["label"]))

    def named(version: int) -> set[tuple[bytes, str]]:
        it = datastack.load("photos", version=version, storage=storage)
        raw = it.with_image_options(decode=False)
        return {(bytes(image), names[int(label)]) for image, label in raw}

    assert named(1) <= named(2)  # every image keeps its class (and its code)
    assert {label for _, label in named(2) - named(1)} == {"aardvark"}
    summaries = catalog.version_summaries("photos")
    assert "new class aardvark: 1 sample" in version_changes(summaries[0], summaries[1])


def test_an_image_manifest_gains_a_label_that_sorts_first(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    files = sorted(image_files(folder))
    manifest = folder / "labels.csv"
    rows = [f"{path},{'cd'[i % 2]}" for i, path in enumerate(files)]
    _write(manifest, "path,label\n" + "\n".join(rows[:6]) + "\n")
    spec = _spec(tmp_path / "spec.yaml", folder, "rated", "imagefolder",
                 "    imagefolder: {manifest: labels.csv}\n")
    storage = str(tmp_path / "store")
    assert _refresh(spec, storage).status == "published"
    rows[6] = f"{files[6]},a"
    _write(manifest, "path,label\n" + "\n".join(rows) + "\n")
    os.utime(folder, ns=(manifest.stat().st_mtime_ns,) * 2)
    grown = _refresh(spec, storage)
    assert grown.status == "published", grown.reason
    record = Store.open(storage).catalog.latest("rated")
    assert record.encodings["label"] == ["c", "d", "a"]
    assert record.schema["new_values"]["label"] == {"count": 1, "labels": {"a": 1}}
    loaded = {path: int(label) for _, path, label in datastack.load("rated", storage=storage)}
    assert [loaded[f] for f in files[:6]] == [0, 1, 0, 1, 0, 1] and loaded[files[6]] == 2


def test_the_first_refresh_after_the_upgrade_keeps_the_codes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version published before this change has sorted codes and a record whose label
    lists may be cut short (a very long list: the first labels and the count): the next
    refresh continues the codes, reading a cut list whole from the version's data file."""
    import datastack.pipeline.build as build

    monkeypatch.setattr(build, "MAX_RECORD_LABELS_BYTES", 10)
    monkeypatch.setattr(build, "RECORD_LABELS_KEPT", 1)
    cities = ["Lima", "Oslo", "Quito", "Rome"]
    rows = [(float(i), cities[i % 4], "ny"[i % 2]) for i in range(40)]
    source = tmp_path / "live.csv"
    _write(source, _cities(rows, "csv"))
    spec = _spec(tmp_path / "spec.yaml", source, "cities", body="    csv: {target: label}\n")
    storage = str(tmp_path / "store")
    assert _refresh(spec, storage).status == "published"
    catalog = Store.open(storage).catalog
    v1 = catalog.latest("cities")
    assert v1.encodings["city"] == ["Lima"]  # cut short in the record
    assert v1.schema["encodings_truncated"]["city"] == 4

    _write(source, _cities([*rows, (40.0, "Athens", "y"), (41.0, "Paris", "n")], "csv"))
    assert _refresh(spec, storage).version == 2
    before, after = _features("cities", 1, storage), _features("cities", 2, storage)
    assert np.array_equal(after[:40], before)
    assert after[40:, 1].tolist() == [4.0, 5.0]  # Athens, Paris: the next codes
    assert catalog.latest("cities").schema["new_values"]["city"]["count"] == 2


def test_a_dropped_column_is_still_a_schema_change(tmp_path: Path) -> None:
    rows = [(float(i), ("Berlin", "Oslo")[i % 2], "ny"[i % 2]) for i in range(20)]
    source = tmp_path / "live.csv"
    _write(source, _cities(rows, "csv"))
    spec = _spec(tmp_path / "spec.yaml", source, "cities", body="    csv: {target: label}\n")
    storage = str(tmp_path / "store")
    assert _refresh(spec, storage).status == "published"
    _write(source, "x,label\n" + "".join(f"{x},{y}\n" for x, _, y in rows))
    refused = _refresh(spec, storage)
    assert refused.status == "failed" and "gate schema" in refused.reason, refused.reason
    assert [v.version for v in Store.open(storage).catalog.versions("cities")] == [1]


def test_the_schema_gate_refuses_a_class_code_that_changes_meaning() -> None:
    """A preprocessor of one's own that renumbers its classes is still refused; one that
    adds a class after the known ones is not."""
    def schema(names: list[str]) -> dict[str, Any]:
        return {"fields": [{"name": "label", "kind": "label", "dtype": "int64", "shape": [],
                            "names": names}], "target": "label"}

    previous = VersionRecord(name="d", version=3, schema=schema(["b", "c"]))
    gates.check_schema("d", schema(["b", "c", "a"]), previous)
    with pytest.raises(GateError, match=r"class code 0 meant 'b' in v3 and means 'a' now"):
        gates.check_schema("d", schema(["a", "b", "c"]), previous)
    with pytest.raises(GateError, match=r"class code 1 meant 'c' in v3 and means None now"):
        gates.check_schema("d", schema(["b"]), previous)


def _publish_twice(storage: str, first: Any, second: Any, target: str) -> tuple[Any, Any]:
    one = datastack.publish("py", first, target=target, storage=storage)
    two = datastack.publish("py", second, target=target, storage=storage)
    return one, two


@pytest.mark.parametrize("kind", ["dict", "pandas", "arrow", "reader"])
def test_publish_continues_the_codes_of_a_string_target(tmp_path: Path, kind: str) -> None:
    """``datastack.publish`` again to the same dataset: a string target's new class (sorting
    first) takes the next code; a DataFrame's categorical column too."""
    def data(species: list[str], islands: list[str]) -> Any:
        columns = {"mass": np.arange(len(species), dtype=np.float64), "island": islands,
                   "species": species}
        if kind == "pandas":
            return pytest.importorskip("pandas").DataFrame(columns)
        if kind in ("arrow", "reader"):
            import pyarrow as pa

            table = pa.table(columns)
            if kind == "arrow":
                return table
            return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(2))
        return {"mass": columns["mass"], "species": species}

    storage = str(tmp_path / "store")
    one, two = _publish_twice(
        storage,
        data(["Gentoo", "Gentoo", "Adelie"], ["Dream", "Biscoe", "Dream"]),
        data(["Gentoo", "Chinstrap", "Adelie", "Chinstrap"], ["Dream", "Anvers", "Dream", "Dream"]),
        "species",
    )
    assert (one.version, two.version) == (1, 2)
    assert one.encodings["species"] == ["Adelie", "Gentoo"]
    assert two.encodings["species"] == ["Adelie", "Gentoo", "Chinstrap"]
    labels = [int(s[-1]) for s in datastack.load("py", storage=storage)]
    assert labels == [1, 2, 0, 2]
    found = two.schema["new_values"]
    assert found["species"] == {"count": 1, "labels": {"Chinstrap": 2}}
    if kind == "pandas":  # a categorical feature column, through the table policy
        assert two.encodings["island"] == ["Biscoe", "Dream", "Anvers"]
        assert found["island"] == {"count": 1, "labels": {"Anvers": 1}}
    again = datastack.publish("py", data(["Gentoo", "Chinstrap", "Adelie", "Chinstrap"],
                                         ["Dream", "Anvers", "Dream", "Dream"]),
                              target="species", storage=storage)
    assert again.version == 2  # identical content: nothing new published
