"""The pages and the JSON API. Every handler is synchronous (Starlette runs it in a worker
thread) and read-only; every parameter goes through :mod:`datastack.web.params` first.

=========================================  ===================================================
``/``  (``?q=``)                           the catalog: every dataset, problems first
``/datasets/NAME`` (``?version=&split=&    one dataset: status, splits, fields, class
page=&size=``)                             histograms, paged samples, versions with lineage
``/datasets/NAME/croissant.json``          its Croissant 1.0 JSON-LD (``?version=``)
``/thumbs/NAME/VERSION/SPLIT/INDEX.png``   one image thumbnail (``?field=``), bounded size
``/api/datasets``                          ``datastack ls --json`` rows, each with ``freshness``
``/api/datasets/NAME`` (``?version=``)     ``datastack show NAME --json`` + ``freshness``
``/api/status``                            ``datastack status --json``
``/login``, ``/logout``                    the token form (only when a token is set)
=========================================  ===================================================
"""

from __future__ import annotations

from collections import Counter
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from datastack._format import fmt_size, fmt_time
from datastack.catalog.overview import (
    STATE_ORDER,
    catalog_entries,
    details_of,
    ls_row,
    previous_record,
    problems_first,
)
from datastack.web import params
from datastack.web.security import COOKIE, session_cookie, token_matches
from datastack.web.state import json_response, state_of
from datastack.web.views import (
    catalog_row,
    fields_of,
    load_line,
    matches,
    status_view,
    versions_view,
)

#: Largest login form body read (bytes).
MAX_FORM_BYTES = 4096


# -- catalog -----------------------------------------------------------------------------------
def catalog_page(request: Request) -> Response:
    state = state_of(request)
    query = params.query_text(request.query_params)
    entries = catalog_entries(state.store.catalog)
    counts = Counter(e.state for e in entries)
    shown = problems_first([e for e in entries if matches(e, query)])
    return state.page("catalog.html", {
        "rows": [catalog_row(e) for e in shown],
        "total": len(entries),
        "counts": sorted(counts.items(), key=lambda kv: STATE_ORDER.get(kv[0], 9)),
        "q": query,
    })


# -- one dataset -------------------------------------------------------------------------------
def _dataset(request: Request) -> tuple[str, list[Any], Any, Any]:
    """(name, summaries of the published versions, the full record asked for or None, status)
    of a dataset page: one full record is read, the others as summaries."""
    catalog = state_of(request).store.catalog
    name = params.dataset_name(request.path_params["name"])
    version = params.version_param(request.query_params)
    records = catalog.version_summaries(name)
    status = catalog.status(name)
    if not records:
        if status is None or version is not None:
            catalog.latest(name)  # raises DatasetNotFoundError naming the known datasets
        return name, records, None, status
    # VersionNotFoundError (with the list) for a version that is not published
    record = catalog.get(name, records[-1].version if version is None else int(version))
    if status is None:
        [status] = catalog.statuses([name], latest={name: records[-1]})
    return name, records, record, status


def dataset_page(request: Request) -> Response:
    state = state_of(request)
    name, records, record, status = _dataset(request)
    context: dict[str, Any] = {
        "name": name, "record": record, "status": status_view(status),
        "versions": [], "older": 0, "preview": None, "preview_error": "", "histograms": [],
        "pinned": False, "latest_version": records[-1].version if records else None,
    }
    if record is not None:
        split_names = list(record.splits)
        default = "train" if "train" in split_names else (split_names or [""])[0]
        split = params.choice(request.query_params.get("split"), "split", split_names, default)
        page, size = params.page_params(request.query_params)
        length = record.splits.get(split, 0)
        if page > 1 and (page - 1) * size >= length:
            pages = max(1, -(-length // size))
            raise params.bad_request(
                f"page {page} is past the last page of {split!r} ({pages} pages of {size})"
            )
        context["versions"], context["older"] = versions_view(records)
        context.update(
            pinned=record.version != records[-1].version,
            published=fmt_time(record.published_at),
            size=fmt_size(record.size),
            splits=list(record.splits.items()),
            fields=fields_of(record),
            load_line=load_line(name, record.version, split or "train", state.store.uri),
        )
        if split:
            pinned = None if record.version == records[-1].version else record.version
            context.update(state.samples.page_context(
                record, split, page, size,
                link=lambda s, p: page_link(name, pinned, s, p, size),
            ))
    return state.page("dataset.html", context)


def thumbnail(request: Request) -> Response:
    state = state_of(request)
    catalog = state.store.catalog
    name = params.dataset_name(request.path_params["name"])
    version = params.required_int(request.path_params["version"], "version", low=1)
    record = catalog.get(name, version)
    split = params.choice(request.path_params["split"], "split", list(record.splits), "")
    length = record.splits.get(split, 0)
    if length == 0:
        raise HTTPException(404, f"split {split!r} of {name!r} v{version} has no samples")
    index = params.required_int(request.path_params["index"], "sample index", high=length - 1)
    field = request.query_params.get("field", "")[:200]
    png = state.samples.thumbnail(record, split, index, field)
    return Response(png, media_type="image/png",
                    headers={"cache-control": "private, max-age=86400, immutable"})


def croissant_json(request: Request) -> Response:
    """The version's Croissant 1.0 JSON-LD (``datastack show NAME --croissant``)."""
    from datastack.croissant import croissant

    state = state_of(request)
    name, _, record, _ = _dataset(request)
    if record is None:
        raise HTTPException(404, f"dataset {name!r} has no published version yet")
    url = f"{str(request.base_url).rstrip('/')}/datasets/{name}"
    doc = croissant(record, url=url, storage=state.store.uri)
    response = json_response(doc)
    response.headers["content-type"] = "application/ld+json"
    return response


# -- JSON API ----------------------------------------------------------------------------------
def api_datasets(request: Request) -> Response:
    """``datastack ls --json`` rows, each with ``freshness`` (its ``status --json`` object)."""
    entries = catalog_entries(state_of(request).store.catalog)
    query = params.query_text(request.query_params)
    rows = []
    for entry in entries:
        if entry.record is not None and matches(entry, query):
            rows.append({**ls_row(entry), "freshness": entry.summary})
    return json_response(rows)


def api_dataset(request: Request) -> Response:
    """``datastack show NAME --json`` with ``freshness`` (its ``status --json`` object)."""
    name, records, record, status = _dataset(request)
    if record is None:
        raise HTTPException(404, f"dataset {name!r} has no published version yet")
    before = previous_record(state_of(request).store.catalog, record, records)
    return json_response({**details_of(record, records, before),
                          "freshness": status.summary()})


def api_status(request: Request) -> Response:
    """``datastack status --json``."""
    return json_response([s.summary() for s in state_of(request).store.catalog.statuses()])


# -- login -------------------------------------------------------------------------------------
def login_next(path: str, scope: Any = None) -> str:
    """Where to go after signing in: a local path only (never another site)."""
    query = bytes(scope.get("query_string", b"")).decode("latin-1") if scope else ""
    target = path + (f"?{query}" if query else "")
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target[:1000]


def login_form(request: Request) -> Response:
    state = state_of(request)
    if state.token is None:
        return RedirectResponse("/", status_code=303)
    target = login_next(request.query_params.get("next", "/"))
    return state.page("login.html", {"message": "", "next": target})


async def login_submit(request: Request) -> Response:
    state = state_of(request)
    if state.token is None:
        return RedirectResponse("/", status_code=303)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise params.bad_request(f"the login form is larger than {MAX_FORM_BYTES} bytes")
    form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)
    given = (form.get("token") or [""])[0]
    target = login_next((form.get("next") or ["/"])[0])
    if not token_matches(given, state.token):
        return state.page("login.html", {"message": "That token is not right.", "next": target},
                          401)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, state.sessions.new(), httponly=True, samesite="strict",
                        path="/", max_age=int(state.sessions.lifetime))
    return response


def logout(request: Request) -> Response:
    """Forget the session (server-side: a copy of the cookie stops working) and clear it."""
    state_of(request).sessions.revoke(session_cookie(request.scope))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


def page_link(name: str, version: int | None, split: str, page: int, size: int) -> str:
    """The URL of a preview page (every part URL-encoded)."""
    query: dict[str, Any] = {"split": split, "page": page, "size": size}
    if version is not None:
        query = {"version": version, **query}
    return f"/datasets/{name}?{urlencode(query)}#preview"


ROUTES = [
    Route("/", catalog_page),
    Route("/datasets/{name}", dataset_page),
    Route("/datasets/{name}/croissant.json", croissant_json),
    Route("/thumbs/{name}/{version}/{split}/{index}.png", thumbnail),
    Route("/api/datasets", api_datasets),
    Route("/api/datasets/{name}", api_dataset),
    Route("/api/status", api_status),
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login_submit, methods=["POST"]),
    Route("/logout", logout),
]

__all__ = ["ROUTES", "login_next", "page_link"]
