"""Take the README's screenshots of ``datastack web`` with headless Chromium (Debian package).

Builds a small demo catalog in a temporary folder (the example spec's iris, wine and digits,
an image folder of scikit-image's photos, two datasets whose refreshes fail or are late),
serves it with uvicorn on 127.0.0.1 and saves ``docs/catalog-page.png`` and
``docs/dataset-page.png``.

    .venv/bin/python scripts/web_screenshot.py
"""

from __future__ import annotations

import datetime as dt
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def build(storage: str, folder: Path) -> None:
    import shutil

    import datastack
    from datastack.store import Store
    from tests.fields.realdata import image_files, tar_folder, write_spec

    shutil.copytree(ROOT / "examples", folder / "examples")
    for result in datastack.refresh(folder / "examples" / "datasets.yaml", storage=storage):
        assert result.ok, result.reason
    image_files(folder / "photos")
    archive = tar_folder(folder / "photos", folder / "photos.tar.gz")
    spec = write_spec(folder / "photos.yaml", "photos", [archive],
                      "    format: imagefolder\n    description: photographs and scans from "
                      "scikit-image and scikit-learn, one folder per class\n")
    [result] = datastack.refresh(spec, storage=storage)
    assert result.ok, result.reason
    catalog = Store.open(storage).catalog
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=7)
    catalog.record_check("wine", "unchanged", version=1, at=old, schedule="0 * * * *")
    catalog.record_check("iris", "unchanged", version=1, schedule="0 3 * * *")
    catalog.record_check(
        "prices", "failed", schedule="*/30 * * * *",
        reason="dataset 'prices': gate format: https://example.org/prices.csv is an HTML page "
               "(an error page served with 200?); nothing was published")


def serve_and_shoot(storage: str) -> None:
    import uvicorn
    from playwright.sync_api import sync_playwright

    from datastack.web.app import create_app
    from tests.mongo_server import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(storage), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1360, "height": 640})
            page.goto(f"http://127.0.0.1:{port}/")
            page.screenshot(path=str(ROOT / "docs" / "catalog-page.png"), full_page=True)
            page.goto(f"http://127.0.0.1:{port}/datasets/photos")
            page.wait_for_load_state("load")
            page.screenshot(path=str(ROOT / "docs" / "dataset-page.png"), full_page=True)
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="datastack-shot-") as tmp:
        storage = str(Path(tmp) / "store")
        build(storage, Path(tmp))
        serve_and_shoot(storage)
    print("wrote docs/catalog-page.png and docs/dataset-page.png")


if __name__ == "__main__":
    main()
