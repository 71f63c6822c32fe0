"""Only a complete body is content (#26.7), one size cap for every source (#26.13), and an
unreachable source fails fast saying why (#27.3): HTTPRetriever against raw-socket servers."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from datastack.errors import ConfigurationError, RetrievalError
from datastack.retrieval import FileRetriever, HTTPRetriever, ResourceDefinition
from datastack.storage.base import StorageConnector
from tests.mongo_server import free_port
from tests.retrieval.rawserver import RawServer, cut_short, endless, partial_206, status, whole

BODY = b"a,b,label\n" + b"".join(b"%d,%d,x\n" % (i, i * 7 % 11) for i in range(2000))
ID = "live/raw/fetched-1/data.csv"


def _tracked(url: str) -> ResourceDefinition:
    return ResourceDefinition(ID, url, tracked=True)


def _left(store: StorageConnector) -> list[Any]:
    return list(store.list_resources("live/"))


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (partial_206(BODY, 7 * 1024), ("206", "partial body", "bytes 0-7167/")),
        (partial_206(BODY, 100), ("206", "partial body")),
        (status(204, "No Content"), ("204",)),
        (status(304, "Not Modified"), ("304",)),
        (status(203, "Non-Authoritative Information"), ("203",)),
    ],
    ids=["206-7k", "206-100", "204", "304", "203"],
)
def test_only_a_200_is_content_for_a_whole_file_request(
    store: StorageConnector, fast: dict[str, Any], answer: Any, words: tuple[str, ...]
) -> None:
    with RawServer(answer) as server:
        url = server.url()
        with pytest.raises(RetrievalError) as info, HTTPRetriever(store, **fast) as r:
            r.retrieve([_tracked(url)])
    message = str(info.value)
    assert url in message and "only a complete 200" in message, message
    assert all(w in message for w in words), message
    assert len(server.gets()) == 1  # a misbehaving answer is not "retried into" a success
    assert _left(store) == []


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("part", [0, 1, 5000])
def test_a_body_cut_short_is_never_stored(
    store: StorageConnector, fast: dict[str, Any], chunked: bool, part: int
) -> None:
    with RawServer(cut_short(BODY, part, chunked=chunked)) as server:
        with pytest.raises(RetrievalError) as info, HTTPRetriever(store, **fast) as r:
            r.retrieve([_tracked(server.url())])
    assert server.url() in str(info.value) and "Nothing was stored" in str(info.value)
    assert len(server.gets()) == fast["max_retries"] + 1
    assert _left(store) == []


def test_a_good_server_still_works(store: StorageConnector, fast: dict[str, Any]) -> None:
    with RawServer(whole(BODY)) as server, HTTPRetriever(store, **fast) as r:
        [info] = r.retrieve_with_info([_tracked(server.url())])
    assert info.size == len(BODY)
    assert store.get_resource(ID).read() == BODY


@pytest.mark.parametrize(
    "answer",
    [endless(chunked=False), endless(chunked=True)],
    ids=["no-length", "chunked"],
)
def test_an_endless_stream_stops_at_the_size_cap(
    store: StorageConnector, fast: dict[str, Any], monkeypatch: pytest.MonkeyPatch, answer: Any
) -> None:
    cap = 300_000
    monkeypatch.setenv("DATASTACK_MAX_SOURCE_BYTES", str(cap))
    started = time.monotonic()
    with RawServer(answer) as server:
        with pytest.raises(RetrievalError) as info, HTTPRetriever(store, **fast) as r:
            r.retrieve([_tracked(server.url())])
    message = str(info.value)
    assert f"limit of {cap} bytes" in message and "DATASTACK_MAX_SOURCE_BYTES" in message
    assert server.url() in message and "nothing was stored" in message
    assert len(server.gets()) == 1  # over the cap is final, not retried
    # the server could write at most the cap, what the client read ahead, and socket buffers
    assert server.sent < cap + 16 * 1024 * 1024, server.sent
    assert _left(store) == []
    assert time.monotonic() - started < 60  # generous: it does not run for ever


def test_a_declared_length_over_the_cap_is_refused_before_downloading(
    store: StorageConnector, fast: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATASTACK_MAX_SOURCE_BYTES", "1000")
    with RawServer(endless(chunked=False, declared=50 * 1024**3)) as server:
        with pytest.raises(RetrievalError) as info, HTTPRetriever(store, **fast) as r:
            r.retrieve([_tracked(server.url())])
    message = str(info.value)
    assert f"declares {50 * 1024**3} bytes" in message and "before downloading" in message
    assert len(server.gets()) == 1 and _left(store) == []


def test_the_cap_applies_to_file_sources_too_and_is_validated(
    store: StorageConnector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.csv"
    path.write_bytes(BODY)
    monkeypatch.setenv("DATASTACK_MAX_SOURCE_BYTES", str(len(BODY) - 1))
    with pytest.raises(RetrievalError, match=f"over the limit of {len(BODY) - 1} bytes"):
        FileRetriever(store).retrieve([_tracked(path.as_uri())])
    monkeypatch.setenv("DATASTACK_MAX_SOURCE_BYTES", str(len(BODY)))
    assert FileRetriever(store).retrieve([_tracked(path.as_uri())]) == [ID]
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.csv").write_bytes(BODY)  # the folder's tar is larger than its one file
    with pytest.raises(RetrievalError, match=f"over the limit of {len(BODY)} bytes"):
        FileRetriever(store).retrieve([ResourceDefinition("live/f.tar", str(folder),
                                                          tracked=True)])
    assert not store.has_resource("live/f.tar")
    for bad in ("-5", "0", "ten", "1e9", "nan"):
        monkeypatch.setenv("DATASTACK_MAX_SOURCE_BYTES", bad)
        with pytest.raises(ConfigurationError, match="DATASTACK_MAX_SOURCE_BYTES"):
            FileRetriever(store).retrieve([_tracked(path.as_uri())])


# -- fail fast (#27.3) -------------------------------------------------------------------------
def _retrying(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]


def test_refused_connection_is_not_retried_and_says_why(
    store: StorageConnector, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    url = f"http://user:s3cret@127.0.0.1:{port}/data.csv"
    caplog.set_level(logging.INFO, "datastack.retrieval")
    started = time.monotonic()
    with pytest.raises(RetrievalError) as info, HTTPRetriever(store, progress=False) as r:
        r.retrieve([_tracked(url)])
    message = str(info.value)
    assert f"127.0.0.1 refused the connection on port {port}" in message, message
    assert "Connection refused" in message and "not retried" in message
    assert "datastack refresh" in message and "max_retries" not in message
    assert "s3cret" not in message and "user:***@" in message
    assert _retrying(caplog) == []
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("host", ["no-such-host.invalid", "datastack-\u00e9t\u00e9.invalid"])
def test_a_name_that_does_not_resolve_is_not_retried_and_says_why(
    store: StorageConnector, caplog: pytest.LogCaptureFixture, host: str
) -> None:
    try:
        socket.getaddrinfo(host.encode("idna").decode(), 80)
    except (socket.gaierror, UnicodeError):
        pass
    else:  # pragma: no cover - a resolver that answers for .invalid
        pytest.skip(f"{host} resolves on this machine")
    caplog.set_level(logging.INFO, "datastack.retrieval")
    started = time.monotonic()
    with pytest.raises(RetrievalError) as info, HTTPRetriever(store, progress=False) as r:
        r.retrieve([_tracked(f"https://{host}/data.csv")])
    message = str(info.value)
    assert "does not resolve" in message and "not retried" in message, message
    assert "DNS" in message and "datastack refresh" in message and "max_retries" not in message
    assert _retrying(caplog) == []
    assert time.monotonic() - started < 15


@pytest.mark.parametrize("code", [400, 401, 403, 404, 410, 451])
def test_a_client_error_is_asked_once(store: StorageConnector, code: int) -> None:
    with RawServer(status(code, "Nope")) as server:
        with pytest.raises(RetrievalError) as info, HTTPRetriever(store, progress=False) as r:
            r.retrieve([_tracked(server.url())])
    assert len(server.requests) == 1
    assert f"HTTP {code}" in str(info.value) and server.url() in str(info.value)


def test_a_long_cause_is_not_cut_mid_word() -> None:
    from datastack.retrieval._transport import describe

    words = " ".join(f"word{i:04d}" for i in range(400))
    text = describe(ConnectionError(words))
    kept = text.split(": ", 1)[1].removesuffix(" [...]").split(" ")
    assert all(len(w) == 8 and w.startswith("word") for w in kept), kept[-3:]
    short = describe(ConnectionError("<urllib3.connection.HTTPConnection object at 0x7f12ab>: "
                                     "Failed to establish a new connection"))
    assert short == "ConnectionError: Failed to establish a new connection"


def _resume_with(content_range: str) -> Any:
    """A 200 cut after 1000 bytes; a resume (``Range``) answered ``206`` with
    ``content_range`` (formatted with the start asked and the body size)."""
    from tests.retrieval.rawserver import head

    def answer(server: RawServer, conn: socket.socket, request: Any) -> None:
        asked = request.headers.get("Range")
        if asked is None:
            conn.sendall(head("200 OK", {"Content-Length": str(len(BODY)), "ETag": '"v1"',
                                         "Connection": "close"}))
            server.send(conn, BODY[:1000])
            return
        start = int(asked.removeprefix("bytes=").rstrip("-"))
        shown = content_range.format(start=start, end=len(BODY) - 1, total=len(BODY))
        conn.sendall(head("206 Partial Content", {
            "Content-Length": str(len(BODY) - start), "Content-Range": shown,
            "ETag": '"v1"', "Connection": "close"}))
        server.send(conn, BODY[start:])

    return answer


@pytest.mark.parametrize(
    ("content_range", "ok"),
    [
        ("bytes {start}-{end}/{total}", True),
        ("bytes 0-{end}/{total}", False),  # not the range asked
        ("bytes {start}-{end}/9999999", False),  # another total: another file
        ("bytes {start}-{end}/*", True),  # unknown total, the rest of the range asked
        ("", False),  # no Content-Range at all
    ],
    ids=["matching", "wrong-start", "wrong-total", "star-total", "missing"],
)
def test_a_206_is_spliced_only_for_the_range_asked(
    store: StorageConnector, fast: dict[str, Any], content_range: str, ok: bool
) -> None:
    with RawServer(_resume_with(content_range)) as server, HTTPRetriever(store, **fast) as r:
        if ok:
            r.retrieve([_tracked(server.url())])
            assert store.get_resource(ID).read() == BODY
        else:
            with pytest.raises(RetrievalError):
                r.retrieve([_tracked(server.url())])
            assert _left(store) == []
    asked = [q.headers.get("Range") for q in server.gets()]
    assert "bytes=1000-" in asked


def test_no_route_to_the_host_is_not_retried(
    store: StorageConnector, caplog: pytest.LogCaptureFixture
) -> None:
    """A documentation-only IPv6 address (2001:db8::/32): with no route there, one attempt."""
    import errno

    probe = socket.socket(socket.AF_INET6)
    probe.settimeout(5)
    try:
        probe.connect(("2001:db8::1", 80))
    except OSError as exc:
        if exc.errno not in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            pytest.skip(f"this machine answers {exc!r} for 2001:db8::1")
    else:  # pragma: no cover
        pytest.skip("2001:db8::1 is reachable from here")
    finally:
        probe.close()
    caplog.set_level(logging.INFO, "datastack.retrieval")
    with pytest.raises(RetrievalError) as info, HTTPRetriever(store, progress=False) as r:
        r.retrieve([_tracked("http://[2001:db8::1]/data.csv")])
    assert "no route to 2001:db8::1" in str(info.value) and "not retried" in str(info.value)
    assert _retrying(caplog) == []
