"""The application factory: :func:`create_app` builds the read-only catalog site of a store.

Starlette with Jinja2 templates (autoescape on: every dataset-provided string is escaped),
local static files (no CDN), a token gate (:mod:`datastack.web.security`), security headers
(a strict Content-Security-Policy: scripts and styles only from this server) and exception
handlers that turn every error into a page or a JSON body with a message, never a traceback.

>>> import tempfile
>>> from starlette.testclient import TestClient
>>> from datastack.store import Store
>>> client = TestClient(create_app(Store.open(tempfile.mkdtemp())), base_url="http://127.0.0.1")
>>> client.get("/").status_code, client.get("/api/datasets").json()
(200, [])
>>> client.get("/", headers={"host": "attacker.example"}).status_code  # DNS rebinding
400
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from datastack._format import to_json
from datastack._uri import redact
from datastack.errors import (
    DatastackError,
    InvalidIdentifierError,
    NotFoundError,
    StorageUnavailableError,
)
from datastack.store import Store
from datastack.web.security import (
    ASGIApp,
    HostGate,
    Receive,
    Scope,
    Send,
    Sessions,
    TokenGate,
    allowed_hosts,
)

log = logging.getLogger("datastack.web")
HERE = Path(__file__).resolve().parent

#: Headers on every response: no framing, no sniffing, no referrer, scripts/styles from here.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-resource-policy": "same-origin",
}
_TITLES = {400: "Bad request", 401: "Unauthorized", 404: "Not found", 405: "Method not allowed",
           500: "Internal error", 503: "Storage unavailable"}


class WebState:
    """What the routes share: the store, the templates, the token and the preview caches."""

    def __init__(self, store: Store, token: str | None) -> None:
        from datastack import __version__
        from datastack.web.samples import SampleCache

        self.store = store
        self.token = token
        self.sessions = Sessions()
        self.samples = SampleCache(store)
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=True,  # every template, whatever its name
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals.update(storage=store.uri, version=__version__)

    def page(self, template: str, context: Mapping[str, Any], status: int = 200) -> HTMLResponse:
        html = self.env.get_template(template).render(**context)
        return HTMLResponse(html, status_code=status, headers={"cache-control": "no-store"})


def state_of(request: Request) -> WebState:
    state: WebState = request.app.state.web
    return state


def json_response(data: Any, status: int = 200) -> Response:
    """A JSON body exactly as the CLI's ``--json`` prints it (compact)."""
    return Response(
        to_json(data, indent=None), status_code=status, media_type="application/json",
        headers={"cache-control": "no-store"},
    )


def _wants_json(path: str) -> bool:
    return path.startswith("/api/")


def error_response(state: WebState, path: str, status: int, message: str) -> Response:
    """An error as a page (or as JSON under ``/api/``): the message, never a traceback."""
    message = redact(message)[:2000]
    if _wants_json(path):
        return json_response({"error": message, "status": status}, status)
    title = _TITLES.get(status, "Error")
    return state.page(
        "error.html", {"status_code": status, "title": title, "message": message}, status
    )


def _status_for(exc: DatastackError) -> int:
    if isinstance(exc, StorageUnavailableError):
        return 503
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, InvalidIdentifierError):
        return 400
    return 500


def _handlers(state: WebState) -> dict[Any, Any]:
    def http_error(request: Request, exc: Exception) -> Response:
        status = int(getattr(exc, "status_code", 500))
        response = error_response(state, request.url.path, status, str(getattr(exc, "detail", "")))
        response.headers.update(getattr(exc, "headers", None) or {})
        return response

    def datastack_error(request: Request, exc: Exception) -> Response:
        status = _status_for(exc)  # type: ignore[arg-type]
        message = str(exc)
        if status == 503:
            message = f"the storage {state.store.uri} is unavailable: {message}"
        elif status == 500:
            log.error("error serving %s: %s", request.url.path, redact(message))
            message = f"the catalog could not be read: {message}"
        return error_response(state, request.url.path, status, message)

    def internal_error(request: Request, exc: Exception) -> Response:
        log.error("internal error serving %s", request.url.path, exc_info=exc)
        return error_response(state, request.url.path, 500,
                              "internal error; the server log has the details")

    return {HTTPException: http_error, DatastackError: datastack_error, Exception: internal_error}


class SecurityHeaders:
    """ASGI middleware adding :data:`SECURITY_HEADERS` to every response, and the time the
    server took to produce it (``Server-Timing: app;dur=MILLISECONDS``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {bytes(k).lower() for k, _ in headers}
                for key, value in SECURITY_HEADERS.items():
                    if key.encode() not in present:
                        headers.append((key.encode(), value.encode()))
                spent = (time.perf_counter() - started) * 1000
                headers.append((b"server-timing", f"app;dur={spent:.1f}".encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def _deny(state: WebState) -> Any:
    def deny(scope: Scope) -> ASGIApp:
        path = str(scope.get("path", "/"))
        headers = {"www-authenticate": 'Bearer realm="datastack"', "cache-control": "no-store"}
        if _wants_json(path):
            body = {"error": "a token is required (Authorization: Bearer TOKEN)", "status": 401}
            response = json_response(body, 401)
        else:
            from datastack.web.routes import login_next

            response = state.page(
                "login.html", {"message": "", "next": login_next(path, scope)}, 401
            )
        response.headers.update(headers)
        return response

    return deny


def create_app(store: Store | str | None = None, *, token: str | None = None,
               hosts: Iterable[str] = ()) -> Starlette:
    """The catalog site of ``store`` (a :class:`~datastack.store.Store` or a storage URI).

    With ``token``, every request but ``/login`` and ``/static/`` must carry it (bearer
    header or the login cookie); :func:`datastack.web.security.check_serving` decides when
    one is required. Without a token, only requests whose ``Host`` is a loopback name are
    answered (DNS rebinding); with one, ``hosts`` (``--allowed-host``) restricts the names
    accepted besides loopback ones (none given: any). The app only reads: the catalog and
    the storage are never written.
    """
    from datastack.web.routes import ROUTES

    accepted = allowed_hosts(token, tuple(hosts))  # ConfigurationError: hosts without token
    state = WebState(Store.open(store), token)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        state.samples.close()  # open split files, before the interpreter exits

    app = Starlette(
        lifespan=lifespan,
        routes=[*ROUTES, Mount("/static", StaticFiles(directory=HERE / "static"), name="static")],
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(HostGate, allowed=accepted),
            Middleware(TokenGate, token=token, sessions=state.sessions, deny=_deny(state)),
        ],
        exception_handlers=_handlers(state),
    )
    app.state.web = state
    return app


__all__ = ["SECURITY_HEADERS", "WebState", "create_app", "error_response", "json_response"]
