"""The vote reference (issue 13): a bare FastAPI vote endpoint doing the portal's vote writes and nothing else.

`POST /items/{public_id}/vote` and `/unvote` do **the same writes as the portal's vote, in the same transaction
shape**: BEGIN, the app's own vote statement (`app.voting.service` builds it: on PostgreSQL the insert, the counter
update and the follow in one statement of data-modifying CTEs; a withdrawal the delete and the uncount; SQLite the
same steps one by one), so the desk's triggers on `votes` run in it exactly as they run for the portal, then
COMMIT. A vote that finds the person's vote already there changes its importance with the same UPDATE the app
runs. Like the portal's vote at once (app/voting/views.py), the transaction runs in a thread, off the event loop.
The person is the `X-Bench-User` header's user id (bench/board.py's wrk script sends it; the portal ignores
it), the item comes from a map of public ids read at start-up, and the answer is a small JSON body.

Not done here, and so the price of the portal's own work when compared: the middleware, FastAPI's dependencies,
the session lookup, the visibility rule and the item's lock, the content revision, the CSRF and origin checks,
the rate limits, the form model and the widget's HTML.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench_ahead .venv/bin/python -m uvicorn \\
        bench.reference_vote:create_app --factory --workers 2 --port 8102 --no-access-log

bench/board.py (`--votes`, `--only-votes`) starts it on its own, before and after the portal's vote load.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select, update

from app.config import normalise_database_url
from app.db import Database
from app.roadmap.models import Item
from app.voting import service as voting
from app.voting.models import Importance

_IMPORTANCES = {importance.key: importance for importance in Importance}


def vote_routes(app: FastAPI, url: str) -> Database:
    """The bare vote and withdrawal (see the module's docstring) on a database of their own."""
    database = Database(normalise_database_url(url), pool_size=5)
    with database.transaction() as session:
        items = dict(session.execute(select(Item.public_id, Item.id)).tuples().all())
    writes = voting._writes(database.engine.dialect.name)
    votes = voting.VOTES
    writer = database.engine.execution_options(ahead_write=True)  # SQLite: BEGIN IMMEDIATE, as the app's writes

    def cast(item_id: int, user_id: int, importance: Importance) -> tuple[bool, int | None]:
        params = {"p_item": item_id, "p_user": user_id, "p_importance": int(importance), "p_now": voting.utcnow(),
                  "p_captured_by": None, "p_source": None, "p_source_url": ""}
        with writer.begin() as conn:
            if "cast" in writes:
                row = conn.execute(writes["cast"], params).first()
            else:  # SQLite: the app's steps one by one
                row = None
                if conn.execute(writes["new_vote"], params).first() is not None:
                    row = conn.execute(writes["count"], params).one()
                    conn.execute(writes["follow"], params)
            if row is not None:
                return True, row.vote_count
            count = conn.scalar(update(votes).where(votes.c.item_id == item_id, votes.c.user_id == user_id)
                                .values(importance=int(importance), updated_at=params["p_now"])
                                .returning(voting._COUNT_OF_VOTED_ITEM))
            return False, count

    def withdraw(item_id: int, user_id: int) -> int | None:
        since = voting.utcnow() - timedelta(days=voting.TREND_DAYS)
        params = {"p_item": item_id, "p_user": user_id, "p_since": since}
        with writer.begin() as conn:
            if "withdraw" in writes:
                row = conn.execute(writes["withdraw"], params).first()
            else:
                removed = conn.execute(writes["remove"], params).first()
                if removed is None:
                    return None
                params["p_recent"] = 1 if removed.created_at >= since else 0
                row = conn.execute(writes["uncount"], params).one()
            return None if row is None else int(row.vote_count)

    @app.post("/items/{public_id}/vote")
    async def vote(public_id: str, request: Request) -> JSONResponse:
        form = parse_qs((await request.body()).decode())
        importance = _IMPORTANCES[form.get("importance", ["important"])[0]]
        created, count = await asyncio.to_thread(cast, items[public_id], int(request.headers["x-bench-user"]),
                                                 importance)
        return JSONResponse({"item": public_id, "vote_count": count, "my_vote": importance.key, "created": created})

    @app.post("/items/{public_id}/unvote")
    async def unvote(public_id: str, request: Request) -> JSONResponse:
        await request.body()
        count = await asyncio.to_thread(withdraw, items[public_id], int(request.headers["x-bench-user"]))
        return JSONResponse({"item": public_id, "vote_count": count, "my_vote": None, "removed": count is not None})

    return database


def create_app() -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.database = vote_routes(app, os.environ["DATABASE_URL"])  # its pool lives as long as the process

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
