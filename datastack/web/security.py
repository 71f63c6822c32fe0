"""Who may see the catalog page: loopback by default, a token on any other interface.

- :func:`check_serving` refuses to serve off loopback without a token (``DATASTACK_WEB_TOKEN``)
  and refuses tokens too short to resist guessing.
- :class:`TokenGate` (ASGI middleware) lets a request through when it carries the token as
  ``Authorization: Bearer TOKEN`` or the session cookie set by the login form; everything
  else gets 401 (the login page for a browser, JSON for ``/api/``). Only ``/login`` and
  ``/static/`` (the style sheet and the filter script) are open. Comparisons are constant-time
  (:func:`hmac.compare_digest`); the cookie holds an HMAC of the token, never the token, and
  is ``HttpOnly`` and ``SameSite=Strict``.

>>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("localhost"), is_loopback("0.0.0.0")
(True, True, True, False)
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from datastack.errors import ConfigurationError

TOKEN_ENV = "DATASTACK_WEB_TOKEN"  # noqa: S105 - the name of the variable
COOKIE = "datastack_session"
#: Shortest token accepted (characters): a token is typed once, it can be long.
MIN_TOKEN_LENGTH = 16
#: Paths served without the token: the login form and the static files it uses.
OPEN_PATHS = ("/login",)
OPEN_PREFIX = "/static/"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only accepts connections from this
    machine."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_serving(host: str, token: str | None) -> None:
    """Raise :class:`ConfigurationError` unless serving on ``host`` with ``token`` is safe."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ConfigurationError(
            f"{TOKEN_ENV} is {len(token)} characters long; use at least {MIN_TOKEN_LENGTH} "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    if token is None and not is_loopback(host):
        raise ConfigurationError(
            f"refusing to serve the catalog on {host!r} without a token: anyone who can reach "
            f"that interface could read it. Set {TOKEN_ENV} (at least {MIN_TOKEN_LENGTH} "
            "characters) or bind 127.0.0.1 (the default)"
        )


def session_value(token: str) -> str:
    """The cookie value for ``token``: an HMAC of it (the token itself is never stored)."""
    return hmac.new(token.encode(), b"datastack-web-session", hashlib.sha256).hexdigest()


def token_matches(given: str, token: str) -> bool:
    """Constant-time comparison of a presented token with the configured one."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), token.encode())


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return ""


def _cookie(scope: Scope, name: str) -> str:
    for part in _header(scope, b"cookie").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return ""


def authorised(scope: Scope, token: str) -> bool:
    """Whether the request carries the bearer token or a valid session cookie."""
    scheme, _, given = _header(scope, b"authorization").partition(" ")
    if scheme.lower() == "bearer" and given and token_matches(given.strip(), token):
        return True
    cookie = _cookie(scope, COOKIE)
    return bool(cookie) and hmac.compare_digest(cookie.encode(), session_value(token).encode())


def is_open(path: str) -> bool:
    """Whether ``path`` is served without the token (the login form, static files)."""
    return path in OPEN_PATHS or (path.startswith(OPEN_PREFIX) and ".." not in path)


class TokenGate:
    """ASGI middleware: 401 for every request without the token (see the module docstring).

    ``deny`` renders the 401 response for a request scope (an ASGI app).
    """

    def __init__(self, app: ASGIApp, *, token: str | None, deny: Callable[[Scope], ASGIApp]):
        self.app = app
        self.token = token
        self.deny = deny

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.token is None:
            await self.app(scope, receive, send)
            return
        if is_open(str(scope.get("path", ""))) or authorised(scope, self.token):
            await self.app(scope, receive, send)
            return
        await self.deny(scope)(scope, receive, send)


__all__ = [
    "COOKIE",
    "MIN_TOKEN_LENGTH",
    "OPEN_PATHS",
    "OPEN_PREFIX",
    "TOKEN_ENV",
    "TokenGate",
    "authorised",
    "check_serving",
    "is_loopback",
    "is_open",
    "session_value",
    "token_matches",
]
