"""HTTPRetriever against real servers on 127.0.0.1: well-behaved ones (pytest-httpserver) and
deliberately misbehaving ones (tests.retrieval.servers.FaultyServer)."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from datastack.errors import ChecksumError, RetrievalError, UnsupportedSchemeError
from datastack.retrieval import HTTPRetriever, ResourceDefinition, retriever_for
from datastack.storage.base import StorageConnector
from tests.retrieval.conftest import PASSWORD, sha256
from tests.retrieval.servers import Behaviour, FaultyServer

ID = "demo/raw/data.bin"


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# -- well-behaved server -----------------------------------------------------------------------
@pytest.mark.parametrize("algo", ["sha256", "md5"])
def test_download_verifies_and_records_source_info(
    httpserver: HTTPServer, store: StorageConnector, fast: dict[str, Any], payload: bytes, algo: str
) -> None:
    headers = {"ETag": '"abc"', "Last-Modified": "Wed, 21 Oct 2015 07:28:00 GMT"}
    httpserver.expect_request("/data.bin").respond_with_data(payload, headers=headers)
    digest = hashlib.new(algo, payload).hexdigest()
    definition = ResourceDefinition(ID, httpserver.url_for("/data.bin"), **{algo: digest})

    [info] = HTTPRetriever(store, **fast).retrieve_with_info([definition])

    assert store.get_resource(ID).read() == payload
    assert (info.size, info.etag, info.last_modified) == (
        len(payload),
        '"abc"',
        headers["Last-Modified"],
    )
    assert info.sha256 == sha256(payload) and info.identifier == ID
    assert (info.md5 == digest) if algo == "md5" else info.md5 is None
    assert httpserver.log[0][0].headers.get("Accept-Encoding") == "identity"


def test_retrieve_returns_identifiers(
    httpserver: HTTPServer, store: StorageConnector, fast: dict[str, Any], payload: bytes
) -> None:
    httpserver.expect_request("/a").respond_with_data(payload)
    httpserver.expect_request("/b").respond_with_data(b"bee")
    defs = [
        ResourceDefinition("x/a", httpserver.url_for("/a"), sha256=sha256(payload)),
        ResourceDefinition("x/b", httpserver.url_for("/b"), sha256=sha256(b"bee")),
    ]
    assert retriever_for(defs, store, **fast).retrieve(defs) == ["x/a", "x/b"]
    assert store.get_resource("x/b").read() == b"bee"


def test_wrong_checksum_stores_nothing_and_keeps_old_content(
    httpserver: HTTPServer, store: StorageConnector, fast: dict[str, Any], payload: bytes
) -> None:
    store.set_resource(ID, b"old content")
    httpserver.expect_request("/data.bin").respond_with_data(b"<html>error page</html>")
    url = httpserver.url_for("/data.bin")
    expected = sha256(payload)

    with pytest.raises(ChecksumError) as info:
        HTTPRetriever(store, **fast).retrieve([ResourceDefinition(ID, url, sha256=expected)])

    message = str(info.value)
    assert url in message and expected in message
    assert sha256(b"<html>error page</html>") in message and "Nothing was stored" in message
    assert store.get_resource(ID).read() == b"old content"
    assert store.list_resources() == [ID]
    assert len(httpserver.log) == 1  # a mismatch is not retried


def test_404_is_not_retried(
    httpserver: HTTPServer, store: StorageConnector, fast: dict[str, Any]
) -> None:
    httpserver.expect_request("/missing").respond_with_data("nope", status=404)
    url = httpserver.url_for("/missing")
    with pytest.raises(RetrievalError, match="404") as info:
        HTTPRetriever(store, **fast).retrieve([ResourceDefinition(ID, url, sha256="0" * 64)])
    assert url in str(info.value)
    assert len(httpserver.log) == 1
    assert not store.has_resource(ID)


def test_500_then_200_is_retried(
    store: StorageConnector, fast: dict[str, Any], payload: bytes
) -> None:
    with FaultyServer(payload, Behaviour(status_script=[500, 503])) as server:
        definition = ResourceDefinition(ID, server.url(), sha256=server.sha256)
        HTTPRetriever(store, **fast).retrieve([definition])
    assert store.get_resource(ID).read() == payload
    assert len(server.requests) == 3


def test_429_honours_retry_after(
    store: StorageConnector, fast: dict[str, Any], payload: bytes
) -> None:
    with FaultyServer(payload, Behaviour(status_script=[429], retry_after="1")) as server:
        started = time.monotonic()
        HTTPRetriever(store, **fast).retrieve(
            [ResourceDefinition(ID, server.url(), sha256=server.sha256)]
        )
        elapsed = time.monotonic() - started
    assert 0.95 <= elapsed < 3.0
    assert store.get_resource(ID).read() == payload


def test_5xx_forever_gives_up_after_max_retries(
    store: StorageConnector, fast: dict[str, Any], payload: bytes
) -> None:
    with FaultyServer(payload, Behaviour(status_script=[502] * 10)) as server:
        with pytest.raises(RetrievalError, match="502"):
            HTTPRetriever(store, **fast).retrieve(
                [ResourceDefinition(ID, server.url(), sha256=server.sha256)]
            )
    assert len(server.requests) == fast["max_retries"] + 1
    assert not store.has_resource(ID)


# -- redirects ----------------------------------------------------------------------------------
def test_redirect_is_followed(
    httpserver: HTTPServer, store: StorageConnector, fast: dict[str, Any], payload: bytes
) -> None:
    httpserver.expect_request("/old").respond_with_data(
        "", status=301, headers={"Location": "/new"}
    )
    httpserver.expect_request("/new").respond_with_data(payload)
    definition = ResourceDefinition(ID, httpserver.url_for("/old"), sha256=sha256(payload))
    HTTPRetriever(store, **fast).retrieve([definition])
    assert store.get_resource(ID).read() == payload


def test_redirect_loop_is_bounded(
    httpserver: HTTPServer, store: StorageConnector, fast: dict[str, Any]
) -> None:
    httpserver.expect_request("/a").respond_with_data("", status=302, headers={"Location": "/b"})
    httpserver.expect_request("/b").respond_with_data("", status=302, headers={"Location": "/a"})
    definition = ResourceDefinition(ID, httpserver.url_for("/a"), sha256="0" * 64)
    with pytest.raises(RetrievalError, match="too many redirects"):
        HTTPRetriever(store, max_redirects=4, **fast).retrieve([definition])
    assert len(httpserver.log) == 5  # the first request + 4 redirects, not retried


def test_redirect_to_file_url_is_refused(
    httpserver: HTTPServer, store: StorageConnector, fast: dict[str, Any], tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"local secret")
    httpserver.expect_request("/x").respond_with_data(
        "", status=302, headers={"Location": secret.as_uri()}
    )
    definition = ResourceDefinition(ID, httpserver.url_for("/x"), sha256=sha256(b"local secret"))
    with pytest.raises(RetrievalError, match="only http"):
        HTTPRetriever(store, **fast).retrieve([definition])
    assert not store.has_resource(ID)


def test_https_download_and_downgrade_refused(
    store: StorageConnector, fast: dict[str, Any], payload: bytes, tls_cert: tuple[str, str]
) -> None:
    session = requests.Session()
    session.verify = tls_cert[0]
    with FaultyServer(payload, tls=tls_cert) as secure, FaultyServer(payload) as plain:
        HTTPRetriever(store, session=session, **fast).retrieve(
            [ResourceDefinition(ID, secure.url(), sha256=secure.sha256)]
        )
        assert store.get_resource(ID).read() == payload

        secure.behaviour.redirect_to = plain.url()
        with pytest.raises(RetrievalError, match="https to http"):
            HTTPRetriever(store, session=session, **fast).retrieve(
                [ResourceDefinition("demo/other", secure.url(), sha256=secure.sha256)]
            )
    assert plain.requests == []
    assert not store.has_resource("demo/other")


# -- dropped connections, resume and restart ---------------------------------------------------
def test_drop_once_resumes_with_range(
    store: StorageConnector, fast: dict[str, Any], payload: bytes
) -> None:
    with FaultyServer(payload, Behaviour(drop_at=20_000, drop_times=1)) as server:
        HTTPRetriever(store, **fast).retrieve(
            [ResourceDefinition(ID, server.url(), sha256=server.sha256)]
        )
    assert store.get_resource(ID).read() == payload
    [resume] = server.range_requests()
    assert resume.headers["Range"].startswith("bytes=") and resume.headers["If-Range"] == '"v1"'
    assert 0 < int(resume.headers["Range"][6:-1]) <= 20_000
    assert len(server.requests) == 2


def test_drop_always_gives_up_and_stores_nothing(
    store: StorageConnector, fast: dict[str, Any], payload: bytes, tmp_path: Path
) -> None:
    with FaultyServer(payload, Behaviour(drop_at=20_000, drop_times=None)) as server:
        with pytest.raises(RetrievalError, match="consecutive attempts") as info:
            HTTPRetriever(store, **fast).retrieve(
                [ResourceDefinition(ID, server.url(), sha256=server.sha256)]
            )
    assert "Nothing was stored" in str(info.value)
    assert len(server.requests) == fast["max_retries"] + 1
    assert not store.has_resource(ID)
    assert files_under(tmp_path / "store") == []  # no temporary file left behind


def test_server_without_range_restarts_cleanly(
    store: StorageConnector, fast: dict[str, Any], payload: bytes, tmp_path: Path
) -> None:
    behaviour = Behaviour(drop_at=30_000, drop_times=1, range_support=False)
    with FaultyServer(payload, behaviour) as server:
        HTTPRetriever(store, **fast).retrieve(
            [ResourceDefinition(ID, server.url(), sha256=server.sha256)]
        )
    assert store.get_resource(ID).read() == payload
    # the resume attempt got a 200 with the whole body, which was reused for the restart
    assert len(server.requests) == 2
    assert files_under(tmp_path / "store" / "resources") == [ID]


def test_changed_validator_restarts_instead_of_splicing(
    store: StorageConnector, fast: dict[str, Any], payload: bytes
) -> None:
    new_payload = payload[::-1]
    with FaultyServer(payload, Behaviour(drop_at=25_000, drop_times=1)) as server:
        original_handle = server._handle

        def handle_then_change(h: Any, *, head: bool) -> None:
            original_handle(h, head=head)
            server.payload = new_payload  # the object changes after the first response
            server.behaviour.etag = '"v2"'

        server._handle = handle_then_change  # type: ignore[method-assign]
        definition = ResourceDefinition(ID, server.url(), sha256=sha256(new_payload))
        HTTPRetriever(store, **fast).retrieve([definition])
    assert store.get_resource(ID).read() == new_payload
    assert server.range_requests()[0].headers["If-Range"] == '"v1"'


def test_body_shorter_than_content_length_fails_after_retries(
    store: StorageConnector, fast: dict[str, Any], payload: bytes
) -> None:
    with FaultyServer(payload, Behaviour(declared_length=len(payload) + 500)) as server:
        with pytest.raises(RetrievalError) as info:
            HTTPRetriever(store, **fast).retrieve(
                [ResourceDefinition(ID, server.url(), sha256=server.sha256)]
            )
    assert server.url() in str(info.value)
    assert len(server.requests) <= 2 * (fast["max_retries"] + 1)
    assert not store.has_resource(ID)


def test_body_longer_than_content_length_is_caught_by_checksum(
    store: StorageConnector, fast: dict[str, Any], payload: bytes
) -> None:
    with FaultyServer(payload, Behaviour(declared_length=len(payload) - 100)) as server:
        with pytest.raises(ChecksumError, match="Nothing was stored"):
            HTTPRetriever(store, **fast).retrieve(
                [ResourceDefinition(ID, server.url(), sha256=server.sha256)]
            )
    assert not store.has_resource(ID)


# -- time limits --------------------------------------------------------------------------------
def test_stalled_server_times_out_after_bounded_retries(
    store: StorageConnector, fast: dict[str, Any], payload: bytes
) -> None:
    options = {**fast, "timeout": (1.0, 0.3), "max_retries": 2}
    with FaultyServer(payload, Behaviour(stall=1.5)) as server:
        started = time.monotonic()
        with pytest.raises(RetrievalError, match=r"Timeout|timed out"):
            HTTPRetriever(store, **options).retrieve(
                [ResourceDefinition(ID, server.url(), sha256=server.sha256)]
            )
        elapsed = time.monotonic() - started
    assert len(server.requests) == 3
    assert elapsed < 3.0
    assert not store.has_resource(ID)


def test_trickling_server_hits_the_deadline(store: StorageConnector, fast: dict[str, Any]) -> None:
    payload = b"x" * 40
    options = {**fast, "timeout": (1.0, 1.0), "deadline": 1.2}
    with FaultyServer(payload, Behaviour(trickle=0.4)) as server:
        started = time.monotonic()
        with pytest.raises(RetrievalError, match="deadline") as info:
            HTTPRetriever(store, **options).retrieve(
                [ResourceDefinition(ID, server.url(), sha256=server.sha256)]
            )
        elapsed = time.monotonic() - started
    assert elapsed < 2.5  # a read timeout alone (1 s) would never fire: each byte comes in 0.4 s
    assert "Nothing was stored" not in str(info.value) or not store.has_resource(ID)
    assert not store.has_resource(ID)


# -- schemes and credentials --------------------------------------------------------------------
@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x.bin", "gopher://127.0.0.1/x", "s3://b/k"])
def test_unsupported_schemes_are_refused_before_io(
    store: StorageConnector, fast: dict[str, Any], url: str
) -> None:
    definition = ResourceDefinition(ID, url, sha256="0" * 64)
    with pytest.raises(UnsupportedSchemeError, match="http://, https:// and file://"):
        retriever_for([definition], store, **fast)
    with pytest.raises(UnsupportedSchemeError):
        HTTPRetriever(store, **fast).retrieve([definition])
    assert store.list_resources() == []


def test_credentials_never_appear_in_errors_or_logs(
    store: StorageConnector, fast: dict[str, Any], payload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    behaviour = Behaviour(status_script=[503], drop_at=10_000, drop_times=1)
    with FaultyServer(payload, behaviour) as server:
        url = server.url().replace("http://", f"http://alice:{PASSWORD}@")
        retriever = HTTPRetriever(store, **{**fast, "progress": None})
        with pytest.raises(ChecksumError) as info:
            retriever.retrieve([ResourceDefinition(ID, url, sha256="1" * 64)])
        behaviour.status_script = [404]
        with pytest.raises(RetrievalError) as info404:
            retriever.retrieve([ResourceDefinition(ID, url, sha256="1" * 64)])
    assert server.requests[0].headers["Authorization"].startswith("Basic ")  # credentials used
    for exc in (info.value, info404.value):
        chain: BaseException | None = exc
        while chain is not None:
            assert PASSWORD not in str(chain) and PASSWORD not in repr(chain)
            chain = chain.__cause__ or chain.__context__
        assert "alice:***@" in str(exc)
    assert "resuming" in caplog.text and "retrying" in caplog.text  # the log did say things
    assert PASSWORD not in caplog.text


def test_progress_logs_lines_when_not_a_terminal_and_can_be_silenced(
    httpserver: HTTPServer,
    store: StorageConnector,
    fast: dict[str, Any],
    payload: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    httpserver.expect_request("/data.bin").respond_with_data(payload)
    definition = ResourceDefinition(ID, httpserver.url_for("/data.bin"), sha256=sha256(payload))
    caplog.set_level(logging.INFO, logger="datastack.retrieval")
    HTTPRetriever(store, **{**fast, "progress": None}).retrieve([definition])
    assert "downloaded" in caplog.text
    caplog.clear()
    HTTPRetriever(store, **fast).retrieve([definition])
    assert "downloaded" not in caplog.text


# -- conditional requests -----------------------------------------------------------------------
def _conditional_handler(etag: str | None, last_modified: str | None) -> Any:
    def handler(request: Request) -> Response:
        headers = {k: v for k, v in (("ETag", etag), ("Last-Modified", last_modified)) if v}
        if etag and request.headers.get("If-None-Match") == etag:
            return Response(status=304, headers=headers)
        if (
            last_modified
            and request.headers.get("If-Modified-Since") == last_modified
            and not (request.headers.get("If-None-Match"))
        ):
            return Response(status=304, headers=headers)
        return Response(b"body", status=200, headers=headers)

    return handler


def test_check_changed_with_etag(httpserver: HTTPServer) -> None:
    from datastack.retrieval import check_changed

    httpserver.expect_request("/d").respond_with_handler(_conditional_handler('"e1"', None))
    url = httpserver.url_for("/d")
    same = check_changed(url, etag='"e1"')
    assert (same.changed, same.status, same.etag) == (False, 304, '"e1"')
    other = check_changed(url, etag='"e0"')
    assert (other.changed, other.status, other.etag) == (True, 200, '"e1"')
    assert httpserver.log[0][0].method == "HEAD"
    assert httpserver.log[0][0].headers["If-None-Match"] == '"e1"'


def test_check_changed_with_last_modified(httpserver: HTTPServer) -> None:
    from datastack.retrieval import check_changed

    lm = "Wed, 21 Oct 2015 07:28:00 GMT"
    httpserver.expect_request("/d").respond_with_handler(_conditional_handler(None, lm))
    url = httpserver.url_for("/d")
    assert check_changed(url, last_modified=lm).changed is False
    newer = check_changed(url, last_modified="Tue, 20 Oct 2015 07:28:00 GMT")
    assert (newer.changed, newer.last_modified) == (True, lm)
    assert httpserver.log[0][0].headers["If-Modified-Since"] == lm


def test_check_changed_without_validators_is_unknown(httpserver: HTTPServer) -> None:
    from datastack.retrieval import check_changed

    httpserver.expect_request("/d").respond_with_handler(_conditional_handler(None, None))
    result = check_changed(httpserver.url_for("/d"), etag='"e1"')
    assert (result.changed, result.etag, result.last_modified, result.status) == (
        None,
        None,
        None,
        200,
    )


def test_check_changed_falls_back_to_get_when_head_is_refused(httpserver: HTTPServer) -> None:
    from datastack.retrieval import check_changed

    httpserver.expect_request("/d", method="HEAD").respond_with_data("", status=405)
    httpserver.expect_request("/d", method="GET").respond_with_handler(
        _conditional_handler('"e1"', None)
    )
    assert check_changed(httpserver.url_for("/d"), etag='"e1"').changed is False
    assert [r.method for r, _ in httpserver.log] == ["HEAD", "GET"]
