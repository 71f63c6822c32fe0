"""Serving the catalog app with uvicorn, bounded against slow and numerous clients.

uvicorn's h11 server waits for a request's headers forever and accepts connections until the
process runs out of file descriptors: a few hundred sockets that send half a request line and
stop would leave nobody served. :func:`server_config` serves through a protocol that

- closes a connection whose request (headers, and the body of ``POST /login``) is not complete
  :data:`REQUEST_TIMEOUT` seconds after the connection opened or after the previous response
  (idle keep-alive connections close after :data:`KEEP_ALIVE` seconds, as before);
- holds at most :data:`MAX_CONNECTIONS` connections: one more closes the oldest connection
  still waiting for its request (or, when every connection is busy with a request, the new
  one), so a flood of slow sockets cannot lock out a normal request;
- bounds request headers to :data:`MAX_HEADER_BYTES`.
"""

from __future__ import annotations

import asyncio
from typing import Any

#: Seconds a connection may take to send a complete request (headers and body).
REQUEST_TIMEOUT = 10.0
#: Seconds an idle keep-alive connection stays open.
KEEP_ALIVE = 5
#: Connections held at once.
MAX_CONNECTIONS = 256
#: Largest request head (request line and headers) read, in bytes.
MAX_HEADER_BYTES = 16 * 1024


def guarded_protocol(request_timeout: float = REQUEST_TIMEOUT,
                     max_connections: int = MAX_CONNECTIONS) -> type[asyncio.Protocol]:
    """An h11 protocol class for one server with the bounds of the module docstring."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    waiting: dict[Any, None] = {}  # connections waiting for a complete request, oldest first
    complete = (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR)

    class GuardedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                oldest = next(iter(waiting), None)
                if oldest is None:  # every other connection is serving a request
                    self._drop()
                    return
                oldest._drop()
            self._await_request()

        def _await_request(self) -> None:
            self._stop_waiting()
            waiting[self] = None
            self._deadline = self.loop.call_later(request_timeout, self._drop)

        def _stop_waiting(self) -> None:
            waiting.pop(self, None)
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _drop(self) -> None:
            self._stop_waiting()
            if not self.transport.is_closing():
                self.transport.close()

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state in complete:
                self._stop_waiting()

        def on_response_complete(self) -> None:
            if not self.transport.is_closing():
                self._await_request()  # the next request (or the keep-alive timeout)
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_waiting()
            super().connection_lost(exc)

    return GuardedH11Protocol


def server_config(app: Any, host: str, port: int, *, request_timeout: float = REQUEST_TIMEOUT,
                  max_connections: int = MAX_CONNECTIONS) -> Any:
    """The ``uvicorn.Config`` that ``datastack web`` serves ``app`` with."""
    import uvicorn

    return uvicorn.Config(
        app, host=host, port=port, log_level="warning", server_header=False,
        proxy_headers=False, access_log=False,
        http=guarded_protocol(request_timeout, max_connections),
        timeout_keep_alive=KEEP_ALIVE, h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        # requests in flight; one past it gets 503 (connections are bounded by the protocol)
        limit_concurrency=2 * max_connections,
    )


def serve(app: Any, host: str, port: int) -> None:
    """Serve ``app`` on ``host:port`` until interrupted (see :func:`server_config`)."""
    import uvicorn

    uvicorn.Server(server_config(app, host, port)).run()


__all__ = ["KEEP_ALIVE", "MAX_CONNECTIONS", "MAX_HEADER_BYTES", "REQUEST_TIMEOUT",
           "guarded_protocol", "serve", "server_config"]
