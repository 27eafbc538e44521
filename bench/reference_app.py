"""The reference the board is measured against: a bare FastAPI app rendering the same page from memory.

At start-up it reads the board a signed-out visitor sees (the same 4 columns of 12 cards, products,
stages and tags) from the generated database once, through the same service function, and keeps the
objects. Every request then renders `roadmap/board.html` — the real template, with its `_card.html`
includes and the base layout — with the app's own Jinja environment (`app.web.templates`, same filters),
and touches no database, no middleware, no session, no CSRF. What the real board costs beyond this
is the price of its queries, its middleware and its dependencies.

    DATABASE_URL=sqlite:////tmp/ahead-bench.db .venv/bin/python -m uvicorn bench.reference_app:create_app \\
        --factory --workers 2 --port 8101 --no-access-log

bench/board.py starts it on its own.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

from app.accounts.viewer import ANONYMOUS
from app.config import normalise_database_url
from app.db import Database
from app.portal.service import Branding
from app.roadmap import service as roadmap
from app.voting.service import VoteState
from app.web import templates

# A fixed stand-in for the per-request CSRF token (same length as the real one, an HMAC-SHA256 hex digest).
_CSRF = "0" * 64


def load_board(url: str) -> dict[str, Any]:
    """The board's template context, read once; the ORM objects stay usable after the session closes."""
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


def create_app() -> FastAPI:
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
