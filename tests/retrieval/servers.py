"""A deliberately misbehaving HTTP server for retrieval tests (real sockets on 127.0.0.1).

``FaultyServer(payload, ...)`` serves one payload at any path and misbehaves as configured:
drop the connection at an absolute byte offset (for the first N responses, or always), ignore
``Range``, declare a wrong ``Content-Length``, stall before the body, trickle bytes. Every
request's method, path and headers are recorded in ``requests``; ``sent`` counts the body
bytes written.
"""

from __future__ import annotations

import hashlib
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Behaviour:
    drop_at: int | None = None  # absolute offset at which the connection is cut
    drop_times: int | None = 1  # how many responses are cut (None: every one)
    range_support: bool = True
    etag: str | None = '"v1"'
    last_modified: str | None = "Wed, 21 Oct 2015 07:28:00 GMT"
    declared_length: int | None = None  # override Content-Length
    stall: float = 0.0  # seconds to sleep after headers, before the body
    trickle: float = 0.0  # seconds between single bytes
    status_script: list[int] = field(default_factory=list)  # statuses to answer first
    retry_after: str | None = None
    redirect_to: str | None = None  # every request answers 302 to this URL


class FaultyServer:
    def __init__(
        self,
        payload: bytes,
        behaviour: Behaviour | None = None,
        *,
        tls: tuple[str, str] | None = None,
    ) -> None:
        self.payload = payload
        self.behaviour = behaviour or Behaviour()
        self.requests: list[Recorded] = []
        self.dropped = 0
        self.sent = 0  # body bytes written to clients
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_HEAD(self) -> None:
                server._handle(self, head=True)

            def do_GET(self) -> None:
                server._handle(self, head=False)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.payload).hexdigest()

    def url(self, path: str = "/data.bin") -> str:
        host, port = self.httpd.server_address[:2]
        return f"{self.scheme}://{host}:{port}{path}"

    def __enter__(self) -> FaultyServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def range_requests(self) -> list[Recorded]:
        return [r for r in self.requests if "Range" in r.headers]

    # -- request handling --------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler, *, head: bool) -> None:
        b = self.behaviour
        with self._lock:
            self.requests.append(Recorded(h.command, h.path, dict(h.headers.items())))
            scripted = b.status_script.pop(0) if b.status_script else None
        if b.redirect_to is not None:
            h.send_response(302)
            h.send_header("Location", b.redirect_to)
            h.send_header("Content-Length", "0")
            h.send_header("Connection", "close")
            h.end_headers()
            return
        if scripted is not None:
            body = f"status {scripted}".encode()
            h.send_response(scripted)
            if b.retry_after is not None:
                h.send_header("Retry-After", b.retry_after)
            h.send_header("Content-Length", str(len(body)))
            h.send_header("Connection", "close")
            h.end_headers()
            h.wfile.write(body)
            return
        start = 0
        status = 200
        range_header = h.headers.get("Range")
        if_range = h.headers.get("If-Range")
        if range_header and b.range_support:
            validator_ok = if_range is None or if_range in {b.etag, b.last_modified}
            match = re.fullmatch(r"bytes=(\d+)-", range_header)
            if match and validator_ok:
                start = int(match.group(1))
                status = 206
        total = len(self.payload)
        h.send_response(status)
        length = b.declared_length if b.declared_length is not None else total - start
        if status == 206 and b.declared_length is not None:
            length = b.declared_length - start
        h.send_header("Content-Length", str(length))
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
        if b.range_support:
            h.send_header("Accept-Ranges", "bytes")
        if b.etag:
            h.send_header("ETag", b.etag)
        if b.last_modified:
            h.send_header("Last-Modified", b.last_modified)
        h.send_header("Connection", "close")
        h.end_headers()
        if head:
            return
        if b.stall:
            time.sleep(b.stall)
        end = total
        with self._lock:
            cut = b.drop_at is not None and (b.drop_times is None or self.dropped < b.drop_times)
            if cut:
                self.dropped += 1
                end = max(start, min(total, b.drop_at or 0))
        try:
            if b.trickle:
                for i in range(start, end):
                    h.wfile.write(self.payload[i : i + 1])
                    h.wfile.flush()
                    self.sent += 1
                    time.sleep(b.trickle)
            else:
                with self._lock:  # counted before the write: a client that has read it all
                    self.sent += end - start  # may look before this thread runs again
                h.wfile.write(self.payload[start:end])
            h.wfile.flush()
        except OSError:
            pass
        if cut:
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
