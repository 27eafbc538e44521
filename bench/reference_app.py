"""The references the pages are measured against: the very bytes the app answered, served with no work at all.

A reference has to do the same work as what it is compared with, less what is being measured: here, the same
bytes on the wire and nothing else. bench/board.py (and bench/breakdown.py) first fetch each measured page from
the running app — per audience: a signed-out visitor, a signed-in customer — and write them, with the answer's
headers (less `date`, `server`, `content-length` and `set-cookie`), to a JSON file (`save_pages`). Two servers
then answer them from memory, keyed on the path with its query and on whether the request sent a cookie:

* `create_app`     a bare FastAPI app: one route, `Response(body, headers=…)`; FastAPI's routing, request object
                   and response class, no middleware, no dependency, no database.
* `create_raw_app` a raw ASGI callable: a dict lookup and two `send` calls. What uvicorn alone costs.

A request carrying `If-None-Match` is answered with the captured revalidation of that page (the app's 304: its
headers, no body) when one was captured (`revalidating(audience)`): both references then compare nothing, they
only answer the 304 the app answered, which is the least a server can do for a conditional GET.

A ratio of 1.0 to `create_app` means the app adds nothing to what FastAPI costs to send these bytes.

    AHEAD_REFERENCE_PAGES=/tmp/pages.json .venv/bin/python -m uvicorn bench.reference_app:create_app \\
        --factory --workers 2 --port 8101 --no-access-log

`create_render_app` is the older reference (until 2026-12-03): the visitor's board rendered from memory on every
request with the real templates — a rendering, not a serving, reference; kept for bench/breakdown.py's history.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

PAGES_ENV = "AHEAD_REFERENCE_PAGES"
# Per request or per connection, not what the page is: the reference leaves them to its own server. `connection`
# above all: the pages are fetched with urllib, which asks the app to close (`Connection: close`), and the app says
# it will; replayed, it had the references close every connection, so that wrk opened a new one per request
# against them (about 6,000 a second) and not against the app (fixed 2026-12-06; every reference figure before was
# measured so, bench/README.md).
_DROPPED = frozenset({"date", "server", "content-length", "set-cookie", "connection", "keep-alive",
                      "transfer-encoding"})
VISITOR, CUSTOMER = "visitor", "customer"

# A fixed stand-in for the per-request CSRF token (same length as the real one, an HMAC-SHA256 hex digest).
_CSRF = "0" * 64


def revalidating(audience: str) -> str:
    """The key of an audience's conditional GET (If-None-Match sent) of a page."""
    return audience + " 304"


def _audience(cookie: bool, conditional: bool) -> str:
    audience = CUSTOMER if cookie else VISITOR
    return revalidating(audience) if conditional else audience


def save_pages(target: Path, pages: Iterable[tuple[str, str, list[tuple[str, str]], bytes]]) -> None:
    """Write (path with query, audience, headers, body) as the references read them."""
    rows = [{"path": path, "audience": audience,
             "headers": [[k, v] for k, v in headers if k.lower() not in _DROPPED],
             "body": body.decode("latin-1")}
            for path, audience, headers, body in pages]
    target.write_text(json.dumps(rows))


def load_pages() -> dict[tuple[str, str], tuple[list[tuple[bytes, bytes]], bytes]]:
    rows = json.loads(Path(os.environ[PAGES_ENV]).read_text())
    return {(row["path"], row["audience"]): ([(k.lower().encode("latin-1"), v.encode("latin-1"))
                                              for k, v in row["headers"]], row["body"].encode("latin-1"))
            for row in rows}


def create_app() -> FastAPI:
    """Bare FastAPI answering the captured bytes."""
    pages = load_pages()
    by_path = {key: ({k.decode(): v.decode() for k, v in headers}, body)
               for key, (headers, body) in pages.items()}
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, int]:
        return {"pages": len(pages)}

    @app.get("/{path:path}")
    async def page(request: Request, path: str) -> Response:
        query = request.url.query
        conditional = "if-none-match" in request.headers
        key = ("/" + path + ("?" + query if query else ""), _audience("cookie" in request.headers, conditional))
        found = by_path.get(key)
        if found is None:
            return Response(status_code=404)
        headers, body = found
        return Response(body, status_code=304 if conditional else 200, headers=headers)

    return app


def create_raw_app() -> Any:
    """A raw ASGI app answering the captured bytes: what the server alone costs."""
    pages = load_pages()
    health = (200, [(b"content-type", b"application/json")], json.dumps({"pages": len(pages)}).encode())

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        query = scope["query_string"]
        names = {name for name, _ in scope["headers"]}
        conditional = b"if-none-match" in names
        audience = _audience(b"cookie" in names, conditional)
        found = pages.get((path + ("?" + query.decode("latin-1") if query else ""), audience))
        if path == "/healthz":
            status, headers, body = health
        elif found is None:
            status, headers, body = 404, [], b""
        else:
            status, (headers, body) = 304 if conditional else 200, found
        length = [] if status == 304 else [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": [*headers, *length]})
        await send({"type": "http.response.body", "body": body})

    return app


# --- the older rendering reference -----------------------------------------------------------------------


def load_board(url: str) -> dict[str, Any]:
    """The board's template context, read once; the ORM objects stay usable after the session closes."""
    from app.accounts.viewer import ANONYMOUS
    from app.config import normalise_database_url
    from app.db import Database
    from app.portal.service import Branding
    from app.roadmap import service as roadmap
    from app.voting.service import VoteState

    database = Database(normalise_database_url(url), pool_size=1)
    try:
        with database.transaction() as session:
            filters = roadmap.Filters.parse(product=None, tag=None, stage=None, sort=None)
            context = {
                "filters": filters,
                "products": roadmap.list_products(session),
                "stages": roadmap.list_stages(session),
                "tags": roadmap.list_tags(session),
                "sorts": roadmap.SORT_LABELS,
                "view": "board",
                "columns": roadmap.get_board(session, ANONYMOUS, filters),
            }
            # The cards' vote widgets as a signed-out visitor sees them: no vote of their own, counts shown.
            context["vote_states"] = {
                item.id: VoteState.of(item, count=item.vote_count, mine=None, signed_in=False)
                for column in context["columns"] for item in column.items}
            session.expunge_all()
    finally:
        database.dispose()
    context.update(viewer=None, branding=Branding(), csrf_token=_CSRF, flashes=[], errors={}, form={})
    return context


def create_render_app() -> FastAPI:
    """The visitor's board rendered on every request from objects read once (no database, no middleware)."""
    from app.web import templates

    context = load_board(os.environ["DATABASE_URL"])
    cards = sum(len(column.items) for column in context["columns"])
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/", response_class=HTMLResponse)
    async def board(request: Request) -> HTMLResponse:
        return templates.TemplateResponse(request, "roadmap/board.html", dict(context))

    @app.get("/healthz")
    async def healthz() -> dict[str, int]:
        return {"cards": cards}

    return app
