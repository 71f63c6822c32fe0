"""Who may see the catalog page: loopback by default, a token on any other interface.

- :func:`check_serving` refuses to serve off loopback without a token (``DATASTACK_WEB_TOKEN``)
  and refuses tokens too short to resist guessing.
- :class:`TokenGate` (ASGI middleware) lets a request through when it carries the token as
  ``Authorization: Bearer TOKEN`` or the session cookie set by the login form; everything
  else gets 401 (the login page for a browser, JSON for ``/api/``). Only ``/login`` and
  ``/static/`` (the style sheet and the filter script) are open. Comparisons are constant-time
  (:func:`hmac.compare_digest`); the cookie holds a random session id (see
  :class:`Sessions`: revoked by ``/logout``), never the token, and is ``HttpOnly`` and
  ``SameSite=Strict``.

- :class:`HostGate` (ASGI middleware) answers 400 to a request whose ``Host`` header names
  neither a loopback address nor an allowed host, so a page that rebinds its own name to
  127.0.0.1 (DNS rebinding) cannot read the catalog. Without a token only loopback names are
  accepted; with one, ``--allowed-host`` names the others (none given: any).
- :class:`Sessions` are the login sessions: the cookie holds a random id known to this
  server, so ``/logout`` revokes it (a copied cookie stops working) and a restart signs
  everyone out.

>>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("localhost"), is_loopback("0.0.0.0")
(True, True, True, False)
>>> host_of_header("[::1]:8765"), host_of_header("LocalHost."), host_of_header("127.0.0.2:80")
('::1', 'localhost', '127.0.0.2')
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from datastack.errors import ConfigurationError

TOKEN_ENV = "DATASTACK_WEB_TOKEN"  # noqa: S105 - the name of the variable
COOKIE = "datastack_session"
#: Shortest token accepted (characters): a token is typed once, it can be long.
MIN_TOKEN_LENGTH = 16
#: Login sessions live at most this long (seconds), and this many at once.
SESSION_SECONDS = 12 * 3600.0
MAX_SESSIONS = 10_000
#: Paths served without the token: the login form and the static files it uses.
OPEN_PATHS = ("/login",)
OPEN_PREFIX = "/static/"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``, exactly as given) only accepts
    connections from this machine."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


_HOST_NAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)


def valid_host(host: str, what: str = "--host") -> str:
    """``host`` as an interface to bind or a host name to accept: an IP address (IPv6 with or
    without brackets; returned without them) or a DNS name, exactly as given: no spaces, no
    port, no scheme (ConfigurationError otherwise)."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(bare)
        return bare
    except ValueError:
        pass
    if _HOST_NAME.fullmatch(host) and not host.replace(".", "").isdigit():
        return host
    raise ConfigurationError(
        f"{what} {host!r} is not an IP address or a host name (letters, digits, '-' and '.'; "
        "no spaces, port or scheme): e.g. 127.0.0.1, ::1, 0.0.0.0 or catalog.example.org"
    )


def check_serving(host: str, token: str | None, hosts: tuple[str, ...] = ()) -> str:
    """Raise :class:`ConfigurationError` unless serving on ``host`` with ``token`` (and
    accepting the ``Host`` names ``hosts``) is safe; return ``host`` validated
    (:func:`valid_host`)."""
    host = valid_host(host)
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
    allowed_hosts(token, hosts)
    return host


def host_of_header(value: str) -> str:
    """The host name of a ``Host`` header (lower case, no port, no trailing dot, IPv6 without
    brackets); ``""`` when it is not one."""
    value = value.strip().lower()
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        return name if bracket and (not rest or rest[:1] == ":") else ""
    name, _, port = value.partition(":")
    if port and not port.isdigit():
        return ""
    return name.rstrip(".")


class Sessions:
    """Login sessions kept by this server: a cookie holds a random id (256 bits); the server
    keeps only a hash of each id with its expiry. :meth:`revoke` (``/logout``) forgets one,
    so a copied cookie stops working; at most :data:`MAX_SESSIONS` live at once (the oldest
    goes first), each for :data:`SESSION_SECONDS`."""

    def __init__(self, lifetime: float | None = None, limit: int | None = None) -> None:
        self.lifetime = SESSION_SECONDS if lifetime is None else lifetime
        self.limit = MAX_SESSIONS if limit is None else limit
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(session: str) -> str:
        return hashlib.sha256(session.encode("utf-8", "replace")).hexdigest()

    def new(self) -> str:
        session = secrets.token_urlsafe(32)
        with self._lock:
            while len(self._expiry) >= self.limit:
                self._expiry.pop(next(iter(self._expiry)))
            self._expiry[self._key(session)] = time.monotonic() + self.lifetime
        return session

    def valid(self, session: str) -> bool:
        if not session:
            return False
        key = self._key(session)  # looked up by hash: no timing on the id itself
        with self._lock:
            expiry = self._expiry.get(key)
            if expiry is not None and expiry < time.monotonic():
                del self._expiry[key]
                expiry = None
        return expiry is not None

    def revoke(self, session: str) -> None:
        with self._lock:
            self._expiry.pop(self._key(session), None)


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


def session_cookie(scope: Scope) -> str:
    """The session id the request's cookie carries (``""`` if none)."""
    return _cookie(scope, COOKIE)[:200]


def authorised(scope: Scope, token: str, sessions: Sessions) -> bool:
    """Whether the request carries the bearer token or a live session cookie."""
    scheme, _, given = _header(scope, b"authorization").partition(" ")
    if scheme.lower() == "bearer" and given and token_matches(given.strip(), token):
        return True
    return sessions.valid(session_cookie(scope))


def is_open(path: str) -> bool:
    """Whether ``path`` is served without the token (the login form, static files)."""
    return path in OPEN_PATHS or (path.startswith(OPEN_PREFIX) and ".." not in path)


class TokenGate:
    """ASGI middleware: 401 for every request without the token (see the module docstring).

    ``deny`` renders the 401 response for a request scope (an ASGI app).
    """

    def __init__(self, app: ASGIApp, *, token: str | None, sessions: Sessions,
                 deny: Callable[[Scope], ASGIApp]):
        self.app = app
        self.token = token
        self.sessions = sessions
        self.deny = deny

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.token is None:
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        if is_open(path) or authorised(scope, self.token, self.sessions):
            await self.app(scope, receive, send)
            return
        await self.deny(scope)(scope, receive, send)


class HostGate:
    """ASGI middleware: 400 (a short text, no catalog data) unless the ``Host`` header names a
    loopback address, ``localhost`` or one of ``allowed``; ``allowed=None`` accepts any host.
    """

    def __init__(self, app: ASGIApp, *, allowed: frozenset[str] | None):
        self.app = app
        self.allowed = None if allowed is None else frozenset(h.lower() for h in allowed)

    def accepts(self, scope: Scope) -> bool:
        if self.allowed is None:
            return True
        host = host_of_header(_header(scope, b"host"))
        return bool(host) and (host in self.allowed or is_loopback(host))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.accepts(scope):
            await self.app(scope, receive, send)
            return
        shown = _header(scope, b"host")[:100].encode("ascii", "replace").decode()
        body = (f"400 Bad Request: host {shown!r} is not served here. Without a token this "
                "server answers only to loopback names (localhost, 127.0.0.1, [::1]); with one, "
                "name others with --allowed-host.\n").encode()
        await send({"type": "http.response.start", "status": 400, "headers": [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store"),
            (b"connection", b"close"),
        ]})
        await send({"type": "http.response.body", "body": body})


def allowed_hosts(token: str | None, names: tuple[str, ...] = ()) -> frozenset[str] | None:
    """The ``Host`` names :class:`HostGate` accepts besides loopback ones: none without a
    token, ``names`` with one (``None``, any host, when a token is set and no name given)."""
    if token is None:
        if names:
            raise ConfigurationError(
                f"--allowed-host needs a token ({TOKEN_ENV}): without one only loopback host "
                "names (localhost, 127.0.0.1, [::1]) are accepted, so that no other site's "
                "page can read the catalog through DNS rebinding"
            )
        return frozenset()
    for name in names:
        valid_host(name, "--allowed-host")
    return frozenset(n.lower().rstrip(".") for n in names) if names else None


__all__ = [
    "COOKIE",
    "MIN_TOKEN_LENGTH",
    "OPEN_PATHS",
    "OPEN_PREFIX",
    "TOKEN_ENV",
    "HostGate",
    "Sessions",
    "TokenGate",
    "allowed_hosts",
    "authorised",
    "check_serving",
    "host_of_header",
    "is_loopback",
    "is_open",
    "session_cookie",
    "token_matches",
    "valid_host",
]
