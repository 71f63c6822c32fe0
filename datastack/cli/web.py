"""``datastack web``: serve the read-only catalog page (Starlette + uvicorn, imported here only
when the command runs).

Binds 127.0.0.1 by default. Any other interface needs a token in ``DATASTACK_WEB_TOKEN``
(read here, once): without one the command refuses to start (exit 2). Without a token only
loopback ``Host`` names are answered; with one, ``--allowed-host`` names the others. Served by
:func:`datastack.web.server.serve` (request timeout, connection cap).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from datastack.cli._common import EXIT_OK, open_store, storage_arg
from datastack.errors import MissingDependencyError

DEFAULT_PORT = 8765


def register(sub: Any) -> None:
    p = sub.add_parser(
        "web",
        help="serve the read-only catalog page",
        description="Serve the catalog as web pages and a JSON API (read-only). Binds "
        "127.0.0.1 by default; any other interface requires a token in DATASTACK_WEB_TOKEN, "
        "sent as 'Authorization: Bearer TOKEN' or entered once into the login form.",
    )
    storage_arg(p)
    p.add_argument("--host", default="127.0.0.1", metavar="H",
                   help="interface to bind (default 127.0.0.1; others need DATASTACK_WEB_TOKEN)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   dest="allowed_hosts",
                   help="with a token: a Host name the page answers to besides loopback ones "
                   "(repeatable; default: any). Without a token only localhost, 127.0.0.1 "
                   "and [::1] are answered")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, metavar="P",
                   help=f"TCP port (default {DEFAULT_PORT})")
    p.set_defaults(run=run_web)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port 1-65535, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port 1-65535, got {text!r}")
    return value


def run_web(args: argparse.Namespace) -> int:
    from datastack.web.security import TOKEN_ENV, check_serving, is_loopback

    token = os.environ.get(TOKEN_ENV) or None
    hosts = tuple(args.allowed_hosts)
    # ConfigurationError (exit 2) before touching the storage: a host with spaces, a port or a
    # scheme, another interface without a token, --allowed-host without a token
    host = check_serving(args.host, token, hosts)
    try:
        import uvicorn  # noqa: F401

        from datastack.web.app import create_app
        from datastack.web.server import serve
    except ImportError as exc:
        raise MissingDependencyError(
            f"`datastack web` needs {exc.name or 'starlette, jinja2 and uvicorn'}: "
            "pip install 'datastack[web]'"
        ) from exc
    store = open_store(args.storage)  # unreachable storage: exit 3 now, not 503s later
    app = create_app(store, token=token, hosts=hosts)
    shown = f"[{host}]" if ":" in host else host
    guard = "token required" if token else "no token"
    where = "loopback only" if is_loopback(host) else "reachable from the network"
    print(f"datastack web: serving {store.uri} on http://{shown}:{args.port}/ "
          f"({where}, {guard}); Ctrl-C stops", file=sys.stderr)
    serve(app, host, args.port)
    return EXIT_OK
