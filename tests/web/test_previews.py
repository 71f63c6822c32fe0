"""Sample previews: paged, lazily read, thumbnails as bounded PNGs with label names, class
histograms, text snippets and table rows, all escaped."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from PIL import Image

from tests.web.conftest import HOSTILE_CLASS, HOSTILE_TEXT, World, client_for


@pytest.fixture(scope="module")
def client(world: World) -> Any:
    return client_for(world.uri)


def _thumbs(html: str) -> list[str]:
    return [s.replace("&amp;", "&") for s in re.findall(r'<img src="(/thumbs/[^"]+)"', html)]


def test_image_previews_are_thumbnails_with_label_names(client: Any) -> None:
    html = client.get("/datasets/photos").text
    thumbs = _thumbs(html)
    assert len(thumbs) == 13  # every photo of the split on page 1 (24 per page)
    captions = re.findall(r'<span class="cell" title="label">([^<]+)</span>', html)
    assert set(captions) == {"cutout", "made", "photo", "scan"}
    sizes = set()
    for src in thumbs:
        r = client.get(src)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert "immutable" in r.headers["cache-control"]
        with Image.open(io.BytesIO(r.content)) as image:
            assert image.format == "PNG" and max(image.size) <= 128 and min(image.size) > 0
            sizes.add(image.size)
    assert len(sizes) > 3  # real photos of different shapes, aspect kept
    assert "Classes of label (train, 13 samples)" in html
    assert "<title>photo: 5</title>" in html


def test_picture_like_arrays_are_shown_as_images_and_paged(client: Any) -> None:
    first = client.get("/datasets/digits").text
    assert len(_thumbs(first)) == 24 and "page 1 of 3" in first
    second = client.get("/datasets/digits?page=3&size=24").text
    assert len(_thumbs(second)) == 12 and "#48-59 of 60" in second
    small = client.get("/datasets/digits?page=2&size=5").text
    assert [int(i) for i in re.findall(r'<figure class="sample" data-index="(\d+)"', small)] == [
        5, 6, 7, 8, 9]
    png = client.get(_thumbs(small)[0]).content
    with Image.open(io.BytesIO(png)) as image:
        assert image.size == (96, 96)  # 8x8 enlarged (nearest) to be visible
    assert client.get("/datasets/digits?page=4&size=24").status_code == 400
    assert client.get("/thumbs/digits/1/train/59.png").status_code == 200
    assert client.get("/thumbs/digits/1/train/60.png").status_code == 400
    assert client.get("/thumbs/digits/1/train/0.png?field=digit").status_code == 404


def test_text_snippets_and_table_rows_are_escaped(client: Any) -> None:
    html = client.get("/datasets/notes").text
    assert "<table class=\"samples\">" in html
    assert "<th>text</th><th>stars</th><th>label</th>" in html
    assert HOSTILE_TEXT not in html and "&lt;script&gt;alert(4)&lt;/script&gt; hello" in html
    assert HOSTILE_CLASS not in html and "&lt;i onmouseover=alert(5)&gt;pos&lt;/i&gt;" in html
    assert "... (600 chars)" in html  # a long text is cut to a snippet
    assert "élan" in html and ">1.5<" in html
    flowers = client.get("/datasets/flowers?split=test").text
    assert "<th>sepal</th><th>petal</th><th>species</th>" in flowers  # one cell per column
    assert "Samples of test (#0-4 of 5)" in flowers


def test_a_page_reads_only_what_it_shows(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page reads no image (labels come with the split), a thumbnail one image, a text
    page only the texts it shows."""
    from datastack.canonical.records import RecordsDatasetIterator

    spans: list[tuple[str, int]] = []
    original = RecordsDatasetIterator._read_span

    def recording(self: Any, state: Any, column: Any, lo: int, hi: int) -> Any:
        spans.append((column.field.name, hi - lo))
        return original(self, state, column, lo, hi)

    cut_mapped = RecordsDatasetIterator._cut_mapped

    def cutting(state: Any, column: Any, rows: Any) -> Any:  # a local file's batch of texts
        out = cut_mapped(state, column, rows)
        if out is not None:
            spans.append((column.field.name,
                          int((column.offsets[rows + 1] - column.offsets[rows]).sum())))
        return out

    monkeypatch.setattr(RecordsDatasetIterator, "_read_span", recording)
    monkeypatch.setattr(RecordsDatasetIterator, "_cut_mapped", staticmethod(cutting))
    client = client_for(world.uri)
    html = client.get("/datasets/photos").text
    assert len(_thumbs(html)) == 13 and spans == []
    assert client.get("/thumbs/photos/1/train/3.png").status_code == 200
    assert [name for name, _ in spans] == ["image"]
    spans.clear()
    assert client.get("/datasets/notes?size=2").status_code == 200
    assert [name for name, _ in spans] == ["text"]  # one read for the two texts shown
    assert spans[0][1] == len(HOSTILE_TEXT.encode()) + len(("plain & simple " * 40).encode())


def test_previews_never_fill_the_local_disk_cache(
    world: World, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``datastack.load`` over GridFS fills the local cache with the whole data file in the
    background; the web page reads a few samples and fills nothing."""
    if world.kind != "mongodb":
        pytest.skip("only remote storages go through the local disk cache")
    import time

    import datastack

    monkeypatch.setenv("DATASTACK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DATASTACK_CACHE_DIR_BYTES", "1G")

    def cached() -> list[Any]:
        return [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.stat().st_size]

    client = client_for(world.uri)
    html = client.get("/datasets/photos").text
    assert all(client.get(src).status_code == 200 for src in _thumbs(html)[:5])
    time.sleep(1.0)
    assert not [p for p in cached() if "objects" in p.parts]
    datastack.load("notes", storage=world.uri)[0]  # the library's read-through does fill
    deadline = time.monotonic() + 30
    while not [p for p in cached() if "objects" in p.parts] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p for p in cached() if "objects" in p.parts]
