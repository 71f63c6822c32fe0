"""A raw-socket HTTP server on 127.0.0.1 that misbehaves exactly as told (no HTTP library on
the server side, so nothing tidies the answer up): partial bodies, ``206`` answers to requests
without ``Range``, bodies cut short, endless streams, huge declared lengths.

``RawServer(answer)`` calls ``answer(conn, request)`` for every request; ``answer`` writes the
raw response. ``requests`` records every request, ``sent`` the body bytes written. The answer
can be swapped at any time (``server.answer = ...``) to turn a good upstream bad.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


class RawServer:
    def __init__(self, answer: Callable[[RawServer, socket.socket, Request], None]) -> None:
        self.answer = answer
        self.requests: list[Request] = []
        self.sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port = int(self._sock.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def url(self, path: str = "/data.csv") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def gets(self) -> list[Request]:
        return [r for r in self.requests if r.method == "GET"]

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            request = Request(method, path, headers)
            with self._lock:
                self.requests.append(request)
            self.answer(self, conn, request)
        except OSError:
            pass
        finally:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        with self._lock:
            self.sent += len(data)


def head(status: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# -- answers -----------------------------------------------------------------------------------
Answer = Callable[[RawServer, socket.socket, Request], None]


def whole(body: bytes) -> Answer:
    """A correct ``200`` with ``Content-Length`` (no validators: each refresh downloads)."""

    def answer(server: RawServer, conn: socket.socket, request: Request) -> None:
        conn.sendall(head("200 OK", {"Content-Length": str(len(body)), "Connection": "close"}))
        if request.method == "GET":
            server.send(conn, body)

    return answer


def partial_206(body: bytes, part: int) -> Answer:
    """A ``206`` with a well-formed ``Content-Range`` for the first ``part`` bytes, whatever
    was asked (a proxy or CDN answering from a partial cache)."""

    def answer(server: RawServer, conn: socket.socket, request: Request) -> None:
        if request.method != "GET":
            return whole(body)(server, conn, request)
        conn.sendall(head("206 Partial Content", {
            "Content-Length": str(part), "Content-Range": f"bytes 0-{part - 1}/{len(body)}",
            "Connection": "close"}))
        server.send(conn, body[:part])
        return None

    return answer


def cut_short(body: bytes, part: int, *, chunked: bool = False) -> Answer:
    """A ``200`` declaring the whole body (``Content-Length`` or chunked), closed after
    ``part`` bytes (a chunked body without its last chunk)."""

    def answer(server: RawServer, conn: socket.socket, request: Request) -> None:
        if request.method != "GET":
            return whole(body)(server, conn, request)
        framing = ({"Transfer-Encoding": "chunked"} if chunked
                   else {"Content-Length": str(len(body))})
        conn.sendall(head("200 OK", {**framing, "Connection": "close"}))
        data = body[:part]
        if chunked and data:  # an empty chunk would be the (proper) end of the body
            data = b"%x\r\n%s\r\n" % (len(data), data)
        server.send(conn, data)
        return None

    return answer


def endless(*, chunked: bool, declared: int | None = None) -> Answer:
    """A ``200`` streaming CSV-like lines until the client goes away: no length at all
    (close-delimited), chunked, or with a (huge) declared ``Content-Length``."""
    line = b"1,2,a\n" * 1000

    def answer(server: RawServer, conn: socket.socket, request: Request) -> None:
        framing = ({"Transfer-Encoding": "chunked"} if chunked
                   else {"Content-Length": str(declared)} if declared is not None else {})
        conn.sendall(head("200 OK", {**framing, "Connection": "close"}))
        if request.method != "GET":
            return
        piece = b"%x\r\n%s\r\n" % (len(line), line) if chunked else line
        conn.settimeout(5)
        while server.sent < 1 << 34:  # 16 GiB: a runaway client would still stop one day
            server.send(conn, piece)

    return answer


def status(code: int, reason: str) -> Answer:
    def answer(server: RawServer, conn: socket.socket, request: Request) -> None:
        body = f"{code} {reason}".encode()
        conn.sendall(head(f"{code} {reason}", {"Content-Length": str(len(body)),
                                                "Connection": "close"}))
        server.send(conn, body)

    return answer
