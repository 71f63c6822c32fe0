"""Secrets beyond the password (#26.3): MongoDB URI options that carry one
(``tlsCertificateKeyFilePassword``, ``authMechanismProperties=AWS_SESSION_TOKEN:...``, any
option named like a password, secret, token, key or credential) and source URLs with query
credentials (presigned ``X-Amz-Signature``/``X-Amz-Credential``/``X-Amz-Security-Token``,
``token``, ``sig``, ``key``...). Sentinels must appear in no output, record, page or log; the
download itself still gets the real URL."""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from datastack._uri import is_secret_name, redact, secret_values
from datastack.cli import main
from tests.mongo_server import free_port

SECRET_NAMES = ["X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "x-goog-signature",
                "X-Goog-Credential", "token", "access_token", "id_token", "sig", "signature",
                "key", "api_key", "apiKey", "API-KEY", "password", "passwd", "pwd", "secret",
                "client_secret", "code", "auth", "session", "tlsCertificateKeyFilePassword",
                "sslClientCertificateKeyPassword", "authMechanismProperties", "proxyPassword",
                "AWSAccessKeyId", "private_token", "jwt", "Credential", "se%63ret"]
SAFE_NAMES = ["authSource", "authMechanism", "replicaSet", "appname", "tls", "format",
              "X-Amz-Expires", "X-Amz-Date", "page", "serverSelectionTimeoutMS", "w"]


@pytest.mark.parametrize("name", SECRET_NAMES)
@pytest.mark.parametrize("separator", ["?", "&", ";", "#"])
def test_secret_parameters_are_redacted_in_any_text(name: str, separator: str) -> None:
    sentinel = "Sntl-9f8e7d%2Fx+y"
    url = f"https://h.example/p/x.csv?v=1{separator}{name}={sentinel}&page=2"
    for text in (url, f"failed: {url!r} (500)", f"GET {url}\nnext line", f'"{url}"',
                 f"mongodb://u:pw@h1:1,h2:2/db?a=b{separator}{name}={sentinel}"):
        out = redact(text)
        assert "Sntl" not in out and f"{name}=***" in out, out
        assert redact(out) == out  # idempotent
    assert "page=2" in redact(url)


@pytest.mark.parametrize("name", SAFE_NAMES)
def test_other_parameters_are_kept(name: str) -> None:
    assert not is_secret_name(name)
    url = f"mongodb://db.example/team?{name}=visible-value&x=1"
    assert redact(url) == url


def test_literal_secrets_of_a_mongodb_uri() -> None:
    uri = ("mongodb://u:p%40ss@h/db?tlsCertificateKeyFilePassword=Kp4ss"
           "&authMechanismProperties=AWS_SESSION_TOKEN:Tok3n,SERVICE_NAME:svc&authSource=admin")
    found = secret_values(uri)
    assert {"p%40ss", "p@ss", "Kp4ss", "Tok3n"} <= found
    assert "admin" not in found


SENTINELS = ("KeyPwSentinel71", "SessionTokSentinel72", "ApiKeySentinel73", "TokenSentinel74")


def _option_uri(base: str) -> str:
    return (f"{base}?tlsCertificateKeyFilePassword={SENTINELS[0]}"
            f"&authMechanismProperties=AWS_SESSION_TOKEN:{SENTINELS[1]}"
            f"&apiKey={SENTINELS[2]}&token={SENTINELS[3]}&serverSelectionTimeoutMS=700")


def _assert_clean(*texts: str) -> None:
    for text in texts:
        for sentinel in SENTINELS:
            assert sentinel not in text, (sentinel, text[:2000])


def test_uri_options_in_cli_errors(capsys: pytest.CaptureFixture[str],
                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    unreachable = _option_uri(f"mongodb://trainer:{SENTINELS[3]}@127.0.0.1:{free_port()}/team")
    for args in (["ls"], ["status"], ["show", "iris"], ["ls", "--json"], ["gc", "--dry-run"]):
        code = main([*args, "--storage", unreachable])
        out, err = capsys.readouterr()
        assert code != 0
        _assert_clean(out, err, caplog.text)
    bad = _option_uri("mongodb://127.0.0.1:1/no db name")
    assert main(["ls", "--storage", bad]) != 0
    out, err = capsys.readouterr()
    _assert_clean(out, err)
    assert "tlsCertificateKeyFilePassword=***" in err


def test_uri_options_on_a_working_storage(mongo_base_uri: str, capsys: pytest.CaptureFixture[str],
                                          caplog: pytest.LogCaptureFixture) -> None:
    from starlette.testclient import TestClient

    from datastack.store import Store
    from datastack.web.app import create_app

    caplog.set_level(logging.DEBUG)
    uri = (f"{mongo_base_uri.rstrip('/')}/secretopts?authMechanismProperties="
           f"AWS_SESSION_TOKEN:{SENTINELS[1]}&appname=x")
    assert main(["ls", "--storage", uri]) == 0
    assert main(["show", "nothing-here", "--storage", uri]) != 0
    out, err = capsys.readouterr()
    store = Store.open(uri)
    client = TestClient(create_app(store), base_url="http://127.0.0.1")
    pages = [client.get(p).text for p in ("/", "/api/datasets", "/datasets/nothing-here")]
    _assert_clean(out, err, caplog.text, repr(store), str(store), store.uri, *pages)
    assert "authMechanismProperties=***" in pages[0]


@pytest.fixture
def served_csv() -> Iterator[tuple[str, list[str]]]:
    """A CSV over HTTP on 127.0.0.1 at any path but ``/missing.csv`` (404); the list collects
    the request targets it saw."""
    body = ("a,b,label\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(20))).encode()
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self, with_body: bool) -> None:
            seen.append(self.path)
            missing = self.path.startswith("/missing.csv")
            self.send_response(404 if missing else 200)
            self.send_header("Content-Length", "0" if missing else str(len(body)))
            self.end_headers()
            if with_body and not missing:
                self.wfile.write(body)

        def do_GET(self) -> None:
            self._answer(True)

        def do_HEAD(self) -> None:
            self._answer(False)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
        assert hashlib.sha256(body).hexdigest()
    finally:
        server.shutdown()
        server.server_close()


QUERY = (f"X-Amz-Credential=AKIA%2F{SENTINELS[0]}&X-Amz-Security-Token={SENTINELS[1]}"
         f"&X-Amz-Signature={SENTINELS[2]}&sig={SENTINELS[3]}&X-Amz-Expires=60")


def test_source_urls_with_query_credentials(
    served_csv: tuple[str, list[str]], tmp_path: Path, capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    import datastack
    from datastack.web.app import create_app

    caplog.set_level(logging.DEBUG)
    base, seen = served_csv
    store = tmp_path / "store"
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "datasets:\n"
        f"  presigned:\n    sources: [{{url: \"{base}/data.csv?{QUERY}\", track: true}}]\n"
        "    format: csv\n    splits: {train: 1.0}\n"
        f"  gone:\n    sources: [{{url: \"{base}/missing.csv?{QUERY}\", track: true}}]\n"
        "    format: csv\n    splits: {train: 1.0}\n"
    )
    results = {r.name: r for r in datastack.refresh(spec, storage=str(store))}
    assert results["presigned"].status == "published", results["presigned"].reason
    assert results["gone"].status == "failed"
    assert any(SENTINELS[2] in target for target in seen)  # the download had the real URL
    before = capfd.readouterr()
    assert main(["show", "presigned", "--json", "--storage", str(store)]) == 0
    shown = capfd.readouterr()
    assert "X-Amz-Signature=***" in json.dumps(json.loads(shown.out)["sources"])
    main(["status", "--storage", str(store)])
    main(["status", "--json", "--storage", str(store)])
    recorded = "\n".join(p.read_text(errors="replace") for p in store.rglob("*.json"))
    from starlette.testclient import TestClient

    client = TestClient(create_app(str(store)), base_url="http://127.0.0.1")
    pages = [client.get(p).text for p in ("/", "/datasets/presigned", "/api/datasets/presigned",
                                          "/datasets/gone", "/api/status")]
    out, err = capfd.readouterr()
    _assert_clean(recorded, before.out, before.err, shown.out, shown.err, out, err,
                  caplog.text, results["gone"].reason or "", repr(results["gone"]), *pages)
