"""Safety: the token rules, the login cookie, no credential shown, errors without tracebacks,
storage outages as 503 pages, and no write command on MongoDB."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from datastack.cli import EXIT_UNAVAILABLE, EXIT_USAGE, main
from datastack.errors import ConfigurationError
from datastack.web.security import COOKIE, check_serving, is_loopback
from tests.command_probe import LISTEN, WRITES
from tests.web.conftest import World, client_for

TOKEN = "t0ken-for-the-tests-0123456789"
ROOT = Path(__file__).resolve().parents[2]


def test_loopback_rules() -> None:
    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"):
        assert is_loopback(host)
        check_serving(host, None)
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.org", "localhost.evil"):
        assert not is_loopback(host)
        with pytest.raises(ConfigurationError, match="without a token"):
            check_serving(host, None)
        check_serving(host, TOKEN)
    with pytest.raises(ConfigurationError, match="at least 16"):
        check_serving("127.0.0.1", "short")


def test_cli_refuses_to_serve_off_loopback_without_a_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATASTACK_WEB_TOKEN", raising=False)
    assert main(["web", "--host", "0.0.0.0", "--storage", str(tmp_path)]) == EXIT_USAGE
    assert "DATASTACK_WEB_TOKEN" in capsys.readouterr().err
    monkeypatch.setenv("DATASTACK_WEB_TOKEN", "abc")
    assert main(["web", "--host", "0.0.0.0", "--storage", str(tmp_path)]) == EXIT_USAGE
    assert "at least 16" in capsys.readouterr().err
    assert main(["web", "--port", "0", "--storage", str(tmp_path)]) == EXIT_USAGE
    assert main(["web", "--port", "70000", "--storage", str(tmp_path)]) == EXIT_USAGE


def test_cli_fails_fast_on_unreachable_storage_without_the_password(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.mongo_server import free_port

    monkeypatch.delenv("DATASTACK_WEB_TOKEN", raising=False)
    uri = f"mongodb://alice:SENTINEL_PW@127.0.0.1:{free_port()}/team?serverSelectionTimeoutMS=300"
    assert main(["web", "--storage", uri]) == EXIT_UNAVAILABLE
    err = capsys.readouterr().err
    assert "SENTINEL_PW" not in err and "storage unavailable" in err


def test_web_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["web", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--host" in out and "--port" in out and "DATASTACK_WEB_TOKEN" in out


PATHS = ["/", "/datasets/flowers", "/api/datasets", "/api/datasets/flowers", "/api/status",
         "/thumbs/flowers/2/train/0.png", "/datasets/nope", "/logout"]


def test_every_request_without_the_token_is_401(world: World) -> None:
    client = client_for(world.uri, token=TOKEN, follow_redirects=False)
    for path in PATHS:
        r = client.get(path)
        assert r.status_code == 401, path
        for secret in ("broken", "late", "setosa", "sha256", "alert", "KiB"):  # no catalog data
            assert secret not in r.text, (path, secret)
        if path.startswith("/api/"):
            assert r.json()["status"] == 401
        else:
            assert '<form method="post" action="/login">' in r.text
    for wrong in ("Bearer nope", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, "Bearer "):
        assert client.get("/api/datasets", headers={"Authorization": wrong}).status_code == 401
    client.cookies.set(COOKIE, "a-session-id-this-server-never-issued")
    assert client.get("/").status_code == 401
    client.cookies.clear()
    # the login form and the style sheet are open
    assert client.get("/login").status_code == 200
    assert client.get("/static/style.css").status_code == 200


def test_bearer_token_and_login_cookie(world: World) -> None:
    client = client_for(world.uri, token=TOKEN, follow_redirects=False)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/api/datasets", headers=auth).status_code == 200
    assert client.get("/datasets/flowers", headers=auth).status_code == 200

    wrong = client.post("/login", data={"token": "wrong-token-wrong-token", "next": "/"})
    assert wrong.status_code == 401 and "not right" in wrong.text
    assert COOKIE not in wrong.cookies

    r = client.post("/login", data={"token": TOKEN, "next": "/datasets/flowers?version=1"})
    assert r.status_code == 303 and r.headers["location"] == "/datasets/flowers?version=1"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert TOKEN not in cookie  # a random session id, not the token
    assert client.get("/datasets/flowers").status_code == 200  # the client keeps the cookie
    assert client.get("/api/status").status_code == 200
    out = client.get("/logout")
    assert out.status_code == 303
    client.cookies.clear()
    assert client.get("/").status_code == 401


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil",
                                    "javascript:alert(1)"])
def test_login_never_redirects_off_site(world: World, target: str) -> None:
    client = client_for(world.uri, token=TOKEN, follow_redirects=False)
    r = client.post("/login", data={"token": TOKEN, "next": target})
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_login_form_body_is_bounded(world: World) -> None:
    client = client_for(world.uri, token=TOKEN, follow_redirects=False)
    r = client.post("/login", content=b"token=" + b"x" * 10_000,
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400


def test_no_token_means_no_login(world: World) -> None:
    client = client_for(world.uri, follow_redirects=False)
    assert client.get("/login").status_code == 303


def test_storage_unavailable_is_a_503_page_with_the_uri_redacted() -> None:
    from tests.mongo_server import free_port

    uri = (f"mongodb://alice:SENTINEL_PW@127.0.0.1:{free_port()}/team"
           "?serverSelectionTimeoutMS=200&connectTimeoutMS=200")
    client = client_for(uri)
    for path in ("/", "/datasets/flowers", "/api/datasets"):
        r = client.get(path)
        assert r.status_code == 503, r.text
        assert "SENTINEL_PW" not in r.text
        assert "alice:***@127.0.0.1" in r.text and "Traceback" not in r.text
    assert client.get("/api/status").json()["status"] == 503


def test_unexpected_errors_are_500_pages_without_traceback(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datastack.catalog.base import Catalog

    def boom(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals /etc/shadow")

    monkeypatch.setattr(Catalog, "latest_records", boom)
    client = client_for(world.uri, raise_server_exceptions=False)
    r = client.get("/")
    assert r.status_code == 500 and "internal error" in r.text
    assert "secret internals" not in r.text and "Traceback" not in r.text
    api = client.get("/api/datasets")
    assert api.status_code == 500 and api.json()["error"].startswith("internal error")


PROBE = LISTEN + r"""
from starlette.testclient import TestClient
from datastack.web.app import create_app

client = TestClient(create_app(sys.argv[1]), base_url="http://127.0.0.1")
codes = [client.get(p).status_code for p in json.loads(sys.argv[2])]
print(json.dumps({"commands": sorted(set(seen)), "codes": codes}))
"""

def test_pages_send_no_write_command(world: World) -> None:
    if world.kind != "mongodb":
        pytest.skip("write commands are counted on MongoDB")
    paths = ["/", "/datasets/flowers", "/datasets/flowers?version=1&split=test",
             "/datasets/ghost", "/api/datasets", "/api/datasets/flowers", "/api/status",
             "/thumbs/flowers/2/train/0.png"]
    done = subprocess.run([sys.executable, "-c", PROBE, world.uri, json.dumps(paths)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["codes"][:7] == [200] * 7, report
    assert "find" in report["commands"]
    assert not set(report["commands"]) & WRITES, report["commands"]


def test_command_line_stays_light() -> None:
    code = ("import sys, datastack, datastack.cli; datastack.cli.build_parser(); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'starlette', 'jinja2', 'uvicorn', 'PIL', 'fastapi', 'httpx', 'playwright'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.strip()
    assert out == "[]"


def test_pages_change_no_file_of_a_filesystem_store(world: World) -> None:
    if world.kind != "file":
        pytest.skip("MongoDB is checked by test_pages_send_no_write_command")
    root = Path(world.uri)

    def snapshot() -> dict[str, tuple[int, int]]:
        return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
                for p in sorted(root.rglob("*"))}

    before = snapshot()
    client = client_for(world.uri)
    for path in ["/", "/datasets/photos", "/datasets/digits?page=2", "/datasets/notes",
                 "/datasets/ghost", "/api/datasets", "/api/datasets/flowers", "/api/status",
                 "/thumbs/photos/1/train/0.png", "/thumbs/digits/1/train/3.png"]:
        assert client.get(path).status_code == 200, path
    assert snapshot() == before
