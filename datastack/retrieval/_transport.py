"""HTTP plumbing for the retriever: safe redirects, retried requests, and the resumable body.

Internal: :class:`Transport` sends one logical request (following redirects by hand so that
every hop is checked) and retries transient failures within a :class:`DownloadBudget`;
:class:`ResumableBody` is the file-like object a StorageConnector reads from, which resumes a
dropped connection with ``Range``/``If-Range`` or asks for a clean restart.
"""

from __future__ import annotations

import errno
import logging
import re
import socket
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import requests
import urllib3.exceptions

from datastack._uri import redact, redact_logs_of
from datastack.errors import RetrievalError
from datastack.retrieval._deadline import header_deadline
from datastack.retrieval._policy import DownloadBudget, parse_retry_after
from datastack.retrieval.progress import Progress

logger = logging.getLogger("datastack.retrieval")
# urllib3 logs request lines and redirects at DEBUG, query credentials included
redact_logs_of("urllib3.connectionpool", "urllib3.poolmanager", "urllib3.util.retry")

#: Failures while reading a body that a resume or retry may cure.
NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    urllib3.exceptions.HTTPError,  # ProtocolError, ReadTimeoutError, IncompleteRead...
    OSError,  # socket errors surfacing raw
)
_CONTENT_RANGE = re.compile(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*\Z", re.IGNORECASE)
_BASE_HEADERS = {"Accept-Encoding": "identity"}
#: Client errors that say "try again" (timeout, too early, too many requests).
_RETRIED_4XX = frozenset({408, 425, 429})


class Transient(Exception):
    """A failure worth retrying (connection error, timeout, 429, 5xx)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class Restart(Exception):
    """Raised inside ``read`` to abort the storage write; the download starts over.

    ``response`` is a fresh 200 response to reuse (the server ignored ``Range``), or None.
    """

    def __init__(self, reason: str, response: requests.Response | None = None) -> None:
        super().__init__(reason)
        self.response = response


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """``(url without user:password@, (user, password) or None)``."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port is not None else "")
    auth = (unquote(parts.username or ""), unquote(parts.password or ""))
    return urlunsplit(parts._replace(netloc=netloc)), auth


_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>:?\s*")
#: Longest description kept of a network exception (cut at a word boundary, never mid-word).
_DESCRIBE_CHARS = 800


def describe(exc: BaseException) -> str:
    """A one-line, credential-free description of a network exception (object reprs such as
    ``<urllib3.connection.HTTPConnection object at 0x...>`` left out; a very long text is cut
    at a word boundary)."""
    text = redact(_OBJECT_REPR.sub("", " ".join(str(exc).split()))) or "no details"
    if len(text) > _DESCRIBE_CHARS:
        text = text[:_DESCRIBE_CHARS].rsplit(" ", 1)[0] + " [...]"
    return f"{type(exc).__name__}: {text}"


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps: ``args[0]`` exceptions (requests), ``reason`` (urllib3's
    MaxRetryError), ``__cause__`` and ``__context__``, outermost first."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 32:
        current = todo.pop(0)
        if any(current is s for s in seen):
            continue
        seen.append(current)
        wrapped = [getattr(current, "reason", None), current.__cause__, current.__context__]
        wrapped += [a for a in current.args if isinstance(a, BaseException)]
        todo.extend(w for w in wrapped if isinstance(w, BaseException))
    return seen


#: "Network is unreachable", "No route to host": no network path, not a passing hiccup.
_NO_ROUTE = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH})


def unreachable(exc: BaseException, url: str, shown: str) -> RetrievalError | None:
    """The permanent error for a host name that does not resolve or a connection refused
    (retrying cannot help within a refresh: fail fast, saying why); None for other failures
    (timeouts, resets), which are worth a retry."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        port = 0
    for cause in _causes(exc):
        if isinstance(cause, socket.gaierror | urllib3.exceptions.NameResolutionError):
            why = _strerror(cause)
            return RetrievalError(
                f"cannot download {shown}: the host name {host!r} does not resolve ({why}); "
                "not retried. Check the host name in the source URL, this machine's network "
                "connection and DNS (or proxy) settings, then run the refresh again "
                "(`datastack refresh NAME`)"
            )
        if isinstance(cause, OSError) and cause.errno in _NO_ROUTE:
            return RetrievalError(
                f"cannot download {shown}: no route to {host} ({_strerror(cause)}: this machine "
                "has no network path there); not retried. Check this machine's network "
                "connection (and proxy settings), then run the refresh again "
                "(`datastack refresh NAME`)"
            )
        if isinstance(cause, ConnectionRefusedError):
            return RetrievalError(
                f"cannot download {shown}: {host} refused the connection on port {port} "
                f"({_strerror(cause)}: no server listens there); not retried. Check the host "
                "and port in the source URL and that the server is running, then run the "
                "refresh again (`datastack refresh NAME`)"
            )
    return None


def _strerror(exc: BaseException) -> str:
    for cause in _causes(exc):
        if isinstance(cause, OSError) and cause.strerror:
            return f"{cause.strerror} [errno {cause.errno}]"
    return describe(exc)


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return (parts.scheme.lower(), parts.hostname, parts.port)


class Transport:
    """Sends requests for one download: timeouts, checked redirects, bounded retries."""

    def __init__(
        self,
        session: requests.Session,
        *,
        timeout: tuple[float, float],
        max_redirects: int,
        auth: tuple[str, str] | None,
        origin_url: str,
        display_url: str | None = None,
    ) -> None:
        self.session = session
        self.timeout = timeout
        self.max_redirects = max_redirects
        self.auth = auth
        self.origin = _origin(origin_url)
        self.origin_url = origin_url
        self.display_url = display_url or redact(origin_url)

    def _show(self, url: str) -> str:
        return self.display_url if url == self.origin_url else redact(url)

    def _timeouts(self, budget: DownloadBudget) -> tuple[float, float]:
        connect, read = self.timeout
        left = budget.remaining()
        if left is not None:
            left = max(left, 0.01)
            connect, read = min(connect, left), min(read, left)
        return (connect, read)

    def _request(
        self, method: str, url: str, headers: dict[str, str], budget: DownloadBudget
    ) -> requests.Response:
        """One request, errors sorted into transient (retried) and permanent ones.

        The response headers must be complete within connect + read timeout of wall-clock
        time, also when they trickle in a byte at a time (each byte resets a read timeout).
        """
        auth = self.auth if _origin(url) == self.origin else None
        timeouts = self._timeouts(budget)
        with header_deadline(sum(timeouts)) as fired:
            try:
                response = self.session.request(
                    method,
                    url,
                    headers={**_BASE_HEADERS, **headers},
                    auth=auth,
                    stream=True,
                    timeout=timeouts,
                    allow_redirects=False,
                    # explicit, so REQUESTS_CA_BUNDLE does not override a session's own CA file
                    verify=self.session.verify,
                )
                if not fired:
                    return response
                response.close()  # cut short by the deadline: its headers are not to be trusted
                raise requests.exceptions.ConnectionError("response headers cut by the deadline")
            except requests.exceptions.RequestException as exc:
                if fired:
                    raise RetrievalError(
                        f"{self._show(url)} did not send complete response headers within "
                        f"{sum(timeouts):g} s (a trickling server?); gave up, nothing was stored"
                    ) from None
                if isinstance(exc, requests.exceptions.SSLError):
                    raise RetrievalError(
                        f"TLS error for {self._show(url)}: {describe(exc)}; not retried"
                    ) from None
                failure = unreachable(exc, url, self._show(url))
                if failure is not None:
                    raise failure from None
                if isinstance(
                    exc,
                    requests.exceptions.ConnectionError
                    | requests.exceptions.Timeout
                    | requests.exceptions.ChunkedEncodingError,
                ):
                    raise Transient(describe(exc)) from None
                raise RetrievalError(
                    f"request to {self._show(url)} failed: {describe(exc)}"
                ) from None

    def send(
        self, method: str, url: str, headers: dict[str, str], budget: DownloadBudget
    ) -> requests.Response:
        """One request, following at most ``max_redirects`` redirects, each hop checked."""
        current = url
        for _hop in range(self.max_redirects + 1):
            response = self._request(method, current, headers, budget)
            if not response.is_redirect:
                return response
            location = response.headers.get("location", "")
            response.close()
            target = urljoin(current, location)
            scheme = urlsplit(target).scheme.lower()
            if scheme not in {"http", "https"}:
                raise RetrievalError(
                    f"{self._show(current)} redirected to {redact(target)!r}: refused, only "
                    "http(s) redirect targets are followed"
                )
            if urlsplit(current).scheme.lower() == "https" and scheme == "http":
                raise RetrievalError(
                    f"{self._show(current)} redirected to {redact(target)!r}: refused, a redirect "
                    "from https to http would drop transport security; use the http URL "
                    "explicitly if you trust it"
                )
            logger.debug("redirect %s -> %s", redact(current), redact(target))
            current = target
        raise RetrievalError(
            f"too many redirects (more than {self.max_redirects}) from {self._show(url)}, last "
            f"{redact(current)}: a redirect loop? Not retried"
        )

    def get(
        self,
        url: str,
        headers: dict[str, str],
        budget: DownloadBudget,
        *,
        received: int = 0,
        method: str = "GET",
        accept: frozenset[int] = frozenset(),
    ) -> requests.Response:
        """Send with retries: 2xx/3xx (and ``accept``) are returned; 408/425/429/5xx and
        network errors (not a name that does not resolve, not a refused connection) are retried
        within ``budget``; other 4xx raise :class:`RetrievalError` at once."""
        while True:
            budget.check_deadline(received)
            try:
                response = self.send(method, url, headers, budget)
            except Transient as exc:
                budget.failed(exc.reason, received=received, retry_after=exc.retry_after)
                continue
            status = response.status_code
            if status < 400 or status in accept:
                return response
            reason = f"HTTP {status} {response.reason or ''}".strip()
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            response.close()
            if status in _RETRIED_4XX or status >= 500:
                budget.failed(reason, received=received, retry_after=retry_after)
                continue
            raise RetrievalError(
                f"{self._show(url)} answered {reason}; not retried (client errors are permanent). "
                "Check the URL and access rights"
            )


def content_length(response: requests.Response) -> int | None:
    """The declared body size, or None when absent or not plain ASCII digits (ignored then:
    the checksum, and the deadline, still bound the body)."""
    value = response.headers.get("Content-Length")
    text = value.strip() if isinstance(value, str) else ""
    if not text or not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    return int(text)


def require_whole(response: requests.Response, shown: str) -> requests.Response:
    """``response`` when it is a ``200``, the only complete answer to a request without
    ``Range``; otherwise (a ``206`` partial body, a ``204``, a ``304`` to an unconditional
    request...) it is closed and a :class:`RetrievalError` says why nothing is stored."""
    status = response.status_code
    if status == 200:
        return response
    reason = f"HTTP {status} {response.reason or ''}".strip()
    content_range = response.headers.get("Content-Range")
    response.close()
    what = (
        f"a partial body (Content-Range: {content_range or 'none'})" if status == 206
        else "no complete body"
    )
    raise RetrievalError(
        f"{shown} answered {reason}, {what}, to a request for the whole file (no Range was "
        "asked): only a complete 200 answer is content, so nothing was stored and the "
        "previous version stays served. The server, or a proxy or cache on the way, is "
        "misbehaving: try again later or tell its operator"
    )


def over_limit(shown: str, size: int, limit: int, *, declared: bool) -> RetrievalError:
    """The error for a source larger than ``DATASTACK_MAX_SOURCE_BYTES``."""
    if declared:
        what = f"declares {size} bytes (Content-Length); refused before downloading"
    else:
        what = f"sent more than {limit} bytes ({size} so far); the download was stopped"
    return RetrievalError(
        f"{shown} {what}: over the limit of {limit} bytes for one source, nothing was "
        "stored. Raise DATASTACK_MAX_SOURCE_BYTES if the source really is that large"
    )


class ResumableBody:
    """The body of one download as a file-like object whose ``read(n)`` never hides a fault.

    A dropped connection, a timeout, or a body shorter than its ``Content-Length`` is cured by
    a ``Range: bytes=N-`` request guarded by ``If-Range``, accepted only as a 206 whose
    ``Content-Range`` starts at N. Otherwise :class:`Restart` is raised inside ``read`` so the
    storage backend aborts the write, and the retriever starts over.
    """

    def __init__(
        self,
        transport: Transport,
        url: str,
        response: requests.Response,
        budget: DownloadBudget,
        progress: Progress,
        limit: int | None = None,
    ) -> None:
        self.transport = transport
        self.limit = limit
        self.url = url
        self.budget = budget
        self.progress = progress
        self.received = 0
        self.failure: BaseException | None = None
        self._adopt(response)

    def _adopt(self, response: requests.Response) -> None:
        self._response = response
        self.total = content_length(response)
        if self.limit is not None and self.total is not None and self.total > self.limit:
            response.close()
            raise over_limit(self.budget.url, self.total, self.limit, declared=True)
        self.etag: str | None = response.headers.get("ETag")
        self.last_modified: str | None = response.headers.get("Last-Modified")

    # -- file-like ---------------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._response.close()

    def read(self, size: int | None = -1) -> bytes:
        try:
            if size is None or size < 0:
                parts = []
                while chunk := self._read(1024 * 1024):
                    parts.append(chunk)
                return b"".join(parts)
            return self._read(size) if size else b""
        except BaseException as exc:
            self.failure = exc
            raise

    def _read(self, size: int) -> bytes:
        while True:
            self.budget.check_deadline(self.received)
            try:
                data = self._response.raw.read1(size, decode_content=False)
            except NETWORK_ERRORS as exc:
                self._recover(describe(exc))
                continue
            if data:
                self.received += len(data)
                if self.limit is not None and self.received > self.limit:
                    raise over_limit(self.budget.url, self.received, self.limit, declared=False)
                self.budget.advanced(self.received)
                self.progress.update(len(data))
                return data
            if self.total is not None and self.received < self.total:
                self._recover(f"body ended after {self.received} of {self.total} bytes")
                continue
            return b""

    # -- recovery ----------------------------------------------------------------------------
    def _validator(self) -> str | None:
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified

    def _recover(self, reason: str) -> None:
        self._response.close()
        self.budget.failed(reason, received=self.received)
        if self.received == 0:
            whole = self.transport.get(self.url, {}, self.budget)
            self._adopt(require_whole(whole, self.budget.url))
            return
        validator = self._validator()
        if validator is None:
            raise Restart(f"{reason}; the server sent no ETag/Last-Modified to resume safely")
        headers = {"Range": f"bytes={self.received}-", "If-Range": validator}
        response = self.transport.get(
            self.url, headers, self.budget, received=self.received, accept=frozenset({416})
        )
        if response.status_code == 206 and self._range_matches(response):
            logger.info("resuming %s at byte %d", self.budget.url, self.received)
            self._response = response
            return
        if response.status_code == 200:
            raise Restart(f"{reason}; the server sent the whole body again", response)
        response.close()
        raise Restart(f"{reason}; resume refused (HTTP {response.status_code})")

    def _range_matches(self, response: requests.Response) -> bool:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if match is None or int(match.group(1)) != self.received:
            return False
        total = match.group(3)
        if self.total is not None and total != "*" and int(total) != self.total:
            return False
        return self.total is None or int(match.group(2)) == self.total - 1
