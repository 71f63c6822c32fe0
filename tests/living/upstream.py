"""A real HTTP server on 127.0.0.1 whose content changes between refreshes, on purpose.

It answers conditional requests (If-None-Match / If-Modified-Since with 304) when
``validators`` is on, and counts requests and body bytes sent, so tests can tell what a refresh
downloaded.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from werkzeug.wrappers import Request, Response


def table(rows: int, *, columns: tuple[str, ...] = ("a", "b", "label"), offset: int = 0) -> bytes:
    """A CSV table: numeric features and a text label."""
    lines = [",".join(columns)]
    for i in range(offset, offset + rows):
        values = [str(i), str((i * 7) % 11)][: len(columns) - 1]
        lines.append(",".join([*values, "ab"[i % 2]]))
    return ("\n".join(lines) + "\n").encode()


HTML_ERROR_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Service unavailable</title></head>"
    b"<body><h1>Maintenance</h1><p>Please come back later.</p></body></html>\n"
)


@dataclass
class Upstream:
    """One changing file served at ``path``."""

    path: str
    data: bytes
    validators: bool = True
    revision: int = 0
    requests: list[str] = field(default_factory=list)
    body_bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def set(self, data: bytes) -> None:
        with self._lock:
            self.data = data
            self.revision += 1

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.data).hexdigest()[:16] + '"'

    @property
    def last_modified(self) -> str:
        return formatdate(1_700_000_000 + 3600 * self.revision, usegmt=True)

    def handle(self, request: Request) -> Response:
        with self._lock:
            self.requests.append(request.method)
            headers: dict[str, Any] = {}
            if self.validators:
                headers = {"ETag": self.etag, "Last-Modified": self.last_modified}
                if request.headers.get("If-None-Match") == self.etag or (
                    "If-None-Match" not in request.headers
                    and request.headers.get("If-Modified-Since") == self.last_modified
                ):
                    return Response(status=304, headers=headers)
            if request.method == "HEAD":
                return Response(status=200, headers={**headers, "Content-Length": len(self.data)})
            self.body_bytes += len(self.data)
            return Response(self.data, status=200, headers=headers, content_type="text/csv")

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.body_bytes = 0


def serve(httpserver: Any, upstream: Upstream) -> str:
    httpserver.expect_request(upstream.path).respond_with_handler(upstream.handle)
    return str(httpserver.url_for(upstream.path))


def tracked_spec(path: Any, url: str, *, name: str = "live", extra: str = "") -> Any:
    path.write_text(
        f"datasets:\n  {name}:\n    sources: [{{url: {url!r}, track: true}}]\n"
        "    format: csv\n    csv: {target: label}\n" + extra
    )
    return path
