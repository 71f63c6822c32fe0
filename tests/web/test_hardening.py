"""Second hardening round of the web page (#26.1, #26.2, #26.21, #26.24, #27.7, #27.9): the
Host header (DNS rebinding), slow clients, the bind host as given, logout, the dataset page's
reads, pasteable lines, category names in the table preview. Real HTTP to uvicorn on
127.0.0.1 where the network matters."""

from __future__ import annotations

import hashlib
import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from datastack.errors import ConfigurationError
from tests.mongo_server import free_port
from tests.web.conftest import World, client_for

TOKEN = "hardening-token-0123456789abcdef"
ROOT = Path(__file__).resolve().parents[2]


class Served:
    """The app served by uvicorn with ``datastack web``'s settings, in a thread."""

    def __init__(self, app: Any, **settings: Any) -> None:
        import uvicorn

        from datastack.web.server import server_config

        self.port = free_port()
        self.server = uvicorn.Server(server_config(app, "127.0.0.1", self.port, **settings))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

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


def raw_get(port: int, path: str, host: str | None, headers: str = "",
            version: str = "1.1") -> tuple[int, bytes]:
    """One GET over a socket with exactly this Host header (``None``: none at all)."""
    head = f"GET {path} HTTP/{version}\r\n"
    if host is not None:
        head += f"Host: {host}\r\n"
    head += headers + "Connection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


LOOPBACK_HOSTS = ["127.0.0.1", "127.0.0.1:8765", "127.42.0.9", "localhost", "LocalHost:80",
                  "localhost.", "[::1]", "[::1]:8765"]
FORGED_HOSTS = ["attacker.example", "attacker.example:8765", "127.0.0.1.nip.io",
                "localhost.attacker.example", "evil.localhost", "0.0.0.0", "192.168.1.7",
                "[::1].evil", "[::2]", "127.0.0.1:x", "", "10.0.0.1:8765"]


@pytest.mark.parametrize("world", ["file"], indirect=True)
def test_without_a_token_only_loopback_host_names_are_answered(world: World) -> None:
    from datastack.web.app import create_app

    with Served(create_app(world.uri)) as served:
        for host in LOOPBACK_HOSTS:
            status, body = raw_get(served.port, "/api/datasets", host)
            assert status == 200 and b"flowers" in body, host
        for host in [*FORGED_HOSTS, None]:
            for path in ("/", "/api/datasets", "/datasets/flowers", "/api/status",
                         "/static/style.css"):
                status, body = raw_get(served.port, path, host,
                                       version="1.0" if host is None else "1.1")
                assert status == 400, (host, path, status)
                for data in (b"flowers", b"setosa", b"sha256", b"broken"):
                    assert data not in body, (host, path)


@pytest.mark.parametrize("world", ["file"], indirect=True)
def test_with_a_token_allowed_hosts_are_named(world: World) -> None:
    from datastack.web.app import create_app

    auth = f"Authorization: Bearer {TOKEN}\r\n"
    app = create_app(world.uri, token=TOKEN, hosts=["catalog.example.org", "10.1.2.3"])
    with Served(app) as served:
        for host in ("catalog.example.org", "CATALOG.example.org:443", "10.1.2.3", "127.0.0.1"):
            assert raw_get(served.port, "/api/datasets", host)[0] == 401
            status, body = raw_get(served.port, "/api/datasets", host, auth)
            assert status == 200 and b"flowers" in body
        for host in ("attacker.example", "catalog.example.org.attacker.example", "10.1.2.4"):
            status, body = raw_get(served.port, "/api/datasets", host, auth)
            assert status == 400 and b"flowers" not in body
    # a token and no --allowed-host: any name (the token guards), as before
    with Served(create_app(world.uri, token=TOKEN)) as served:
        assert raw_get(served.port, "/api/datasets", "anything.example", auth)[0] == 200
    with pytest.raises(ConfigurationError, match="needs a token"):
        create_app(world.uri, hosts=["catalog.example.org"])
    with pytest.raises(ConfigurationError, match="not an IP address or a host name"):
        create_app(world.uri, token=TOKEN, hosts=["catalog.example.org:443"])


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "datastack.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


@pytest.mark.parametrize("host", ["127.0.0.1 ", " 127.0.0.1", "127.0.0.1\t", "127.0.0.1\n",
                                  "local host", "127.0.0.1:8765", "http://127.0.0.1", "",
                                  "localhost ", "::1 ", "[::1", "256.1.1.1", "a..b"])
def test_the_bind_host_is_validated_as_given(host: str) -> None:
    from datastack.web.security import check_serving

    with pytest.raises(ConfigurationError, match="not an IP address or a host name"):
        check_serving(host, None)
    with pytest.raises(ConfigurationError, match="not an IP address or a host name"):
        check_serving(host, TOKEN)


def test_bind_hosts_that_are_fine() -> None:
    from datastack.web.security import check_serving

    assert check_serving("[::1]", None) == "::1"
    assert check_serving("127.0.0.1", None) == "127.0.0.1"
    assert check_serving("localhost", None) == "localhost"
    assert check_serving("catalog.example.org", TOKEN) == "catalog.example.org"


def test_the_command_refuses_a_host_with_spaces_and_hosts_without_a_token(tmp_path: Path) -> None:
    env = {"DATASTACK_WEB_TOKEN": ""}
    out = _cli("web", "--storage", str(tmp_path), "--host", "127.0.0.1 ", env=env)
    assert out.returncode == 2 and "not an IP address or a host name" in out.stderr
    out = _cli("web", "--storage", str(tmp_path), "--allowed-host", "catalog.example.org",
               env=env)
    assert out.returncode == 2 and "--allowed-host needs a token" in out.stderr


@pytest.mark.parametrize("world", ["file"], indirect=True)
def test_the_command_refuses_forged_hosts(world: World) -> None:
    from tests.web.test_serve import _serve, _stop

    process, url = _serve(["--storage", world.uri], {"DATASTACK_WEB_TOKEN": ""})
    try:
        port = int(url.rsplit(":", 1)[1])
        assert raw_get(port, "/api/datasets", f"localhost:{port}")[0] == 200
        status, body = raw_get(port, "/api/datasets", "attacker.example")
        assert status == 400 and b"flowers" not in body
    finally:
        _stop(process)


# -- slow clients ------------------------------------------------------------------------------
def _open_slow(port: int, count: int, partial: bytes) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(partial)
        sockets.append(sock)
    return sockets


def _closed_by_server(sockets: list[socket.socket], within: float) -> int:
    """How many of ``sockets`` the server closes (EOF or reset) within ``within`` seconds."""
    closed: set[socket.socket] = set()
    deadline = time.monotonic() + within
    while len(closed) < len(sockets) and time.monotonic() < deadline:
        ready, _, _ = select.select([s for s in sockets if s not in closed], [], [], 0.5)
        for sock in ready:
            try:
                if sock.recv(4096) == b"":
                    closed.add(sock)
            except OSError:
                closed.add(sock)
    return len(closed)


SLOW = b"GET /api/datasets HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a"


@pytest.mark.parametrize("world", ["file"], indirect=True)
def test_slow_clients_are_closed_and_others_served(world: World) -> None:
    from datastack.web.app import create_app

    with Served(create_app(world.uri), request_timeout=2.0) as served:
        slow = _open_slow(served.port, 200, SLOW)
        try:
            status, body = raw_get(served.port, "/api/datasets", "127.0.0.1")
            assert status == 200 and b"flowers" in body
            assert _closed_by_server(slow, within=120) == 200  # each after ~2 s, bounded
        finally:
            for sock in slow:
                sock.close()


@pytest.mark.parametrize("world", ["file"], indirect=True)
def test_the_connection_cap_closes_the_oldest_waiting_connections(world: World) -> None:
    from datastack.web.app import create_app

    # a long request timeout: what closes connections here is the cap of 50
    with Served(create_app(world.uri), request_timeout=600.0, max_connections=50) as served:
        slow = _open_slow(served.port, 200, SLOW)
        try:
            status, body = raw_get(served.port, "/api/datasets", "127.0.0.1")
            assert status == 200 and b"flowers" in body
            closed = _closed_by_server(slow, within=30)
            assert 150 <= closed < 200, closed  # the newest waiting ones stay open
        finally:
            for sock in slow:
                sock.close()


@pytest.mark.parametrize("world", ["file"], indirect=True)
def test_a_keep_alive_connection_trickling_its_next_request_is_closed(world: World) -> None:
    from datastack.web.app import create_app

    with Served(create_app(world.uri), request_timeout=2.0) as served:
        sock = socket.create_connection(("127.0.0.1", served.port), timeout=30)
        try:
            sock.sendall(b"GET /static/style.css HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            first = sock.recv(65536)
            assert first.startswith(b"HTTP/1.1 200")
            sock.settimeout(1.0)
            closed = False
            for byte in b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: " + b"b" * 200:
                try:
                    sock.sendall(bytes([byte]))
                    time.sleep(0.3)  # one byte every 0.3 s: never a complete request
                    if sock.recv(4096) == b"":
                        closed = True
                        break
                except TimeoutError:
                    continue
                except OSError:
                    closed = True
                    break
            assert closed
        finally:
            sock.close()


# -- logout ------------------------------------------------------------------------------------
@pytest.mark.parametrize("world", ["file"], indirect=True)
def test_logout_revokes_a_copied_session_cookie(world: World) -> None:
    from datastack.web.security import COOKIE

    client = client_for(world.uri, token=TOKEN, follow_redirects=False)
    first = client.post("/login", data={"token": TOKEN, "next": "/"})
    assert first.status_code == 303
    stolen = client.cookies[COOKIE]
    other = client_for(world.uri, token=TOKEN)  # another server: the session is not known
    other.cookies.set(COOKIE, stolen)
    assert other.get("/").status_code == 401
    from starlette.testclient import TestClient

    # the same server, another browser with the copied cookie
    copy = TestClient(client.app, base_url="http://127.0.0.1", follow_redirects=False)
    copy.cookies.set(COOKIE, stolen)
    assert copy.get("/api/datasets").status_code == 200
    second = TestClient(client.app, base_url="http://127.0.0.1", follow_redirects=False)
    assert second.post("/login", data={"token": TOKEN, "next": "/"}).status_code == 303
    assert second.cookies[COOKIE] != stolen  # every login is a session of its own
    assert client.get("/logout").status_code == 303
    assert copy.get("/api/datasets").status_code == 401  # revoked on the server
    assert second.get("/api/datasets").status_code == 200  # other sessions live on


# -- what the dataset page reads ---------------------------------------------------------------
def _publish_heavy_versions(uri: str, name: str, count: int, labels: int) -> None:
    """``count`` versions whose records each hold ``labels`` category labels (~100 B each)."""
    from datastack.catalog.record import VersionRecord
    from datastack.store import Store

    catalog = Store.open(uri).catalog
    for v in range(count):
        names = [f"{v:03d}-{i:08d}-" + "x" * 80 for i in range(labels)]
        fields = [{"name": "x", "kind": "array", "dtype": "float32", "shape": [2]},
                  {"name": "y", "kind": "label", "dtype": "int64", "shape": [], "names": names}]
        with catalog.lease(name) as lease:
            record = catalog.begin(VersionRecord(
                name=name, spec_hash=f"h{v}", encodings={"y": names},
                schema={"fields": fields}, extra={"blob": "z" * 200_000},
            ), token=lease)
            catalog.publish(name, record.version, token=lease)


PAGE_PROBE = r"""
import json, sys
from pymongo import monitoring
import bson

class Listen(monitoring.CommandListener):
    def __init__(self):
        self.bytes = 0
    def started(self, event):
        pass
    def succeeded(self, event):
        self.bytes += len(bson.encode(event.reply))
    def failed(self, event):
        pass

listener = Listen()
monitoring.register(listener)
from starlette.testclient import TestClient
from datastack.web.app import create_app

client = TestClient(create_app(sys.argv[1]), base_url="http://127.0.0.1")
before = listener.bytes
page = client.get("/datasets/" + sys.argv[2])
print(json.dumps({"status": page.status_code, "bytes": listener.bytes - before,
                  "text": page.text}))
"""


def test_the_dataset_page_reads_one_full_record_and_summaries(
    world: World, tmp_path: Path
) -> None:
    import json

    _publish_heavy_versions(world.uri, "heavy", 20, 10_000)  # ~1.2 MB per record
    if world.kind == "mongodb":
        out = subprocess.run([sys.executable, "-c", PAGE_PROBE, world.uri, "heavy"], cwd=ROOT,
                             capture_output=True, text=True, timeout=300,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result["status"] == 200, out.stderr
        assert result["bytes"] < 4_000_000, result["bytes"]  # 20 full records: > 24 MB
        text = result["text"]
    else:
        import tracemalloc

        from datastack.store import Store

        catalog = Store.open(world.uri).catalog
        tracemalloc.start()
        summaries = catalog.version_summaries("heavy")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert len(summaries) == 20 and all(not s.encodings and not s.extra for s in summaries)
        assert peak < 12_000_000, peak  # one record parsed at a time, not 20
        page = client_for(world.uri).get("/datasets/heavy")
        assert page.status_code == 200
        text = page.text
    for v in range(1, 21):
        assert f'href="/datasets/heavy?version={v}"' in text  # every version listed
    assert "spec changed" in text  # and compared with the one before
    assert "019-00000000-" in text  # the full record of the latest version: its class names


# -- pasteable lines ---------------------------------------------------------------------------
def test_storage_lines_are_pasteable() -> None:
    from datastack._uri import storage_for_python, storage_for_shell

    for uri in ("mongodb://trainer:pw@db/team", "mongodb://trainer:***@db/team",
                "mongodb://db/team?authMechanismProperties=AWS_SESSION_TOKEN:abc",
                "mongodb://db/team?tlsCertificateKeyFilePassword=abc"):
        assert storage_for_python(uri) == 'os.environ["DATASTACK_STORAGE"]'
        assert storage_for_shell(uri) == '"$DATASTACK_STORAGE"'
    assert storage_for_python("mongodb://db/team") == '"mongodb://db/team"'
    assert storage_for_shell("/data/my store") == "'/data/my store'"


def test_not_cached_error_suggests_a_pasteable_pull(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datastack
    from datastack.errors import NotCachedError

    monkeypatch.setenv("DATASTACK_OFFLINE", "1")
    monkeypatch.setenv("DATASTACK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DATASTACK_CACHE_DIR_BYTES", str(2**30))
    uri = f"mongodb://trainer:Sentinel-PW-77@127.0.0.1:{free_port()}/team"
    with pytest.raises(NotCachedError) as caught:
        datastack.load("iris", storage=uri)
    message = str(caught.value)
    assert 'datastack pull iris --storage "$DATASTACK_STORAGE"' in message
    assert "***" not in message and "Sentinel-PW-77" not in message


@pytest.mark.parametrize("world", ["secantus"], indirect=True)
def test_the_load_line_of_a_uri_with_secrets(world: World) -> None:
    sentinel = "AwsSessionSentinel42"
    uri = f"{world.uri}?authMechanismProperties=AWS_SESSION_TOKEN:{sentinel}&appname=web"
    client = client_for(uri)
    for path in ("/", "/datasets/flowers", "/api/datasets", "/datasets/ghost"):
        assert sentinel not in client.get(path).text, path
    page = client.get("/datasets/flowers").text
    assert "import os\nimport datastack\nit = datastack.load(" in page
    assert 'storage=os.environ[&#34;DATASTACK_STORAGE&#34;])' in page
    plain = client_for(world.uri).get("/datasets/flowers").text
    assert "import os" not in plain and f"storage=&#34;{world.uri}&#34;" in plain


# -- category names in the table preview -------------------------------------------------------
@pytest.mark.parametrize("world", ["file", "secantus"], indirect=True)
def test_the_table_preview_shows_category_names(world: World, tmp_path: Path) -> None:
    import datastack

    data = tmp_path / "pets.csv"
    data.write_text("colour,weight,kind\n" + "".join(
        f"{['ruby', 'teal', 'amber'][i % 3]},{i},{['cat', 'dog'][i % 2]}\n" for i in range(12)))
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    spec = tmp_path / "pets.yaml"
    spec.write_text(
        f"datasets:\n  pets:\n    sources: [{{url: {data.as_uri()}, sha256: {digest}}}]\n"
        "    format: csv\n    csv: {categorical: [colour]}\n    splits: {train: 1.0}\n")
    [result] = datastack.refresh(spec, storage=world.uri)
    assert result.status == "published", result.reason
    page = client_for(world.uri).get("/datasets/pets?split=train&size=12").text
    preview = page[page.index('id="preview"'):]
    for name in ("ruby", "teal", "amber", "cat", "dog"):
        assert f'<span class="cell">{name}</span>' in preview, name


def test_the_web_package_imports_no_cli_module() -> None:
    """#22: the web page sits beside the command line, not on top of it."""
    import ast

    for path in sorted((ROOT / "datastack" / "web").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith("datastack.cli"), (path.name, name)
