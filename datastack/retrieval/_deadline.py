"""A wall-clock deadline for the header phase of an HTTP request.

``requests``' read timeout applies to each ``recv``: a server that sends its status line and
then one header byte every few seconds never trips it, and a refresh would hang for ever.
Sessions made by datastack mount :class:`DeadlineAdapter`, whose connections register
themselves with the thread sending a request; :func:`header_deadline` arms a timer that shuts
those sockets down when the deadline passes, so the blocked read fails at once (a
``ConnectionError`` for ``requests``, reported as a timeout). Bodies are bounded separately,
by :class:`~datastack.retrieval._policy.DownloadBudget`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_local = threading.local()


def _register(connection: Any) -> None:
    watched = getattr(_local, "connections", None)
    if watched is not None:
        watched.append(connection)


class _WatchedHTTPConnection(HTTPConnection):
    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        _register(self)
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        _register(self)
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose connections :func:`header_deadline` can interrupt."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _WatchedHTTPPool,
            "https": _WatchedHTTPSPool,
        }


def mount(session: Any) -> Any:
    """Mount :class:`DeadlineAdapter` for http and https on ``session``; returns it."""
    adapter = DeadlineAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _shutdown(connections: list[Any], fired: list[bool]) -> None:
    fired.append(True)
    for connection in list(connections):
        sock = getattr(connection, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def header_deadline(seconds: float | None) -> Iterator[list[bool]]:
    """Within the block, requests sent from this thread whose response headers are not in
    after ``seconds`` are aborted. Yields a list that holds ``True`` once it fired."""
    fired: list[bool] = []
    if seconds is None:
        yield fired
        return
    connections: list[Any] = []
    previous = getattr(_local, "connections", None)
    _local.connections = connections
    timer = threading.Timer(max(0.0, seconds), _shutdown, args=(connections, fired))
    timer.daemon = True
    timer.start()
    try:
        yield fired
    finally:
        timer.cancel()
        _local.connections = previous


__all__ = ["DeadlineAdapter", "header_deadline", "mount"]
