"""``datastack web`` as a command: it serves over real HTTP, on loopback without a token, on
every interface only with one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.mongo_server import free_port
from tests.web.conftest import World

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "served-token-0123456789abcdef"


def _serve(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "datastack.cli", "web", "--port", str(port), *args],
        cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"datastack web exited: {process.communicate()}")
        try:
            requests.get(url + "/static/style.css", timeout=1)
            return process, url
        except requests.ConnectionError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("datastack web did not answer within 60 s")


def _stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
    return err


@pytest.mark.parametrize("world", ["file"], indirect=True)
def test_the_command_serves_the_catalog(world: World) -> None:
    env = {"DATASTACK_WEB_TOKEN": ""}
    process, url = _serve(["--storage", world.uri], env)
    try:
        page = requests.get(url + "/", timeout=30)
        assert page.status_code == 200 and 'data-name="flowers"' in page.text
        assert requests.get(url + "/api/datasets/flowers", timeout=30).json()["version"] == 2
        assert "server" not in page.headers  # no server banner
    finally:
        err = _stop(process)
    assert "serving" in err and "loopback only, no token" in err


@pytest.mark.parametrize("world", ["file"], indirect=True)
def test_every_interface_only_with_the_token(world: World) -> None:
    process, url = _serve(["--storage", world.uri, "--host", "0.0.0.0"],
                          {"DATASTACK_WEB_TOKEN": TOKEN})
    try:
        assert requests.get(url + "/", timeout=30).status_code == 401
        assert requests.get(url + "/api/datasets", timeout=30).status_code == 401
        ok = requests.get(url + "/api/datasets", timeout=30,
                          headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and ok.json()
    finally:
        err = _stop(process)
    assert "reachable from the network, token required" in err and TOKEN not in err
