"""The read-only catalog web page (``datastack web``): pages, a JSON API, sample previews.

Imported only by ``datastack web`` (Starlette, Jinja2 and uvicorn load then, never with
``import datastack``). Build the app with :func:`datastack.web.app.create_app`; see
``docs/web.md`` for what each page shows and the token rules.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from datastack.web.app import create_app

        return create_app
    raise AttributeError(f"module 'datastack.web' has no attribute {name!r}")


__all__ = ["create_app"]
