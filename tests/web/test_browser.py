"""The pages in a real headless browser: Debian's chromium driven by Playwright, against the
app served by uvicorn on 127.0.0.1 in a thread.

Skips (saying why) when chromium or Playwright is missing; ``scripts/test.sh`` installs
chromium from the Debian packages so that CI runs it. Never ``playwright install``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.mongo_server import free_port
from tests.web.conftest import HOSTILE, HOSTILE_TEXT, World

CHROMIUM = os.environ.get("DATASTACK_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKEN = "browser-token-0123456789abcdef"

pytestmark = pytest.mark.browser


def _playwright() -> Any:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no headless browser: {CHROMIUM} is missing (apt-get install chromium; "
                    "scripts/test.sh does it where apt-get is available)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright is not installed (pip install -e '.[dev]')")
    return sync_playwright


class Served:
    """uvicorn serving an app on 127.0.0.1 in a thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_playwright = _playwright()
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    page = context.new_page()
    page.dialogs = []  # every alert/confirm/prompt that fires (none may)
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    try:
        yield page
    finally:
        context.close()


@pytest.mark.parametrize("world", ["file"], indirect=True)
def test_catalog_filter_previews_and_hostile_text_in_a_browser(world: World, page: Any) -> None:
    from datastack.web.app import create_app

    with Served(create_app(world.uri)) as served:
        page.goto(served.url + "/")
        rows = page.locator("#datasets tbody tr")
        names = [rows.nth(i).get_attribute("data-name") for i in range(rows.count())]
        assert names == ["broken", "ghost", "late", "digits", "flowers", "notes", "photos"]
        states = {n: page.locator(f'tr[data-name="{n}"] span.state').inner_text() for n in names}
        assert states == {"broken": "failing", "ghost": "failing", "late": "overdue",
                          "digits": "fresh", "flowers": "fresh", "notes": "fresh",
                          "photos": "fresh"}
        # the filter, as you type (JavaScript) ...
        page.fill("#filter", "PHO")
        assert page.locator("#datasets tbody tr:visible").count() == 1
        assert page.locator("tr[data-name=photos]").is_visible()
        page.fill("#filter", "zzz")
        assert page.locator("#datasets tbody tr:visible").count() == 0
        assert page.locator("#no-match").is_visible()
        page.fill("#filter", "")
        assert page.locator("#datasets tbody tr:visible").count() == 7
        # ... and on the server (the form)
        page.fill("#filter", "flo")
        page.press("#filter", "Enter")
        page.wait_for_url("**/?q=flo")
        assert page.locator("#datasets tbody tr").count() == 1

        # image previews load: every thumbnail decoded by the browser
        page.goto(served.url + "/datasets/photos")
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all(
            "figure.sample img", "els => els.map(e => [e.complete, e.naturalWidth])")
        assert len(images) == 13 and all(done and width > 0 for done, width in images)
        assert page.locator("figure.sample figcaption").first.inner_text().endswith("cutout")
        assert page.locator("svg.histogram rect").count() == 4

        # hostile strings are shown as text and never run
        page.goto(served.url + "/datasets/flowers")
        assert page.locator(".description").inner_text() == HOSTILE
        page.goto(served.url + "/datasets/notes")
        assert page.get_by_text(HOSTILE_TEXT).count() == 1
        page.locator("table.samples span.cell").nth(2).hover()  # the class name's onmouseover
        page.goto(served.url + "/?q=%3Cscript%3Ealert(6)%3C/script%3E")
        assert page.locator("#filter").input_value() == "<script>alert(6)</script>"
        page.wait_for_timeout(300)
        assert page.dialogs == []
        assert page.evaluate("document.querySelectorAll('main script').length") == 0


@pytest.mark.parametrize("world", ["file"], indirect=True)
def test_login_form_in_a_browser(world: World, page: Any) -> None:
    from datastack.web.app import create_app

    with Served(create_app(world.uri, token=TOKEN)) as served:
        response = page.goto(served.url + "/datasets/photos")
        assert response.status == 401 and page.locator("input[name=token]").is_visible()
        page.fill("input[name=token]", "not-the-token-at-all")
        page.click("button[type=submit]")
        assert "not right" in page.locator("p.message").inner_text()
        page.fill("input[name=token]", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url("**/datasets/photos")
        images = page.eval_on_selector_all(
            "figure.sample img", "els => els.map(e => e.naturalWidth)")
        assert len(images) == 13 and min(images) > 0  # thumbnails pass with the cookie
        assert page.evaluate("document.cookie") == ""  # HttpOnly: scripts cannot read it
        assert page.context.cookies()[0]["httpOnly"] is True
