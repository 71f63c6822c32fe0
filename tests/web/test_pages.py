"""Every page and the JSON API through an HTTP client, on the filesystem and on SecantusDB."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from datastack.cli import main
from tests.web.conftest import World, client_for


@pytest.fixture(scope="module")
def client(world: World) -> Any:
    return client_for(world.uri)


def _names_in_order(html: str) -> list[str]:
    return re.findall(r'<tr data-name="([^"]+)"', html)


def test_catalog_page_lists_every_dataset_with_its_state(client: Any) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    # failing first, then overdue, then fresh; by name within a state
    assert _names_in_order(html) == [
        "broken", "ghost", "late", "digits", "flowers", "notes", "photos"]
    for name, state in [("broken", "failing"), ("ghost", "failing"), ("late", "overdue"),
                        ("flowers", "fresh")]:
        row = html.split(f'<tr data-name="{name}"')[1].split("</tr>")[0]
        assert f'<span class="state {state}">{state}</span>' in row
    flowers = html.split('<tr data-name="flowers"')[1].split("</tr>")[0]
    assert "v2" in flowers and "train: 15" in flowers and "test: 5" in flowers
    assert "KiB" in flowers  # size
    late = html.split('<tr data-name="late"')[1].split("</tr>")[0]
    assert "<code>0 * * * *</code>" in late
    broken = html.split('<tr data-name="broken"')[1].split("</tr>")[0]
    assert "gate min_samples: 8 &lt; 100 &lt;b&gt;bold&lt;/b&gt;" in broken  # reason, escaped
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html


def test_server_side_filter(client: Any) -> None:
    assert _names_in_order(client.get("/?q=LO").text) == ["flowers"]
    assert _names_in_order(client.get("/?q=o").text) == [
        "broken", "ghost", "flowers", "notes", "photos"]
    nothing = client.get("/?q=zzz").text
    assert _names_in_order(nothing) == [] and "No dataset matches" in nothing
    hostile = client.get("/", params={"q": '"><script>alert(3)</script>'}).text
    assert "<script>alert(3)" not in hostile and "&#34;&gt;&lt;script&gt;" in hostile


def test_dataset_page(client: Any, world: World) -> None:
    r = client.get("/datasets/flowers")
    assert r.status_code == 200
    html = r.text
    assert '<div class="description">&lt;script&gt;alert(1)&lt;/script&gt; &amp; ' in html
    assert "<script>alert" not in html
    assert "version <strong>v2</strong> (latest)" in html
    # the line that loads it, version pinned, storage shown
    assert "datastack.load(&#34;flowers&#34;, split=&#34;train&#34;, version=2" in html
    # splits, fields with class names, versions with lineage and changes
    assert '<td>train</td><td class="num">15</td>' in html
    assert "3 classes" in html and "setosa, versicolor, virginica" in html
    assert "columns: sepal, petal" in html
    assert html.index('href="/datasets/flowers?version=2"') < html.index(
        'href="/datasets/flowers?version=1"')
    assert "train: 9 -&gt; 15 samples (+6)" in html and "test: 3 -&gt; 5 samples (+2)" in html
    assert "source content changed" in html and "first version" in html
    assert "host: " in html and "engine: local" in html
    assert re.search(r"sha256:[0-9a-f]{64}", html)
    assert "flowers-20.csv" in html


def test_pinned_version_and_status_pages(client: Any) -> None:
    html = client.get("/datasets/flowers?version=1").text
    assert "version <strong>v1</strong> (pinned; latest is" in html
    assert "version=1, storage=" in html
    broken = client.get("/datasets/broken").text
    assert "failing" in broken and "gate min_samples: 8 &lt; 100" in broken
    ghost = client.get("/datasets/ghost")
    assert ghost.status_code == 200 and "Nothing is published yet" in ghost.text
    assert "RetrievalError: 404" in ghost.text
    late = client.get("/datasets/late").text
    assert '<span class="state overdue">overdue</span>' in late


def _cli_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Any:
    capsys.readouterr()
    assert main(argv) in (0, 1)
    return json.loads(capsys.readouterr().out)


def test_api_mirrors_the_cli(
    client: Any, world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    listed = client.get("/api/datasets")
    assert listed.status_code == 200 and listed.headers["content-type"] == "application/json"
    rows = listed.json()
    statuses = _cli_json(["status", "--storage", world.uri, "--json"], capsys)
    by_name = {s["name"]: s for s in statuses}
    assert [r.pop("freshness") for r in rows] == [by_name[r["name"]] for r in rows]
    assert rows == _cli_json(["ls", "--storage", world.uri, "--json"], capsys)
    assert [r["name"] for r in rows] == ["broken", "digits", "flowers", "late", "notes",
                                         "photos"]
    assert client.get("/api/datasets?q=flo").json()[0]["name"] == "flowers"

    shown = client.get("/api/datasets/flowers").json()
    assert shown.pop("freshness") == by_name["flowers"]
    assert shown == _cli_json(["show", "flowers", "--storage", world.uri, "--json"], capsys)
    v1 = client.get("/api/datasets/flowers?version=1").json()
    v1.pop("freshness")
    assert v1 == _cli_json(["show", "flowers", "--version", "1", "--storage", world.uri,
                            "--json"], capsys)
    assert client.get("/api/status").json() == statuses
    assert client.get("/api/datasets/ghost").status_code == 404


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/datasets/..%2F..%2Fetc%2Fpasswd", 404),
        ("/datasets/%2E%2E", 404),
        ("/datasets/a%00b", 404),
        ("/datasets/" + "a" * 300, 404),
        ("/datasets/CON%3A", 404),
        ("/api/datasets/..%2F..%2Fetc%2Fpasswd", 404),
        ("/datasets/nope", 404),
        ("/datasets/flowers?version=0", 400),
        ("/datasets/flowers?version=-1", 400),
        ("/datasets/flowers?version=abc", 400),
        ("/datasets/flowers?version=99999999999999999999999", 400),
        ("/datasets/flowers?version=99", 404),
        ("/datasets/flowers?size=1000", 400),
        ("/datasets/flowers?size=0", 400),
        ("/datasets/flowers?page=0", 400),
        ("/datasets/flowers?page=1000000000", 400),
        ("/datasets/flowers?split=../x", 400),
        ("/api/datasets/flowers?version=1e3", 400),
        ("/?q=" + "x" * 500, 400),
        ("/thumbs/flowers/2/train/1000000000.png", 400),
        ("/thumbs/flowers/2/nosplit/0.png", 400),
        ("/thumbs/flowers/x/train/0.png", 400),
        ("/thumbs/flowers/7/train/0.png", 404),
        ("/static/..%2F..%2F..%2Fetc%2Fpasswd", 404),
        ("/nothing-here", 404),
    ],
)
def test_bad_parameters_are_4xx_pages_without_file_content(
    client: Any, path: str, status: int
) -> None:
    r = client.get(path)
    assert r.status_code == status, r.text[:300]
    assert "root:" not in r.text and "Traceback" not in r.text
    if path.startswith("/api/"):
        assert r.json()["status"] == status and r.json()["error"]
    else:
        assert f"<h1>{status} " in r.text and '<p class="message">' in r.text


def test_security_headers_and_methods(client: Any) -> None:
    r = client.get("/")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert client.post("/").status_code == 405
    assert client.delete("/api/datasets").status_code == 405
    css = client.get("/static/style.css")
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]
