"""Retrieve http(s) sources into a StorageConnector: streamed, verified, resumed, retried.

>>> from datastack.storage import connect
>>> from datastack.retrieval import HTTPRetriever, ResourceDefinition
>>> store = connect("/tmp/datastack-demo")                          # doctest: +SKIP
>>> d = ResourceDefinition("iris/raw/iris.csv", "https://example.org/iris.csv",
...                        sha256="...")                             # doctest: +SKIP
>>> HTTPRetriever(store, progress=False).retrieve([d])             # doctest: +SKIP
['iris/raw/iris.csv']
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast
from urllib.parse import unquote, urlsplit

import requests

from datastack._env import invalid, parse_float
from datastack._retry import Backoff
from datastack._uri import redact
from datastack.errors import ChecksumError, ConfigurationError, RetrievalError
from datastack.retrieval._deadline import mount
from datastack.retrieval._policy import DownloadBudget
from datastack.retrieval._transport import (
    Restart,
    ResumableBody,
    Transport,
    content_length,
    over_limit,
    require_whole,
    split_credentials,
)
from datastack.retrieval.base import (
    ResourceDefinition,
    SourceInfo,
    check_scheme,
    max_source_bytes,
)
from datastack.retrieval.file import file_changed
from datastack.retrieval.folder import folder_etag
from datastack.retrieval.progress import make_progress

if TYPE_CHECKING:  # pragma: no cover
    from datastack.storage.base import StorageConnector

logger = logging.getLogger("datastack.retrieval")

def _timeouts_from_env(text: str | None) -> tuple[float, float]:
    """``DATASTACK_HTTP_TIMEOUT="CONNECT,READ"`` (seconds); default 10 s and 60 s."""
    parts = (text or "").strip().split(",") if (text or "").strip() else ["10", "60"]
    if len(parts) != 2:
        raise invalid("DATASTACK_HTTP_TIMEOUT", text or "", "CONNECT,READ in seconds", "10,60")
    connect, read = (parse_float(part, "DATASTACK_HTTP_TIMEOUT", maximum=86400.0, example=10)
                     for part in parts)
    return (connect, read)


#: ``(connect, read)`` seconds of every request; the response headers must be complete within
#: their sum. ``DATASTACK_HTTP_TIMEOUT=CONNECT,READ`` sets them for a whole process.
DEFAULT_TIMEOUT = _timeouts_from_env(os.environ.get("DATASTACK_HTTP_TIMEOUT"))
DEFAULT_DEADLINE = 6 * 3600.0


def _check_http(source: str, who: str) -> None:
    if check_scheme(source) not in {"http", "https"}:
        from datastack.errors import UnsupportedSchemeError

        raise UnsupportedSchemeError(
            f"{who} retrieves http(s) URLs only, got {redact(source)!r}: use FileRetriever "
            "or retriever_for(definitions, storage) for file sources"
        )


class HTTPRetriever:
    """Downloads http(s) sources into ``storage``, verifying checksums before publishing.

    Parameters
    ----------
    storage:
        Where resources are written (``set_resource`` streams, hashes and verifies).
    timeout:
        ``(connect, read)`` seconds for every request.
    deadline:
        Overall seconds for one download including retries (catches trickling servers);
        None for no limit.
    max_retries:
        Consecutive failed attempts allowed without progress (connection errors, timeouts,
        429, 5xx, short bodies). Other 4xx are never retried.
    backoff:
        Capped exponential backoff with jitter between attempts (honours ``Retry-After``).
    max_redirects:
        Redirects followed per request; only http(s) targets, never https -> http.
    progress:
        None: tqdm bar on a terminal, log lines otherwise; True: bar; False: silent.
    session:
        A ``requests.Session`` to use (proxies, certificates, headers); not closed by us.

    >>> r = HTTPRetriever(None, timeout=(1, 5), max_retries=2)  # type: ignore[arg-type]
    >>> r.max_retries
    2
    """

    def __init__(
        self,
        storage: StorageConnector,
        *,
        timeout: tuple[float, float] | float = DEFAULT_TIMEOUT,
        deadline: float | None = DEFAULT_DEADLINE,
        max_retries: int = 5,
        backoff: Backoff | None = None,
        max_redirects: int = 10,
        progress: bool | None = None,
        session: requests.Session | None = None,
    ) -> None:
        if isinstance(timeout, (int, float)):
            timeout = (float(timeout), float(timeout))
        if len(timeout) != 2 or min(timeout) <= 0:
            raise ConfigurationError(f"timeout must be (connect, read) > 0 seconds, got {timeout}")
        if deadline is not None and deadline <= 0:
            raise ConfigurationError(f"deadline must be > 0 seconds or None, got {deadline}")
        if max_retries < 0 or max_redirects < 0:
            raise ConfigurationError(
                f"max_retries and max_redirects must be >= 0, got {max_retries}, {max_redirects}"
            )
        self.storage = storage
        self.timeout = (float(timeout[0]), float(timeout[1]))
        self.deadline = deadline
        self.max_retries = max_retries
        self.backoff = backoff or Backoff()
        self.max_redirects = max_redirects
        self.progress = progress
        self._session = session
        self._own_session: requests.Session | None = None

    @property
    def session(self) -> requests.Session:
        if self._session is not None:
            return self._session
        if self._own_session is None:
            self._own_session = mount(requests.Session())
            self._own_session.max_redirects = self.max_redirects
        return self._own_session

    def close(self) -> None:
        """Close the session this retriever created (a session passed in is left open)."""
        if self._own_session is not None:
            self._own_session.close()
            self._own_session = None

    def __enter__(self) -> HTTPRetriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public API --------------------------------------------------------------------------
    def retrieve(self, definitions: Iterable[ResourceDefinition]) -> list[str]:
        """Download, verify and store each definition; return the identifiers in order."""
        return [info.identifier or "" for info in self.retrieve_with_info(definitions)]

    def retrieve_with_info(self, definitions: Iterable[ResourceDefinition]) -> list[SourceInfo]:
        """Like :meth:`retrieve`, returning what each server said (size, ETag, Last-Modified)."""
        defs = list(definitions)
        for d in defs:
            _check_http(d.source, "HTTPRetriever")
        return [self._download(d) for d in defs]

    # -- one download ------------------------------------------------------------------------
    def _download(self, definition: ResourceDefinition) -> SourceInfo:
        url, auth = split_credentials(definition.source)
        shown = redact(definition.source)
        budget = DownloadBudget(
            shown, max_retries=self.max_retries, backoff=self.backoff, deadline=self.deadline
        )
        transport = Transport(
            self.session,
            timeout=self.timeout,
            max_redirects=self.max_redirects,
            auth=auth,
            origin_url=url,
            display_url=shown,
        )
        limit = max_source_bytes()
        first = require_whole(transport.get(url, {}, budget), shown)
        declared = content_length(first)
        if declared is not None and declared > limit:
            first.close()
            raise over_limit(shown, declared, limit, declared=True)
        progress = make_progress(self.progress, shown, declared)
        response: requests.Response | None = first
        try:
            while True:
                if response is None:
                    response = require_whole(transport.get(url, {}, budget), shown)
                body = ResumableBody(transport, url, response, budget, progress, limit)
                response = None
                try:
                    stored = self.storage.set_resource(
                        definition.identifier,
                        cast("IO[bytes]", body),
                        sha256=definition.sha256,
                        md5=definition.md5,
                    )
                except BaseException as exc:
                    body.close()
                    failure = body.failure
                    if isinstance(failure, Restart):
                        logger.warning("restarting download of %s: %s", shown, failure)
                        progress.reset(0)
                        response = failure.response
                        continue
                    if isinstance(exc, ChecksumError):
                        raise ChecksumError(
                            f"download of {shown} failed verification: {exc}"
                        ) from None
                    if failure is not None and failure is not exc:
                        raise failure from exc  # the backend wrapped our error
                    raise
                body.close()
                break
        finally:
            if response is not None:
                response.close()
            progress.close()
        return SourceInfo(
            url=shown,
            size=stored.size,
            etag=body.etag,
            last_modified=body.last_modified,
            sha256=stored.sha256,
            md5=stored.md5,
            retrieved_at=datetime.now(UTC),
            identifier=stored.identifier,
        )


def make_retriever(storage: StorageConnector, options: dict[str, Any]) -> HTTPRetriever:
    """The retriever of http(s) URLs (``retrieval.RETRIEVERS`` entry)."""
    return HTTPRetriever(storage, **options)


@dataclass(frozen=True)
class ChangeCheck:
    """Answer of :func:`check_changed`: ``changed`` is None when the server cannot tell."""

    changed: bool | None
    etag: str | None
    last_modified: str | None
    status: int | None


def _same_date(a: str, b: str) -> bool:
    try:
        return parsedate_to_datetime(a) == parsedate_to_datetime(b)
    except (TypeError, ValueError, IndexError):
        return a.strip() == b.strip()


def _strip_weak(etag: str) -> str:
    return etag[2:] if etag.startswith("W/") else etag


def _check_file(
    url: str, etag: str | None, last_modified: str | None, sha256: str | None
) -> ChangeCheck:
    parts = urlsplit(url)
    path = unquote(parts.path) if "://" in url else url
    try:
        if os.path.isdir(path):  # a folder: its listing (names, sizes, mtimes) is the ETag
            tag = folder_etag(Path(path), redact(url))
            return ChangeCheck(None if etag is None else tag != etag, tag, None, None)
    except OSError as exc:
        raise RetrievalError(f"cannot stat {redact(url)}: {exc.strerror}") from None
    changed, tag, now = file_changed(
        path, redact(url), etag=etag, last_modified=last_modified, sha256=sha256
    )
    return ChangeCheck(changed, tag, now, None)


def check_changed(
    url: str,
    etag: str | None = None,
    last_modified: str | None = None,
    *,
    session: requests.Session | None = None,
    timeout: tuple[float, float] = (10.0, 30.0),
    max_retries: int = 2,
    backoff: Backoff | None = None,
    sha256: str | None = None,
) -> ChangeCheck:
    """Ask whether ``url`` changed since it had ``etag`` / ``last_modified``, without a download.

    Sends a conditional ``HEAD`` (``If-None-Match`` / ``If-Modified-Since``), falling back to a
    streamed ``GET`` that is closed unread when HEAD is not allowed. 304 means unchanged; a 200
    is compared with the validators given; no validators on either side means unknown (None).
    ``file://`` URLs and paths compare the file's size and nanosecond mtime (``etag``, or the
    whole-second ``last_modified`` of older records) and, when those are the same, its sha256
    with ``sha256`` if given (:func:`~datastack.retrieval.file.file_changed`); folders compare
    their listing (:func:`~datastack.retrieval.folder.folder_etag`) with ``etag``.

    >>> check_changed("https://example.org/iris.csv", etag='"abc"')    # doctest: +SKIP
    ChangeCheck(changed=False, etag='"abc"', last_modified=None, status=304)
    """
    if check_scheme(url) == "file":
        return _check_file(url, etag, last_modified, sha256)
    clean, auth = split_credentials(url)
    own = session is None
    sess = session or mount(requests.Session())
    budget = DownloadBudget(
        redact(url), max_retries=max_retries, backoff=backoff or Backoff(), deadline=None
    )
    transport = Transport(
        sess,
        timeout=timeout,
        max_redirects=10,
        auth=auth,
        origin_url=clean,
        display_url=redact(url),
    )
    headers: dict[str, str] = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    try:
        response = transport.get(
            clean, headers, budget, method="HEAD", accept=frozenset({405, 501})
        )
        if response.status_code in {405, 501}:
            response.close()
            response = transport.get(clean, headers, budget)
        response.close()
    finally:
        if own:
            sess.close()
    new_etag = response.headers.get("ETag")
    new_lm = response.headers.get("Last-Modified")
    status = response.status_code
    if status == 304:
        return ChangeCheck(False, new_etag or etag, new_lm or last_modified, status)
    changed: bool | None = None
    if etag and new_etag:
        changed = _strip_weak(etag) != _strip_weak(new_etag)
    elif last_modified and new_lm:
        changed = not _same_date(last_modified, new_lm)
    return ChangeCheck(changed, new_etag, new_lm, status)
