"""A catalog to browse, on the filesystem and on SecantusDB: datasets in every state, two
versions of one, a hostile description, a dataset that never published."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HOSTILE = "<script>alert(1)</script> & <img src=x onerror=alert(2)>"
HOSTILE_TEXT = "<script>alert(4)</script> hello"
HOSTILE_CLASS = "<i onmouseover=alert(5)>pos</i>"


@dataclass
class World:
    """A storage URI with published datasets, and what the tests expect of it."""

    uri: str
    kind: str


def _csv_spec(folder: Path, name: str, rows: int, description: str, extra: str = "") -> Path:
    data = folder / f"{name}-{rows}.csv"
    data.write_text("sepal,petal,species\n" + "".join(
        f"{i * 0.5},{i % 7},{['setosa', 'versicolor', 'virginica'][i % 3]}\n" for i in range(rows)
    ))
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    spec = folder / f"{name}-{rows}.yaml"
    spec.write_text(
        f"datasets:\n  {name}:\n    description: {description!r}\n"
        f"    sources: [{{url: {data.as_uri()}, sha256: {digest}}}]\n"
        f"    format: csv\n    splits: {{train: 0.75, test: 0.25}}\n{extra}"
    )
    return spec


def build_world(uri: str, folder: Path) -> None:
    """Publish the test datasets into ``uri``."""
    import datastack
    from datastack.store import Store

    folder.mkdir(parents=True, exist_ok=True)
    specs = [
        _csv_spec(folder, "flowers", 12, HOSTILE),
        _csv_spec(folder, "flowers", 20, HOSTILE),  # v2: more rows
        _csv_spec(folder, "broken", 8, "refreshes fail"),
        _csv_spec(folder, "late", 8, "hourly", "    schedule: '0 * * * *'\n"),
    ]
    for spec in specs:
        for result in datastack.refresh(spec, storage=uri):
            assert result.status == "published", result.reason
    _publish_images(uri, folder)
    catalog = Store.open(uri).catalog
    catalog.record_check("broken", "failed", reason="gate min_samples: 8 < 100 <b>bold</b>")
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    catalog.record_check("late", "published", version=1, at=long_ago, schedule="0 * * * *")
    catalog.record_check("ghost", "failed", reason="RetrievalError: 404 for https://x/y.csv")


def _publish_images(uri: str, folder: Path) -> None:
    """``photos``: real photographs and scans (scikit-image, scikit-learn) as an image folder;
    ``digits``: scikit-learn's 8x8 digits as a fixed-shape array (shown as pictures)."""
    import numpy as np
    from sklearn.datasets import load_digits

    import datastack
    from tests.fields.realdata import image_files, tar_folder, write_spec

    image_files(folder / "photos")
    archive = tar_folder(folder / "photos", folder / "photos.tar.gz")
    spec = write_spec(folder / "photos.yaml", "photos", [archive],
                      "    format: imagefolder\n    description: real photos and scans\n")
    [result] = datastack.refresh(spec, storage=uri)
    assert result.status == "published", result.reason
    digits = load_digits()
    datastack.publish("digits", {"image": digits.images[:60].astype(np.float32),
                                 "digit": np.array([str(t) for t in digits.target[:60]])},
                      target="digit", storage=uri, description="8x8 digits")
    texts = np.array([HOSTILE_TEXT, "plain & simple " * 40, "élan"], dtype=object)
    datastack.publish("notes", {"text": texts, "stars": np.array([1.5, 2.0, 3.0]),
                                "label": np.array([HOSTILE_CLASS, "neg", "neg"])},
                      target="label", storage=uri)


@pytest.fixture(scope="module", params=["file", "secantus"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """The same catalog on both stores (built once per test module and store)."""
    folder = tmp_path_factory.mktemp("web")
    if request.param == "file":
        uri = str(folder / "store")
        build_world(uri, folder / "src")
        yield World(uri, "file")
        return
    base = request.getfixturevalue("mongo_base_uri")
    database = f"web_{uuid.uuid4().hex[:10]}"
    uri = f"{base.rstrip('/')}/{database}"
    build_world(uri, folder / "src")
    yield World(uri, "mongodb")
    import pymongo

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(base)
    client.drop_database(database)
    client.close()


def client_for(uri: str, **kwargs: Any) -> Any:
    from starlette.testclient import TestClient

    from datastack.web.app import create_app

    token = kwargs.pop("token", None)
    hosts = kwargs.pop("hosts", ())
    kwargs.setdefault("base_url", "http://127.0.0.1")  # a loopback Host (DNS rebinding guard)
    return TestClient(create_app(uri, token=token, hosts=hosts), **kwargs)
