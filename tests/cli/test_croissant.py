"""Croissant metadata (#23.5): ``datastack show NAME --croissant`` and the web page's
``/datasets/NAME/croissant.json``, validated by ``mlcroissant``."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import numpy as np
import pytest

import datastack
from datastack.catalog.record import VersionRecord
from datastack.cli import main
from datastack.croissant import croissant

mlc = pytest.importorskip("mlcroissant")


def _validated(doc: dict[str, Any]) -> Any:
    """The dataset mlcroissant reads from ``doc`` (it raises ValidationError on any error)."""
    dataset = mlc.Dataset(jsonld=copy.deepcopy(doc))  # it changes the dict it reads
    assert "error" not in dataset.metadata.issues.report().lower()
    return dataset


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("croissant")
    data = folder / "flowers.csv"
    data.write_text("sepal,petal,note,species\n" + "".join(
        f"{i * 0.5},{i % 7},n{i},{['setosa', 'versicolor'][i % 2]}\n" for i in range(10)))
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    spec = folder / "spec.yaml"
    spec.write_text(
        "datasets:\n  flowers:\n    description: two kinds of flowers\n"
        "    license: CC-BY-4.0\n"
        f"    sources: [{{url: {data.as_uri()}, sha256: {digest}}}]\n"
        "    format: csv\n    csv: {target: species, text: [note]}\n"
        "    splits: {train: 0.8, test: 0.2}\n")
    uri = str(folder / "store")
    [result] = datastack.refresh(spec, storage=uri)
    assert result.status == "published", result.reason
    datastack.publish("python", {"tokens": [np.arange(n) for n in (1, 3, 2)],
                                 "title": np.array(["a", "b", "c"], dtype=object),
                                 "x": np.zeros((3, 2, 2), np.float32)}, storage=uri)
    return uri


def _show(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["show", *argv, "--croissant"]) == 0
    return dict(json.loads(capsys.readouterr().out))


def test_show_croissant_is_valid_and_complete(store: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    doc = _show(capsys, "flowers", "--storage", store)
    dataset = _validated(doc)
    assert doc["conformsTo"] == "http://mlcommons.org/croissant/1.0"
    assert (doc["name"], doc["description"], doc["license"]) == (
        "flowers", "two kinds of flowers", "CC-BY-4.0")
    record = datastack.Store.open(store).catalog.latest("flowers")
    assert doc["version"] == f"{record.version}.0.0"
    source, published = doc["distribution"]
    assert source["sha256"] == record.sources[0]["sha256"]
    assert source["encodingFormat"] == "text/csv" and source["name"] == "flowers.csv"
    shards = [r["identifier"] for r in record.resources if r.get("kind") == "shard"]
    assert published["@type"] == "cr:FileSet" and published["includes"] == shards
    sets = {rs.id: rs for rs in dataset.metadata.record_sets}
    assert set(sets) == {"splits", "species_classes", "records"}
    splits = next(r for r in doc["recordSet"] if r["@id"] == "splits")
    assert splits["dataType"] == "cr:Split"
    assert [row["splits/name"] for row in splits["data"]] == list(record.splits)
    classes = next(r for r in doc["recordSet"] if r["@id"] == "species_classes")
    assert [row["species_classes/name"] for row in classes["data"]] == ["setosa", "versicolor"]
    fields = {f["name"]: f for f in next(r for r in doc["recordSet"]
                                         if r["@id"] == "records")["field"]}
    assert fields["split"]["references"] == {"field": {"@id": "splits/name"}}
    assert fields["note"]["dataType"] == "sc:Text"
    assert fields["features"]["dataType"] == "sc:Float" and fields["features"]["repeated"]
    assert fields["species"]["references"] == {"field": {"@id": "species_classes/index"}}


def test_python_data_and_versions(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    doc = _show(capsys, "python", "--storage", store)
    _validated(doc)
    assert "license" not in doc  # the data gave none
    [published] = doc["distribution"]  # no sources: only the published file
    assert published["@id"] == "published-data"
    kinds = {f["name"]: f["dataType"] for f in doc["recordSet"][-1]["field"]}
    assert kinds == {"split": "sc:Text", "tokens": "sc:Integer", "title": "sc:Text",
                     "x": "sc:Float"}
    pinned = _show(capsys, "flowers", "--version", "1", "--storage", store)
    assert pinned["version"] == "1.0.0"


def test_credentials_and_secret_parameters_are_redacted() -> None:
    record = VersionRecord(name="s3", version=1, splits={"train": 1}, sources=[
        {"url": "https://alice:pa55@example.org/d.csv?X-Amz-Signature=abc123&x=1",
         "sha256": "a" * 64}],
        resources=[{"identifier": "datasets/s3/v1/data.h5", "sha256": "b" * 64, "size": 10}])
    doc = croissant(record, storage="mongodb://bob:s3cr3t@db.example/team?token=tok42")
    text = json.dumps(doc)
    for secret in ("pa55", "abc123", "s3cr3t", "tok42"):
        assert secret not in text
    assert doc["distribution"][0]["contentUrl"] == (
        "https://alice:***@example.org/d.csv?X-Amz-Signature=***&x=1")
    # the published file's URL: the storage path, then its query (not a path after the query)
    assert doc["distribution"][1]["contentUrl"] == (
        "mongodb://bob:***@db.example/team/datasets/s3/v1/data.h5?token=***")
    _validated(doc)


def test_web_serves_croissant_and_links_it(store: str, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    pytest.importorskip("starlette")
    from tests.web.conftest import client_for

    client = client_for(store)
    r = client.get("/datasets/flowers/croissant.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/ld+json"
    doc = r.json()
    _validated(doc)
    assert doc["url"] == "http://127.0.0.1/datasets/flowers"
    cli = _show(capsys, "flowers", "--storage", store)
    assert {k: v for k, v in doc.items() if k != "url"} == {
        k: v for k, v in cli.items() if k != "url"}
    assert client.get("/datasets/flowers/croissant.json?version=1").json()["version"] == "1.0.0"
    assert client.get("/datasets/nope/croissant.json").status_code == 404
    assert client.get("/datasets/flowers/croissant.json?version=9").status_code == 404
    page = client.get("/datasets/flowers").text
    assert 'href="/datasets/flowers/croissant.json"' in page
    datastack.publish("pinned", {"x": np.zeros(2)}, storage=store)
    datastack.publish("pinned", {"x": np.ones(2)}, storage=store)  # v2: v1 is now pinned
    pinned = client.get("/datasets/pinned?version=1").text
    assert 'href="/datasets/pinned/croissant.json?version=1"' in pinned
    assert 'href="/datasets/pinned/croissant.json"' in client.get("/datasets/pinned").text
    gated = client_for(store, token="s3cret-token", follow_redirects=False)
    assert gated.get("/datasets/flowers/croissant.json").status_code == 401  # behind the token
    ok = gated.get("/datasets/flowers/croissant.json",
                   headers={"Authorization": "Bearer s3cret-token"})
    assert ok.status_code == 200 and ok.json()["name"] == "flowers"


def test_every_field_kind_validates() -> None:
    record = VersionRecord(
        name="kinds", version=3, format="imagefolder", splits={"train": 2, "test": 1},
        sources=[{"url": "file:///data/photos", "md5": "c" * 32, "size": 5}],
        resources=[{"identifier": "datasets/kinds/v3/data.h5", "sha256": "d" * 64}],
        schema={"fields": [
            {"name": "image", "kind": "image", "dtype": "uint8", "shape": None,
             "modes": ["L", "RGB"]},
            {"name": "raw", "kind": "bytes", "dtype": "bytes", "shape": []},
            {"name": "flags", "kind": "array", "dtype": "bool", "shape": []},
            {"name": "samples", "kind": "array", "dtype": "float32", "shape": [4],
             "dataset": "samples_v1"},
            {"name": "label", "kind": "label", "dtype": "int64", "shape": [],
             "names": ["cat", "dog"]}]})
    doc = croissant(record)
    _validated(doc)
    assert "url" not in doc  # neither a page nor a storage given
    source, published = doc["distribution"]
    assert published["sha256"] == "d" * 64 and published["contentUrl"] == (
        "datasets/kinds/v3/data.h5")
    assert source["md5"] == "c" * 32 and source["encodingFormat"] == "application/x-tar"
    fields = {f["name"]: f for f in doc["recordSet"][-1]["field"]}
    assert fields["image"]["dataType"] == "sc:ImageObject"
    assert fields["flags"]["dataType"] == "sc:Boolean" and "repeated" not in fields["flags"]
    assert fields["samples"]["source"]["extract"] == {"column": "samples_v1"}
    assert fields["label"]["references"] == {"field": {"@id": "label_classes/index"}}
