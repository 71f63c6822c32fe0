"""`datastack show`: --preview with --split and --count, per-sample schema shapes (#27.10)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datastack.cli import EXIT_OK, EXIT_USAGE, main

pytest.importorskip("PIL")

from tests.fields.realdata import Image, image_files, tar_folder, write_spec


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> str:
    import datastack

    tmp = tmp_path_factory.mktemp("photos")
    storage = str(tmp / "store")
    image_files(tmp / "photos")
    archive = tar_folder(tmp / "photos", tmp / "p.tar.gz")
    spec = write_spec(tmp / "s.yaml", "photos", [archive],
                      "    format: imagefolder\n    splits: {train: 0.7, test: 0.3}\n    seed: 0\n")
    assert datastack.refresh(spec, storage=storage)[0].status == "published"
    return storage


def test_preview_draws_train_by_default_then_split_and_count(
    photos: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.png"
    assert main(["show", "photos", "--storage", photos, "--json", "--preview", str(out)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data["splits"]) == ["test", "train"]  # test sorts first, train is drawn
    assert data["preview_split"] == "train"
    with Image.open(out) as picture:
        full = picture.size
    assert main(["show", "photos", "--storage", photos, "--json", "--preview", str(out),
                 "--split", "test", "--count", "2"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["preview_split"] == "test"
    with Image.open(out) as picture:
        assert picture.width == 2 * 128 and picture.size != full  # two tiles in one row
    assert main(["show", "photos", "--storage", photos, "--preview", str(out),
                 "--split", "validation"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "'validation'" in err and "test, train" in err
    assert main(["show", "photos", "--storage", photos, "--preview", str(out),
                 "--count", "0"]) == EXIT_USAGE


def test_preview_split_falls_back_to_the_first_split() -> None:
    from datastack.catalog import VersionRecord
    from datastack.cli.catalog import preview_split

    record = VersionRecord(name="x", splits={"b": 1, "a": 2})
    assert preview_split(record, None) == "b"
    assert preview_split(VersionRecord(name="x", splits={"a": 1, "train": 2}), None) == "train"


def test_show_prints_per_sample_shapes_not_sample_counts(
    photos: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["show", "photos", "--storage", photos]) == EXIT_OK
    shown = capsys.readouterr().out
    assert "image: uint8 image (?, ?) or (?, ?, C), modes L, RGB, RGBA" in shown
    assert "label: int64 label ()" in shown
    counts = {line.split("│")[2].strip() for line in shown.splitlines()
              if line.count("│") >= 4 and line.split("│")[1].strip() in ("train", "test")}
    for count in counts:  # a split's sample count never appears as a shape
        assert f"({count},)" not in shown
