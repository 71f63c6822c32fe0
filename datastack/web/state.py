"""What the routes of the catalog site share: the :class:`WebState` of the app (store,
templates, token sessions, preview caches), and how a route answers JSON.

The app (:mod:`datastack.web.app`) builds the state and mounts the routes
(:mod:`datastack.web.routes`); both take these from here, so neither imports the other back.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from datastack._format import to_json
from datastack.store import Store
from datastack.web.security import Sessions

HERE = Path(__file__).resolve().parent


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


__all__ = ["HERE", "WebState", "json_response", "state_of"]
